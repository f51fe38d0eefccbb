//! Recording a run in the incident timeline.
//!
//! [`TimelineRecorder::record`] is a task subscribed to a run's events
//! ([`super::Engine::subscribe_acknowledged`]): it appends every step event
//! to an incident journal ([`crate::timeline::Journal`]) with
//! [`Journal::append_async`] (the fdatasync happens on the journal's writer
//! thread, never on a runtime worker), with the operator as actor and the
//! values before and after; `note` steps become timeline notes. Each event
//! is acknowledged once durable, and the engine waits for that before its
//! next write, so a crash mid-run leaves the journal saying how far the run
//! got.
//!
//! A failed append is acknowledged as failed: the engine stops the run
//! before its next change (a change the journal cannot record would be
//! missing from the postmortem), and [`TimelineRecorder::failures`] counts
//! what is missing. An append that does not come back within
//! [`APPEND_TIMEOUT`] (another process holding the journal's lock, a hung
//! disk) counts as failed, and the events after it are not attempted, so a
//! stuck journal can neither hang a run nor let it go on changing the
//! cluster unrecorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};

use super::event::{AckedEvents, StepEvent, StepPhase};
use crate::timeline::{Entry, Journal, NewEvent, StepReport, StepTarget};

/// How long one append may take before it counts as failed.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Appends step events to an incident journal.
pub struct TimelineRecorder {
    journal: Journal,
    timeout: Duration,
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<String>,
    /// An append never came back: later events are not attempted.
    stuck: bool,
}

impl TimelineRecorder {
    /// Records into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            timeout: APPEND_TIMEOUT,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// Changes how long one append may take (default [`APPEND_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn failed(&self, why: String, stuck: bool) -> String {
        if let Ok(mut failures) = self.failures.lock() {
            failures.count += 1;
            failures.stuck |= stuck;
            if failures.first.is_none() {
                failures.first = Some(why.clone());
            }
        }
        why
    }

    /// The journal written to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// How many events could not be recorded, and the first error.
    pub fn failures(&self) -> (u64, Option<String>) {
        match self.failures.lock() {
            Ok(f) => (f.count, f.first.clone()),
            Err(_) => (0, None),
        }
    }

    /// Records `events` until the engine is gone, acknowledging each once
    /// it is durable (or failed). Spawn it:
    /// `tokio::spawn(recorder.clone().record(engine.subscribe_acknowledged()))`.
    pub async fn record(self: Arc<Self>, mut events: AckedEvents) {
        while let Some(event) = events.recv().await {
            let result = self.append(&event).await;
            events.acknowledge(result);
        }
    }

    /// Appends one event; returns once it is durable, or why it is not.
    async fn append(&self, event: &StepEvent) -> Result<(), String> {
        if self.failures.lock().map(|f| f.stuck).unwrap_or(true) {
            return Err(self.failed("an earlier append never completed".into(), true));
        }
        let event = NewEvent::at(event.at, event.actor.clone(), entry_of(event));
        match tokio::time::timeout(self.timeout, self.journal.append_async(event)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.failed(err.to_string(), false)),
            Err(_) => Err(self.failed(
                format!(
                    "appending to {} took longer than {:?} (another process may hold its \
                     lock, or the disk is not answering)",
                    self.journal.path().display(),
                    self.timeout
                ),
                true,
            )),
        }
    }
}

/// The timeline entry for a step event.
pub fn entry_of(event: &StepEvent) -> Entry {
    if event.phase == StepPhase::Noted {
        return Entry::note(event.message.clone());
    }
    let target = event
        .target
        .as_ref()
        .map(|t| StepTarget {
            api_version: t.api_version.clone(),
            kind: t.kind.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
        })
        .unwrap_or_default();
    Entry::Step(StepReport {
        playbook: event.playbook.clone(),
        run_id: event.run_id.clone(),
        step: event.step.clone(),
        kind: event.kind.clone(),
        phase: event.phase,
        target,
        before: event.before.as_ref().map(nest).unwrap_or_default(),
        after: event.after.as_ref().map(nest).unwrap_or_default(),
        message: (!event.message.is_empty()).then(|| event.message.clone()),
    })
}

/// The engine reports values by JSON pointer (`{"/spec/replicas": 8}`); the
/// timeline keeps the touched part of the object (`{"spec": {"replicas": 8}}`),
/// `null` standing for an absent field. Anything else is kept as it is.
fn nest(values: &Value) -> Value {
    let Value::Object(map) = values else {
        return values.clone();
    };
    if map.is_empty() || !map.keys().all(|k| k.starts_with('/')) {
        return values.clone();
    }
    let mut root = Map::new();
    for (pointer, value) in map {
        let tokens: Vec<String> = pointer
            .strip_prefix('/')
            .unwrap_or(pointer)
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        insert_at(&mut root, &tokens, value);
    }
    Value::Object(root)
}

/// Puts `value` at the path `tokens` below `node`, making the objects on the
/// way (a non-object in the way is replaced).
fn insert_at(node: &mut Map<String, Value>, tokens: &[String], value: &Value) {
    match tokens {
        [] => {}
        [last] => {
            node.insert(last.clone(), value.clone());
        }
        [first, rest @ ..] => {
            let child = node
                .entry(first.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(children) = child {
                insert_at(children, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::nest;
    use serde_json::json;

    #[test]
    fn pointer_maps_become_the_touched_part_of_the_object() {
        assert_eq!(
            nest(
                &json!({"/spec/replicas": 8, "/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rps": null})
            ),
            json!({"spec": {"replicas": 8}, "metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": null}}})
        );
        assert_eq!(nest(&json!({"replicas": 8})), json!({"replicas": 8}));
        assert_eq!(nest(&json!("text")), json!("text"));
    }
}
