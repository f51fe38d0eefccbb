//! The console's one door to the playbook engine and the journal.
//!
//! Keys become [`super::app::Intent`]s; the app loop hands them to
//! [`Actions`], which runs them on their own tasks and reports back as
//! [`ActionEvent`]s on a channel. Everything the console knows of the
//! engine's API is in this file, so a change of that API is a change here.
//!
//! - A run's step events arrive through a [`StepObserver`] that forwards
//!   them; human gates arrive as [`ActionEvent::Gate`] with a one-shot
//!   reply, answered by the confirmation popup ([`ConsoleConfirmer`]).
//! - Cancelling stops the run before its next change; what it applied is
//!   then undone (the console's promise: `c` leaves nothing half-done).
//!   Declining a gate keeps what was applied, as the engine does.
//! - Notes, milestones and severity go to the journal with the actor's
//!   name; exports are written next to the journal.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::store::{PlaybookEntry, RunState, RunView, StepLine, StepStatus};
use crate::kube::KubeAccess;
use crate::playbook::cancel::Cancel;
use crate::playbook::engine::{Outcome, PlannedAction, PlannedStep, RunOptions, RunReport};
use crate::playbook::journal::TimelineRecorder;
use crate::playbook::{ConfirmRequest, Confirmation, Confirmer, Engine, StepEvent, StepObserver};
use crate::timeline::{Entry, Journal, Milestone, NewEvent};

/// What an action reports to the app loop.
#[derive(Debug)]
pub enum ActionEvent {
    /// A plan was computed (or a run started): show it.
    Planned(RunView),
    /// A step event of the run on screen.
    Step(StepEvent),
    /// A gate asks a human; answer through `reply`.
    Gate {
        /// The question.
        request: ConfirmRequest,
        /// Where the answer goes.
        reply: GateReply,
    },
    /// The run (or undo) ended.
    Finished {
        /// Outcome name (`done`, `failed-undone`, `declined`, `undone`, …).
        outcome: String,
        /// True for done, dry runs and undos that put everything back.
        ok: bool,
        /// The engine's summary.
        message: String,
    },
    /// A line for the status bar.
    Status(String),
}

/// The answer channel of a gate; dropping it declines.
#[derive(Debug)]
pub struct GateReply(Option<oneshot::Sender<Confirmation>>);

impl GateReply {
    /// Answers the gate (once; later answers are ignored).
    pub fn answer(&mut self, answer: Confirmation) {
        if let Some(sender) = self.0.take() {
            let _ = sender.send(answer);
        }
    }

    /// A reply nobody waits for (tests, snapshots).
    pub fn detached() -> Self {
        Self(None)
    }
}

/// Answers engine gates with the console's popup.
pub struct ConsoleConfirmer {
    events: mpsc::UnboundedSender<ActionEvent>,
}

impl Confirmer for ConsoleConfirmer {
    fn confirm<'a>(
        &'a self,
        request: &'a ConfirmRequest,
    ) -> crate::playbook::event::ConfirmFuture<'a> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let sent = self.events.send(ActionEvent::Gate {
                request: request.clone(),
                reply: GateReply(Some(tx)),
            });
            if sent.is_err() {
                return Confirmation::Unavailable("the console has closed".into());
            }
            rx.await.unwrap_or(Confirmation::Declined)
        })
    }
}

/// Forwards step events to the console.
struct Forward(mpsc::UnboundedSender<ActionEvent>);

impl StepObserver for Forward {
    fn on_event(&self, event: &StepEvent) {
        let _ = self.0.send(ActionEvent::Step(event.clone()));
    }
}

/// Where actions act.
pub struct Actions {
    kube: Option<Arc<KubeAccess>>,
    playbooks: PathBuf,
    recorder: Option<Arc<TimelineRecorder>>,
    journal_path: Option<PathBuf>,
    actor: String,
    events: mpsc::UnboundedSender<ActionEvent>,
    cancel: Arc<Mutex<Option<Cancel>>>,
}

impl Actions {
    /// Actions against `kube` (None: the cluster is not reachable), with
    /// playbooks from `playbooks` and the journal at `journal_path`
    /// (written through `journal` when it could be opened).
    pub fn new(
        kube: Option<Arc<KubeAccess>>,
        playbooks: PathBuf,
        journal: Option<Journal>,
        journal_path: Option<PathBuf>,
        events: mpsc::UnboundedSender<ActionEvent>,
    ) -> Self {
        let actor = kube
            .as_ref()
            .map(|k| k.user().to_owned())
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into());
        Self {
            kube,
            playbooks,
            recorder: journal.map(|j| Arc::new(TimelineRecorder::new(j))),
            journal_path,
            actor,
            events,
            cancel: Arc::new(Mutex::new(None)),
        }
    }

    /// Acts against `kube` from now on (another context); the actor is
    /// that context's user.
    pub fn set_kube(&mut self, kube: Arc<KubeAccess>) {
        self.actor = kube.user().to_owned();
        self.kube = Some(kube);
    }

    /// Who actions are recorded as.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    fn status(&self, text: impl Into<String>) {
        let text = crate::redact::redact_text(&text.into()).into_owned();
        let _ = self.events.send(ActionEvent::Status(text));
    }

    /// Whether a run or undo is in progress.
    pub fn busy(&self) -> bool {
        self.cancel.lock().map(|c| c.is_some()).unwrap_or(false)
    }

    fn engine(&self, kube: &Arc<KubeAccess>) -> (Engine, Cancel) {
        let cancel = Cancel::new();
        let engine = Engine::new(
            kube.clone(),
            Arc::new(Forward(self.events.clone())),
            Arc::new(ConsoleConfirmer {
                events: self.events.clone(),
            }),
        )
        .with_cancel(cancel.clone());
        // The journal's recorder is acknowledged: the engine waits for each
        // event to be durable before its next write.
        if let Some(recorder) = &self.recorder {
            tokio::spawn(recorder.clone().record(engine.subscribe_acknowledged()));
        }
        (engine, cancel)
    }

    fn bound(
        &self,
        kube: &KubeAccess,
        name: &str,
    ) -> Result<crate::playbook::BoundPlaybook, String> {
        let path = playbook_path(&self.playbooks, name)?;
        let loaded = crate::playbook::load_file(&path).map_err(|e| format!("{e}"))?;
        loaded
            .bind(&[], None, kube.namespace())
            .map_err(|e| format!("{e}"))
    }

    /// Computes the plan of `name` and shows it. Changes nothing.
    pub fn plan(&self, name: &str) {
        let Some(kube) = self.kube.clone() else {
            return self.status("no cluster: cannot plan");
        };
        let bound = match self.bound(&kube, name) {
            Ok(bound) => bound,
            Err(e) => return self.status(format!("{name}: {e}")),
        };
        let (engine, _cancel) = self.engine(&kube);
        let events = self.events.clone();
        tokio::spawn(async move {
            let event = match engine.plan(&bound, "plan").await {
                Ok(plan) => ActionEvent::Planned(RunView {
                    playbook: plan.playbook.clone(),
                    run_id: None,
                    steps: plan.steps.iter().map(step_line).collect(),
                    state: RunState::Plan,
                    message: format!("plan in {} as {}", plan.namespace, plan.actor),
                }),
                Err(e) => ActionEvent::Status(format!("cannot plan {}: {e}", bound.name)),
            };
            let _ = events.send(event);
        });
    }

    /// Runs `name` (a dry run when asked); gates come back as popups.
    pub fn run(&self, name: &str, dry_run: bool) {
        if self.busy() {
            return self.status("a run is in progress: wait for it or cancel it (c)");
        }
        let Some(kube) = self.kube.clone() else {
            return self.status("no cluster: cannot run");
        };
        let bound = match self.bound(&kube, name) {
            Ok(bound) => bound,
            Err(e) => return self.status(format!("{name}: {e}")),
        };
        let (engine, cancel) = self.engine(&kube);
        if let Ok(mut slot) = self.cancel.lock() {
            *slot = Some(cancel);
        }
        let slot = self.cancel.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = engine.run(&bound, RunOptions { dry_run }).await;
            // A cancelled run stops before its next write and the engine
            // undoes what it applied, under the run's Lease.
            let finished = finished(result);
            if let Ok(mut s) = slot.lock() {
                *s = None;
            }
            let _ = events.send(finished.0);
        });
    }

    /// Undoes the last run in the namespace.
    pub fn undo(&self) {
        if self.busy() {
            return self.status("a run is in progress: cancel it (c) instead");
        }
        let Some(kube) = self.kube.clone() else {
            return self.status("no cluster: cannot undo");
        };
        let (engine, cancel) = self.engine(&kube);
        if let Ok(mut slot) = self.cancel.lock() {
            *slot = Some(cancel);
        }
        let slot = self.cancel.clone();
        let events = self.events.clone();
        let namespace = kube.namespace().to_owned();
        tokio::spawn(async move {
            let finished = finished(engine.undo(&namespace, None).await);
            if let Ok(mut s) = slot.lock() {
                *s = None;
            }
            let _ = events.send(finished.0);
        });
    }

    /// Stops the run in progress before its next change (then undoes it).
    pub fn cancel(&self) {
        let sent = self
            .cancel
            .lock()
            .ok()
            .and_then(|s| {
                s.as_ref().map(|c| {
                    c.cancel("the console");
                    true
                })
            })
            .unwrap_or(false);
        self.status(if sent {
            "cancelling: the run stops before its next change, then what it applied is undone"
        } else {
            "no run in progress"
        });
    }

    fn record(&self, entry: Entry, done: String) {
        let Some(recorder) = self.recorder.clone() else {
            return match &self.journal_path {
                Some(path) => self.status(format!(
                    "not recorded: the journal {} could not be opened for writing",
                    path.display()
                )),
                None => self.status("no journal to write to (give --timeline FILE)"),
            };
        };
        let actor = self.actor.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let text = match recorder
                .journal()
                .append_async(NewEvent::now(actor, entry))
                .await
            {
                Ok(_) => done,
                Err(e) => format!("not recorded: {e}"),
            };
            let _ = events.send(ActionEvent::Status(
                crate::redact::redact_text(&text).into_owned(),
            ));
        });
    }

    /// Adds a note to the timeline.
    pub fn note(&self, text: &str) {
        self.record(Entry::note(text), "note added".into());
    }

    /// Marks a milestone.
    pub fn milestone(&self, milestone: Milestone) {
        self.record(
            Entry::milestone(milestone),
            format!("milestone {milestone} marked"),
        );
    }

    /// Sets the severity.
    pub fn severity(&self, severity: &str) {
        self.record(
            Entry::severity(severity),
            format!("severity set to {severity}"),
        );
    }

    /// Exports the timeline next to the journal (`.md` or `.html`).
    pub fn export(&self, format: crate::timeline::export::Format) {
        let Some(path) = self.journal_path.clone() else {
            return self.status("no journal to export (give --timeline FILE)");
        };
        let events = self.events.clone();
        tokio::spawn(async move {
            let text = match tokio::task::spawn_blocking(move || export(&path, format)).await {
                Ok(Ok(out)) => format!("timeline exported to {}", out.display()),
                Ok(Err(e)) => format!("export failed: {e}"),
                Err(e) => format!("export failed: {e}"),
            };
            let _ = events.send(ActionEvent::Status(text));
        });
    }
}

/// Writes the export of the journal at `path` beside it; returns its path.
pub fn export(path: &Path, format: crate::timeline::export::Format) -> Result<PathBuf, String> {
    use crate::timeline::export::Format;
    let contents = crate::timeline::read_journal(path).map_err(|e| e.to_string())?;
    let text = crate::timeline::export::render(&contents, format);
    let extension = match format {
        Format::Markdown => "md",
        Format::Json => "json",
        Format::Html => "html",
    };
    let out = path.with_extension(extension);
    std::fs::write(&out, text).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

fn playbook_path(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("not a playbook name".into());
    }
    for ext in ["yaml", "yml"] {
        let path = dir.join(format!("{name}.{ext}"));
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(format!("no {name}.yaml in {}", dir.display()))
}

/// The playbooks in `dir` (name order), and a line per file that does not
/// load.
pub fn list_playbooks(dir: &Path) -> (Vec<PlaybookEntry>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        problems.push(format!("cannot read the playbook folder {}", dir.display()));
        return (found, problems);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    for path in paths {
        match crate::playbook::load_file(&path) {
            Ok(loaded) => found.push(PlaybookEntry {
                name: loaded.doc.name.value.clone(),
                description: loaded
                    .doc
                    .description
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                alerts: loaded.doc.alerts.clone(),
            }),
            Err(_) => problems.push(format!(
                "{} does not load (warroom validate)",
                path.display()
            )),
        }
    }
    (found, problems)
}

fn step_line(step: &PlannedStep) -> StepLine {
    let target = step
        .target
        .as_ref()
        .map(|t| format!("{}/{}", t.kind, t.name))
        .unwrap_or_default();
    let changes: Vec<String> = step
        .changes
        .iter()
        .map(|c| {
            let show = |v: &Option<serde_json::Value>| {
                v.as_ref().map_or("—".to_owned(), |v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            format!(
                "{} {} → {}",
                crate::playbook::record::display_path(&c.path),
                show(&c.before),
                show(&c.after)
            )
        })
        .collect();
    let what = match step.action {
        PlannedAction::Change => format!("{target}  {}", changes.join(", ")),
        PlannedAction::Confirm | PlannedAction::Note | PlannedAction::Wait => step.detail.clone(),
        PlannedAction::Unchanged => format!("{target}  unchanged"),
        PlannedAction::Skip => "skipped".into(),
        PlannedAction::Fail | PlannedAction::Refuse => step.detail.clone(),
    };
    StepLine {
        name: step.name.clone(),
        kind: step.kind.clone(),
        what: crate::redact::redact_text(&one_line(&what)).into_owned(),
        status: match step.action {
            PlannedAction::Skip => StepStatus::Skipped,
            PlannedAction::Fail | PlannedAction::Refuse => StepStatus::Failed,
            _ => StepStatus::Planned,
        },
        message: String::new(),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The status a step event puts its step in.
pub fn step_status(phase: crate::playbook::StepPhase) -> StepStatus {
    use crate::playbook::StepPhase as P;
    match phase {
        P::Planned => StepStatus::Planned,
        P::DryRun | P::Applied | P::Progress | P::Gate => StepStatus::Running,
        P::Verified | P::Unchanged | P::Confirmed | P::Noted => StepStatus::Done,
        P::Skipped => StepStatus::Skipped,
        P::Failed | P::Cancelled => StepStatus::Failed,
        P::Undone => StepStatus::Undone,
    }
}

/// The one-line summary of an event for its step.
pub fn step_message(event: &StepEvent) -> String {
    one_line(&event.message)
}

fn finished(
    result: Result<RunReport, crate::playbook::engine::RunError>,
) -> (ActionEvent, Option<String>) {
    match result {
        Ok(report) => {
            let outcome = serde_json::to_value(report.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{:?}", report.outcome));
            let ok = matches!(
                report.outcome,
                Outcome::Done | Outcome::DryRun | Outcome::Undone
            );
            (
                ActionEvent::Finished {
                    outcome,
                    ok,
                    message: crate::redact::redact_text(&one_line(&report.message)).into_owned(),
                },
                Some(report.plan.run_id.clone()),
            )
        }
        Err(e) => (
            ActionEvent::Finished {
                outcome: "error".into(),
                ok: false,
                message: crate::redact::redact_text(&e.to_string()).into_owned(),
            },
            None,
        ),
    }
}
