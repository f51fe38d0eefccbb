//! What each kind adds to plain object storage: defaults filled in on write,
//! validation (decoding through the k8s-openapi types, then the rules the
//! real API server enforces on the fields drills and playbooks use), the
//! Deployment status the server converges to, and the `scale` subresource.
//!
//! This file knows Kubernetes object shapes; it knows nothing about HTTP or
//! how objects are stored.

use serde_json::{Map, Value, json};

use super::resources::ResourceType;
use super::status::{ApiError, FieldCause};

/// The autoscaling/v1 `Scale` kind, for messages about the scale subresource.
pub static SCALE_TYPE: ResourceType = ResourceType {
    group: "autoscaling",
    version: "v1",
    plural: "scale",
    singular: "scale",
    kind: "Scale",
    namespaced: true,
    short_names: &[],
    tracks_generation: false,
    has_status: false,
    has_scale: false,
    categories: &[],
};

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric \
     characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
     or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' \
     or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
     '[-._a-zA-Z0-9]+')";

const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or \
     '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  \
     or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'), \
     with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
     'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// An annotation or label key: `[prefix/]name`.
fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_qualified_part(name),
        None => is_qualified_part(s),
    }
}

/// The annotation and label rules the API server applies to every object's
/// metadata (and a Deployment's pod template metadata).
fn metadata_causes(obj: &Value, causes: &mut Vec<FieldCause>) {
    for (pointer, field) in [
        ("/metadata", "metadata"),
        ("/spec/template/metadata", "spec.template.metadata"),
    ] {
        let Some(meta) = obj.pointer(pointer) else {
            continue;
        };
        if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
            for key in annotations.keys() {
                // As the API server does: annotation keys are checked lower-cased.
                if !is_qualified_name(&key.to_ascii_lowercase()) {
                    causes.push(FieldCause::invalid(
                        &format!("{field}.annotations"),
                        format!("{key:?}"),
                        QUALIFIED_NAME,
                    ));
                }
            }
        }
        if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
            for (key, value) in labels {
                if !is_qualified_name(key) {
                    causes.push(FieldCause::invalid(
                        &format!("{field}.labels"),
                        format!("{key:?}"),
                        QUALIFIED_NAME,
                    ));
                }
                if let Some(value) = value.as_str()
                    && !(value.is_empty() || is_qualified_part(value))
                {
                    causes.push(FieldCause::invalid(
                        &format!("{field}.labels"),
                        format!("{value:?}"),
                        LABEL_VALUE,
                    ));
                }
            }
        }
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// Sets a nested field, creating the maps on the way; refuses (400) when a
/// field on the way holds something other than a map.
pub fn set_field(obj: &mut Value, path: &[&str], value: Value) -> Result<(), ApiError> {
    let Some((last, parents)) = path.split_last() else {
        *obj = value;
        return Ok(());
    };
    let mut at = obj;
    for key in parents {
        let Some(map) = at.as_object_mut() else {
            return Err(ApiError::bad_request(format!("{key}: expected an object")));
        };
        at = map.entry(*key).or_insert_with(|| json!({}));
    }
    match at.as_object_mut() {
        Some(map) => {
            map.insert((*last).to_string(), value);
            Ok(())
        }
        None => Err(ApiError::bad_request(format!(
            "{}: expected an object",
            parents.join(".")
        ))),
    }
}

/// `metadata.name` of an object, if it is a string.
pub fn name_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

/// Checks that a name is acceptable for objects of this type.
pub fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let (ok, rule) = if rt.kind == "Namespace" {
        (is_dns1123_label(name), DNS1123_LABEL)
    } else {
        (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN)
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            vec![FieldCause::invalid(
                "metadata.name",
                format!("{name:?}"),
                rule,
            )],
        ))
    }
}

/// Fills in the defaults the real API server sets on write.
pub fn apply_defaults(rt: &ResourceType, obj: &mut Value) {
    match rt.kind {
        "Deployment" => {
            let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            spec.entry("replicas").or_insert(json!(1));
            spec.entry("revisionHistoryLimit").or_insert(json!(10));
            spec.entry("progressDeadlineSeconds").or_insert(json!(600));
            spec.entry("strategy").or_insert(json!({
                "type": "RollingUpdate",
                "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": "25%" }
            }));
        }
        "Namespace" => {
            let name = name_of(obj).unwrap_or_default().to_string();
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            if let Some(map) = obj.as_object_mut() {
                map.entry("spec")
                    .or_insert_with(|| json!({ "finalizers": ["kubernetes"] }));
                map.entry("status")
                    .or_insert_with(|| json!({ "phase": "Active" }));
            }
        }
        "Pod" => {
            if let Some(map) = obj.as_object_mut() {
                map.entry("status")
                    .or_insert_with(|| json!({ "phase": "Pending" }));
            }
        }
        _ => {}
    }
}

fn decode<T: serde::de::DeserializeOwned>(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    serde_json::from_value::<T>(obj.clone())
        .map(|_| ())
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                rt.kind, rt.version, rt.kind
            ))
        })
}

/// Validates an object about to be stored: shape (it must decode as its
/// kind), then the field rules. `obj` already carries apiVersion, kind,
/// namespace and name.
pub fn validate(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{apps, coordination, core, networking};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    let name = name_of(obj).unwrap_or_default();
    if !obj.is_object() {
        return Err(ApiError::bad_request("the object must be a JSON object"));
    }
    // Required fields are reported as Invalid after the types check out, so
    // the decode below sees placeholders for them.
    let mut missing = Vec::new();
    let mut shape = obj.clone();
    if rt.kind == "Deployment" {
        for field in ["selector", "template"] {
            if obj
                .pointer(&format!("/spec/{field}"))
                .is_none_or(Value::is_null)
            {
                missing.push(FieldCause::required(&format!("spec.{field}")));
                if let Some(spec) = shape.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert(field.into(), json!({}));
                }
            }
        }
    }
    let obj = &shape;
    match rt.kind {
        "Namespace" => decode::<core::v1::Namespace>(rt, obj)?,
        "Pod" => decode::<core::v1::Pod>(rt, obj)?,
        "ConfigMap" => decode::<core::v1::ConfigMap>(rt, obj)?,
        "Deployment" => decode::<apps::v1::Deployment>(rt, obj)?,
        "ReplicaSet" => decode::<apps::v1::ReplicaSet>(rt, obj)?,
        "Event" => decode::<core::v1::Event>(rt, obj)?,
        "Ingress" => decode::<networking::v1::Ingress>(rt, obj)?,
        "Lease" => decode::<coordination::v1::Lease>(rt, obj)?,
        _ => {
            let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
            serde_json::from_value::<ObjectMeta>(meta).map_err(|e| {
                ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: metadata: {e}",
                    rt.kind, rt.version, rt.kind
                ))
            })?;
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::invalid(rt, name, missing));
    }
    validate_name(rt, name)?;
    let mut causes = Vec::new();
    metadata_causes(obj, &mut causes);
    match rt.kind {
        "Deployment" => {
            if let Some(replicas) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
                && replicas < 0
            {
                causes.push(FieldCause::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                ));
            }
            let selector = obj
                .pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object);
            let labels = obj
                .pointer("/spec/template/metadata/labels")
                .and_then(Value::as_object);
            if let Some(selector) = selector {
                let matches = selector
                    .iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|lv| lv == v));
                if !matches {
                    causes.push(FieldCause::invalid(
                        "spec.template.metadata.labels",
                        Value::Object(labels.cloned().unwrap_or_default()),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
        "ConfigMap" => {
            for field in ["data", "binaryData"] {
                if let Some(map) = obj.get(field).and_then(Value::as_object) {
                    for key in map.keys() {
                        let ok = !key.is_empty()
                            && key.len() <= 253
                            && key
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                            && key != "."
                            && key != "..";
                        if !ok {
                            causes.push(FieldCause::invalid(
                                &format!("{field}[{key}]"),
                                format!("{key:?}"),
                                CONFIG_KEY,
                            ));
                        }
                    }
                }
            }
        }
        "Lease" => {
            if let Some(secs) = obj
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
                && secs <= 0
            {
                causes.push(FieldCause::invalid(
                    "spec.leaseDurationSeconds",
                    secs,
                    "must be greater than 0",
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(rt, name, causes))
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(obj.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// Removes the fields its kind does not define from `obj`, as the real API
/// server does when it decodes a built-in kind, and returns their paths
/// (`spec.replicaz`, `spec.template.spec.containers[0].imagee`). Custom kinds
/// have no schema here and lose nothing. Null values are left alone, and an
/// object that does not decode is left as it is (that is reported by
/// [`validate`]).
pub fn drop_unknown_fields(rt: &ResourceType, obj: &mut Value) -> Vec<String> {
    use k8s_openapi::api::{apps, coordination, core, networking};
    let known = match rt.kind {
        "Namespace" => round_trip::<core::v1::Namespace>(obj),
        "Pod" => round_trip::<core::v1::Pod>(obj),
        "ConfigMap" => round_trip::<core::v1::ConfigMap>(obj),
        "Deployment" => round_trip::<apps::v1::Deployment>(obj),
        "ReplicaSet" => round_trip::<apps::v1::ReplicaSet>(obj),
        "Event" => round_trip::<core::v1::Event>(obj),
        "Ingress" => round_trip::<networking::v1::Ingress>(obj),
        "Lease" => round_trip::<coordination::v1::Lease>(obj),
        _ => None,
    };
    let mut unknown = Vec::new();
    if let Some(known) = known {
        prune_unknown(obj, &known, "", &mut unknown);
    }
    unknown
}

fn prune_unknown(given: &mut Value, known: &Value, path: &str, unknown: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => {
            let mut dropped = Vec::new();
            for (key, value) in given.iter_mut().filter(|(_, v)| !v.is_null()) {
                let at = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(k) => prune_unknown(value, k, &at, unknown),
                    None => {
                        dropped.push(key.clone());
                        unknown.push(at);
                    }
                }
            }
            for key in dropped {
                given.remove(&key);
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (g, k)) in given.iter_mut().zip(known).enumerate() {
                prune_unknown(g, k, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Removes null values and empty maps and lists from maps, depth first.
fn prune_empty(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for v in map.values_mut() {
                prune_empty(v);
            }
            map.retain(|_, v| match v {
                Value::Null => false,
                Value::Object(m) => !m.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune_empty),
        _ => {}
    }
}

/// A short stable hash of a pod template, in the alphabet Kubernetes uses
/// for ReplicaSet name suffixes (`order-service-<hash>`). Nulls and empty
/// maps and lists are left out first, so spellings of the same template (a
/// `creationTimestamp: null` or `resources: {}` kubectl adds, an empty
/// list) hash alike, as Go's `omitempty` makes them alike.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut normal = template.clone();
    prune_empty(&mut normal);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in normal.to_string().bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn condition(
    kind: &str,
    reason: &str,
    message: String,
    now: &str,
    previous: Option<&Value>,
) -> Value {
    let transition = previous
        .and_then(|conds| conds.as_array())
        .and_then(|conds| {
            conds.iter().find(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now));
    json!({
        "type": kind,
        "status": "True",
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    })
}

/// Sets a Deployment's status to "rolled out": every replica updated, ready
/// and available, observedGeneration caught up, Available and Progressing
/// conditions true.
pub fn converge_deployment(obj: &mut Value, now: &str) {
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = obj
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let name = name_of(obj).unwrap_or_default().to_string();
    let hash = template_hash(obj.pointer("/spec/template").unwrap_or(&Value::Null));
    let previous = obj.pointer("/status/conditions").cloned();
    let status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            condition(
                "Available",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".to_string(),
                now,
                previous.as_ref(),
            ),
            condition(
                "Progressing",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{name}-{hash}\" has successfully progressed."),
                now,
                previous.as_ref(),
            ),
        ],
    });
    if let Some(map) = obj.as_object_mut() {
        map.insert("status".into(), status);
    }
}

/// The `Scale` view of a Deployment.
pub fn scale_of(deployment: &Value) -> Value {
    let meta = deployment.get("metadata").cloned().unwrap_or_default();
    let mut scale_meta = Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(key) {
            scale_meta.insert(key.into(), v.clone());
        }
    }
    let selector = deployment
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": { "replicas": deployment.pointer("/spec/replicas").cloned().unwrap_or(json!(0)) },
        "status": {
            "replicas": deployment.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

/// The replica count a (patched or submitted) `Scale` asks for.
pub fn replicas_of_scale(scale: &Value, name: &str) -> Result<i64, ApiError> {
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .filter(|r| i32::try_from(*r).is_ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: \
                     expected an int32, got {v}"
                ))
            })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            &SCALE_TYPE,
            name,
            vec![FieldCause::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        ));
    }
    Ok(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123() {
        assert!(is_dns1123_subdomain("order-service"));
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("Order"));
        assert!(!is_dns1123_subdomain("-x"));
        assert!(!is_dns1123_subdomain(""));
        assert!(!is_dns1123_label("a.b"));
    }

    #[test]
    fn unknown_fields_are_dropped_and_named_by_path() {
        let rt = crate::cluster::resources::by_kind("apps/v1", "Deployment").expect("served");
        let mut d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "labels": {"any": "label"}, "creationTimestamp": null},
            "spec": {"replicaz": 2, "selector": {}, "template": {"spec": {"containers": [
                {"name": "app", "imagee": "a:1", "env": []}
            ]}}},
        });
        assert_eq!(
            drop_unknown_fields(rt, &mut d),
            ["spec.replicaz", "spec.template.spec.containers[0].imagee"]
        );
        assert!(d["spec"].get("replicaz").is_none());
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0],
            json!({"name": "app", "env": []})
        );
        assert_eq!(d["metadata"]["labels"]["any"], "label");
        assert!(drop_unknown_fields(rt, &mut d).is_empty());
    }

    #[test]
    fn template_hashes_ignore_how_the_template_is_spelled() {
        let plain =
            json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x"}]}});
        let spelled = json!({"metadata": {"labels": {"app": "x"}, "creationTimestamp": null}, "spec": {"containers": [{"name": "x", "resources": {}, "env": []}]}});
        assert_eq!(template_hash(&plain), template_hash(&spelled));
        let other =
            json!({"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "x"}]}});
        assert_ne!(template_hash(&plain), template_hash(&other));
    }

    #[test]
    fn converged_deployment_reports_every_replica_ready() {
        let mut d = json!({"metadata": {"name": "x", "generation": 3}, "spec": {"replicas": 2, "template": {}}});
        converge_deployment(&mut d, "2026-11-26T23:00:00Z");
        assert_eq!(d["status"]["observedGeneration"], 3);
        assert_eq!(d["status"]["availableReplicas"], 2);
        assert_eq!(d["status"]["conditions"][0]["type"], "Available");
    }
}
