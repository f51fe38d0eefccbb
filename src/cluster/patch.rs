//! The three patch formats the API accepts: JSON merge patch (RFC 7386),
//! JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge is implemented for the shapes drills and playbooks use:
//! maps merge as in a merge patch, lists of objects that all carry a `name`
//! (containers, env, ports, volumes) merge by name, other lists are replaced,
//! and the `$patch: replace|delete` and `$setElementOrder/…`/`$retainKeys`
//! directives are honoured or dropped. Server-side apply
//! (`application/apply-patch+yaml`) is approximated as a strategic merge of
//! the applied configuration (fields a manager stops applying are not
//! removed; there is no field ownership). This file knows nothing about HTTP
//! or the store.

use serde_json::{Map, Value};

use super::status::ApiError;

/// How a PATCH body is to be applied, from its Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

/// The media types PATCH accepts, as the 415 message lists them.
pub const ACCEPTED: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

impl PatchType {
    /// The patch type for a Content-Type header value (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies `body` (the raw PATCH body) to `current`, returning the patched object.
pub fn apply(current: &Value, patch_type: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match patch_type {
        PatchType::Merge | PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: the patch must be a JSON object",
                ));
            }
            if patch_type == PatchType::Merge {
                json_patch::merge(&mut doc, &patch);
            } else {
                strategic_merge(&mut doc, &patch);
            }
        }
        PatchType::Apply => {
            let applied = applied_configuration(body)?;
            strategic_merge(&mut doc, &applied);
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(&mut doc, &patch.0).map_err(|e| {
                ApiError::unprocessable(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
        }
    }
    Ok(doc)
}

/// The object a server-side apply body describes (YAML, or JSON which is YAML).
pub fn applied_configuration(body: &[u8]) -> Result<Value, ApiError> {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("error decoding YAML: the body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
    };
    if !parsed.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration must be an object",
        ));
    }
    Ok(parsed)
}

/// Strategic merge of `patch` into `doc`.
pub fn strategic_merge(doc: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = Value::Object(without_directives(patch_map));
            return;
        }
        Some("delete") => {
            *doc = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(doc_map) = doc.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        if value.is_null() {
            doc_map.remove(key);
            continue;
        }
        match (doc_map.get_mut(key), value) {
            (Some(Value::Array(current)), Value::Array(items)) if keyed_by_name(items) => {
                merge_named_list(current, items);
            }
            (Some(existing), Value::Object(_)) if existing.is_object() => {
                strategic_merge(existing, value);
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_merge_value(&mut fresh, value);
                doc_map.insert(key.clone(), fresh);
            }
        }
    }
}

/// Sets `doc` to `value` with directives removed.
fn strategic_merge_value(doc: &mut Value, value: &Value) {
    match value {
        Value::Object(_) => {
            *doc = Value::Object(Map::new());
            strategic_merge(doc, value);
        }
        Value::Array(items) => {
            *doc = Value::Array(
                items
                    .iter()
                    .filter(|item| item.get("$patch").and_then(Value::as_str) != Some("delete"))
                    .map(|item| {
                        let mut fresh = Value::Null;
                        strategic_merge_value(&mut fresh, item);
                        fresh
                    })
                    .collect(),
            );
        }
        other => *doc = other.clone(),
    }
}

fn without_directives(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether a list merges by its items' `name` (every item an object with one).
fn keyed_by_name(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|item| item.get("name").and_then(Value::as_str).is_some())
}

fn merge_named_list(current: &mut Vec<Value>, items: &[Value]) {
    for item in items {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            continue;
        };
        let position = current
            .iter()
            .position(|c| c.get("name").and_then(Value::as_str) == Some(name));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (position, directive) {
            (Some(i), Some("delete")) => {
                current.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge(&mut current[i], item),
            (None, _) => {
                let mut fresh = Value::Null;
                strategic_merge_value(&mut fresh, item);
                current.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "sidecar", "image": "s:1"}
        ]}});
        strategic_merge(
            &mut doc,
            &json!({"spec": {"containers": [
                {"name": "app", "env": [{"name": "Y", "value": "2"}]},
                {"name": "sidecar", "$patch": "delete"}
            ]}, "$setElementOrder/containers": []}),
        );
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}
            ]}})
        );
    }

    #[test]
    fn strategic_merge_removes_null_and_replaces_plain_lists() {
        let mut doc = json!({"metadata": {"annotations": {"a": "1", "b": "2"}}, "args": ["x"]});
        strategic_merge(
            &mut doc,
            &json!({"metadata": {"annotations": {"a": null, "c": "3"}}, "args": ["y", "z"]}),
        );
        assert_eq!(
            doc,
            json!({"metadata": {"annotations": {"b": "2", "c": "3"}}, "args": ["y", "z"]})
        );
    }

    #[test]
    fn json_patch_failures_are_unprocessable() {
        let err = apply(
            &json!({"a": 1}),
            PatchType::Json,
            br#"[{"op": "test", "path": "/a", "value": 2}]"#,
        )
        .expect_err("test op fails");
        assert_eq!(err.code, 422);
        let err = apply(&json!({}), PatchType::Merge, b"{not json").expect_err("bad json");
        assert_eq!(err.code, 400);
    }
}
