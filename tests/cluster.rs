//! The local cluster server over real HTTP on loopback, driven by kube-rs
//! (the client warroom's playbooks use) and by raw reqwest requests where the
//! exact wire shape matters.

mod common;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::{Value, json};
use warroom::cluster::{ClusterServer, StatusMode, Store};

const NS: &str = "orders";

async fn seeded() -> ClusterServer {
    ClusterServer::start_seeded("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("the local cluster starts")
}

async fn client(server: &ClusterServer) -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig is usable");
    assert_eq!(config.default_namespace, NS);
    kube::Client::try_from(config).expect("client builds")
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn replicas(d: &Deployment) -> i32 {
    d.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .expect("replicas set")
}

fn rv(obj: &impl kube::Resource) -> String {
    obj.meta()
        .resource_version
        .clone()
        .expect("resourceVersion set")
}

fn stored(store: &Store, api_version: &str, kind: &str, name: &str) -> Value {
    store
        .get(api_version, kind, Some(NS), name)
        .unwrap_or_else(|| panic!("{kind} {name} is stored"))
}

#[tokio::test]
async fn kube_client_reads_and_scales_the_seeded_order_service() {
    let server = seeded().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);

    let before = deployments.get("order-service").await.expect("get");
    assert_eq!(replicas(&before), 8);
    let status = before.status.clone().expect("status converged");
    assert_eq!(status.ready_replicas, Some(8));
    assert_eq!(status.observed_generation, before.metadata.generation);
    assert!(before.metadata.uid.is_some());
    assert!(before.metadata.creation_timestamp.is_some());

    let scale = deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale patch");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));

    let after = deployments.get("order-service").await.expect("get");
    assert_eq!(replicas(&after), 1);
    assert_eq!(after.metadata.generation, Some(2));
    let status = after.status.clone().expect("status");
    assert_eq!(status.available_replicas, Some(1));
    assert_eq!(status.observed_generation, Some(2));
    assert!(rv(&after).parse::<u64>().expect("numeric") > rv(&before).parse().expect("numeric"));
    assert_eq!(
        stored(&server.store(), "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn discovery_lists_every_served_kind_with_short_names_and_subresources() {
    let server = seeded().await;
    let discovery = kube::Discovery::new(client(&server).await)
        .run()
        .await
        .expect("discovery");
    let (deploy, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Deployment")
        .expect("deployments discovered");
    assert_eq!(deploy.api_version, "apps/v1");
    assert_eq!(deploy.plural, "deployments");
    let subresources: Vec<String> = caps
        .subresources
        .iter()
        .map(|(ar, _)| ar.plural.clone())
        .collect();
    assert!(
        subresources.contains(&"scale".to_string()),
        "{subresources:?}"
    );
    assert!(
        subresources.contains(&"status".to_string()),
        "{subresources:?}"
    );
    for (group, kind) in [
        ("", "ConfigMap"),
        ("", "Pod"),
        ("", "Namespace"),
        ("networking.k8s.io", "Ingress"),
        ("coordination.k8s.io", "Lease"),
        ("configuration.konghq.com", "KongPlugin"),
        ("gateway.envoyproxy.io", "BackendTrafficPolicy"),
    ] {
        assert!(
            discovery.get(group).is_some_and(|g| g
                .recommended_resources()
                .iter()
                .any(|(ar, _)| ar.kind == kind)),
            "{kind} in group {group:?} is discovered"
        );
    }

    let http = reqwest::Client::new();
    let core: Value = http
        .get(format!("{}/api/v1", server.url()))
        .send()
        .await
        .expect("GET /api/v1")
        .json()
        .await
        .expect("json");
    assert_eq!(core["kind"], "APIResourceList");
    let short = |list: &Value, name: &str| {
        list["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["name"] == name))
            .map(|e| e["shortNames"].clone())
    };
    assert_eq!(short(&core, "configmaps"), Some(json!(["cm"])));
    assert_eq!(short(&core, "pods"), Some(json!(["po"])));
    assert_eq!(short(&core, "namespaces"), Some(json!(["ns"])));
    let apps: Value = http
        .get(format!("{}/apis/apps/v1", server.url()))
        .send()
        .await
        .expect("GET /apis/apps/v1")
        .json()
        .await
        .expect("json");
    assert_eq!(short(&apps, "deployments"), Some(json!(["deploy"])));
    let aggregated = http
        .get(format!("{}/apis", server.url()))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .expect("GET /apis");
    assert_eq!(
        aggregated
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    let aggregated: Value = aggregated.json().await.expect("json");
    let apps = aggregated["items"]
        .as_array()
        .and_then(|items| items.iter().find(|g| g["metadata"]["name"] == "apps"))
        .expect("apps group");
    let deployments = &apps["versions"][0]["resources"][0];
    assert_eq!(deployments["resource"], "deployments");
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    assert_eq!(deployments["subresources"][1]["subresource"], "scale");
    assert_eq!(
        deployments["subresources"][1]["responseKind"]["kind"],
        "Scale"
    );
    let version: Value = http
        .get(format!("{}/version", server.url()))
        .send()
        .await
        .expect("GET /version")
        .json()
        .await
        .expect("json");
    assert_eq!(version["major"], "1");
    server.stop().await;
}

#[tokio::test]
async fn pods_are_created_listed_by_label_replaced_and_deleted() {
    let server = seeded().await;
    let pods: Api<Pod> = Api::default_namespaced(client(&server).await);
    let pod = |name: &str, role: &str| -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "order-service", "role": role}},
            "spec": {"containers": [{"name": "worker", "image": "order-service:2.14.3"}]},
        }))
        .expect("pod")
    };
    let created = pods
        .create(&PostParams::default(), &pod("worker-0", "primary"))
        .await
        .expect("create");
    assert_eq!(created.metadata.namespace.as_deref(), Some(NS));
    pods.create(&PostParams::default(), &pod("worker-1", "standby"))
        .await
        .expect("create");
    let again = api_error(
        pods.create(&PostParams::default(), &pod("worker-0", "primary"))
            .await,
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(again.message, "pods \"worker-0\" already exists");

    let listed = pods
        .list(&ListParams::default().labels("role=standby"))
        .await
        .expect("list");
    let names: Vec<_> = listed
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["worker-1"]);
    assert!(listed.metadata.resource_version.is_some());

    let mut replacement = created.clone();
    replacement
        .metadata
        .labels
        .get_or_insert_default()
        .insert("role".into(), "standby".into());
    let replaced = pods
        .replace("worker-0", &PostParams::default(), &replacement)
        .await
        .expect("replace");
    assert_ne!(rv(&replaced), rv(&created));
    assert_eq!(replaced.metadata.uid, created.metadata.uid);
    assert_eq!(
        pods.list(&ListParams::default().labels("role=standby"))
            .await
            .expect("list")
            .items
            .len(),
        2
    );

    pods.delete("worker-0", &DeleteParams::default())
        .await
        .expect("delete");
    let gone = api_error(pods.get("worker-0").await);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
    assert!(
        server
            .store()
            .get("v1", "Pod", Some(NS), "worker-0")
            .is_none()
    );
    server.stop().await;
}

#[tokio::test]
async fn merge_strategic_and_json_patches_change_only_what_they_name() {
    let server = seeded().await;
    let kube = client(&server).await;
    let store = server.store();

    // Merge patch on the lock ConfigMap.
    let config_maps: Api<ConfigMap> = Api::default_namespaced(kube.clone());
    let cm = config_maps
        .patch(
            "order-service-lock",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"LOCK_MODE": "watch"}, "metadata": {"annotations": {"warroom/previous": "legacy"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        cm.data
            .as_ref()
            .and_then(|d| d.get("LOCK_MODE"))
            .map(String::as_str),
        Some("watch")
    );
    assert_eq!(
        stored(&store, "v1", "ConfigMap", "order-service-lock")["data"]["LOCK_MODE"],
        "watch"
    );
    assert_eq!(
        stored(&store, "v1", "ConfigMap", "order-service-lock")["metadata"]["annotations"]["warroom/previous"],
        "legacy"
    );

    // Strategic merge patch, as `kubectl rollout restart` sends it: the
    // template changes, so the generation moves; the container list merges by name.
    let deployments: Api<Deployment> = Api::default_namespaced(kube.clone());
    let restarted = deployments
        .patch(
            "order-service",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2026-11-26T23:30:00Z"}},
                "spec": {"containers": [{"name": "order-service", "env": [{"name": "LOCK_MODE", "value": "watch"}]}]}
            }}})),
        )
        .await
        .expect("strategic patch");
    assert_eq!(restarted.metadata.generation, Some(2));
    let template = &stored(&store, "apps/v1", "Deployment", "order-service")["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2026-11-26T23:30:00Z"
    );
    assert_eq!(
        template["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        template["spec"]["containers"][0]["image"],
        "registry.local/orders/order-service:2.14.3"
    );
    assert_eq!(
        template["spec"]["containers"][0]["env"][0]["value"],
        "watch"
    );

    // JSON patch on the Ingress annotations: metadata only, generation stays.
    let ingresses: Api<Ingress> = Api::default_namespaced(kube);
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/metadata/annotations", "value": {}},
        {"op": "add", "path": "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps", "value": "50"}
    ]))
    .expect("json patch");
    let ing = ingresses
        .patch(
            "orders-gateway",
            &PatchParams::default(),
            &Patch::<()>::Json(patch),
        )
        .await
        .expect("json patch");
    assert_eq!(
        ing.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("nginx.ingress.kubernetes.io/limit-rps"))
            .map(String::as_str),
        Some("50")
    );
    assert_eq!(ing.metadata.generation, Some(1));

    // A JSON patch whose test fails is refused and changes nothing.
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/ingressClassName", "value": "kong"},
        {"op": "replace", "path": "/spec/ingressClassName", "value": "envoy"}
    ]))
    .expect("json patch");
    let refused = api_error(
        ingresses
            .patch(
                "orders-gateway",
                &PatchParams::default(),
                &Patch::<()>::Json(failing),
            )
            .await,
    );
    assert_eq!(refused.code, 422);
    assert_eq!(
        stored(&store, "networking.k8s.io/v1", "Ingress", "orders-gateway")["spec"]["ingressClassName"],
        "nginx"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_patch_that_changes_nothing_keeps_the_resource_version() {
    let server = seeded().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client(&server).await);
    let before = config_maps.get("order-service-lock").await.expect("get");
    let after = config_maps
        .patch(
            "order-service-lock",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"LOCK_MODE": "legacy"}})),
        )
        .await
        .expect("patch");
    assert_eq!(rv(&after), rv(&before));
    server.stop().await;
}

#[tokio::test]
async fn stale_resource_version_gets_409_conflict_shaped_like_the_api_server() {
    let server = seeded().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let mut stale = deployments.get("order-service").await.expect("get");
    deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .expect("someone else scales");
    stale.spec.as_mut().expect("spec").replicas = Some(2);
    let conflict = api_error(
        deployments
            .replace("order-service", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    // The exact body, over plain HTTP.
    let stale_rv = rv(&stale);
    let response = reqwest::Client::new()
        .patch(format!(
            "{}/apis/apps/v1/namespaces/orders/deployments/order-service",
            server.url()
        ))
        .header("Content-Type", "application/merge-patch+json")
        .body(
            json!({"metadata": {"resourceVersion": stale_rv}, "spec": {"replicas": 2}}).to_string(),
        )
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 409);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Operation cannot be fulfilled on deployments.apps \"order-service\": the object has been modified; please apply your changes to the latest version and try again",
            "reason": "Conflict",
            "details": {"name": "order-service", "group": "apps", "kind": "deployments"},
            "code": 409
        })
    );
    assert_eq!(
        stored(&server.store(), "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        4
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_objects_get_404_and_invalid_ones_422_status_bodies() {
    let server = seeded().await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!(
            "{}/apis/apps/v1/namespaces/orders/deployments/payment-service",
            server.url()
        ))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "deployments.apps \"payment-service\" not found",
            "reason": "NotFound",
            "details": {"name": "payment-service", "group": "apps", "kind": "deployments"},
            "code": 404
        })
    );

    let response = http
        .patch(format!(
            "{}/apis/apps/v1/namespaces/orders/deployments/order-service/scale",
            server.url()
        ))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"replicas":-1}}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "Scale.autoscaling \"order-service\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "spec.replicas");

    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let invalid = api_error(
        deployments
            .patch(
                "order-service",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": -3}})),
            )
            .await,
    );
    assert_eq!((invalid.code, invalid.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        invalid.message,
        "Deployment.apps \"order-service\" is invalid: spec.replicas: Invalid value: -3: must be greater than or equal to 0"
    );

    let config_maps: Api<ConfigMap> = Api::default_namespaced(client(&server).await);
    let bad_name: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "Lock_Mode"}})).expect("cm");
    let invalid = api_error(config_maps.create(&PostParams::default(), &bad_name).await);
    assert_eq!(invalid.code, 422);
    assert!(invalid.message.starts_with("ConfigMap \"Lock_Mode\" is invalid: metadata.name: Invalid value: \"Lock_Mode\": a lowercase RFC 1123 subdomain"), "{}", invalid.message);

    let elsewhere: Api<ConfigMap> = Api::namespaced(client(&server).await, "payments");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "lock"}})).expect("cm");
    let missing_ns = api_error(elsewhere.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (missing_ns.code, missing_ns.message.as_str()),
        (404, "namespaces \"payments\" not found")
    );
    assert_eq!(
        stored(&server.store(), "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        8
    );
    server.stop().await;
}

#[tokio::test]
async fn dry_run_answers_with_the_result_and_leaves_the_store_unchanged() {
    let server = seeded().await;
    let store = server.store();
    let kube = client(&server).await;
    let before = stored(&store, "apps/v1", "Deployment", "order-service");
    let revision = store.revision();

    let deployments: Api<Deployment> = Api::default_namespaced(kube.clone());
    let dry = PatchParams::default().dry_run();
    let scale = deployments
        .patch_scale(
            "order-service",
            &dry,
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("dry-run scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    let patched = deployments
        .patch(
            "order-service",
            &dry,
            &Patch::Merge(json!({"metadata": {"annotations": {"warroom/previous-replicas": "8"}}, "spec": {"replicas": 1}})),
        )
        .await
        .expect("dry-run patch");
    assert_eq!(replicas(&patched), 1);
    assert_eq!(
        rv(&patched),
        before["metadata"]["resourceVersion"].as_str().expect("rv")
    );

    // A dry run is validated like a real write.
    let invalid = api_error(
        deployments
            .patch(
                "order-service",
                &dry,
                &Patch::Merge(json!({"spec": {"replicas": -1}})),
            )
            .await,
    );
    assert_eq!(invalid.code, 422);

    let leases: Api<Lease> = Api::default_namespaced(kube);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "warroom-playbook-orders"},
        "spec": {"holderIdentity": "alice", "leaseDurationSeconds": 30}
    }))
    .expect("lease");
    let created = leases
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &lease,
        )
        .await
        .expect("dry-run create");
    assert_eq!(
        created.metadata.name.as_deref(),
        Some("warroom-playbook-orders")
    );

    assert_eq!(
        stored(&store, "apps/v1", "Deployment", "order-service"),
        before
    );
    assert!(
        store
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some(NS),
                "warroom-playbook-orders"
            )
            .is_none()
    );
    assert_eq!(store.revision(), revision);
    server.stop().await;
}

#[tokio::test]
async fn watch_delivers_a_modified_event_after_a_scale() {
    let server = seeded().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let current = deployments.get("order-service").await.expect("get");
    let params = WatchParams::default()
        .fields("metadata.name=order-service")
        .timeout(60);
    let mut events = deployments
        .watch(&params, &rv(&current))
        .await
        .expect("watch")
        .boxed();

    deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    match events.try_next().await.expect("watch event") {
        Some(WatchEvent::Modified(d)) => {
            assert_eq!(d.metadata.name.as_deref(), Some("order-service"));
            assert_eq!(replicas(&d), 1);
            assert_eq!(d.status.and_then(|s| s.ready_replicas), Some(1));
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // A watch without a resourceVersion starts with the current state.
    let mut from_scratch = deployments
        .watch(&params, "0")
        .await
        .expect("watch")
        .boxed();
    match from_scratch.try_next().await.expect("watch event") {
        Some(WatchEvent::Added(d)) => assert_eq!(replicas(&d), 1),
        other => panic!("expected ADDED, got {other:?}"),
    }
    // A watch from an older version replays what happened since.
    let mut replay = deployments
        .watch(&params, &rv(&current))
        .await
        .expect("watch")
        .boxed();
    match replay.try_next().await.expect("watch event") {
        Some(WatchEvent::Modified(d)) => assert_eq!(replicas(&d), 1),
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn injected_fault_answers_403_forbidden_then_clears() {
    let server = seeded().await;
    let faults = server.faults();
    faults.fail("PATCH", "/deployments/order-service", 403, Some(1));
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let refused = api_error(
        deployments
            .patch_scale(
                "order-service",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        refused.message,
        "deployments.apps \"order-service\" is forbidden: User \"warroom-operator\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"orders\""
    );
    assert_eq!(
        stored(&server.store(), "apps/v1", "Deployment", "order-service")["spec"]["replicas"],
        8
    );
    // Reads were never affected, and the rule was used up.
    deployments.get("order-service").await.expect("get");
    deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("second patch succeeds");

    faults.fail("*", "configmaps", 500, None);
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client(&server).await);
    assert_eq!(
        api_error(config_maps.get("order-service-lock").await).code,
        500
    );
    assert_eq!(
        api_error(config_maps.get("order-service-lock").await).code,
        500
    );
    faults.clear();
    config_maps
        .get("order-service-lock")
        .await
        .expect("get after clear");
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_status_bodies_and_the_server_keeps_serving() {
    let server = seeded().await;
    let http = reqwest::Client::new();
    let deployment = format!(
        "{}/apis/apps/v1/namespaces/orders/deployments/order-service",
        server.url()
    );
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.send().await.expect("request is answered");
        let code = response.status().as_u16();
        let body: Value = response.json().await.expect("a Status body");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["code"], code, "{body}");
        (
            code,
            body["reason"].as_str().unwrap_or_default().to_string(),
        )
    };
    let cases = [
        (
            http.patch(&deployment)
                .header("Content-Type", "application/merge-patch+json")
                .body("{\"spec\": "),
            400,
            "BadRequest",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "application/merge-patch+json")
                .body("[1, 2]"),
            400,
            "BadRequest",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "application/json-patch+json")
                .body("{\"op\": \"add\"}"),
            400,
            "BadRequest",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "text/plain")
                .body("replicas=1"),
            415,
            "UnsupportedMediaType",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "application/yaml")
                .body("spec: {}"),
            415,
            "UnsupportedMediaType",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "application/apply-patch+yaml")
                .body("spec: {}"),
            422,
            "Invalid",
        ),
        (
            http.patch(format!("{deployment}?fieldManager=x"))
                .header("Content-Type", "application/apply-patch+yaml")
                .body("spec: [unclosed"),
            400,
            "BadRequest",
        ),
        (
            http.patch(format!("{deployment}?fieldManager=x"))
                .header("Content-Type", "application/apply-patch+yaml")
                .body("- a list"),
            400,
            "BadRequest",
        ),
        (
            http.put(&deployment)
                .header("Content-Type", "application/json")
                .body("\u{0}\u{ff}garbage"),
            400,
            "BadRequest",
        ),
        (
            http.put(&deployment)
                .header("Content-Type", "application/json")
                .body(r#"{"spec": {"replicas": "eight"}}"#),
            400,
            "BadRequest",
        ),
        (
            http.put(&deployment)
                .header("Content-Type", "application/json")
                .body(r#"{"kind": "Pod", "apiVersion": "v1"}"#),
            400,
            "BadRequest",
        ),
        (
            http.put(&deployment)
                .header("Content-Type", "application/json")
                .body(r#"{"metadata": {"name": "other"}}"#),
            400,
            "BadRequest",
        ),
        (
            http.patch(&deployment)
                .header("Content-Type", "application/merge-patch+json")
                .body(vec![b' '; 4 * 1024 * 1024]),
            413,
            "RequestEntityTooLarge",
        ),
        (
            http.patch(format!("{deployment}?dryRun=Some"))
                .header("Content-Type", "application/merge-patch+json")
                .body("{}"),
            400,
            "BadRequest",
        ),
        (
            http.get(format!(
                "{}/apis/apps/v1/namespaces/orders/deployments?labelSelector=env+in+(prod)",
                server.url()
            )),
            400,
            "BadRequest",
        ),
        (
            http.get(format!(
                "{}/apis/apps/v1/namespaces/orders/deployments?fieldSelector=spec.replicas%3D1",
                server.url()
            )),
            400,
            "BadRequest",
        ),
        (
            http.get(format!("{}/apis/apps/v2/deployments", server.url())),
            404,
            "NotFound",
        ),
        (
            http.get(format!(
                "{}/api/v1/namespaces/orders/configmaps/order-service-lock/scale",
                server.url()
            )),
            404,
            "NotFound",
        ),
        (
            http.delete(format!(
                "{}/api/v1/namespaces/orders/configmaps",
                server.url()
            )),
            405,
            "MethodNotAllowed",
        ),
        (
            http.post(format!("{}/version", server.url())),
            405,
            "MethodNotAllowed",
        ),
    ];
    for (request, code, reason) in cases {
        assert_eq!(send(request).await, (code, reason.to_string()));
    }
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    assert_eq!(
        replicas(
            &deployments
                .get("order-service")
                .await
                .expect("still serving")
        ),
        8
    );
    server.stop().await;
}

#[tokio::test]
async fn a_second_lease_holder_is_refused_and_stale_renewals_conflict() {
    let server = seeded().await;
    let leases: Api<Lease> = Api::default_namespaced(client(&server).await);
    let lease = |holder: &str| -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": "warroom-playbook-orders"},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "acquireTime": "2026-11-26T23:30:00.000000Z"}
        }))
        .expect("lease")
    };
    let held = leases
        .create(&PostParams::default(), &lease("alice"))
        .await
        .expect("alice acquires");
    let refused = api_error(leases.create(&PostParams::default(), &lease("bob")).await);
    assert_eq!(
        (refused.code, refused.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        refused.message,
        "leases.coordination.k8s.io \"warroom-playbook-orders\" already exists"
    );

    let mut renewal = held.clone();
    renewal.spec.as_mut().expect("spec").renew_time =
        held.spec.as_ref().and_then(|s| s.acquire_time.clone());
    leases
        .replace("warroom-playbook-orders", &PostParams::default(), &renewal)
        .await
        .expect("alice renews");
    let mut takeover = held;
    takeover.spec.as_mut().expect("spec").holder_identity = Some("bob".into());
    let conflict = api_error(
        leases
            .replace("warroom-playbook-orders", &PostParams::default(), &takeover)
            .await,
    );
    assert_eq!(conflict.code, 409);
    assert_eq!(
        server
            .store()
            .get(
                "coordination.k8s.io/v1",
                "Lease",
                Some(NS),
                "warroom-playbook-orders"
            )
            .expect("stored")["spec"]["holderIdentity"],
        "alice"
    );
    server.stop().await;
}

#[tokio::test]
async fn external_status_mode_leaves_deployment_status_to_the_status_subresource() {
    let server = seeded().await;
    let store = server.store();
    store.set_status_mode(StatusMode::External);
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let scaled = deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    assert_eq!(scaled.status.map(|s| s.replicas), Some(8));
    let d = deployments.get("order-service").await.expect("get");
    assert_eq!(
        d.status.as_ref().and_then(|s| s.observed_generation),
        Some(1)
    );
    assert_eq!(d.metadata.generation, Some(2));

    let updated = deployments
        .patch_status(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1, "observedGeneration": 2}})),
        )
        .await
        .expect("status patch");
    assert_eq!(updated.status.and_then(|s| s.ready_replicas), Some(1));
    // Status writes never touch the spec.
    let ignored = deployments
        .patch_status(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("status patch");
    assert_eq!(replicas(&ignored), 1);
    server.stop().await;
}

#[tokio::test]
async fn store_put_and_get_seed_objects_that_the_api_then_serves() {
    let server = ClusterServer::start("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("starts");
    let store = server.store();
    assert!(store.get("v1", "Namespace", None, "default").is_some());
    assert!(store.get("v1", "Namespace", None, "orders").is_none());
    let plugin = store
        .put(json!({
            "apiVersion": "configuration.konghq.com/v1",
            "kind": "KongPlugin",
            "metadata": {"name": "orders-rate-limit", "namespace": "orders"},
            "plugin": "rate-limiting",
            "config": {"second": 50, "policy": "local"},
        }))
        .expect("put");
    assert_eq!(
        plugin["metadata"]["resourceVersion"]
            .as_str()
            .map(str::is_empty),
        Some(false)
    );
    assert!(
        store.get("v1", "Namespace", None, "orders").is_some(),
        "put creates the namespace"
    );
    assert!(
        store
            .put(json!({"apiVersion": "v9", "kind": "Gizmo", "metadata": {"name": "x"}}))
            .is_err()
    );

    let plugins: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client(&server).await,
        NS,
        &kube::api::ApiResource {
            group: "configuration.konghq.com".into(),
            version: "v1".into(),
            api_version: "configuration.konghq.com/v1".into(),
            kind: "KongPlugin".into(),
            plural: "kongplugins".into(),
        },
    );
    let patched = plugins
        .patch(
            "orders-rate-limit",
            &PatchParams::default(),
            &Patch::Merge(json!({"config": {"second": 5}})),
        )
        .await
        .expect("patch a custom resource");
    assert_eq!(
        patched.data["config"],
        json!({"second": 5, "policy": "local"})
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_waits_until_a_reconciled_rollout_completes() {
    use kube::runtime::wait::{Condition, await_condition};
    // What `kubectl rollout status` checks: the new generation is observed and
    // every wanted replica is updated and available.
    fn rolled_out(d: Option<&Deployment>) -> bool {
        let Some(d) = d else { return false };
        let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        d.status.as_ref().is_some_and(|s| {
            s.observed_generation >= d.metadata.generation
                && s.updated_replicas == Some(wanted)
                && s.available_replicas == Some(wanted)
                && s.replicas == Some(wanted)
        })
    }
    let server = seeded().await;
    let store = server.store();
    store.set_status_mode(StatusMode::External);
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    deployments
        .patch_scale(
            "order-service",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .expect("scale");
    let scaled = deployments.get("order-service").await.expect("get");
    assert!(
        !rolled_out.matches_object(Some(&scaled)),
        "status still shows 8 replicas"
    );

    let watchers = store.watchers();
    let waiting = tokio::spawn(await_condition(
        deployments.clone(),
        "order-service",
        rolled_out,
    ));
    common::wait_until_async(
        "the wait's watch to open",
        std::time::Duration::from_secs(60),
        || async { (store.watchers() > watchers).then_some(()) },
    )
    .await;
    // The drill's reconcile loop reports the rollout through the store.
    let generation =
        stored(&store, "apps/v1", "Deployment", "order-service")["metadata"]["generation"].clone();
    let before = stored(&store, "apps/v1", "Deployment", "order-service");
    let written = store
        .set_status(
            "apps/v1",
            "Deployment",
            Some(NS),
            "order-service",
            json!({
                "observedGeneration": generation,
                "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
            }),
        )
        .expect("status written");
    assert_eq!(
        written["spec"], before["spec"],
        "a status write leaves the spec alone"
    );
    assert_eq!(
        written["metadata"]["generation"],
        before["metadata"]["generation"]
    );
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), waiting)
        .await
        .expect("the wait ends")
        .expect("task")
        .expect("watch")
        .expect("deployment exists");
    assert_eq!(done.status.and_then(|s| s.ready_replicas), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn server_side_apply_creates_then_updates_and_is_idempotent() {
    let server = seeded().await;
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client(&server).await);
    let apply = PatchParams::apply("warroom-playbook");
    let limits = |rps: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gateway-limits"}, "data": {"rps": rps}});
    let created = config_maps
        .patch("gateway-limits", &apply, &Patch::Apply(limits("50")))
        .await
        .expect("apply creates");
    assert_eq!(
        created
            .data
            .as_ref()
            .and_then(|d| d.get("rps"))
            .map(String::as_str),
        Some("50")
    );
    let changed = config_maps
        .patch("gateway-limits", &apply, &Patch::Apply(limits("5")))
        .await
        .expect("apply updates");
    assert_eq!(
        stored(&server.store(), "v1", "ConfigMap", "gateway-limits")["data"]["rps"],
        "5"
    );
    let again = config_maps
        .patch("gateway-limits", &apply, &Patch::Apply(limits("5")))
        .await
        .expect("re-apply");
    assert_eq!(rv(&again), rv(&changed));

    let http = reqwest::Client::new();
    let url = format!(
        "{}/api/v1/namespaces/orders/configmaps/gateway-limits",
        server.url()
    );
    let yaml =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gateway-limits\ndata:\n  rps: \"7\"\n";
    let response = http
        .patch(format!("{url}?fieldManager=kubectl"))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(yaml)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 200);
    assert_eq!(
        stored(&server.store(), "v1", "ConfigMap", "gateway-limits")["data"]["rps"],
        "7"
    );
    let response = http
        .patch(&url)
        .header("Content-Type", "application/apply-patch+yaml")
        .body(yaml)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 422, "apply needs a field manager");
    server.stop().await;
}

#[tokio::test]
async fn the_request_log_shows_dry_runs_and_writes() {
    let server = seeded().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    server.requests().clear();
    let scale = Patch::Merge(json!({"spec": {"replicas": 1}}));
    deployments
        .patch_scale("order-service", &PatchParams::default().dry_run(), &scale)
        .await
        .expect("dry run");
    deployments
        .patch_scale("order-service", &PatchParams::default(), &scale)
        .await
        .expect("scale");
    deployments.get("order-service").await.expect("get");
    let writes: Vec<_> = server
        .requests()
        .entries()
        .into_iter()
        .filter(|r| r.is_write())
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert!(
        writes[0].is_dry_run() && !writes[1].is_dry_run(),
        "{writes:?}"
    );
    assert!(writes.iter().all(|r| {
        r.method == "PATCH"
            && r.status == 200
            && r.path_and_query
                .contains("/deployments/order-service/scale")
    }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watchers_list_then_follow_changes() {
    use kube::runtime::watcher::{self, Event};
    let server = seeded().await;
    let deployments: Api<Deployment> = Api::default_namespaced(client(&server).await);
    for (strategy, config) in [
        ("list then watch", watcher::Config::default()),
        (
            "streaming list",
            watcher::Config::default().streaming_lists(),
        ),
    ] {
        let config = config.fields("metadata.name=order-service").timeout(60);
        let mut events = watcher::watcher(deployments.clone(), config).boxed();
        let mut listed = Vec::new();
        loop {
            match events.try_next().await.expect("watcher event") {
                Some(Event::Init) => {}
                Some(Event::InitApply(d)) => listed.push(replicas(&d)),
                Some(Event::InitDone) => break,
                other => panic!("{strategy}: unexpected {other:?}"),
            }
        }
        let current = replicas(&deployments.get("order-service").await.expect("get"));
        assert_eq!(listed, [current], "{strategy}");
        let wanted = current + 1;
        deployments
            .patch_scale(
                "order-service",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": wanted}})),
            )
            .await
            .expect("scale");
        match events.try_next().await.expect("watcher event") {
            Some(Event::Apply(d)) => assert_eq!(replicas(&d), wanted, "{strategy}"),
            other => panic!("{strategy}: expected Apply, got {other:?}"),
        }
    }
    let streamed = server
        .requests()
        .entries()
        .iter()
        .any(|r| r.path_and_query.contains("sendInitialEvents=true"));
    assert!(streamed, "the streaming watcher asked for initial events");
    server.stop().await;
}

#[tokio::test]
async fn a_watch_from_a_version_no_longer_kept_ends_with_410_expired() {
    let server = seeded().await;
    let store = server.store();
    let oldest = store.revision();
    for n in 0..5000 {
        let mut cm = stored(&store, "v1", "ConfigMap", "order-service-lock");
        cm["data"]["COUNTER"] = json!(n.to_string());
        store.put(cm).expect("put");
    }
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client(&server).await);
    let mut events = config_maps
        .watch(&WatchParams::default(), &oldest.to_string())
        .await
        .expect("watch opens")
        .boxed();
    match events.try_next().await.expect("an event") {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected ERROR 410, got {other:?}"),
    }
    // Recent history is still replayed.
    let recent = (store.revision() - 1).to_string();
    let mut events = config_maps
        .watch(&WatchParams::default(), &recent)
        .await
        .expect("watch")
        .boxed();
    match events.try_next().await.expect("an event") {
        Some(WatchEvent::Modified(cm)) => {
            assert_eq!(
                cm.data.and_then(|d| d.get("COUNTER").cloned()).as_deref(),
                Some("4999")
            );
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_writes_with_resource_versions_lose_no_update() {
    // Eight operators bump a counter annotation with read, modify, replace;
    // a 409 means re-read and try again. Optimistic concurrency must neither
    // lose an increment nor let two writers through on one version.
    let server = seeded().await;
    let kube = client(&server).await;
    const WRITERS: usize = 8;
    const INCREMENTS: usize = 25;
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let config_maps: Api<ConfigMap> = Api::default_namespaced(kube.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let mut cm = config_maps.get("order-service-lock").await.expect("get");
                    let annotations = cm.metadata.annotations.get_or_insert_default();
                    let count: usize = annotations
                        .get("bumps")
                        .map_or(0, |v| v.parse().expect("number"));
                    annotations.insert("bumps".into(), (count + 1).to_string());
                    match config_maps
                        .replace("order-service-lock", &PostParams::default(), &cm)
                        .await
                    {
                        Ok(_) => break,
                        Err(kube::Error::Api(status)) if status.code == 409 => conflicts += 1,
                        Err(e) => panic!("replace failed: {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.expect("writer");
    }
    let cm = stored(&server.store(), "v1", "ConfigMap", "order-service-lock");
    assert_eq!(
        cm["metadata"]["annotations"]["bumps"],
        (WRITERS * INCREMENTS).to_string()
    );
    eprintln!("{conflicts} conflicts retried");
    server.stop().await;
}

#[tokio::test]
async fn unknown_fields_are_dropped_with_a_warning_or_refused_when_strict() {
    let server = seeded().await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/apis/apps/v1/namespaces/orders/deployments/order-service",
        server.url()
    );
    let typo = r#"{"spec":{"replcas":1}}"#;
    let response = http
        .patch(&url)
        .header("Content-Type", "application/merge-patch+json")
        .body(typo)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 200);
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.replcas\"""#]);
    let d = stored(&server.store(), "apps/v1", "Deployment", "order-service");
    assert!(d["spec"].get("replcas").is_none(), "{d}");
    assert_eq!(d["spec"]["replicas"], 8);

    let response = http
        .patch(format!("{url}?fieldValidation=Strict"))
        .header("Content-Type", "application/merge-patch+json")
        .body(typo)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["message"],
        r#"strict decoding error: unknown field "spec.replcas""#
    );

    // Custom kinds have no schema here: everything is kept.
    let plugin = json!({"apiVersion": "configuration.konghq.com/v1", "kind": "KongPlugin",
        "metadata": {"name": "orders-rate-limit"}, "plugin": "rate-limiting", "config": {"second": 50}});
    let response = http
        .post(format!("{}/apis/configuration.konghq.com/v1/namespaces/orders/kongplugins?fieldValidation=Strict", server.url()))
        .json(&plugin)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 201);
    server.stop().await;
}

mod wire {
    //! Arbitrary requests over the wire never bring the server down.

    use std::sync::OnceLock;

    use proptest::prelude::*;
    use warroom::cluster::ClusterServer;

    struct Shared {
        runtime: tokio::runtime::Runtime,
        url: String,
        _server: ClusterServer,
    }

    fn shared() -> &'static Shared {
        static SHARED: OnceLock<Shared> = OnceLock::new();
        SHARED.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let server = runtime
                .block_on(ClusterServer::start_seeded(
                    "127.0.0.1:0".parse().expect("address"),
                ))
                .expect("starts");
            Shared {
                runtime,
                url: server.url(),
                _server: server,
            }
        })
    }

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("api".to_string()),
            Just("apis".to_string()),
            Just("apps".to_string()),
            Just("v1".to_string()),
            Just("namespaces".to_string()),
            Just("orders".to_string()),
            Just("deployments".to_string()),
            Just("order-service".to_string()),
            Just("configmaps".to_string()),
            Just("order-service-lock".to_string()),
            Just("scale".to_string()),
            Just("status".to_string()),
            "[a-zA-Z0-9%._~-]{0,12}",
        ];
        (
            prop::collection::vec(segment, 0..8),
            "[a-zA-Z0-9=&%+._-]{0,40}",
        )
            .prop_map(|(segments, query)| format!("/{}?{query}", segments.join("/")))
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            Just(br#"{"spec":{"replicas":1}}"#.to_vec()),
            Just(br#"[{"op":"replace","path":"","value":[1]}]"#.to_vec()),
            Just(br#"{"metadata":{"resourceVersion":"x"},"spec":null,"status":7}"#.to_vec()),
            Just(br#"{"data":{"LOCK_MODE":{"nested":true}},"metadata":{"labels":[1]}}"#.to_vec()),
            Just(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":99999999999,"selector":"all"}}"#.to_vec()),
            "\\PC{0,80}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_requests_get_an_answer_and_the_server_keeps_serving(
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("PATCH"), Just("DELETE")],
            path in path(),
            content_type in prop_oneof![
                Just("application/json"),
                Just("application/merge-patch+json"),
                Just("application/strategic-merge-patch+json"),
                Just("application/json-patch+json"),
                Just("text/plain"),
            ],
            body in body(),
        ) {
            let shared = shared();
            shared.runtime.block_on(async {
                let http = reqwest::Client::new();
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let response = http
                    .request(method, format!("{}{path}", shared.url))
                    .header("Content-Type", content_type)
                    .body(body)
                    .send()
                    .await
                    .expect("every request is answered");
                if !response.status().is_success() {
                    let status: serde_json::Value = response.json().await.expect("failures are Status bodies");
                    assert_eq!(status["kind"], "Status");
                }
                let health = http
                    .get(format!("{}/apis/apps/v1/namespaces/orders/deployments", shared.url))
                    .send()
                    .await
                    .expect("still serving");
                assert!(health.status().is_success());
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warroom_cluster_command_serves_until_interrupted() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("local.kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["cluster", "--listen", "127.0.0.1:0", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("warroom runs");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = lines
        .next_line()
        .await
        .expect("reads")
        .expect("a first line");
    let url = first
        .strip_prefix("local cluster serving at ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    let second = lines
        .next_line()
        .await
        .expect("reads")
        .expect("a second line");
    assert_eq!(
        second,
        format!("kubeconfig written to {}", kubeconfig.display())
    );
    let written = std::fs::read_to_string(&kubeconfig).expect("kubeconfig written");
    assert!(written.contains(&format!("server: {url}")), "{written}");

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&written).expect("parses"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("usable");
    let deployments: Api<Deployment> =
        Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    assert_eq!(
        replicas(&deployments.get("order-service").await.expect("seeded")),
        8
    );

    let pid = child.id().expect("running") as libc::pid_t;
    // SAFETY: sending SIGINT to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = child.wait().await.expect("exits");
    assert_eq!(status.code(), Some(0));

    // A taken address is refused with exit 2 and a message naming it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["cluster", "--listen", &addr, "--kubeconfig-out"])
        .arg(dir.path().join("unused"))
        .output()
        .await
        .expect("warroom runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&addr));

    // Without authentication it never listens beyond loopback.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(["cluster", "--listen", "0.0.0.0:0", "--kubeconfig-out"])
        .arg(dir.path().join("unused"))
        .output()
        .await
        .expect("warroom runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    assert!(!dir.path().join("unused").exists());
}

#[tokio::test]
async fn escaped_paths_and_metadata_keys_are_read_as_the_api_server_reads_them() {
    let server = seeded().await;
    let http = reqwest::Client::new();
    let deployments = format!(
        "{}/apis/apps/v1/namespaces/orders/deployments",
        server.url()
    );
    // The path is decoded before it is split: %2D is '-'.
    let response = http
        .get(format!("{deployments}/order%2Dservice"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["metadata"]["name"], "order-service");
    // An escaped '#' is part of the name, not a fragment; an escaped '/'
    // is a separator once decoded; a broken escape is a bad request.
    for (path, code) in [
        ("order-service%23x", 404),
        ("order-service%2Fscale%2Fx", 404),
        ("order%zzservice", 400),
    ] {
        let response = http
            .get(format!("{deployments}/{path}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), code, "{path}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["kind"], "Status", "{status}");
    }
    // Annotation and label keys and label values are checked as the API
    // server checks them.
    let before = server.store().revision();
    for patch in [
        json!({"metadata": {"annotations": {"limit rps": "50"}}}),
        json!({"metadata": {"labels": {"a/b/c": "x"}}}),
        json!({"metadata": {"labels": {"app": "not a label value"}}}),
        json!({"spec": {"template": {"metadata": {"annotations": {"-x": "1"}}}}}),
    ] {
        let response = http
            .patch(format!("{deployments}/order-service"))
            .header("Content-Type", "application/merge-patch+json")
            .body(patch.to_string())
            .send()
            .await
            .expect("PATCH");
        assert_eq!(response.status(), 422, "{patch}");
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["reason"], "Invalid", "{status}");
    }
    assert_eq!(server.store().revision(), before, "nothing was stored");
    // A field name cannot end the quoted text of its warning.
    let response = http
        .patch(format!("{deployments}/order-service"))
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"spec":{"a\"b":1}}"#)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), 200);
    let warnings: Vec<String> = response
        .headers()
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    assert_eq!(warnings, [r#"299 - "unknown field \"spec.a\\\"b\"""#]);
    server.stop().await;
}
