//! The object store behind the local cluster: every object as JSON, keyed by
//! resource type, namespace and name, with one global resourceVersion counter,
//! a bounded history of changes for watches that resume from a version, and a
//! broadcast of each change as it happens.
//!
//! Every write goes through one path that stamps metadata (uid,
//! creationTimestamp, resourceVersion, generation), applies defaults,
//! validates, checks the resourceVersion precondition and, for Deployments,
//! converges status unless [`StatusMode::External`] is set. A write that
//! changes nothing keeps the object and its resourceVersion as they were.
//!
//! This file knows nothing about HTTP; it answers with [`ApiError`]s that the
//! routes turn into `Status` bodies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::ClusterError;
use super::kinds;
use super::logs::PodLogs;
use super::resources::{self, CATALOGUE, ResourceType};
use super::selector::Selector;
use super::status::{ApiError, FieldCause};

/// Changes kept for watches that resume from an older resourceVersion.
const HISTORY: usize = 4096;
/// Changes buffered per live watcher before it is cut off (it then re-lists).
const BROADCAST: usize = 1024;

/// Who owns Deployment status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatusMode {
    /// The server sets status to "rolled out" on every Deployment write.
    #[default]
    Converge,
    /// Status changes only through the `status` subresource or [`Store::put`]
    /// (a drill's reconcile loop owns it).
    External,
}

/// What happened to an object, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    /// What happened.
    pub event_type: EventType,
    /// The resourceVersion the change produced.
    pub revision: u64,
    /// The object after the change (for deletions: as it was, with the new resourceVersion).
    pub object: Value,
    pub(crate) resource: usize,
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The object through its main resource: status is kept as stored.
    Main,
    /// The `status` subresource: only status changes.
    Status,
    /// Everything, status included, no resourceVersion precondition ([`Store::put`]).
    Whole,
}

type Key = (usize, String, String);

/// A new watch: the events it sends first, the receiver for what follows,
/// and the revision the store was at when it started.
pub(crate) struct WatchStart {
    pub initial: Vec<Arc<StoreEvent>>,
    pub receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pub revision: u64,
}

struct Inner {
    objects: BTreeMap<Key, Value>,
    revision: u64,
    history: VecDeque<Arc<StoreEvent>>,
    status_mode: StatusMode,
}

/// The cluster's objects. Cheap to clone; clones share the same objects.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Arc<StoreEvent>>,
    pod_logs: Arc<RwLock<Option<Arc<dyn PodLogs>>>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn new_uid() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.is_object() {
        // Callers check the type first; never index into a non-object.
        *obj = json!({});
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => meta,
        None => unreachable!("metadata was just made an object"),
    }
}

fn revision_of(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
}

/// Sets apiVersion and kind, refusing a body that names another type.
fn check_type(rt: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the object must be a JSON object",
            rt.kind, rt.version, rt.kind
        )));
    };
    let expected = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if v != expected => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version \
                 ({expected})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k != rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        _ => {}
    }
    map.insert("apiVersion".into(), json!(expected));
    map.insert("kind".into(), json!(rt.kind));
    Ok(())
}

/// Sets the namespace, refusing a body that names another one.
fn check_namespace(rt: &ResourceType, obj: &mut Value, namespace: &str) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request",
                ));
            }
            _ => {}
        }
        meta.insert("namespace".into(), json!(namespace));
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

fn namespace_type() -> &'static ResourceType {
    // The catalogue always serves namespaces; its first entry is that type.
    resources::by_path("", "v1", "namespaces").unwrap_or(&CATALOGUE[0])
}

impl Store {
    /// An empty store (not even namespaces).
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(BROADCAST);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                objects: BTreeMap::new(),
                revision: 0,
                history: VecDeque::new(),
                status_mode: StatusMode::default(),
            })),
            events,
            pod_logs: Arc::default(),
        }
    }

    /// Names where pod logs come from (a drill's supervisor registers
    /// itself); None removes the source (logs are then empty).
    pub fn set_pod_logs(&self, source: Option<Arc<dyn PodLogs>>) {
        *self.pod_logs.write().unwrap_or_else(|e| e.into_inner()) = source;
    }

    /// Where pod logs come from, if anywhere.
    pub fn pod_logs(&self) -> Option<Arc<dyn PodLogs>> {
        self.pod_logs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an object half-written
        // (objects are replaced whole), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Object as JSON (as the API would return it), or None. `namespace` is
    /// ignored for cluster-scoped kinds; None means `default` for namespaced
    /// ones.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = resources::by_kind(api_version, kind)?;
        let key = key_of(rt, namespace, name);
        self.lock().objects.get(&key).cloned()
    }

    /// All objects of a type, in one namespace or (None) in all, ordered by
    /// namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Some(rt) = resources::by_kind(api_version, kind) else {
            return Vec::new();
        };
        self.list_objects(rt, namespace, &Selector::default(), &Selector::default())
            .0
    }

    /// Create or replace an object (status included; no resourceVersion
    /// precondition), for seeding tests and for a drill's reconcile loop. The
    /// object's namespace (default `default`) is created if missing. A
    /// replace that changes nothing keeps the stored resourceVersion.
    pub fn put(&self, object: Value) -> Result<Value, ClusterError> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rt = resources::by_kind(&api_version, &kind)
            .ok_or(ClusterError::UnknownKind { api_version, kind })?;
        let name = kinds::name_of(&object).unwrap_or_default().to_string();
        let namespace = if rt.namespaced {
            Some(
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or("default")
                    .to_string(),
            )
        } else {
            None
        };
        let mut inner = self.lock();
        if let Some(ns) = &namespace {
            let ns_key = key_of(namespace_type(), None, ns);
            if !inner.objects.contains_key(&ns_key) {
                let ns_obj =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                self.create_locked(&mut inner, namespace_type(), None, ns_obj, false, true)?;
            }
        }
        let exists = inner
            .objects
            .contains_key(&key_of(rt, namespace.as_deref(), &name));
        let stored = if exists {
            self.modify_locked(
                &mut inner,
                rt,
                namespace.as_deref(),
                &name,
                Target::Whole,
                false,
                |_| Ok(object),
            )?
        } else {
            self.create_locked(&mut inner, rt, namespace.as_deref(), object, false, true)?
        };
        Ok(stored)
    }

    /// Replaces an object's status, and nothing else, in one step: what a
    /// reconcile loop should use (a read-then-[`Store::put`] could undo a
    /// spec change that arrived in between). Returns the stored object.
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, ClusterError> {
        let rt =
            resources::by_kind(api_version, kind).ok_or_else(|| ClusterError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })?;
        let stored = self.modify(rt, namespace, name, Target::Status, false, |current| {
            let mut next = current.clone();
            if let Some(map) = next.as_object_mut() {
                map.insert("status".into(), status);
            }
            Ok(next)
        })?;
        Ok(stored)
    }

    /// Sets one annotation of an object, and nothing else, in one step (as
    /// a controller records `deployment.kubernetes.io/revision`). A value
    /// already set keeps the object and its resourceVersion. Returns the
    /// stored object.
    pub fn set_annotation(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Value, ClusterError> {
        let rt =
            resources::by_kind(api_version, kind).ok_or_else(|| ClusterError::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            })?;
        let stored = self.modify(rt, namespace, name, Target::Main, false, |current| {
            let mut next = current.clone();
            kinds::set_field(&mut next, &["metadata", "annotations", key], json!(value))?;
            Ok(next)
        })?;
        Ok(stored)
    }

    /// Deletes an object, returning it as it was; None if it did not exist.
    /// Deleting a namespace deletes everything in it.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let rt = resources::by_kind(api_version, kind)?;
        self.delete_object(rt, namespace, name, false).ok()
    }

    /// Every change from now on. A receiver that falls more than 1024 changes
    /// behind gets `RecvError::Lagged` and should re-read the store.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoreEvent>> {
        let _inner = self.lock();
        self.events.subscribe()
    }

    /// How many watches (and [`Store::subscribe`] receivers) are open now.
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Switches who owns Deployment status (default: [`StatusMode::Converge`]).
    pub fn set_status_mode(&self, mode: StatusMode) {
        self.lock().status_mode = mode;
    }

    /// Who owns Deployment status.
    pub fn status_mode(&self) -> StatusMode {
        self.lock().status_mode
    }

    /// The latest resourceVersion handed out.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn record(&self, inner: &mut Inner, event_type: EventType, rt: &ResourceType, object: Value) {
        let event = Arc::new(StoreEvent {
            event_type,
            revision: inner.revision,
            object,
            resource: resources::index_of(rt),
        });
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }

    /// Reads one object through the API.
    pub(crate) fn get_object(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&key_of(rt, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Lists objects matching the selectors; also returns the current revision.
    pub(crate) fn list_objects(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> (Vec<Value>, u64) {
        let inner = self.lock();
        let index = resources::index_of(rt);
        let items = inner
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == index && namespace.is_none_or(|want| ns == want))
            .map(|(_, obj)| obj)
            .filter(|obj| labels.matches_labels(obj) && fields.matches_fields(obj))
            .cloned()
            .collect();
        (items, inner.revision)
    }

    /// Starts a watch: the events to send first, and a receiver for what follows.
    /// `since: None` sends every current object as ADDED; `Some(rv)` replays
    /// changes after `rv` from history (410 Expired if they are no longer kept).
    pub(crate) fn watch_from(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        since: Option<u64>,
    ) -> Result<WatchStart, ApiError> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let index = resources::index_of(rt);
        let in_scope = |obj: &Value| {
            namespace.is_none_or(|want| {
                obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(want)
            })
        };
        let initial = match since {
            None => inner
                .objects
                .iter()
                .filter(|((r, _, _), obj)| *r == index && in_scope(obj))
                .map(|(_, obj)| {
                    Arc::new(StoreEvent {
                        event_type: EventType::Added,
                        revision: revision_of(obj).and_then(|rv| rv.parse().ok()).unwrap_or(0),
                        object: obj.clone(),
                        resource: index,
                    })
                })
                .collect(),
            Some(rv) if rv >= inner.revision => Vec::new(),
            Some(rv) => {
                let oldest = inner.history.front().map_or(inner.revision, |e| e.revision);
                if oldest > rv + 1 {
                    return Err(ApiError::expired(rv, oldest));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.revision > rv && e.resource == index && in_scope(&e.object))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchStart {
            initial,
            receiver,
            revision: inner.revision,
        })
    }

    /// Creates an object through the API.
    pub(crate) fn create(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        object: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        self.create_locked(&mut inner, rt, namespace, object, dry_run, false)
    }

    fn create_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        mut obj: Value,
        dry_run: bool,
        keep_status: bool,
    ) -> Result<Value, ApiError> {
        check_type(rt, &mut obj)?;
        let ns = namespace.unwrap_or("default");
        check_namespace(rt, &mut obj, ns)?;
        let meta = meta_mut(&mut obj);
        if !keep_status
            && meta
                .get("resourceVersion")
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = format!("{prefix}{}", random_suffix());
                    meta.insert("name".into(), json!(name));
                    name
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![FieldCause {
                            reason: "FieldValueRequired",
                            field: "metadata.name".into(),
                            message: "Required value: name or generateName is required".into(),
                        }],
                    ));
                }
            },
        };
        meta.insert("uid".into(), json!(new_uid()));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("managedFields");
        if rt.tracks_generation {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if rt.has_status
            && !keep_status
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        kinds::apply_defaults(rt, &mut obj);
        kinds::validate(rt, &obj)?;
        if rt.namespaced {
            let ns_key = key_of(namespace_type(), None, ns);
            if !inner.objects.contains_key(&ns_key) {
                return Err(ApiError::not_found(namespace_type(), ns));
            }
        }
        let key = key_of(rt, namespace, &name);
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        self.converge(inner, rt, &mut obj);
        if dry_run {
            return Ok(obj);
        }
        inner.revision += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(inner.revision.to_string()));
        inner.objects.insert(key, obj.clone());
        self.record(inner, EventType::Added, rt, obj.clone());
        Ok(obj)
    }

    fn converge(&self, inner: &Inner, rt: &ResourceType, obj: &mut Value) {
        if rt.kind == "Deployment" && inner.status_mode == StatusMode::Converge {
            kinds::converge_deployment(obj, &now());
        }
    }

    /// Changes an existing object through the API: `change` turns the stored
    /// object into the requested one (a PUT body, a patched copy, …).
    pub(crate) fn modify(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        target: Target,
        dry_run: bool,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        self.modify_locked(&mut inner, rt, namespace, name, target, dry_run, change)
    }

    #[allow(clippy::too_many_arguments)]
    fn modify_locked(
        &self,
        inner: &mut Inner,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        target: Target,
        dry_run: bool,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let key = key_of(rt, namespace, name);
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        let mut requested = change(&current)?;
        check_type(rt, &mut requested)?;
        check_namespace(rt, &mut requested, namespace.unwrap_or("default"))?;
        let meta = meta_mut(&mut requested);
        match meta.get("name").and_then(Value::as_str) {
            None | Some("") => {
                meta.insert("name".into(), json!(name));
            }
            Some(other) if other != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({other}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
        }
        let current_rv = revision_of(&current).unwrap_or_default().to_string();
        if target != Target::Whole
            && let Some(rv) = meta.get("resourceVersion").and_then(Value::as_str)
            && !rv.is_empty()
            && rv != current_rv
        {
            return Err(ApiError::conflict(rt, name));
        }
        let mut next = match target {
            Target::Status => {
                let mut next = current.clone();
                if let Some(map) = next.as_object_mut() {
                    match requested.get("status") {
                        Some(status) if !status.is_null() => {
                            map.insert("status".into(), status.clone());
                        }
                        _ => {
                            map.remove("status");
                        }
                    }
                }
                next
            }
            Target::Main | Target::Whole => {
                let mut next = requested;
                if target == Target::Main
                    && rt.has_status
                    && let Some(map) = next.as_object_mut()
                {
                    match current.get("status") {
                        Some(status) => map.insert("status".into(), status.clone()),
                        None => map.remove("status"),
                    };
                }
                let meta = meta_mut(&mut next);
                for key in ["uid", "creationTimestamp", "generation"] {
                    match current.pointer(&format!("/metadata/{key}")) {
                        Some(v) => meta.insert(key.into(), v.clone()),
                        None => meta.remove(key),
                    };
                }
                meta.remove("managedFields");
                next
            }
        };
        meta_mut(&mut next).insert("resourceVersion".into(), json!(current_rv));
        kinds::apply_defaults(rt, &mut next);
        kinds::validate(rt, &next)?;
        if rt.tracks_generation && next.get("spec") != current.get("spec") {
            let generation = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut next).insert("generation".into(), json!(generation + 1));
        }
        if target != Target::Status {
            self.converge(inner, rt, &mut next);
        }
        if next == current || dry_run {
            return Ok(if next == current { current } else { next });
        }
        inner.revision += 1;
        meta_mut(&mut next).insert("resourceVersion".into(), json!(inner.revision.to_string()));
        inner.objects.insert(key, next.clone());
        self.record(inner, EventType::Modified, rt, next.clone());
        Ok(next)
    }

    /// Deletes an object through the API, returning it as it was.
    pub(crate) fn delete_object(
        &self,
        rt: &ResourceType,
        namespace: Option<&str>,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let key = key_of(rt, namespace, name);
        let current = inner
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if dry_run {
            return Ok(current);
        }
        let mut doomed = vec![(key, rt)];
        if std::ptr::eq(rt, namespace_type()) {
            doomed.extend(
                inner
                    .objects
                    .keys()
                    .filter(|(r, ns, _)| CATALOGUE[*r].namespaced && ns == name)
                    .map(|k| (k.clone(), &CATALOGUE[k.0]))
                    .collect::<Vec<_>>(),
            );
        }
        for (key, rt) in doomed {
            if let Some(mut obj) = inner.objects.remove(&key) {
                inner.revision += 1;
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(inner.revision.to_string()));
                self.record(&mut inner, EventType::Deleted, rt, obj);
            }
        }
        Ok(current)
    }
}

fn key_of(rt: &ResourceType, namespace: Option<&str>, name: &str) -> Key {
    let ns = if rt.namespaced {
        namespace.unwrap_or("default").to_string()
    } else {
        String::new()
    };
    (resources::index_of(rt), ns, name.to_string())
}
