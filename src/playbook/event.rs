//! What the engine tells the outside world, and what it asks of it.
//!
//! Every step event (planned, progress during a wait, gate reached,
//! applied, verified, failed, undone, cancelled, …) carries the actor, run,
//! step, target object and the values before and after, and goes out on
//! async channels: [`super::Engine::subscribe`] for a subscriber the engine
//! does not wait for (a screen), [`super::Engine::subscribe_acknowledged`]
//! for one it waits for before its next write and before asking a human
//! (the incident timeline's recorder, the CLI's printer). An acknowledged
//! failure stops the run before its next change: a change the journal
//! could not record would be missing from the postmortem.
//! [`StepObserver`] is the synchronous form, for cheap in-memory uses
//! ([`EventLog`]).
//!
//! [`Confirmer`] answers human gates: a terminal prompt in the CLI, a popup
//! in the console, or [`AutoApprove`] for `--yes`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

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

/// Every step event from the moment of subscribing, in order, for a
/// subscriber the engine does not wait for.
pub type EventReceiver = mpsc::UnboundedReceiver<StepEvent>;

/// How far an acknowledged subscriber got.
#[derive(Debug, Clone, Default)]
struct Ack {
    /// Events handled so far.
    handled: u64,
    /// The first event it could not handle, and why.
    failure: Option<String>,
}

/// Step events for a subscriber the engine waits for: before its next write
/// and before asking a human, every event sent so far must be acknowledged
/// ([`AckedEvents::acknowledge`]). A failure acknowledged stops the run
/// before its next change.
pub struct AckedEvents {
    events: mpsc::UnboundedReceiver<StepEvent>,
    ack: watch::Sender<Ack>,
}

impl AckedEvents {
    /// The next event; `None` once the engine is gone.
    pub async fn recv(&mut self) -> Option<StepEvent> {
        self.events.recv().await
    }

    /// Acknowledges the event last received: `Ok` once it is handled (for
    /// the journal: durable), `Err(why)` when it could not be.
    pub fn acknowledge(&self, result: Result<(), String>) {
        self.ack.send_modify(|ack| {
            ack.handled += 1;
            if let Err(why) = result
                && ack.failure.is_none()
            {
                ack.failure = Some(why);
            }
        });
    }
}

/// The engine's side of an acknowledged subscriber.
struct AckedSender {
    events: mpsc::UnboundedSender<StepEvent>,
    sent: u64,
    acks: watch::Receiver<Ack>,
}

/// How long the engine waits for acknowledged subscribers before it counts
/// them as failed (the journal recorder has its own, shorter, deadline).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the engine sends its events: the observer, then every subscriber.
pub(crate) struct EventHub {
    observer: Arc<dyn StepObserver>,
    plain: Mutex<Vec<mpsc::UnboundedSender<StepEvent>>>,
    acked: Mutex<Vec<AckedSender>>,
}

impl EventHub {
    /// A hub calling `observer` first.
    pub(crate) fn new(observer: Arc<dyn StepObserver>) -> Self {
        Self {
            observer,
            plain: Mutex::new(Vec::new()),
            acked: Mutex::new(Vec::new()),
        }
    }

    /// A new subscriber the engine does not wait for.
    pub(crate) fn subscribe(&self) -> EventReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut plain) = self.plain.lock() {
            plain.push(tx);
        }
        rx
    }

    /// A new subscriber the engine waits for.
    pub(crate) fn subscribe_acknowledged(&self) -> AckedEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ack, acks) = watch::channel(Ack::default());
        if let Ok(mut acked) = self.acked.lock() {
            acked.push(AckedSender {
                events: tx,
                sent: 0,
                acks,
            });
        }
        AckedEvents { events: rx, ack }
    }

    /// Sends one event to everyone, in subscription order. A subscriber
    /// that went away is dropped (an acknowledged one is then a failure,
    /// reported by [`EventHub::settle`]).
    pub(crate) fn send(&self, event: StepEvent) {
        self.observer.on_event(&event);
        if let Ok(mut plain) = self.plain.lock() {
            plain.retain(|tx| tx.send(event.clone()).is_ok());
        }
        if let Ok(mut acked) = self.acked.lock() {
            for subscriber in acked.iter_mut() {
                // Counted even when gone: it then never acknowledges.
                let _ = subscriber.events.send(event.clone());
                subscriber.sent += 1;
            }
        }
    }

    /// Waits until every acknowledged subscriber has handled every event
    /// sent so far (or failed, or [`SETTLE_TIMEOUT`] passed). Returns why an
    /// event could not be handled, if one could not.
    pub(crate) async fn settle(&self) -> Option<String> {
        let pending: Vec<(u64, watch::Receiver<Ack>)> = match self.acked.lock() {
            Ok(acked) => acked.iter().map(|s| (s.sent, s.acks.clone())).collect(),
            Err(_) => return Some("the event subscribers failed".into()),
        };
        for (sent, mut acks) in pending {
            let done = |ack: &Ack| ack.handled >= sent || ack.failure.is_some();
            let waited = tokio::time::timeout(SETTLE_TIMEOUT, acks.wait_for(done))
                .await
                .map(|answer| answer.is_ok());
            match waited {
                Ok(true) => {}
                Ok(false) if !done(&acks.borrow()) => {
                    return Some("a subscriber stopped before handling every event".into());
                }
                Ok(false) => {}
                Err(_) => {
                    return Some(format!(
                        "a subscriber did not acknowledge within {SETTLE_TIMEOUT:?}"
                    ));
                }
            }
        }
        self.failure()
    }

    /// The first failure reported so far, without waiting.
    pub(crate) fn failure(&self) -> Option<String> {
        if let Some(failure) = self.observer.failure() {
            return Some(failure);
        }
        let acked = self.acked.lock().ok()?;
        acked.iter().find_map(|s| s.acks.borrow().failure.clone())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(step: &str) -> StepEvent {
        StepEvent {
            at: jiff::Timestamp::now(),
            phase: StepPhase::Applied,
            actor: "ana".into(),
            playbook: "p".into(),
            run_id: "r".into(),
            step: step.into(),
            kind: "scale".into(),
            target: None,
            before: None,
            after: None,
            message: String::new(),
        }
    }

    #[tokio::test]
    async fn the_engine_waits_for_acknowledgements_and_hears_failures() {
        let hub = EventHub::new(Arc::new(EventLog::default()));
        let mut screen = hub.subscribe();
        let mut journal = hub.subscribe_acknowledged();
        hub.send(event("scale-down"));
        hub.send(event("limit-ingress"));
        assert_eq!(screen.recv().await.unwrap().step, "scale-down");
        // Nothing acknowledged yet: settling waits.
        let pending = tokio::time::timeout(Duration::from_millis(50), hub.settle()).await;
        assert!(pending.is_err(), "settle waits for the acknowledgement");
        let first = journal.recv().await.unwrap();
        assert_eq!(first.step, "scale-down");
        journal.acknowledge(Ok(()));
        let second = journal.recv().await.unwrap();
        assert_eq!(second.step, "limit-ingress");
        journal.acknowledge(Err("disk full".into()));
        assert_eq!(hub.settle().await.as_deref(), Some("disk full"));
        // A screen that went away is dropped, not a failure of the run.
        drop(screen);
        hub.send(event("config"));
        journal.recv().await.unwrap();
        journal.acknowledge(Ok(()));
        assert_eq!(hub.failure().as_deref(), Some("disk full"));
    }

    #[tokio::test]
    async fn an_acknowledged_subscriber_that_goes_away_is_a_failure() {
        let hub = EventHub::new(Arc::new(EventLog::default()));
        let journal = hub.subscribe_acknowledged();
        assert_eq!(
            hub.settle().await,
            None,
            "nothing sent, nothing to wait for"
        );
        drop(journal);
        hub.send(event("scale-down"));
        assert!(hub.settle().await.is_some());
    }
}
