//! What a change may touch, checked before anything is sent or recorded.
//!
//! A change records the values it replaces (the `warroom.io/previous`
//! annotation on the object, the run record in `warroom-runs`) so that it can
//! be undone, and warroom never keeps a secret in clear. So a change whose
//! field names a secret, or whose value before or after looks like one (as
//! [`crate::redact`] decides), is refused: in validation when the playbook or
//! its parameters show it, in the plan when the cluster's current value
//! does. The same rules are applied to run records before `warroom undo`
//! writes anything from them, since a record can be edited by hand.
//!
//! It also knows which keys the API server accepts in the maps a change
//! touches (annotation and label keys, label values, ConfigMap keys), which
//! fields a change must never touch (`apiVersion`, `kind`, the object's
//! name and namespace, warroom's own annotations), and which kinds warroom
//! does not change at all (Secrets).

use serde_json::Value;

use super::record::{self, FieldChange};
use super::template::references;
use crate::kube::{ObjectRef, names};
use crate::redact;

/// Why a secret cannot be part of a change, and what to do instead.
pub const SECRET_ADVICE: &str = "warroom records every value a change replaces (annotation \
     warroom.io/previous, ConfigMap warroom-runs) and never keeps a secret in clear; keep the \
     secret in a Secret, change it with your secret manager or kubectl, and point the workload \
     at it (secretKeyRef/envFrom)";

/// Why Secrets cannot be changed at all.
pub const SECRET_KIND_ADVICE: &str = "steps cannot change Secrets: warroom records the values a \
     step replaces (warroom.io/previous annotation, warroom-runs ConfigMap) and never records \
     Secret values";

/// Whether a field or key name names a secret (`API_TOKEN`,
/// `REDIS_PASSWORD`, `clientKey`, …), as [`redact::redact_value`] decides
/// for structured payloads.
pub fn secret_named(key: &str) -> bool {
    let mut probe = serde_json::json!({ key: "x" });
    redact::redact_value(&mut probe);
    probe.get(key).and_then(Value::as_str) != Some("x")
}

/// Whether a value holds something that must not be stored in clear: a
/// string [`redact::contains_secret`] flags, a structure in which
/// [`redact::redact_value`] would hide something, or an environment-style
/// `{name: SECRET_NAME, value: …}` entry.
pub fn secret_value(value: &Value) -> bool {
    match value {
        Value::String(text) => redact::contains_secret(text),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
        Value::Array(items) => items.iter().any(secret_value),
        Value::Object(map) => {
            let named_entry = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(secret_named)
                && map.get("value").is_some_and(|v| !v.is_null());
            if named_entry {
                return true;
            }
            let mut copy = value.clone();
            redact::redact_value(&mut copy);
            copy != *value || map.values().any(secret_value)
        }
    }
}

/// The kind of object warroom never changes.
pub fn is_secret_kind(target: &ObjectRef) -> bool {
    target.api_version.trim() == "v1" && target.kind.trim().eq_ignore_ascii_case("secret")
}

/// One field a change touches: the path as JSON-pointer tokens and the
/// value written there (`None`: removed), with the parameters the playbook
/// text of that path and value refers to.
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    /// Path tokens (unescaped).
    pub tokens: Vec<String>,
    /// The value written (`None`: removed or only read).
    pub value: Option<Value>,
    /// Parameters referred to by the text that produced this field.
    pub references: Vec<String>,
}

impl Touched {
    /// The field as a person reads it (`metadata.annotations["a/b"]`).
    pub fn shown(&self) -> String {
        record::display_tokens(&self.tokens)
    }
}

/// The fields a merge patch touches: every leaf, with the parameters that
/// its keys and value refer to in the raw (unrendered) patch. `quiet`
/// renders a raw key the way the patch was rendered.
pub fn touched_by_merge(
    raw: &Value,
    rendered: &Value,
    quiet: &dyn Fn(&str) -> String,
) -> Vec<Touched> {
    let mut out = Vec::new();
    walk(raw, rendered, &mut Vec::new(), &[], quiet, &mut out);
    out
}

fn walk(
    raw: &Value,
    rendered: &Value,
    tokens: &mut Vec<String>,
    refs: &[String],
    quiet: &dyn Fn(&str) -> String,
    out: &mut Vec<Touched>,
) {
    match (raw, rendered) {
        (Value::Object(raw_map), Value::Object(rendered_map)) if !rendered_map.is_empty() => {
            for (raw_key, raw_child) in raw_map {
                let key = quiet(raw_key);
                let Some(child) = rendered_map.get(&key) else {
                    continue;
                };
                let mut child_refs = refs.to_vec();
                child_refs.extend(references(raw_key));
                tokens.push(key);
                walk(raw_child, child, tokens, &child_refs, quiet, out);
                tokens.pop();
            }
        }
        _ => {
            let mut refs = refs.to_vec();
            collect_references(raw, &mut refs);
            out.push(Touched {
                tokens: tokens.clone(),
                value: (!rendered.is_null()).then(|| rendered.clone()),
                references: refs,
            });
        }
    }
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.extend(references(text)),
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, out)),
        Value::Object(map) => {
            for (key, value) in map {
                out.extend(references(key));
                collect_references(value, out);
            }
        }
        _ => {}
    }
}

/// The fields a JSON patch touches: each operation's `path` (and `from`)
/// with the leaves of its `value`.
pub fn touched_by_json(
    raw: &Value,
    rendered: &json_patch::Patch,
    quiet: &dyn Fn(&str) -> String,
) -> Vec<Touched> {
    let raw_ops = raw.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (index, op) in rendered.0.iter().enumerate() {
        let raw_op = raw_ops.get(index).cloned().unwrap_or(Value::Null);
        let op_value = serde_json::to_value(op).unwrap_or(Value::Null);
        let mut refs = Vec::new();
        for field in ["path", "from"] {
            if let Some(text) = raw_op.get(field).and_then(Value::as_str) {
                refs.extend(references(text));
            }
        }
        let mut paths = Vec::new();
        if let Some(path) = op_value.get("path").and_then(Value::as_str) {
            paths.push((path.to_owned(), op_value.get("value").cloned()));
        }
        if let Some(from) = op_value.get("from").and_then(Value::as_str) {
            paths.push((from.to_owned(), None));
        }
        for (path, value) in paths {
            let mut tokens = record::pointer_tokens(&path);
            match value {
                Some(value) => {
                    let raw_value = raw_op.get("value").cloned().unwrap_or(Value::Null);
                    walk(&raw_value, &value, &mut tokens, &refs, quiet, &mut out);
                }
                None => out.push(Touched {
                    tokens,
                    value: None,
                    references: refs.clone(),
                }),
            }
        }
    }
    out
}

/// Fields a change must never touch, and keys the API server would refuse,
/// for a field of `target`. Each problem is a sentence.
pub fn field_problems(target: &ObjectRef, tokens: &[String], value: Option<&Value>) -> Vec<String> {
    let mut problems = Vec::new();
    let config_map = target.api_version.trim() == "v1" && target.kind.trim() == "ConfigMap";
    for (index, token) in tokens.iter().enumerate() {
        let parent = &tokens[..index];
        let last = index + 1 == tokens.len();
        let under = |path: &[&str]| parent.ends_with_strs(path);
        if index == 0 && matches!(token.as_str(), "apiVersion" | "kind") {
            problems.push(format!(
                "a change cannot set `{token}`: it would write another kind of object"
            ));
        }
        if parent == ["metadata"] && matches!(token.as_str(), "name" | "namespace") {
            problems.push(format!(
                "a change cannot set metadata.{token}: it would write another object"
            ));
        }
        if under(&["metadata", "annotations"]) {
            if let Err(err) = names::qualified_name("annotation key", token) {
                problems.push(err);
            } else if token.starts_with("warroom.io/") {
                problems.push(format!(
                    "a change cannot set the annotation {token:?}: warroom keeps it to undo \
                     changes"
                ));
            }
        }
        if under(&["metadata", "labels"]) {
            if let Err(err) = names::qualified_name("label key", token) {
                problems.push(err);
            }
            if last
                && let Some(Value::String(text)) = value
                && let Err(err) = names::label_value(text)
            {
                problems.push(err);
            }
        }
        if config_map
            && index == 1
            && matches!(tokens[0].as_str(), "data" | "binaryData")
            && let Err(err) = names::config_map_key(token)
        {
            problems.push(err);
        }
    }
    if let Some(token) = tokens.iter().find(|t| secret_named(t)) {
        problems.push(format!(
            "`{token}` names a secret, so the values this change replaces would be kept in \
             clear; {SECRET_ADVICE}"
        ));
    } else if value.is_some_and(secret_value) {
        problems.push(format!(
            "the value looks like a secret (a password, token or credential) and would be kept \
             in clear; {SECRET_ADVICE}"
        ));
    }
    problems
}

trait EndsWithStrs {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool;
}

impl EndsWithStrs for [String] {
    fn ends_with_strs(&self, suffix: &[&str]) -> bool {
        self.len() >= suffix.len()
            && self[self.len() - suffix.len()..]
                .iter()
                .zip(suffix)
                .all(|(a, b)| a == b)
    }
}

/// Text read from the cluster (a run record can be edited by hand) made safe
/// for a terminal: control characters are written as escapes.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`printable`] for several lines: line breaks are kept.
pub fn printable_lines(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a change read from the cluster or from a run record cannot be made
/// (`None`: it can): its path or a value before or after it names or looks
/// like a secret. Values are never part of the answer.
pub fn secret_in_change(change: &FieldChange) -> Option<String> {
    let tokens = record::pointer_tokens(&change.path);
    let shown = record::display_tokens(&tokens);
    if let Some(token) = tokens.iter().find(|t| secret_named(t)) {
        return Some(format!("{shown}: `{token}` names a secret"));
    }
    if change.before.as_ref().is_some_and(secret_value) {
        return Some(format!("{shown}: its current value looks like a secret"));
    }
    if change.after.as_ref().is_some_and(secret_value) {
        return Some(format!("{shown}: the new value looks like a secret"));
    }
    None
}

/// Why a target read from a run record cannot be acted on (`None`: it can):
/// a kind warroom never changes, or names the API server would refuse.
pub fn record_target_problem(target: &ObjectRef) -> Option<String> {
    if is_secret_kind(target) {
        return Some(SECRET_KIND_ADVICE.to_owned());
    }
    if let Err(err) = target.check() {
        return Some(err.to_string());
    }
    if let Some(namespace) = &target.namespace
        && let Err(err) = names::namespace(namespace)
    {
        return Some(err);
    }
    names::object_name(&target.kind, &target.name).err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_names_and_values_are_decided_by_the_redactor() {
        for key in [
            "API_TOKEN",
            "REDIS_PASSWORD",
            "clientKey",
            "db-passwd",
            "secret",
        ] {
            assert!(secret_named(key), "{key}");
        }
        for key in [
            "LOCK_MODE",
            "replicas",
            "nginx.ingress.kubernetes.io/limit-rps",
            "fencing_token",
        ] {
            assert!(!secret_named(key), "{key}");
        }
        assert!(secret_value(&json!("redis://:hunter2@redis:6379")));
        assert!(secret_value(
            &json!([{"name": "API_TOKEN", "value": "abc"}])
        ));
        assert!(secret_value(&json!({"password": "abc"})));
        assert!(!secret_value(&json!("watch")));
        assert!(!secret_value(&json!({"replicas": 3})));
    }

    #[test]
    fn keys_the_api_server_refuses_are_found() {
        let ingress = ObjectRef::namespaced("networking.k8s.io/v1", "Ingress", "orders", "gw");
        let tokens = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let value = json!("50");
        assert!(
            field_problems(
                &ingress,
                &tokens(&[
                    "metadata",
                    "annotations",
                    "nginx.ingress.kubernetes.io/limit-rps"
                ]),
                Some(&value)
            )
            .is_empty()
        );
        for bad in [
            &["metadata", "annotations", "bad key"][..],
            &["metadata", "annotations", "warroom.io/previous"],
            &["metadata", "labels", "a/b/c"],
            &["metadata", "name"],
            &["kind"],
        ] {
            assert!(
                !field_problems(&ingress, &tokens(bad), Some(&value)).is_empty(),
                "{bad:?}"
            );
        }
        let cm = ObjectRef::namespaced("v1", "ConfigMap", "orders", "c");
        assert!(!field_problems(&cm, &tokens(&["data", "a b"]), Some(&value)).is_empty());
        assert!(!field_problems(&cm, &tokens(&["data", "API_TOKEN"]), Some(&value)).is_empty());
    }
}
