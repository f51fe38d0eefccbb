//! Running a bound playbook, by stage: plan (`plan.rs`: preconditions, read the
//! current state, compute each change, show the diff, optional server-side
//! dry run) → take the namespace's Lease → apply (`apply.rs`) step by step (write at
//! the resourceVersion just read, read back, verify) → undo (`undo.rs`) the applied
//! steps in reverse when a step fails or the run is cancelled, still under
//! the Lease.
//!
//! For callers (the CLI, the console, the drill) the whole of it is:
//!
//! ```text
//! let engine = Arc::new(Engine::new(kube, observer, confirmer).with_cancel(cancel.clone()));
//! let RunHandle { mut events, report } = engine.start(bound_playbook, RunOptions::default());
//! while let Some(event) = events.recv().await { /* show it */ }
//! let report = report.await??;              // cancel.cancel("the console") to stop it
//! ```
//!
//! Every write is a conditional replace at the resourceVersion just read; a
//! 409 means someone else wrote first, so the step reads again and
//! recomputes. Every changing step records the values it replaced on the
//! object itself (see [`super::record`]) and in the run record, so `undo`
//! and `restore.yaml` work from any machine. A change that is already in
//! place writes nothing, so a re-run is a no-op.
//!
//! A failed step undoes what was applied (unless `on-failure` says
//! otherwise). A cancellation ([`super::cancel`]) stops the run before its
//! next write and undoes what was applied, asking the [`Confirmer`] first
//! (nobody to ask means yes). Stopping is different: a declined gate, or an
//! incident journal that can no longer record the next change (see
//! [`Engine::subscribe_acknowledged`]), stops the run before its next step
//! and keeps what was applied — in the middle of an incident, putting
//! mitigations back is then a decision for `warroom undo`. A change that
//! would record a secret is refused before anything is written
//! ([`super::check`]). Losing the Lease, also during a wait or a gate,
//! stops the run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use super::cancel::Cancel;
use super::check;
use super::event::{
    AckedEvents, ConfirmRequest, Confirmation, Confirmer, EventHub, EventReceiver, StepEvent,
    StepObserver, StepPhase,
};
use super::lease::{LeaseError, RunLease};
use super::load::{BoundPlaybook, BoundStep};
use super::model::OnFailure;
use super::record::{
    self, FieldChange, RunOutcome, RunRecord, Stamp, StepOutcome, StepRecord, apply_edit, diff,
    display_path, with_record,
};
use super::step::{Change, Check, Edit, Effect};
use crate::kube::{KubeAccess, KubeError, ObjectRef};
use crate::redact::{redact_text, redact_value};

mod apply;
mod plan;
mod undo;

pub use super::outcome::{Outcome, PlannedAction};
use apply::Applied;
pub use plan::{PLAN_GATE, Plan, PlannedStep, describe, engine_permissions, step_permissions};
pub use undo::undo_record_problem;

/// How many times a write is retried after a 409 with a fresh read.
const CONFLICT_RETRIES: usize = 8;

/// Why a run stops when its Lease is lost.
const LEASE_LOST: &str = "the run lease was lost (taken by someone else, or not renewed within \
                          its duration); stopping";

/// The result of a run or an undo.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The plan shown before anything changed.
    pub plan: Plan,
    /// Outcome.
    pub outcome: Outcome,
    /// What happened to each step reached.
    pub steps: Vec<StepRecord>,
    /// Summary in words.
    pub message: String,
    /// True when the API server stopped answering during the run.
    pub unreachable: bool,
    /// Milliseconds from start to the end of the last step.
    pub elapsed_ms: u64,
    /// Milliseconds of that spent in `wait` steps and human gates.
    pub waited_ms: u64,
    /// Why step events could not be recorded in the incident journal, if
    /// they could not (the run then ends non-zero).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub journal_error: Option<String>,
}

/// Errors that stop a run before it changes anything.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The API server could not be reached.
    #[error(transparent)]
    Unreachable(KubeError),
    /// The API server refused a read (403, 500, …).
    #[error(transparent)]
    Kube(KubeError),
}

impl From<KubeError> for RunError {
    fn from(err: KubeError) -> Self {
        if err.is_unreachable() {
            RunError::Unreachable(err)
        } else {
            RunError::Kube(err)
        }
    }
}

/// Options of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Plan and ask the server to dry-run every change; change nothing.
    pub dry_run: bool,
}

/// A run started with [`Engine::start`].
pub struct RunHandle {
    /// Every step event of the run, in order.
    pub events: EventReceiver,
    /// The run's report, once it ends.
    pub report: tokio::task::JoinHandle<Result<RunReport, RunError>>,
}

/// Runs playbooks against one API server.
pub struct Engine {
    kube: Arc<KubeAccess>,
    events: EventHub,
    confirmer: Arc<dyn Confirmer>,
    lease_duration: Duration,
    cancel: Cancel,
}

/// Where the plan stage left a run.
enum Preflight {
    /// Go on with this plan.
    Go(Plan),
    /// The run ends here (refused, dry run, declined, cancelled).
    Done(RunReport),
}

/// Why a run stops before its next step, keeping what it applied.
enum Halt {
    /// A step event could not be recorded in the incident journal.
    Journal(String),
    /// The run was cancelled (Ctrl-C, SIGTERM, the console).
    Cancelled(String),
}

impl Halt {
    fn reason(&self) -> String {
        match self {
            Halt::Journal(err) => format!(
                "the incident journal could not be written ({err}), so the next change would \
                 be missing from it"
            ),
            Halt::Cancelled(who) => cancelled_by(who),
        }
    }
}

/// "cancelled by the operator (Ctrl-C)".
fn cancelled_by(who: &str) -> String {
    if who.is_empty() {
        "cancelled by the operator".into()
    } else {
        format!("cancelled by the operator ({who})")
    }
}

/// A new run id: UTC time and a random suffix (`20261126T231500Z-3f9a`).
pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname
    // writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn fields(changes: &[FieldChange], after: bool) -> Value {
    let mut map = Map::new();
    for change in changes {
        let value = if after { &change.after } else { &change.before };
        map.insert(change.path.clone(), value.clone().unwrap_or(Value::Null));
    }
    Value::Object(map)
}

/// A step that failed, and why.
struct StepFailure {
    message: String,
    unreachable: bool,
    /// The step's gate was declined (or could not be asked, or the prompt
    /// was interrupted): the run stops and keeps what it applied.
    declined: bool,
    /// The run was interrupted during the step (a wait).
    interrupted: bool,
    /// Changes that landed on the cluster before the step failed (the write
    /// was accepted, or is known or suspected to have landed): recorded so
    /// they are undone.
    applied: Vec<FieldChange>,
}

impl StepFailure {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unreachable: false,
            declined: false,
            interrupted: false,
            applied: Vec::new(),
        }
    }

    fn declined(message: impl Into<String>) -> Self {
        Self {
            declined: true,
            ..Self::new(message)
        }
    }

    fn with_applied(mut self, applied: Vec<FieldChange>) -> Self {
        self.applied = applied;
        self
    }
}

impl From<KubeError> for StepFailure {
    fn from(err: KubeError) -> Self {
        Self {
            unreachable: err.is_unreachable(),
            ..Self::new(err.to_string())
        }
    }
}

/// Context shared by the steps of one run.
struct Run<'a> {
    run_id: String,
    playbook: String,
    actor: String,
    engine: &'a Engine,
}

impl Run<'_> {
    fn emit(
        &self,
        phase: StepPhase,
        step: &str,
        kind: &str,
        target: Option<&ObjectRef>,
        changes: Option<&[FieldChange]>,
        message: impl Into<String>,
    ) {
        // Changes that would record a secret are refused before they are
        // made; redacting here as well keeps anything that slips past that
        // (a note, a wait's observation) off screens and journals.
        let redacted = |mut value: Value| {
            redact_value(&mut value);
            value
        };
        let event = StepEvent {
            at: jiff::Timestamp::now(),
            phase,
            actor: self.actor.clone(),
            playbook: self.playbook.clone(),
            run_id: self.run_id.clone(),
            step: step.to_owned(),
            kind: kind.to_owned(),
            target: target.cloned(),
            before: changes.map(|c| redacted(fields(c, false))),
            after: changes.map(|c| redacted(fields(c, true))),
            message: clean(&message.into()),
        };
        self.engine.events.send(event);
    }

    fn stamp(&self) -> Stamp {
        Stamp {
            run: self.run_id.clone(),
            playbook: self.playbook.clone(),
            actor: self.actor.clone(),
            at: jiff::Timestamp::now(),
        }
    }
}

impl Engine {
    /// An engine reporting to `observer` and asking `confirmer` at gates.
    pub fn new(
        kube: Arc<KubeAccess>,
        observer: Arc<dyn StepObserver>,
        confirmer: Arc<dyn Confirmer>,
    ) -> Self {
        Self {
            kube,
            events: EventHub::new(observer),
            confirmer,
            lease_duration: Duration::from_secs(15),
            cancel: Cancel::new(),
        }
    }

    /// Stops runs and undos when `cancel` is cancelled (see
    /// [`super::cancel`]): a run stops before its next write — cutting a
    /// wait or a gate short — and undoes what it applied, asking the
    /// confirmer first; an undo stops before its next write.
    pub fn with_cancel(mut self, cancel: Cancel) -> Self {
        self.cancel = cancel;
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the run is cancelled.
    async fn until_cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Why the run must stop before its next change, if it must.
    /// Waits for the acknowledged subscribers first (see [`EventHub::settle`]).
    async fn halt(&self) -> Option<Halt> {
        if let Some(err) = self.events.settle().await {
            return Some(Halt::Journal(err));
        }
        self.cancelled()
            .then(|| Halt::Cancelled(self.cancel.reason()))
    }

    /// The outcome of a run that halted before it changed anything.
    fn halted_outcome(halt: &Halt) -> Outcome {
        match halt {
            Halt::Journal(_) => Outcome::Stopped,
            Halt::Cancelled(_) => Outcome::Cancelled,
        }
    }

    /// Every step event from now on, in order; the engine does not wait for
    /// this subscriber (a screen). See [`super::event`].
    pub fn subscribe(&self) -> EventReceiver {
        self.events.subscribe()
    }

    /// Every step event from now on, in order; the engine waits for each to
    /// be acknowledged before its next write and before asking a human, and
    /// a failure acknowledged stops the run before its next change (the
    /// incident journal's recorder, a printer whose lines must come before
    /// a prompt).
    pub fn subscribe_acknowledged(&self) -> AckedEvents {
        self.events.subscribe_acknowledged()
    }

    /// Runs `playbook` on its own task: the events as they happen, and the
    /// report at the end. The simple entry point for callers that show a
    /// run (the console) or drive one (the drill); cancel it through the
    /// [`Cancel`] given to [`Engine::with_cancel`].
    pub fn start(self: Arc<Self>, playbook: BoundPlaybook, options: RunOptions) -> RunHandle {
        let events = self.subscribe();
        let report = tokio::spawn(async move { self.run(&playbook, options).await });
        RunHandle { events, report }
    }

    /// Changes how long the run lease lasts without renewal (default 15 s).
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        self.lease_duration = duration;
        self
    }

    /// The API access used.
    pub fn kube(&self) -> &Arc<KubeAccess> {
        &self.kube
    }

    /// Runs a playbook (see the module documentation for the sequence).
    /// Returns once every acknowledged subscriber has handled every event.
    pub async fn run(
        &self,
        playbook: &BoundPlaybook,
        options: RunOptions,
    ) -> Result<RunReport, RunError> {
        let mut report = self.run_steps(playbook, options).await?;
        report.journal_error = self.events.settle().await;
        Ok(report)
    }

    /// The plan stage of a run, up to the moment it may change something:
    /// preconditions, the plan (sent as `planned` events), refusals, the
    /// dry run, and the confirmation of a plan whose first change comes
    /// before any gate.
    async fn preflight(
        &self,
        run: &Run<'_>,
        playbook: &BoundPlaybook,
        options: RunOptions,
        started: Instant,
    ) -> Result<Preflight, RunError> {
        let run_id = &run.run_id;
        // Preconditions.
        let mut unmet = Vec::new();
        for precondition in &playbook.preconditions {
            let object = self.kube.get(&precondition.object).await?;
            let (holds, seen) = precondition.check.holds(object.as_ref());
            if !holds {
                unmet.push(format!(
                    "{} ({}: {seen})",
                    precondition.description, precondition.object
                ));
            }
        }
        let plan = self.plan(playbook, run_id).await?;
        for step in &plan.steps {
            run.emit(
                StepPhase::Planned,
                &step.name,
                &step.kind,
                step.target.as_ref(),
                (!step.changes.is_empty()).then_some(step.changes.as_slice()),
                format!(
                    "{}: {}",
                    format!("{:?}", step.action).to_lowercase(),
                    step.detail
                ),
            );
        }
        let report = |outcome, steps, message: String, unreachable| RunReport {
            plan: plan.clone(),
            outcome,
            steps,
            message: clean(&message),
            unreachable,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        };
        if let Some(halt) = self.halt().await {
            return Ok(Preflight::Done(report(
                Self::halted_outcome(&halt),
                Vec::new(),
                format!("{}; nothing was changed", halt.reason()),
                false,
            )));
        }
        if let Some(refused) = plan
            .steps
            .iter()
            .find(|s| s.action == PlannedAction::Refuse)
        {
            return Ok(Preflight::Done(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "step `{}` refused: {}; nothing was changed",
                    refused.name, refused.detail
                ),
                false,
            )));
        }
        if !unmet.is_empty() {
            return Ok(Preflight::Done(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "precondition not met, nothing changed: {}",
                    unmet.join("; ")
                ),
                false,
            )));
        }
        if let Some(failing) = plan.steps.iter().find(|s| s.action == PlannedAction::Fail) {
            return Ok(Preflight::Done(report(
                Outcome::PlanFailed,
                Vec::new(),
                format!(
                    "step `{}` cannot be done, nothing changed: {}",
                    failing.name, failing.detail
                ),
                false,
            )));
        }
        if options.dry_run {
            return self
                .dry_run(run, playbook, &plan, started)
                .await
                .map(Preflight::Done);
        }
        if let Some(gate) = plan
            .steps
            .iter()
            .find(|s| s.action == PlannedAction::Confirm)
            && let Err(reason) = self.confirmer.can_ask()
        {
            return Ok(Preflight::Done(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "step `{}` needs a confirmation ({}) and {reason}; nothing changed",
                    gate.name, gate.detail
                ),
                false,
            )));
        }
        // A change that no `confirm` step comes before would change the
        // cluster unasked: ask once for the whole plan.
        let first_gate = plan
            .steps
            .iter()
            .position(|s| s.action == PlannedAction::Confirm)
            .unwrap_or(plan.steps.len());
        if plan.steps[..first_gate]
            .iter()
            .any(|s| s.action == PlannedAction::Change)
        {
            let changing: Vec<&str> = plan
                .steps
                .iter()
                .filter(|s| s.action == PlannedAction::Change)
                .map(|s| s.name.as_str())
                .collect();
            let request = ConfirmRequest {
                run_id: run_id.clone(),
                playbook: playbook.name.clone(),
                step: PLAN_GATE.into(),
                prompt: format!(
                    "Apply {} change(s) to namespace {} ({})?",
                    changing.len(),
                    playbook.namespace,
                    changing.join(", ")
                ),
                answer: None,
                default_yes: false,
            };
            run.emit(
                StepPhase::Gate,
                PLAN_GATE,
                "confirm",
                None,
                None,
                request.prompt.clone(),
            );
            match self.ask(&request).await {
                Confirmation::Approved => run.emit(
                    StepPhase::Confirmed,
                    PLAN_GATE,
                    "confirm",
                    None,
                    None,
                    request.prompt.clone(),
                ),
                Confirmation::Declined if self.cancelled() => {
                    return Ok(Preflight::Done(report(
                        Outcome::Cancelled,
                        Vec::new(),
                        format!(
                            "{} at the confirmation of the plan; nothing was changed",
                            cancelled_by(&self.cancel.reason())
                        ),
                        false,
                    )));
                }
                Confirmation::Declined => {
                    return Ok(Preflight::Done(report(
                        Outcome::Refused,
                        Vec::new(),
                        "the plan was declined by the operator; nothing changed".into(),
                        false,
                    )));
                }
                Confirmation::Unavailable(reason) => {
                    return Ok(Preflight::Done(report(
                        Outcome::Refused,
                        Vec::new(),
                        format!(
                            "the plan changes the cluster before any confirm step and needs a confirmation: {reason}; nothing changed"
                        ),
                        false,
                    )));
                }
            }
        }
        if let Some(halt) = self.halt().await {
            return Ok(Preflight::Done(report(
                Self::halted_outcome(&halt),
                Vec::new(),
                format!("{}; nothing was changed", halt.reason()),
                false,
            )));
        }
        Ok(Preflight::Go(plan))
    }

    async fn run_steps(
        &self,
        playbook: &BoundPlaybook,
        options: RunOptions,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let run_id = new_run_id();
        let run = Run {
            run_id: run_id.clone(),
            playbook: playbook.name.clone(),
            actor: self.kube.user().to_owned(),
            engine: self,
        };
        let plan = match self.preflight(&run, playbook, options, started).await? {
            Preflight::Go(plan) => plan,
            Preflight::Done(report) => return Ok(report),
        };
        let report = |outcome, steps, message: String, unreachable| RunReport {
            plan: plan.clone(),
            outcome,
            steps,
            message: clean(&message),
            unreachable,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        };
        let holder = format!(
            "{} on {} (pid {}, run {run_id})",
            run.actor,
            hostname(),
            std::process::id()
        );
        let lease = match RunLease::acquire(
            self.kube.clone(),
            &playbook.namespace,
            &holder,
            self.lease_duration,
        )
        .await
        {
            Ok(lease) => lease,
            Err(err @ LeaseError::Held { .. }) => {
                return Ok(report(Outcome::Refused, Vec::new(), err.to_string(), false));
            }
            Err(LeaseError::Kube(err)) => return Err(err.into()),
        };
        let mut record = RunRecord {
            id: run_id.clone(),
            playbook: playbook.name.clone(),
            actor: run.actor.clone(),
            namespace: playbook.namespace.clone(),
            started: jiff::Timestamp::now(),
            finished: None,
            outcome: RunOutcome::Running,
            params: playbook.params.clone(),
            steps: Vec::new(),
            message: String::new(),
            undone: None,
        };
        if let Err(err) = self.save_record(&playbook.namespace, &record).await {
            let _ = lease.release().await;
            return Err(err.into());
        }
        let Applied {
            outcome,
            message,
            mut unreachable,
            waited,
        } = self.apply_steps(&run, playbook, &lease, &mut record).await;
        record.finished = Some(jiff::Timestamp::now());
        record.outcome = outcome;
        record.message = clean(&message);
        if let Err(err) = self.save_record(&playbook.namespace, &record).await {
            tracing::warn!("saving run record {run_id}: {err}");
            unreachable |= err.is_unreachable();
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Err(err) = lease.release().await {
            tracing::warn!("releasing the run lease: {err}");
        }
        Ok(RunReport {
            plan,
            outcome,
            steps: record.steps,
            message: clean(&message),
            unreachable,
            elapsed_ms,
            waited_ms: waited.as_millis() as u64,
            journal_error: self.events.failure(),
        })
    }

    /// Asks the confirmer; an interrupt while it waits counts as declined.
    async fn ask(&self, request: &ConfirmRequest) -> Confirmation {
        // What was printed so far comes before the question.
        let _ = self.events.settle().await;
        if self.cancelled() {
            return Confirmation::Declined;
        }
        tokio::select! {
            answer = self.confirmer.confirm(request) => answer,
            _ = self.until_cancelled() => Confirmation::Declined,
        }
    }
}

/// Text with any secret in it redacted (messages can quote what a server or
/// an object said).
fn clean(text: &str) -> String {
    redact_text(text).into_owned()
}

/// Parameter values of a plan (for printing).
pub fn params_line(params: &BTreeMap<String, Value>) -> String {
    params
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}
