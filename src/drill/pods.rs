//! The cluster objects that show the drill's worker processes to kubectl:
//! one `ReplicaSet` per pod template (`order-service-<hash>`, owned by the
//! Deployment) and one `Pod` per process (`order-service-<hash>-<5 chars>`,
//! owned by its ReplicaSet), shaped as the real controllers and kubelet
//! write them, so that `kubectl get/describe pods,rs`, `kubectl logs
//! deploy/…` and `rollout status` read them as they would on a cluster.
//!
//! This file only builds JSON from what the supervisor knows; it starts no
//! process and writes nothing.

use serde_json::{Map, Value, json};

/// Label the ReplicaSet and its pods carry with the template hash.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Annotation carrying a pod's worker process id (for operators and tests).
pub const PID_ANNOTATION: &str = "warroom.dev/pid";
/// Node name the pods report: they run on this machine.
pub const NODE_NAME: &str = "localhost";
/// The address every worker has: this machine's loopback.
pub const POD_IP: &str = "127.0.0.1";

/// A pod name for a ReplicaSet: `<rs-name>-<5 chars>` in the alphabet
/// Kubernetes uses for generated names.
pub fn pod_name(replica_set: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{replica_set}-{suffix}")
}

/// The template's labels plus `pod-template-hash`.
fn labels_with_hash(template: &Value, hash: &str) -> Map<String, Value> {
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.into(), json!(hash));
    labels
}

fn owner(api_version: &str, kind: &str, owner: &Value) -> Value {
    json!([{
        "apiVersion": api_version,
        "kind": kind,
        "name": owner.pointer("/metadata/name").cloned().unwrap_or_default(),
        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// What a ReplicaSet's spec and status say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSetCounts {
    /// Pods the ReplicaSet is scaled to.
    pub desired: i64,
    /// Pods it has (not terminating).
    pub current: i64,
    /// Of those, ready ones.
    pub ready: i64,
}

/// The ReplicaSet `name` for `deployment`'s pod `template` (hash `hash`).
pub fn replica_set(
    deployment: &Value,
    template: &Value,
    name: &str,
    hash: &str,
    revision: u64,
    counts: ReplicaSetCounts,
) -> Value {
    let labels = labels_with_hash(template, hash);
    let mut template = template.clone();
    if let Some(map) = template.as_object_mut() {
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        meta["labels"] = Value::Object(labels.clone());
    }
    let mut selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    selector.insert(TEMPLATE_HASH_LABEL.into(), json!(hash));
    let replicas = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": deployment.pointer("/metadata/namespace").cloned().unwrap_or_default(),
            "labels": labels,
            "annotations": {
                "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                "deployment.kubernetes.io/max-replicas": (replicas + super::rollout::max_surge(replicas)).to_string(),
                "deployment.kubernetes.io/revision": revision.to_string(),
            },
            "ownerReferences": owner("apps/v1", "Deployment", deployment),
        },
        "spec": {
            "replicas": counts.desired,
            "selector": { "matchLabels": selector },
            "template": template,
        },
        "status": {
            "replicas": counts.current,
            "fullyLabeledReplicas": counts.current,
            "readyReplicas": counts.ready,
            "availableReplicas": counts.ready,
            "observedGeneration": 1,
        },
    })
}

/// The last time a pod's container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastExit {
    /// Exit code (128 + signal when killed by a signal).
    pub code: i32,
    /// `Error`, `Completed` or the signal's name.
    pub reason: String,
    /// RFC 3339 start of that run.
    pub started: String,
    /// RFC 3339 end of that run.
    pub finished: String,
}

/// What the supervisor knows about one pod, as the Pod object shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView<'a> {
    /// Pod name.
    pub name: &'a str,
    /// Its ReplicaSet's template hash.
    pub hash: &'a str,
    /// The worker process id, None while the container waits to restart.
    pub pid: Option<u32>,
    /// Whether the worker said it is ready.
    pub ready: bool,
    /// Container restarts so far.
    pub restarts: u32,
    /// RFC 3339 time the pod was started.
    pub started: &'a str,
    /// RFC 3339 time the current process was started.
    pub running_since: &'a str,
    /// The previous run's end, if there was one.
    pub last_exit: Option<&'a LastExit>,
    /// RFC 3339 deletion time once the pod is terminating.
    pub deleting: Option<&'a str>,
    /// Grace period the pod gets on termination, in seconds.
    pub grace_seconds: u64,
}

/// The Pod object for `pod`, from its ReplicaSet and the Deployment's template.
pub fn pod(template: &Value, replica_set: &Value, view: &PodView<'_>) -> Value {
    let container = template
        .pointer("/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap_or("worker")
        .to_string();
    let image = template
        .pointer("/spec/containers/0/image")
        .cloned()
        .unwrap_or_else(|| json!("warroom-drill-worker"));
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = json!(NODE_NAME);
    spec["restartPolicy"] = json!("Always");
    spec["terminationGracePeriodSeconds"] = json!(view.grace_seconds);
    let mut annotations = template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(pid) = view.pid {
        annotations.insert(PID_ANNOTATION.into(), json!(pid.to_string()));
    }
    let running = view.pid.is_some();
    let state = if running {
        json!({ "running": { "startedAt": view.running_since } })
    } else {
        json!({ "waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!("back-off restarting failed container {container} in pod {}", view.name),
        }})
    };
    let last_state = view.last_exit.map_or_else(
        || json!({}),
        |exit| {
            json!({ "terminated": {
                "exitCode": exit.code,
                "reason": exit.reason,
                "startedAt": exit.started,
                "finishedAt": exit.finished,
            }})
        },
    );
    let ready = running && view.ready && view.deleting.is_none();
    let condition = |kind: &str, status: bool| {
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": view.running_since,
        })
    };
    let mut metadata = json!({
        "name": view.name,
        "namespace": replica_set.pointer("/metadata/namespace").cloned().unwrap_or_default(),
        "labels": labels_with_hash(template, view.hash),
        "annotations": annotations,
        "ownerReferences": owner("apps/v1", "ReplicaSet", replica_set),
    });
    if let Some(deleting) = view.deleting {
        metadata["deletionTimestamp"] = json!(deleting);
        metadata["deletionGracePeriodSeconds"] = json!(view.grace_seconds);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                condition("PodReadyToStartContainers", true),
                condition("Initialized", true),
                condition("Ready", ready),
                condition("ContainersReady", ready),
                condition("PodScheduled", true),
            ],
            "hostIP": POD_IP,
            "hostIPs": [{ "ip": POD_IP }],
            "podIP": POD_IP,
            "podIPs": [{ "ip": POD_IP }],
            "startTime": view.started,
            "qosClass": "BestEffort",
            "containerStatuses": [{
                "name": container,
                "image": image,
                "imageID": "",
                "containerID": view.pid.map(|pid| format!("process://{pid}")),
                "ready": ready,
                "started": running,
                "restartCount": view.restarts,
                "state": state,
                "lastState": last_state,
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_named_after_their_replica_set() {
        let name = pod_name("order-service-7fbc9d");
        assert!(name.starts_with("order-service-7fbc9d-"));
        assert_eq!(name.len(), "order-service-7fbc9d-".len() + 5);
    }
}
