//! Events as a controller records them: core/v1 `Event` objects about an
//! involved object (a Deployment, ReplicaSet or Pod), so `kubectl get events`
//! and `kubectl describe` show what happened. A repeat of the same reason and
//! message about the same object raises the first event's `count` instead of
//! adding one. At most [`EventRecorder::limit`] events are kept: the oldest
//! are deleted, as a real cluster expires them.
//!
//! This file knows the Event shape; it knows nothing about HTTP or why an
//! event is recorded.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::Store;

/// Events kept by default.
pub const DEFAULT_EVENT_LIMIT: usize = 1000;

/// Whether an event reports routine progress or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Routine (`Normal`).
    Normal,
    /// A problem (`Warning`).
    Warning,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

#[derive(Default)]
struct Recent {
    /// Event names, oldest first.
    order: VecDeque<(String, String)>,
    /// (involved uid, reason, message) → (namespace, event name).
    by_key: HashMap<(String, String, String), (String, String)>,
    serial: u64,
}

/// Records events into a cluster's store. Cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    store: Store,
    component: String,
    limit: usize,
    recent: Arc<Mutex<Recent>>,
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

impl EventRecorder {
    /// A recorder whose events name `component` as their source, keeping at
    /// most [`DEFAULT_EVENT_LIMIT`] events.
    pub fn new(store: Store, component: &str) -> Self {
        Self::with_limit(store, component, DEFAULT_EVENT_LIMIT)
    }

    /// A recorder keeping at most `limit` events (at least one).
    pub fn with_limit(store: Store, component: &str, limit: usize) -> Self {
        Self {
            store,
            component: component.to_string(),
            limit: limit.max(1),
            recent: Arc::default(),
        }
    }

    /// How many events this recorder keeps at most.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Records an event about `involved` (a stored object: its kind, name,
    /// namespace and uid are read from it). Failures are logged, never
    /// returned: an event is worth less than the work it reports.
    pub fn record(&self, involved: &Value, kind: EventKind, reason: &str, message: &str) {
        let text = |pointer: &str| {
            involved
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (namespace, name, uid) = (
            text("/metadata/namespace"),
            text("/metadata/name"),
            text("/metadata/uid"),
        );
        let namespace = if namespace.is_empty() {
            "default".to_string()
        } else {
            namespace
        };
        let key = (uid.clone(), reason.to_string(), message.to_string());
        let now = now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ns, event_name)) = recent.by_key.get(&key).cloned()
            && let Some(mut existing) = self.store.get("v1", "Event", Some(&ns), &event_name)
        {
            let count = existing.get("count").and_then(Value::as_i64).unwrap_or(1);
            existing["count"] = json!(count + 1);
            existing["lastTimestamp"] = json!(now);
            if let Err(e) = self.store.put(existing) {
                tracing::warn!("cannot update event {event_name}: {e}");
            }
            return;
        }
        recent.serial += 1;
        let event_name = format!(
            "{name}.{:016x}",
            (jiff::Timestamp::now().as_nanosecond() as u64).wrapping_add(recent.serial)
        );
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": event_name, "namespace": namespace },
            "involvedObject": {
                "apiVersion": text("/apiVersion"),
                "kind": text("/kind"),
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": text("/metadata/resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": kind.as_str(),
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": { "component": self.component },
            "reportingComponent": self.component,
            "reportingInstance": self.component,
        });
        if let Err(e) = self.store.put(event) {
            tracing::warn!("cannot record event {reason} on {name}: {e}");
            return;
        }
        recent
            .order
            .push_back((namespace.clone(), event_name.clone()));
        recent.by_key.insert(key, (namespace, event_name));
        while recent.order.len() > self.limit {
            if let Some((ns, oldest)) = recent.order.pop_front() {
                recent.by_key.retain(|_, (_, n)| *n != oldest);
                self.store.delete("v1", "Event", Some(&ns), &oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(store: &Store) -> Value {
        store
            .put(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "order-service-abc-x1", "namespace": "orders" },
                "spec": { "containers": [{ "name": "order-service" }] },
            }))
            .expect("stored")
    }

    #[test]
    fn repeats_raise_the_count_and_old_events_expire() {
        let store = Store::new();
        let pod = pod(&store);
        let recorder = EventRecorder::with_limit(store.clone(), "warroom-drill", 3);
        recorder.record(&pod, EventKind::Warning, "BackOff", "restarting");
        recorder.record(&pod, EventKind::Warning, "BackOff", "restarting");
        let events = store.list("v1", "Event", Some("orders"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["count"], 2);
        assert_eq!(events[0]["involvedObject"]["kind"], "Pod");
        assert_eq!(events[0]["involvedObject"]["uid"], pod["metadata"]["uid"]);
        for i in 0..5 {
            recorder.record(&pod, EventKind::Normal, "Paused", &format!("pause {i}"));
        }
        let events = store.list("v1", "Event", Some("orders"));
        assert_eq!(events.len(), 3, "bounded");
        let messages: Vec<&str> = events
            .iter()
            .filter_map(|e| e["message"].as_str())
            .collect();
        assert!(messages.contains(&"pause 4") && !messages.contains(&"pause 0"));
    }
}
