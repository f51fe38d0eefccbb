//! The objects a cluster starts with: the system namespaces every cluster
//! has, and the PM-003 drill's `orders` namespace with its order service,
//! gateway ingress and lock-mode ConfigMap.
//!
//! This file only describes objects; the store stamps their metadata.

use serde_json::{Value, json};

/// Namespace of the drill's objects.
pub const DRILL_NAMESPACE: &str = "orders";
/// The drill's Deployment.
pub const DRILL_DEPLOYMENT: &str = "order-service";
/// The drill's Ingress (the gateway in front of the order service).
pub const DRILL_INGRESS: &str = "orders-gateway";
/// The drill's ConfigMap holding the lock mode.
pub const DRILL_LOCK_CONFIGMAP: &str = "order-service-lock";
/// Replicas the drill's Deployment starts with (as during PM-003).
pub const DRILL_REPLICAS: i64 = 8;

/// Namespaces present in every cluster.
pub fn system_namespaces() -> Vec<Value> {
    ["default", "kube-system"]
        .into_iter()
        .map(|name| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
        .collect()
}

/// The PM-003 drill objects, in creation order.
pub fn drill_objects() -> Vec<Value> {
    let labels = json!({ "app": DRILL_DEPLOYMENT });
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": DRILL_NAMESPACE },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": DRILL_DEPLOYMENT,
                "namespace": DRILL_NAMESPACE,
                "labels": labels,
            },
            "spec": {
                "replicas": DRILL_REPLICAS,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "containers": [{
                            "name": DRILL_DEPLOYMENT,
                            "image": "registry.local/orders/order-service:2.14.3",
                            "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                            "envFrom": [{ "configMapRef": { "name": DRILL_LOCK_CONFIGMAP } }],
                        }],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {
                "name": DRILL_INGRESS,
                "namespace": DRILL_NAMESPACE,
                "labels": labels,
            },
            "spec": {
                "ingressClassName": "nginx",
                "rules": [{
                    "host": "orders.local",
                    "http": { "paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": { "service": {
                            "name": DRILL_DEPLOYMENT,
                            "port": { "number": 8080 },
                        }},
                    }]},
                }],
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": DRILL_LOCK_CONFIGMAP,
                "namespace": DRILL_NAMESPACE,
                "labels": labels,
            },
            "data": { "LOCK_MODE": "legacy" },
        }),
    ]
}
