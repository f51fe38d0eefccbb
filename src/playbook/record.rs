//! What a run leaves behind so that anyone, from any machine, can put things
//! back.
//!
//! On each changed object: the annotation `warroom.io/previous` holds a JSON
//! map from JSON pointer to the value that was there before warroom first
//! changed it (`null`: the field was absent). The first recorded value wins,
//! so after several runs a restore still goes back to the state before the
//! incident; an entry is dropped as soon as the field holds that value again.
//!
//! In the namespace: the ConfigMap `warroom-runs` keeps one JSON record per
//! run (steps, targets, values before and after) for `warroom undo`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::outcome::Outcome;
pub use super::outcome::StepOutcome;
use super::step::Edit;
use crate::kube::ObjectRef;

/// Annotation with the values replaced by warroom, by JSON pointer.
pub const PREVIOUS_ANNOTATION: &str = "warroom.io/previous";
/// Annotation naming the last run that changed the object.
pub const LAST_RUN_ANNOTATION: &str = "warroom.io/last-run";
/// ConfigMap holding run records.
pub const RUNS_CONFIGMAP: &str = "warroom-runs";
/// How many run records are kept per namespace.
pub const RUNS_KEPT: usize = 50;

/// One field changed by a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// JSON pointer.
    pub path: String,
    /// Value before (`None`: absent).
    pub before: Option<Value>,
    /// Value after (`None`: removed).
    pub after: Option<Value>,
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The unescaped tokens of a JSON pointer (`/a~1b/c` → `["a/b", "c"]`;
/// the empty pointer has none).
pub fn pointer_tokens(pointer: &str) -> Vec<String> {
    match pointer.strip_prefix('/') {
        Some(rest) => rest.split('/').map(unescape).collect(),
        None if pointer.is_empty() => Vec::new(),
        None => vec![pointer.to_owned()],
    }
}

/// Path tokens as a person reads them: names joined with `.`, indexes and
/// keys with dots, slashes or other characters in brackets
/// (`metadata.annotations["nginx.ingress.kubernetes.io/limit-rps"]`,
/// `spec.containers[0].image`).
pub fn display_tokens(tokens: &[String]) -> String {
    if tokens.is_empty() {
        return "(the whole object)".into();
    }
    let mut out = String::new();
    for token in tokens {
        let plain = token
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if plain {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(token);
        } else if !token.is_empty() && token.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            out.push_str(&format!("[{token:?}]"));
        }
    }
    out
}

/// A JSON pointer as a person reads it (see [`display_tokens`]).
pub fn display_path(pointer: &str) -> String {
    display_tokens(&pointer_tokens(pointer))
}

/// Sets (`Some`) or removes (`None`) the value at a JSON pointer, creating
/// intermediate objects. A removal also removes the objects it leaves empty
/// (so restoring a field that was absent leaves no empty parents behind).
pub fn set_pointer(doc: &mut Value, pointer: &str, value: Option<Value>) -> Result<(), String> {
    let removal = value.is_none();
    set_pointer_inner(doc, pointer, value)?;
    if removal {
        let mut parent = pointer;
        while let Some((up, _)) = parent.rsplit_once('/') {
            if up.is_empty() {
                break;
            }
            let empty = matches!(doc.pointer(up), Some(Value::Object(map)) if map.is_empty());
            if !empty {
                break;
            }
            set_pointer_inner(doc, up, None)?;
            parent = up;
        }
    }
    Ok(())
}

fn set_pointer_inner(doc: &mut Value, pointer: &str, value: Option<Value>) -> Result<(), String> {
    let tokens: Vec<String> = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("{pointer:?} is not a JSON pointer"))?
        .split('/')
        .map(unescape)
        .collect();
    let (last, parents) = tokens
        .split_last()
        .ok_or_else(|| "empty JSON pointer".to_string())?;
    let mut node = doc;
    for token in parents {
        if node.is_null() {
            if value.is_none() {
                return Ok(());
            }
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => {
                if value.is_none() && !map.contains_key(token) {
                    return Ok(());
                }
                map.entry(token.clone()).or_insert(Value::Null)
            }
            Value::Array(items) => {
                let index: usize = token
                    .parse()
                    .map_err(|_| format!("{pointer}: {token:?} is not an array index"))?;
                items
                    .get_mut(index)
                    .ok_or_else(|| format!("{pointer}: index {index} out of range"))?
            }
            _ => return Err(format!("{pointer}: {token:?} is inside a scalar")),
        };
    }
    if node.is_null() {
        *node = Value::Object(Map::new());
    }
    match (node, value) {
        (Value::Object(map), Some(value)) => {
            map.insert(last.clone(), value);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(items), value) => {
            let index: usize = last
                .parse()
                .map_err(|_| format!("{pointer}: {last:?} is not an array index"))?;
            match value {
                Some(value) if index < items.len() => items[index] = value,
                None if index < items.len() => {
                    items.remove(index);
                }
                _ => return Err(format!("{pointer}: index {index} out of range")),
            }
        }
        _ => return Err(format!("{pointer}: parent is not an object")),
    }
    Ok(())
}

/// The `warroom.io/previous` entries of an object.
pub fn previous_values(object: &Value) -> BTreeMap<String, Value> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(PREVIOUS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default()
}

/// Applies an edit to a copy of the object.
pub fn apply_edit(current: &Value, edit: &Edit) -> Result<Value, String> {
    let mut desired = current.clone();
    match edit {
        Edit::Set(fields) => {
            for (path, value) in fields {
                set_pointer(&mut desired, path, value.clone())?;
            }
        }
        Edit::Now(path) => {
            let now = super::step::rollout_restart::restarted_at(jiff::Timestamp::now());
            set_pointer(&mut desired, path, Some(Value::String(now)))?;
        }
        Edit::Merge(patch) => json_patch::merge(&mut desired, patch),
        Edit::Json(patch) => {
            json_patch::patch(&mut desired, patch).map_err(|err| err.to_string())?;
        }
        Edit::Restore => {
            for (path, value) in previous_values(current) {
                let value = (!value.is_null()).then_some(value);
                set_pointer(&mut desired, &path, value)?;
            }
        }
    }
    Ok(desired)
}

/// The object without the fields the server owns and without warroom's own
/// annotations: what is compared to find a step's changes.
fn comparable(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            for owned in [
                "resourceVersion",
                "generation",
                "managedFields",
                "uid",
                "creationTimestamp",
                "selfLink",
            ] {
                meta.remove(owned);
            }
            if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
                annotations.remove(PREVIOUS_ANNOTATION);
                annotations.remove(LAST_RUN_ANNOTATION);
            }
        }
    }
    object
}

/// The leaf fields that differ between two objects (arrays compared whole;
/// an empty object counts as absent).
pub fn diff(before: &Value, after: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    walk(
        "",
        Some(&comparable(before)),
        Some(&comparable(after)),
        &mut changes,
    );
    changes
}

fn is_empty_object(value: Option<&Value>) -> bool {
    matches!(value, Some(Value::Object(map)) if map.is_empty())
}

fn walk(path: &str, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = format!("{path}/{}", escape(key));
                walk(&child, b.get(key), a.get(key), out);
            }
        }
        (Some(Value::Object(b)), None) if !b.is_empty() => {
            for (key, value) in b {
                walk(&format!("{path}/{}", escape(key)), Some(value), None, out);
            }
        }
        (None, Some(Value::Object(a))) if !a.is_empty() => {
            for (key, value) in a {
                walk(&format!("{path}/{}", escape(key)), None, Some(value), out);
            }
        }
        (b, a) => {
            if b == a || (b.is_none() && is_empty_object(a)) || (a.is_none() && is_empty_object(b))
            {
                return;
            }
            out.push(FieldChange {
                path: path.to_owned(),
                before: b.cloned(),
                after: a.cloned(),
            });
        }
    }
}

/// Who changed an object last, written next to the previous values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    /// Run id.
    pub run: String,
    /// Playbook name.
    pub playbook: String,
    /// Kubeconfig user.
    pub actor: String,
    /// When.
    pub at: jiff::Timestamp,
}

/// The object to write: the desired object with `warroom.io/previous`
/// updated for `changes` (first value wins; entries whose field is back to
/// the recorded value are dropped) and the last-run stamp (dropped with the
/// last entry).
pub fn with_record(
    current: &Value,
    desired: &Value,
    changes: &[FieldChange],
    stamp: &Stamp,
) -> Value {
    let mut entries = previous_values(current);
    for change in changes {
        entries
            .entry(change.path.clone())
            .or_insert_with(|| change.before.clone().unwrap_or(Value::Null));
    }
    entries.retain(|path, recorded| {
        let now = desired.pointer(path);
        match (recorded, now) {
            (Value::Null, None) => false,
            (recorded, Some(now)) => recorded != now,
            _ => true,
        }
    });
    let mut out = desired.clone();
    let previous = (!entries.is_empty())
        .then(|| serde_json::to_string(&entries).ok())
        .flatten()
        .map(Value::String);
    // The stamp goes with the recorded values: once nothing is recorded the
    // object is back as it was, without traces of warroom.
    let stamp = previous
        .is_some()
        .then(|| serde_json::to_string(stamp).ok())
        .flatten()
        .map(Value::String);
    let _ = set_pointer(
        &mut out,
        &format!("/metadata/annotations/{}", escape(PREVIOUS_ANNOTATION)),
        previous,
    );
    let _ = set_pointer(
        &mut out,
        &format!("/metadata/annotations/{}", escape(LAST_RUN_ANNOTATION)),
        stamp,
    );
    if let Some(Value::Object(meta)) = out.get_mut("metadata")
        && matches!(meta.get("annotations"), Some(Value::Object(a)) if a.is_empty())
    {
        meta.remove("annotations");
    }
    out
}

/// How a run ended, as its record says: the one [`Outcome`] vocabulary
/// (`applied` in records written before it is read as [`Outcome::Done`]).
pub type RunOutcome = Outcome;

/// One step of a run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name.
    pub name: String,
    /// Step kind.
    pub kind: String,
    /// The object changed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectRef>,
    /// The fields changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// What happened.
    pub outcome: StepOutcome,
    /// Details (failure message, wait observation).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One run, as stored in the `warroom-runs` ConfigMap.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// Playbook name.
    pub playbook: String,
    /// Kubeconfig user.
    pub actor: String,
    /// Namespace.
    pub namespace: String,
    /// Start.
    pub started: jiff::Timestamp,
    /// End.
    #[serde(default)]
    pub finished: Option<jiff::Timestamp>,
    /// How the run ended ([`Outcome::Running`] while it runs).
    pub outcome: RunOutcome,
    /// Parameter values.
    #[serde(default)]
    pub params: BTreeMap<String, Value>,
    /// Steps in order (only those reached).
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// How the run ended, in words (why it stopped, what it kept).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Who undid the run, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone: Option<Stamp>,
}

impl RunRecord {
    /// True when the run left changes that `undo` can revert.
    pub fn undoable(&self) -> bool {
        self.undone.is_none()
            && self.outcome != RunOutcome::Undone
            && self
                .steps
                .iter()
                .any(|s| s.outcome.left_changes() && !s.changes.is_empty())
    }
}

/// The ConfigMap holding run records in a namespace.
pub fn runs_configmap(namespace: &str) -> ObjectRef {
    ObjectRef::namespaced("v1", "ConfigMap", namespace, RUNS_CONFIGMAP)
}

/// The records in a `warroom-runs` ConfigMap, oldest first (unreadable
/// entries are skipped).
pub fn records_in(configmap: &Value) -> Vec<RunRecord> {
    let mut records: Vec<RunRecord> = configmap
        .get("data")
        .and_then(Value::as_object)
        .map(|data| {
            data.values()
                .filter_map(Value::as_str)
                .filter_map(|raw| serde_json::from_str(raw).ok())
                .collect()
        })
        .unwrap_or_default();
    records.sort_by(|a: &RunRecord, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    records
}

/// The ConfigMap with `record` stored (and the oldest records beyond
/// [`RUNS_KEPT`] dropped).
pub fn store_in(configmap: &Value, record: &RunRecord) -> Result<Value, String> {
    let mut out = configmap.clone();
    let raw = serde_json::to_string(&redacted(record)).map_err(|e| e.to_string())?;
    set_pointer(
        &mut out,
        &format!("/data/{}", escape(&record.id)),
        Some(Value::String(raw)),
    )?;
    let records = records_in(&out);
    if records.len() > RUNS_KEPT {
        for old in &records[..records.len() - RUNS_KEPT] {
            if old.id != record.id {
                set_pointer(&mut out, &format!("/data/{}", escape(&old.id)), None)?;
            }
        }
    }
    Ok(out)
}

/// `record` as it may be stored in the cluster: parameter values, step
/// messages and the actor go through the redactor. The changes keep their
/// values, which `undo` writes back.
fn redacted(record: &RunRecord) -> RunRecord {
    let mut shown = record.clone();
    let mut params = serde_json::to_value(&shown.params).unwrap_or(Value::Null);
    crate::redact::redact_value(&mut params);
    shown.params = serde_json::from_value(params).unwrap_or_default();
    for step in &mut shown.steps {
        step.message = crate::redact::redact_text(&step.message).into_owned();
    }
    shown.actor = crate::redact::redact_text(&shown.actor).into_owned();
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp {
            run: "r1".into(),
            playbook: "p".into(),
            actor: "a".into(),
            at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn scaling_twice_keeps_the_replicas_from_before_the_incident() {
        let original = json!({"metadata": {"name": "d"}, "spec": {"replicas": 8}});
        let one = apply_edit(
            &original,
            &Edit::Set(vec![("/spec/replicas".into(), Some(json!(1)))]),
        )
        .unwrap();
        let changes = diff(&original, &one);
        let first = with_record(&original, &one, &changes, &stamp());
        assert_eq!(
            previous_values(&first).get("/spec/replicas"),
            Some(&json!(8))
        );
        let two = apply_edit(
            &first,
            &Edit::Set(vec![("/spec/replicas".into(), Some(json!(2)))]),
        )
        .unwrap();
        let changes = diff(&first, &two);
        let second = with_record(&first, &two, &changes, &stamp());
        assert_eq!(
            previous_values(&second).get("/spec/replicas"),
            Some(&json!(8))
        );
        let restored = apply_edit(&second, &Edit::Restore).unwrap();
        let changes = diff(&second, &restored);
        let after = with_record(&second, &restored, &changes, &stamp());
        assert_eq!(after.pointer("/spec/replicas"), Some(&json!(8)));
        assert!(previous_values(&after).is_empty());
    }

    #[test]
    fn an_added_annotation_is_recorded_as_absent_and_restore_removes_it() {
        let original = json!({"metadata": {"name": "i", "annotations": {"keep": "x"}}});
        let patched = apply_edit(
            &original,
            &Edit::Merge(json!({"metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50"}}})),
        )
        .unwrap();
        let changes = diff(&original, &patched);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].path,
            "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps"
        );
        let written = with_record(&original, &patched, &changes, &stamp());
        let restored = apply_edit(&written, &Edit::Restore).unwrap();
        assert_eq!(
            restored.pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps"),
            None
        );
        assert!(diff(&original, &restored).is_empty());
    }

    #[test]
    fn diff_ignores_server_fields_and_our_annotations_and_compares_arrays_whole() {
        let before = json!({"metadata": {"resourceVersion": "1", "generation": 1},
            "spec": {"ports": [80], "x": {}}, "status": {"ready": 1}});
        let after = json!({"metadata": {"resourceVersion": "2", "generation": 2,
            "annotations": {"warroom.io/previous": "{}"}},
            "spec": {"ports": [80, 443]}, "status": {"ready": 2}});
        let changes = diff(&before, &after);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].path, "/spec/ports");
    }

    #[test]
    fn removing_a_field_removes_the_objects_it_leaves_empty() {
        let mut doc = json!({"spec": {"keep": 1, "rateLimit": {"local": {"rules": [1]}}}});
        set_pointer(&mut doc, "/spec/rateLimit/local/rules", None).unwrap();
        assert_eq!(doc, json!({"spec": {"keep": 1}}));
        set_pointer(&mut doc, "/a~1b/c", Some(json!("v"))).unwrap();
        assert_eq!(doc["a/b"]["c"], "v");
        assert!(set_pointer(&mut doc, "no-slash", None).is_err());
    }

    #[test]
    fn pointers_are_shown_as_people_read_paths() {
        assert_eq!(display_path("/spec/replicas"), "spec.replicas");
        assert_eq!(
            display_path("/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps"),
            r#"metadata.annotations["nginx.ingress.kubernetes.io/limit-rps"]"#
        );
        assert_eq!(
            display_path("/spec/template/spec/containers/0/image"),
            "spec.template.spec.containers[0].image"
        );
        assert_eq!(display_path("/data/LOCK_MODE"), "data.LOCK_MODE");
        assert_eq!(display_path("/data/a~0b"), r#"data["a~b"]"#);
        assert_eq!(display_path(""), "(the whole object)");
    }

    #[test]
    fn run_records_keep_the_latest_fifty() {
        let mut configmap = json!({"metadata": {"name": RUNS_CONFIGMAP}});
        for n in 0..60 {
            let record = RunRecord {
                id: format!("run-{n:02}"),
                playbook: "p".into(),
                actor: "a".into(),
                namespace: "orders".into(),
                started: jiff::Timestamp::from_second(1_700_000_000 + n).unwrap(),
                finished: None,
                outcome: RunOutcome::Done,
                params: BTreeMap::new(),
                steps: Vec::new(),
                message: String::new(),
                undone: None,
            };
            configmap = store_in(&configmap, &record).unwrap();
        }
        let records = records_in(&configmap);
        assert_eq!(records.len(), RUNS_KEPT);
        assert_eq!(records.first().unwrap().id, "run-10");
        assert_eq!(records.last().unwrap().id, "run-59");
    }
}
