//! What the engine tells the outside world, and what it asks of it.
//!
//! [`StepObserver`] receives every step event (planned, applied, verified,
//! failed, undone, …) with the actor, run, step, target object and the values
//! before and after — the incident timeline subscribes here. [`Confirmer`]
//! answers human gates: a terminal prompt in the CLI, a popup in the console,
//! or [`AutoApprove`] for `--yes`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::Value;

use crate::kube::ObjectRef;

/// The stage of a step an event reports (shared with the timeline, which
/// records these events as they are).
pub use crate::timeline::StepPhase;

/// One step event.
#[derive(Debug, Clone, Serialize)]
pub struct StepEvent {
    /// When it happened.
    pub at: jiff::Timestamp,
    /// The stage.
    pub phase: StepPhase,
    /// Who ran the playbook (kubeconfig user).
    pub actor: String,
    /// Playbook name.
    pub playbook: String,
    /// Run id (`warroom undo RUN-ID`).
    pub run_id: String,
    /// Step name.
    pub step: String,
    /// Step kind.
    pub kind: String,
    /// The object the step acts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectRef>,
    /// Values before, by JSON pointer (changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Values after, by JSON pointer (changes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// What happened, in words.
    pub message: String,
}

/// Receives every step event as it happens. Must not block for long.
pub trait StepObserver: Send + Sync {
    /// Called once per event, in order.
    fn on_event(&self, event: &StepEvent);

    /// Why an event could not be recorded where it must be durable (the
    /// incident journal), if one could not. The engine asks before each
    /// change: a run whose record is failing stops before its next change,
    /// keeping what was applied, and ends non-zero.
    fn failure(&self) -> Option<String> {
        None
    }
}

/// An observer that keeps every event (for JSON output and tests).
#[derive(Debug, Default)]
pub struct EventLog {
    events: Mutex<Vec<StepEvent>>,
}

impl EventLog {
    /// The events so far.
    pub fn events(&self) -> Vec<StepEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl StepObserver for EventLog {
    fn on_event(&self, event: &StepEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}

/// Sends each event to several observers.
pub struct Observers(pub Vec<std::sync::Arc<dyn StepObserver>>);

impl StepObserver for Observers {
    fn on_event(&self, event: &StepEvent) {
        for observer in &self.0 {
            observer.on_event(event);
        }
    }

    fn failure(&self) -> Option<String> {
        self.0.iter().find_map(|observer| observer.failure())
    }
}

/// A question for a human before a step goes on.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmRequest {
    /// Run id.
    pub run_id: String,
    /// Playbook name.
    pub playbook: String,
    /// Step name.
    pub step: String,
    /// The question.
    pub prompt: String,
    /// For dangerous steps, the exact text to type.
    pub answer: Option<String>,
    /// The answer an empty reply gives (`[Y/n]` when true, `[y/N]` when
    /// false): true only for putting things back after a cancellation.
    #[serde(default)]
    pub default_yes: bool,
}

/// A human's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmation {
    /// Go on.
    Approved,
    /// Do not go on.
    Declined,
    /// Nobody can be asked (no terminal); the reason says how to proceed.
    Unavailable(String),
}

/// A boxed future returned by [`Confirmer::confirm`].
pub type ConfirmFuture<'a> = Pin<Box<dyn Future<Output = Confirmation> + Send + 'a>>;

/// Answers human gates. Implementations: a terminal prompt (CLI), a popup
/// (console), [`AutoApprove`] (`--yes`).
pub trait Confirmer: Send + Sync {
    /// Asks; resolves when answered.
    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a>;

    /// Whether anyone can be asked at all. When not, a run whose plan has a
    /// gate is refused before it changes anything, with this reason.
    fn can_ask(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Approves every gate (`--yes`).
#[derive(Debug, Default, Clone, Copy)]
pub struct AutoApprove;

impl Confirmer for AutoApprove {
    fn confirm<'a>(&'a self, _: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        Box::pin(async { Confirmation::Approved })
    }
}
