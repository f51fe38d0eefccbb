//! Running a bound playbook: preconditions → plan (read current state,
//! compute each change, show the diff) → optional server-side dry run →
//! take the namespace's Lease → apply step by step, each change verified by
//! reading it back → on failure undo the applied steps in reverse.
//!
//! Every write is a conditional replace at the resourceVersion just read; a
//! 409 means someone else wrote first, so the step reads again and
//! recomputes. Every changing step records the values it replaced on the
//! object itself (see [`super::record`]) and in the run record, so `undo`
//! and `restore.yaml` work from any machine. A change that is already in
//! place writes nothing, so a re-run is a no-op.
//!
//! A failed step undoes what was applied (unless `on-failure` says
//! otherwise). Stopping is different: a declined gate, an interrupt, or an
//! incident journal that can no longer record the next change stop the run
//! before its next step and keep what was applied — in the middle of an
//! incident, putting mitigations back is a decision for `warroom undo`. A
//! change that would record a secret is refused before anything is
//! written ([`super::check`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use serde::Serialize;
use serde_json::{Map, Value};

/// How many times a write is retried after a 409 with a fresh read.
const CONFLICT_RETRIES: usize = 8;

/// Why a run stops when its Lease is lost.
const LEASE_LOST: &str = "the run lease was lost (taken by someone else, or not renewed within \
                          its duration); stopping";

/// The name under which the whole plan is confirmed when a change comes
/// before any `confirm` step.
pub const PLAN_GATE: &str = "plan";

/// What a step will do, as planned against the current state.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// Step name.
    pub name: String,
    /// Step kind.
    pub kind: String,
    /// The object acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectRef>,
    /// The planned action.
    pub action: PlannedAction,
    /// The fields that will change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Details (gate prompt, wait condition, note text, failure).
    pub detail: String,
}

/// The planned action of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedAction {
    /// Change the target.
    Change,
    /// Nothing to change: already in place.
    Unchanged,
    /// Skipped: its `when-changed` step changes nothing.
    Skip,
    /// Wait for a condition.
    Wait,
    /// Ask a human.
    Confirm,
    /// Write a note.
    Note,
    /// Cannot be done (object missing, patch does not apply).
    Fail,
    /// Refused: the change would record a secret (its field names one, or
    /// the value there now or after looks like one).
    Refuse,
}

/// The plan of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Run id.
    pub run_id: String,
    /// Playbook name.
    pub playbook: String,
    /// Namespace.
    pub namespace: String,
    /// Kubeconfig user.
    pub actor: String,
    /// Steps in order.
    pub steps: Vec<PlannedStep>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step done and verified.
    Done,
    /// Dry run: planned and checked by the server, nothing changed.
    DryRun,
    /// The plan shows a step that cannot be done; nothing changed.
    PlanFailed,
    /// A step failed; the applied steps were undone.
    FailedUndone,
    /// A step failed; applied steps were left (`on-failure: stop|continue`)
    /// or could not all be undone.
    Failed,
    /// Refused before anything changed: lease held, precondition not met,
    /// a change that would record a secret, the plan or an undo declined,
    /// no confirmation possible, nothing to undo.
    Refused,
    /// The operator declined a gate (or nobody could be asked) after the
    /// run started: it stopped there and kept what was applied.
    Declined,
    /// The run stopped before finishing and kept what was applied: the
    /// incident journal could not be written, or it was interrupted.
    Stopped,
    /// A run was undone (`warroom undo`).
    Undone,
    /// The run was cancelled (Ctrl-C, SIGTERM, the console) and what it
    /// applied was undone; the steps say what is left when the undo was
    /// declined or stopped.
    Cancelled,
}

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

    /// Reads current state and computes what each step would do, simulating
    /// earlier steps' changes for later ones. Changes nothing.
    pub async fn plan(&self, playbook: &BoundPlaybook, run_id: &str) -> Result<Plan, RunError> {
        let mut state: HashMap<ObjectRef, Option<Value>> = HashMap::new();
        let mut changed: HashMap<&str, bool> = HashMap::new();
        let mut steps = Vec::new();
        for step in &playbook.steps {
            let skip = step
                .when_changed
                .as_deref()
                .is_some_and(|earlier| !changed.get(earlier).copied().unwrap_or(false));
            let planned = match &step.effect {
                Effect::Change(change) => {
                    let current = match state.get(&change.target) {
                        Some(known) => known.clone(),
                        None => self.kube.get(&change.target).await?,
                    };
                    let mut planned = PlannedStep {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: Some(change.target.clone()),
                        action: PlannedAction::Change,
                        changes: Vec::new(),
                        detail: String::new(),
                    };
                    match current {
                        None => {
                            planned.action = PlannedAction::Fail;
                            planned.detail = format!("{} not found", change.target);
                        }
                        Some(current) => match apply_edit(&current, &change.edit) {
                            Err(err) => {
                                planned.action = PlannedAction::Fail;
                                planned.detail = err;
                            }
                            Ok(desired) => {
                                planned.changes = diff(&current, &desired);
                                if let Some(reason) =
                                    planned.changes.iter().find_map(check::secret_in_change)
                                {
                                    // Never shown, never recorded: the values go.
                                    planned.changes.clear();
                                    planned.action = PlannedAction::Refuse;
                                    planned.detail = format!(
                                        "{} {reason}, and {}",
                                        change.target,
                                        check::SECRET_ADVICE
                                    );
                                } else if skip {
                                    planned.action = PlannedAction::Skip;
                                    planned.detail = format!(
                                        "only when `{}` changes something",
                                        step.when_changed.as_deref().unwrap_or_default()
                                    );
                                } else if planned.changes.is_empty() {
                                    planned.action = PlannedAction::Unchanged;
                                    planned.detail = match change.edit {
                                        Edit::Restore => "nothing recorded to restore".into(),
                                        _ => "already in place".into(),
                                    };
                                } else {
                                    state.insert(change.target.clone(), Some(desired));
                                }
                            }
                        },
                    }
                    changed.insert(&step.name, planned.action == PlannedAction::Change);
                    planned
                }
                Effect::Wait(wait) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: Some(wait.target.clone()),
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Wait
                    },
                    changes: Vec::new(),
                    detail: format!(
                        "until {} (timeout {:?})",
                        describe(&wait.until),
                        wait.timeout
                    ),
                },
                Effect::Gate(gate) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Confirm
                    },
                    changes: Vec::new(),
                    detail: match &gate.answer {
                        Some(answer) => format!("{} (type {answer:?})", gate.prompt),
                        None => gate.prompt.clone(),
                    },
                },
                Effect::Note(text) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Note
                    },
                    changes: Vec::new(),
                    detail: text.clone(),
                },
            };
            steps.push(planned);
        }
        Ok(Plan {
            run_id: run_id.to_owned(),
            playbook: playbook.name.clone(),
            namespace: playbook.namespace.clone(),
            actor: self.kube.user().to_owned(),
            steps,
        })
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
        let plan = self.plan(playbook, &run_id).await?;
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
            return Ok(report(
                Self::halted_outcome(&halt),
                Vec::new(),
                format!("{}; nothing was changed", halt.reason()),
                false,
            ));
        }
        if let Some(refused) = plan
            .steps
            .iter()
            .find(|s| s.action == PlannedAction::Refuse)
        {
            return Ok(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "step `{}` refused: {}; nothing was changed",
                    refused.name, refused.detail
                ),
                false,
            ));
        }
        if !unmet.is_empty() {
            return Ok(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "precondition not met, nothing changed: {}",
                    unmet.join("; ")
                ),
                false,
            ));
        }
        if let Some(failing) = plan.steps.iter().find(|s| s.action == PlannedAction::Fail) {
            return Ok(report(
                Outcome::PlanFailed,
                Vec::new(),
                format!(
                    "step `{}` cannot be done, nothing changed: {}",
                    failing.name, failing.detail
                ),
                false,
            ));
        }
        if options.dry_run {
            return self.dry_run(&run, playbook, &plan, started).await;
        }
        if let Some(gate) = plan
            .steps
            .iter()
            .find(|s| s.action == PlannedAction::Confirm)
            && let Err(reason) = self.confirmer.can_ask()
        {
            return Ok(report(
                Outcome::Refused,
                Vec::new(),
                format!(
                    "step `{}` needs a confirmation ({}) and {reason}; nothing changed",
                    gate.name, gate.detail
                ),
                false,
            ));
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
                    return Ok(report(
                        Outcome::Cancelled,
                        Vec::new(),
                        format!(
                            "{} at the confirmation of the plan; nothing was changed",
                            cancelled_by(&self.cancel.reason())
                        ),
                        false,
                    ));
                }
                Confirmation::Declined => {
                    return Ok(report(
                        Outcome::Refused,
                        Vec::new(),
                        "the plan was declined by the operator; nothing changed".into(),
                        false,
                    ));
                }
                Confirmation::Unavailable(reason) => {
                    return Ok(report(
                        Outcome::Refused,
                        Vec::new(),
                        format!(
                            "the plan changes the cluster before any confirm step and needs a confirmation: {reason}; nothing changed"
                        ),
                        false,
                    ));
                }
            }
        }
        if let Some(halt) = self.halt().await {
            return Ok(report(
                Self::halted_outcome(&halt),
                Vec::new(),
                format!("{}; nothing was changed", halt.reason()),
                false,
            ));
        }
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
        let mut waited = Duration::ZERO;
        let mut changed: HashMap<String, bool> = HashMap::new();
        let mut outcome = Outcome::Done;
        let mut message = String::new();
        let mut unreachable = false;
        let mut failures = Vec::new();
        // Why the run stopped early keeping what it applied, and where.
        let mut stopped: Option<(String, String)> = None;
        // Where the run was cancelled: (in words, step, kind).
        let mut cancelled_at: Option<(String, String, String)> = None;
        for step in &playbook.steps {
            if let Some(halt) = self.halt().await {
                let place = format!("before step `{}`", step.name);
                if let Halt::Cancelled(_) = halt {
                    cancelled_at = Some((place, step.name.clone(), step.kind.into()));
                } else {
                    outcome = Outcome::Stopped;
                    stopped = Some((place, halt.reason()));
                }
                break;
            }
            if lease.is_lost() {
                message = LEASE_LOST.into();
                outcome = self
                    .fail_and_maybe_undo(&run, &mut record, OnFailure::Undo)
                    .await;
                break;
            }
            let skip = step
                .when_changed
                .as_deref()
                .is_some_and(|earlier| !changed.get(earlier).copied().unwrap_or(false));
            if skip {
                run.emit(
                    StepPhase::Skipped,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    "earlier step changed nothing",
                );
                record.steps.push(StepRecord {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    changes: Vec::new(),
                    outcome: StepOutcome::Skipped,
                    message: String::new(),
                });
                continue;
            }
            let step_started = Instant::now();
            let result = self.step(&run, step, &lease).await;
            if matches!(step.effect, Effect::Wait(_) | Effect::Gate(_)) {
                waited += step_started.elapsed();
            }
            match result {
                Ok(done) => {
                    changed.insert(step.name.clone(), done.outcome == StepOutcome::Applied);
                    record.steps.push(done);
                    if !record.steps.last().is_some_and(|s| s.changes.is_empty())
                        && let Err(err) = self.save_record(&playbook.namespace, &record).await
                    {
                        // A change with no run record could not be undone
                        // later: stop and undo it now.
                        unreachable |= err.is_unreachable();
                        let text = format!("the run record could not be saved: {err}");
                        run.emit(
                            StepPhase::Failed,
                            &step.name,
                            step.kind,
                            target_of(step),
                            None,
                            text.clone(),
                        );
                        if let Some(last) = record.steps.last_mut() {
                            last.message = text.clone();
                        }
                        failures.push(format!("step `{}` failed: {text}", step.name));
                        outcome = self
                            .fail_and_maybe_undo(&run, &mut record, OnFailure::Undo)
                            .await;
                        break;
                    }
                }
                Err(failure) if failure.interrupted => {
                    // Cut short by a cancellation: nothing of this step
                    // was written; what came before is undone below.
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: Vec::new(),
                        outcome: StepOutcome::Cancelled,
                        message: clean(&failure.message),
                    });
                    cancelled_at = Some((
                        format!("at step `{}`", step.name),
                        step.name.clone(),
                        step.kind.into(),
                    ));
                    break;
                }
                Err(failure) if failure.declined => {
                    // The operator said no (or could not be asked, or
                    // interrupted): stop here and keep what was applied.
                    // Putting it back is `warroom undo`'s job, when asked.
                    run.emit(
                        StepPhase::Skipped,
                        &step.name,
                        step.kind,
                        target_of(step),
                        None,
                        format!("{}; the run stops here", failure.message),
                    );
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: Vec::new(),
                        outcome: StepOutcome::Declined,
                        message: clean(&failure.message),
                    });
                    outcome = Outcome::Declined;
                    stopped = Some((format!("at step `{}`", step.name), failure.message));
                    break;
                }
                Err(failure) => {
                    unreachable |= failure.unreachable;
                    let landed = !failure.applied.is_empty();
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        step.kind,
                        target_of(step),
                        landed.then_some(failure.applied.as_slice()),
                        failure.message.clone(),
                    );
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: failure.applied.clone(),
                        outcome: if landed {
                            StepOutcome::AppliedUnverified
                        } else {
                            StepOutcome::Failed
                        },
                        message: clean(&failure.message),
                    });
                    failures.push(format!("step `{}` failed: {}", step.name, failure.message));
                    if step.on_failure == OnFailure::Continue {
                        outcome = Outcome::Failed;
                        continue;
                    }
                    outcome = self
                        .fail_and_maybe_undo(&run, &mut record, step.on_failure)
                        .await;
                    break;
                }
            }
        }
        if let Some((place, step, kind)) = &cancelled_at {
            outcome = Outcome::Cancelled;
            message = self
                .undo_cancelled(&run, &mut record, &lease, place, (step, kind))
                .await;
        }
        let kept: Vec<&str> = record
            .steps
            .iter()
            .filter(|s| s.outcome.left_changes())
            .map(|s| s.name.as_str())
            .collect();
        message = match (&outcome, &stopped) {
            (Outcome::Done, _) if kept.is_empty() => format!(
                "all {} steps done, nothing changed: every change was already in place or had \
                 nothing recorded to restore",
                record.steps.len()
            ),
            (Outcome::Done, _) => format!(
                "all {} steps done and verified; {} step(s) changed the cluster",
                record.steps.len(),
                kept.len()
            ),
            (Outcome::Cancelled, _) => message.clone(),
            (Outcome::Declined | Outcome::Stopped, Some((place, why))) => {
                let kept_text = if kept.is_empty() {
                    "nothing was changed".to_owned()
                } else {
                    format!(
                        "the {} step(s) applied before are kept ({}); nothing was undone",
                        kept.len(),
                        kept.join(", ")
                    )
                };
                format!("stopped {place}: {why}; {kept_text}")
            }
            _ => {
                let mut text = failures.join("; ");
                if !message.is_empty() {
                    if !text.is_empty() {
                        text.push_str("; ");
                    }
                    text.push_str(&message);
                }
                let undone = record
                    .steps
                    .iter()
                    .filter(|s| s.outcome == StepOutcome::Undone)
                    .count();
                format!(
                    "{text}; {undone} applied step(s) undone, {} left in place",
                    kept.len()
                )
            }
        };
        record.finished = Some(jiff::Timestamp::now());
        record.outcome = match outcome {
            Outcome::Done => RunOutcome::Applied,
            Outcome::FailedUndone => RunOutcome::FailedUndone,
            Outcome::Refused => RunOutcome::Refused,
            Outcome::Declined => RunOutcome::Declined,
            Outcome::Stopped => RunOutcome::Stopped,
            Outcome::Cancelled => RunOutcome::Cancelled,
            _ => RunOutcome::Failed,
        };
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

    /// After a cancellation: says so in the event stream, asks whether to
    /// undo the applied steps (default yes; nobody to ask means yes), and
    /// undoes them in reverse while holding the Lease. A second request
    /// ([`Cancel::abandon`]) or a lost Lease stops the undo before its next
    /// write. Returns the run's message, saying what is left.
    async fn undo_cancelled(
        &self,
        run: &Run<'_>,
        record: &mut RunRecord,
        lease: &RunLease,
        place: &str,
        (step, kind): (&str, &str),
    ) -> String {
        let why = cancelled_by(&self.cancel.reason());
        let applied: Vec<usize> = (0..record.steps.len())
            .rev()
            .filter(|&i| {
                let step = &record.steps[i];
                step.outcome.left_changes() && !step.changes.is_empty() && step.target.is_some()
            })
            .collect();
        let names = |steps: &[StepRecord], indices: &[usize]| {
            indices
                .iter()
                .map(|&i| steps[i].name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = names(&record.steps, &applied);
        run.emit(
            StepPhase::Cancelled,
            step,
            kind,
            None,
            None,
            if applied.is_empty() {
                format!("{why} {place}; nothing had been changed")
            } else {
                format!(
                    "{why} {place}; undoing the {} applied step(s) ({all})",
                    applied.len()
                )
            },
        );
        if applied.is_empty() {
            return format!("{why} {place}; nothing had been changed");
        }
        let request = ConfirmRequest {
            run_id: run.run_id.clone(),
            playbook: run.playbook.clone(),
            step: "undo".into(),
            prompt: format!("Undo the {} applied change(s) ({all})?", applied.len()),
            answer: None,
            default_yes: true,
        };
        let answer = if self.cancel.is_abandoned() {
            Confirmation::Declined
        } else if self.confirmer.can_ask().is_err() {
            Confirmation::Approved
        } else {
            tokio::select! {
                answer = self.confirmer.confirm(&request) => answer,
                _ = self.cancel.abandoned() => Confirmation::Declined,
                _ = lease.until_lost() => Confirmation::Declined,
            }
        };
        if answer == Confirmation::Declined {
            let reason = if lease.is_lost() {
                "the run lease was lost before the undo"
            } else if self.cancel.is_abandoned() {
                "the undo was stopped"
            } else {
                "the undo was declined"
            };
            return format!(
                "{why} {place}; {reason}: the {} applied step(s) are kept ({all})",
                applied.len()
            );
        }
        let mut left = Vec::new();
        let mut failures = Vec::new();
        let mut stop: Option<&str> = None;
        for &index in &applied {
            if stop.is_none() {
                if self.cancel.is_abandoned() {
                    stop = Some("the undo was stopped");
                } else if lease.is_lost() {
                    stop = Some("the run lease was lost during the undo");
                }
            }
            if stop.is_some() {
                left.push(index);
                continue;
            }
            let step = &record.steps[index];
            let Some(target) = step.target.clone() else {
                continue;
            };
            match self
                .revert(run, &step.name, &step.kind, &target, &step.changes)
                .await
            {
                Ok(_) => record.steps[index].outcome = StepOutcome::Undone,
                Err(failure) => {
                    run.emit(
                        StepPhase::Failed,
                        &record.steps[index].name,
                        &record.steps[index].kind,
                        Some(&target),
                        None,
                        format!("undo failed: {}", failure.message),
                    );
                    failures.push(format!(
                        "undoing `{}` failed: {}",
                        record.steps[index].name, failure.message
                    ));
                    left.push(index);
                }
            }
        }
        let undone = applied.len() - left.len();
        if left.is_empty() {
            return format!("{why} {place}; the {undone} applied step(s) were undone ({all})");
        }
        let mut text = format!("{why} {place}; {undone} applied step(s) undone");
        if let Some(stop) = stop {
            text.push_str(&format!("; {stop}"));
        }
        for failure in failures {
            text.push_str(&format!("; {failure}"));
        }
        text.push_str(&format!(
            "; {} step(s) left in place ({})",
            left.len(),
            names(&record.steps, &left)
        ));
        text
    }

    /// Undoes applied steps in reverse after a failure (unless `stop`).
    async fn fail_and_maybe_undo(
        &self,
        run: &Run<'_>,
        record: &mut RunRecord,
        on_failure: OnFailure,
    ) -> Outcome {
        if on_failure != OnFailure::Undo {
            return Outcome::Failed;
        }
        let mut all = true;
        for index in (0..record.steps.len()).rev() {
            let step = &record.steps[index];
            if !step.outcome.left_changes() || step.changes.is_empty() {
                continue;
            }
            let Some(target) = step.target.clone() else {
                continue;
            };
            match self
                .revert(run, &step.name, &step.kind, &target, &step.changes)
                .await
            {
                Ok(_) => record.steps[index].outcome = StepOutcome::Undone,
                Err(failure) => {
                    all = false;
                    run.emit(
                        StepPhase::Failed,
                        &record.steps[index].name,
                        &record.steps[index].kind,
                        Some(&target),
                        None,
                        format!("undo failed: {}", failure.message),
                    );
                }
            }
        }
        if all {
            Outcome::FailedUndone
        } else {
            Outcome::Failed
        }
    }

    async fn dry_run(
        &self,
        run: &Run<'_>,
        playbook: &BoundPlaybook,
        plan: &Plan,
        started: Instant,
    ) -> Result<RunReport, RunError> {
        let mut steps = Vec::new();
        let mut outcome = Outcome::DryRun;
        let mut message = format!("dry run of {} steps: nothing changed", plan.steps.len());
        let mut simulated: HashMap<ObjectRef, Value> = HashMap::new();
        for (step, planned) in playbook.steps.iter().zip(&plan.steps) {
            if self.halt().await.is_some() {
                break;
            }
            let Effect::Change(change) = &step.effect else {
                continue;
            };
            if planned.action != PlannedAction::Change {
                continue;
            }
            let current = match simulated.get(&change.target) {
                Some(known) => known.clone(),
                None => match self.kube.get(&change.target).await? {
                    Some(found) => found,
                    None => continue,
                },
            };
            let Ok(desired) = apply_edit(&current, &change.edit) else {
                continue;
            };
            let body = with_record(&current, &desired, &planned.changes, &run.stamp());
            match self.kube.replace(&change.target, &body, true).await {
                Ok(_) => {
                    run.emit(
                        StepPhase::DryRun,
                        &step.name,
                        step.kind,
                        Some(&change.target),
                        Some(&planned.changes),
                        "accepted by the API server (dry run)",
                    );
                    simulated.insert(change.target.clone(), desired);
                }
                Err(err) if err.is_unreachable() => return Err(RunError::Unreachable(err)),
                Err(err) => {
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        step.kind,
                        Some(&change.target),
                        None,
                        err.to_string(),
                    );
                    outcome = Outcome::PlanFailed;
                    message = format!(
                        "the API server rejected step `{}` in a dry run: {err}",
                        step.name
                    );
                    steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: Some(change.target.clone()),
                        changes: planned.changes.clone(),
                        outcome: StepOutcome::Failed,
                        message: err.to_string(),
                    });
                    break;
                }
            }
        }
        if let Some(halt) = self.halt().await
            && outcome == Outcome::DryRun
        {
            outcome = Outcome::Stopped;
            message = format!("dry run stopped: {}; nothing was changed", halt.reason());
        }
        Ok(RunReport {
            plan: plan.clone(),
            outcome,
            steps,
            message: clean(&message),
            unreachable: false,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
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

    async fn step(
        &self,
        run: &Run<'_>,
        step: &BoundStep,
        lease: &RunLease,
    ) -> Result<StepRecord, StepFailure> {
        let mut done = StepRecord {
            name: step.name.clone(),
            kind: step.kind.into(),
            target: target_of(step).cloned(),
            changes: Vec::new(),
            outcome: StepOutcome::Done,
            message: String::new(),
        };
        match &step.effect {
            Effect::Change(change) => {
                let changes = self.change(run, step, change).await?;
                done.outcome = if changes.is_empty() {
                    StepOutcome::Unchanged
                } else {
                    StepOutcome::Applied
                };
                done.changes = changes;
            }
            Effect::Wait(wait) => {
                let deadline = Instant::now() + wait.timeout;
                let mut pause = Duration::from_millis(25);
                let mut shown: Option<String> = None;
                loop {
                    let object = self.kube.get(&wait.target).await?;
                    let (holds, seen) = wait.until.holds(object.as_ref());
                    if !holds && shown.as_deref() != Some(seen.as_str()) {
                        // Each new observation, so a screen shows the wait
                        // moving ("rollout 3/8 ready").
                        run.emit(
                            StepPhase::Progress,
                            &step.name,
                            step.kind,
                            Some(&wait.target),
                            None,
                            seen.clone(),
                        );
                        shown = Some(seen.clone());
                    }
                    if holds {
                        run.emit(
                            StepPhase::Verified,
                            &step.name,
                            step.kind,
                            Some(&wait.target),
                            None,
                            seen.clone(),
                        );
                        done.message = seen;
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(StepFailure::new(format!(
                            "timed out after {:?} waiting for {} on {}: {seen}",
                            wait.timeout,
                            describe(&wait.until),
                            wait.target
                        )));
                    }
                    let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = tokio::time::sleep(nap) => {}
                        _ = self.until_cancelled() => {
                            return Err(StepFailure {
                                interrupted: true,
                                ..StepFailure::new(format!(
                                    "{} while waiting for {} on {}",
                                    cancelled_by(&self.cancel.reason()),
                                    describe(&wait.until),
                                    wait.target
                                ))
                            });
                        }
                        _ = lease.until_lost() => return Err(StepFailure::new(LEASE_LOST)),
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
            Effect::Gate(gate) => {
                let request = ConfirmRequest {
                    run_id: run.run_id.clone(),
                    playbook: run.playbook.clone(),
                    step: step.name.clone(),
                    prompt: gate.prompt.clone(),
                    answer: gate.answer.clone(),
                    default_yes: false,
                };
                run.emit(
                    StepPhase::Gate,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    request.prompt.clone(),
                );
                let answer = tokio::select! {
                    answer = self.ask(&request) => answer,
                    _ = lease.until_lost() => return Err(StepFailure::new(LEASE_LOST)),
                };
                match answer {
                    Confirmation::Approved => {
                        run.emit(
                            StepPhase::Confirmed,
                            &step.name,
                            step.kind,
                            None,
                            None,
                            gate.prompt.clone(),
                        );
                    }
                    Confirmation::Declined if self.cancelled() => {
                        return Err(StepFailure {
                            interrupted: true,
                            ..StepFailure::new(format!(
                                "{} at the confirmation",
                                cancelled_by(&self.cancel.reason())
                            ))
                        });
                    }
                    Confirmation::Declined => {
                        return Err(StepFailure::declined("declined by the operator"));
                    }
                    Confirmation::Unavailable(reason) => {
                        return Err(StepFailure::declined(format!(
                            "needs a confirmation nobody could give: {reason}"
                        )));
                    }
                }
            }
            Effect::Note(text) => {
                run.emit(
                    StepPhase::Noted,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    text.clone(),
                );
                done.message = clean(text);
            }
        }
        Ok(done)
    }

    /// Applies one change: read, compute, write conditionally (409: read
    /// again), read back and verify. Returns the fields changed (empty: the
    /// change was already in place).
    async fn change(
        &self,
        run: &Run<'_>,
        step: &BoundStep,
        change: &Change,
    ) -> Result<Vec<FieldChange>, StepFailure> {
        let written = self
            .write(run, &change.target, &change.edit, change.record)
            .await?;
        let Some((changes, desired)) = written else {
            run.emit(
                StepPhase::Unchanged,
                &step.name,
                step.kind,
                Some(&change.target),
                None,
                match change.edit {
                    Edit::Restore => "nothing recorded to restore: nothing changed",
                    _ => "already in place: nothing changed",
                },
            );
            return Ok(Vec::new());
        };
        run.emit(
            StepPhase::Applied,
            &step.name,
            step.kind,
            Some(&change.target),
            Some(&changes),
            "written",
        );
        if let Err(failure) = self.verify(&change.target, &changes, &desired).await {
            // The write was accepted: whatever it changed is on the cluster
            // and must be undone like any applied change.
            return Err(failure.with_applied(changes));
        }
        run.emit(
            StepPhase::Verified,
            &step.name,
            step.kind,
            Some(&change.target),
            Some(&changes),
            "read back",
        );
        Ok(changes)
    }

    /// Writes an edit with conflict retries; `None` when nothing changes.
    async fn write(
        &self,
        run: &Run<'_>,
        target: &ObjectRef,
        edit: &Edit,
        recorded: bool,
    ) -> Result<Option<(Vec<FieldChange>, Value)>, StepFailure> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = self.kube.get(target).await? else {
                return Err(StepFailure::new(format!("{target} not found")));
            };
            let desired = apply_edit(&current, edit).map_err(StepFailure::new)?;
            let changes = diff(&current, &desired);
            if changes.is_empty() {
                return Ok(None);
            }
            // The plan refused secrets as the cluster was then; it may have
            // changed since.
            if let Some(reason) = changes.iter().find_map(check::secret_in_change) {
                return Err(StepFailure::new(format!(
                    "refused to change {target}: {reason}, and {}; nothing was written",
                    check::SECRET_ADVICE
                )));
            }
            let body = with_record(
                &current,
                &desired,
                if recorded { &changes } else { &[] },
                &run.stamp(),
            );
            match self.kube.replace(target, &body, false).await {
                Ok(_) => return Ok(Some((changes, desired))),
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(self.after_failed_write(target, err, changes).await),
            }
        }
        Err(StepFailure::new(format!(
            "{target} kept changing: {CONFLICT_RETRIES} conflicting writes in a row"
        )))
    }

    /// A write answered with an error (not a conflict) may still have
    /// landed — the answer can be lost on the way back. Reads the object
    /// again: changes found in place, or a state that cannot be read, are
    /// carried as applied so they are undone (reverting a write that did
    /// not land changes nothing).
    async fn after_failed_write(
        &self,
        target: &ObjectRef,
        err: KubeError,
        changes: Vec<FieldChange>,
    ) -> StepFailure {
        let failure = StepFailure::from(err);
        match self.kube.get(target).await {
            Ok(Some(now)) => {
                let landed: Vec<FieldChange> = changes
                    .into_iter()
                    .filter(|c| now.pointer(&c.path) == c.after.as_ref())
                    .collect();
                failure.with_applied(landed)
            }
            Ok(None) => failure,
            Err(read) => {
                let mut failure = failure.with_applied(changes);
                failure.unreachable |= read.is_unreachable();
                failure.message = format!(
                    "{}; whether the write landed is unknown ({read}), so it is undone as if it had",
                    failure.message
                );
                failure
            }
        }
    }

    async fn verify(
        &self,
        target: &ObjectRef,
        changes: &[FieldChange],
        desired: &Value,
    ) -> Result<(), StepFailure> {
        let Some(read_back) = self.kube.get(target).await? else {
            return Err(StepFailure::new(format!(
                "{target} vanished after the write"
            )));
        };
        for change in changes {
            // Compare with what the server should now hold for this field.
            let want = desired.pointer(&change.path);
            let have = read_back.pointer(&change.path);
            if want != have {
                return Err(StepFailure::new(format!(
                    "read-back of {target} {}: want {}, found {}",
                    display_path(&change.path),
                    want.map(Value::to_string)
                        .unwrap_or_else(|| "absent".into()),
                    have.map(Value::to_string)
                        .unwrap_or_else(|| "absent".into()),
                )));
            }
        }
        Ok(())
    }

    /// Puts back the `before` values of `changes` on `target`.
    async fn revert(
        &self,
        run: &Run<'_>,
        step: &str,
        kind: &str,
        target: &ObjectRef,
        changes: &[FieldChange],
    ) -> Result<Vec<FieldChange>, StepFailure> {
        let edit = Edit::Set(
            changes
                .iter()
                .map(|c| (c.path.clone(), c.before.clone()))
                .collect(),
        );
        let written = self.write(run, target, &edit, false).await?;
        let Some((reverted, desired)) = written else {
            run.emit(
                StepPhase::Undone,
                step,
                kind,
                Some(target),
                None,
                "already as before",
            );
            return Ok(Vec::new());
        };
        self.verify(target, &reverted, &desired).await?;
        run.emit(
            StepPhase::Undone,
            step,
            kind,
            Some(target),
            Some(&reverted),
            "restored and read back",
        );
        Ok(reverted)
    }

    /// Stores a run record in the namespace's `warroom-runs` ConfigMap.
    pub async fn save_record(&self, namespace: &str, record: &RunRecord) -> Result<(), KubeError> {
        let object = record::runs_configmap(namespace);
        for _ in 0..CONFLICT_RETRIES {
            let result = match self.kube.get(&object).await? {
                None => {
                    let empty = serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": record::RUNS_CONFIGMAP, "namespace": namespace,
                                     "labels": {"app.kubernetes.io/managed-by": "warroom"}},
                        "data": {}
                    });
                    let body = record::store_in(&empty, record).map_err(|message| {
                        KubeError::Malformed {
                            object: object.to_string(),
                            message,
                        }
                    })?;
                    self.kube.create(&object, &body, false).await
                }
                Some(current) => {
                    let body = record::store_in(&current, record).map_err(|message| {
                        KubeError::Malformed {
                            object: object.to_string(),
                            message,
                        }
                    })?;
                    self.kube.replace(&object, &body, false).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(KubeError::Conflict {
            object: object.to_string(),
            message: "run records kept changing".into(),
        })
    }

    /// The run records of a namespace, oldest first.
    pub async fn records(&self, namespace: &str) -> Result<Vec<RunRecord>, KubeError> {
        Ok(self
            .kube
            .get(&record::runs_configmap(namespace))
            .await?
            .map(|cm| record::records_in(&cm))
            .unwrap_or_default())
    }

    /// The run `warroom undo` would act on: `run_id`, or (`None`) the latest
    /// run that left changes.
    pub async fn undo_target(
        &self,
        namespace: &str,
        run_id: Option<&str>,
    ) -> Result<Option<RunRecord>, KubeError> {
        let records = self.records(namespace).await?;
        Ok(match run_id {
            Some(id) => records.into_iter().find(|r| r.id == id),
            None => records.into_iter().rev().find(|r| r.undoable()),
        })
    }

    /// Undoes a recorded run (`None`: the latest run that left changes),
    /// from the values in its record: checks the record (no Secret, no
    /// name the API server would refuse, no field warroom must not set, no
    /// secret value), asks the confirmer, holds the namespace's lease,
    /// reverts steps in reverse and marks the record.
    pub async fn undo(&self, namespace: &str, run_id: Option<&str>) -> Result<RunReport, RunError> {
        let mut report = self.undo_steps(namespace, run_id).await?;
        report.journal_error = self.events.settle().await;
        Ok(report)
    }

    async fn undo_steps(
        &self,
        namespace: &str,
        run_id: Option<&str>,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let chosen = self.undo_target(namespace, run_id).await?;
        let undo_id = new_run_id();
        let empty_plan = |playbook: &str| Plan {
            run_id: undo_id.clone(),
            playbook: playbook.to_owned(),
            namespace: namespace.to_owned(),
            actor: self.kube.user().to_owned(),
            steps: Vec::new(),
        };
        let refused = |plan: Plan, message: String| RunReport {
            plan,
            outcome: Outcome::Refused,
            steps: Vec::new(),
            message: clean(&message),
            unreachable: false,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        };
        let Some(chosen) = chosen else {
            let message = match run_id {
                Some(id) => format!(
                    "no run {} recorded in {namespace}/{}; nothing was changed",
                    check::printable(id),
                    record::RUNS_CONFIGMAP
                ),
                None => format!(
                    "no run with changes left to undo in namespace {namespace}; nothing was changed"
                ),
            };
            return Ok(refused(empty_plan("undo"), message));
        };
        let playbook = format!(
            "undo {} ({})",
            check::printable(&chosen.id),
            check::printable(&chosen.playbook)
        );
        let run = Run {
            run_id: undo_id.clone(),
            playbook: playbook.clone(),
            actor: self.kube.user().to_owned(),
            engine: self,
        };
        if !chosen.undoable() {
            return Ok(refused(
                empty_plan(&playbook),
                format!(
                    "run {} has no changes left to undo ({:?}); nothing was changed",
                    check::printable(&chosen.id),
                    chosen.outcome
                ),
            ));
        }
        // A record can be edited by hand: nothing in it is trusted further
        // than `validate` trusts a playbook.
        let reverted_steps: Vec<&StepRecord> = chosen
            .steps
            .iter()
            .rev()
            .filter(|s| s.outcome.left_changes() && !s.changes.is_empty())
            .collect();
        if let Some(problem) = record_problem(&chosen, &reverted_steps) {
            return Ok(refused(
                empty_plan(&playbook),
                format!(
                    "refusing to undo run {} from its record in {namespace}/{}: {problem}; \
                     nothing was changed",
                    check::printable(&chosen.id),
                    record::RUNS_CONFIGMAP
                ),
            ));
        }
        // Plan: each applied step in reverse, with drift against the run's "after".
        let mut plan = empty_plan(&playbook);
        let mut drift = Vec::new();
        for step in &reverted_steps {
            let Some(target) = &step.target else { continue };
            let current = self.kube.get(target).await?;
            let mut changes = Vec::new();
            for change in &step.changes {
                let now = current
                    .as_ref()
                    .and_then(|c| c.pointer(&change.path))
                    .cloned();
                let revert = FieldChange {
                    path: change.path.clone(),
                    before: now.clone(),
                    after: change.before.clone(),
                };
                if let Some(reason) = check::secret_in_change(&revert) {
                    return Ok(refused(
                        plan,
                        format!(
                            "refusing to undo step `{}` of run {}: {target} {reason}, and {}; \
                             nothing was changed",
                            check::printable(&step.name),
                            check::printable(&chosen.id),
                            check::SECRET_ADVICE
                        ),
                    ));
                }
                if now != change.after {
                    drift.push(format!(
                        "{target} {} is now {} (the run set {})",
                        display_path(&change.path),
                        shown_value(now.as_ref()),
                        shown_value(change.after.as_ref())
                    ));
                }
                if now != change.before {
                    changes.push(revert);
                }
            }
            let planned = PlannedStep {
                name: step.name.clone(),
                kind: step.kind.clone(),
                target: Some(target.clone()),
                action: if current.is_none() {
                    PlannedAction::Fail
                } else if changes.is_empty() {
                    PlannedAction::Unchanged
                } else {
                    PlannedAction::Change
                },
                changes,
                detail: if current.is_none() {
                    format!("{target} not found")
                } else {
                    "restore recorded values".into()
                },
            };
            plan.steps.push(planned);
        }
        for planned in &plan.steps {
            run.emit(
                StepPhase::Planned,
                &planned.name,
                &planned.kind,
                planned.target.as_ref(),
                Some(&planned.changes),
                "undo",
            );
        }
        let mut prompt = format!(
            "Undo run {} of {} by {} ({} step(s))?",
            check::printable(&chosen.id),
            check::printable(&chosen.playbook),
            check::printable(&chosen.actor),
            plan.steps.len()
        );
        if !drift.is_empty() {
            prompt.push_str(&format!(" Changed since the run: {}.", drift.join("; ")));
        }
        let request = ConfirmRequest {
            run_id: undo_id.clone(),
            playbook: playbook.clone(),
            step: "undo".into(),
            prompt: clean(&prompt),
            answer: None,
            default_yes: false,
        };
        match self.ask(&request).await {
            Confirmation::Approved => {}
            Confirmation::Declined if self.cancelled() => {
                return Ok(refused(
                    plan,
                    format!(
                        "undo {} at the confirmation; nothing was changed",
                        cancelled_by(&self.cancel.reason())
                    ),
                ));
            }
            Confirmation::Declined => {
                return Ok(refused(
                    plan,
                    "undo declined by the operator; nothing was changed".into(),
                ));
            }
            Confirmation::Unavailable(reason) => {
                return Ok(refused(
                    plan,
                    format!("undo needs confirmation: {reason}; nothing was changed"),
                ));
            }
        }
        if let Some(halt) = self.halt().await {
            return Ok(RunReport {
                outcome: Outcome::Stopped,
                ..refused(plan, format!("{}; nothing was changed", halt.reason()))
            });
        }
        let holder = format!(
            "{} on {} (pid {}, undo of {})",
            run.actor,
            hostname(),
            std::process::id(),
            chosen.id
        );
        let lease =
            match RunLease::acquire(self.kube.clone(), namespace, &holder, self.lease_duration)
                .await
            {
                Ok(lease) => lease,
                Err(err @ LeaseError::Held { .. }) => return Ok(refused(plan, err.to_string())),
                Err(LeaseError::Kube(err)) => return Err(err.into()),
            };
        let mut steps = Vec::new();
        let mut failed = Vec::new();
        let mut unreachable = false;
        let mut halted = None;
        for step in &reverted_steps {
            let Some(target) = &step.target else { continue };
            if let Some(halt) = self.halt().await {
                halted = Some(format!("before `{}`: {}", step.name, halt.reason()));
                break;
            }
            match self
                .revert(&run, &step.name, &step.kind, target, &step.changes)
                .await
            {
                Ok(reverted) => steps.push(StepRecord {
                    name: step.name.clone(),
                    kind: step.kind.clone(),
                    target: Some(target.clone()),
                    changes: reverted,
                    outcome: StepOutcome::Undone,
                    message: String::new(),
                }),
                Err(failure) => {
                    unreachable |= failure.unreachable;
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        &step.kind,
                        Some(target),
                        None,
                        failure.message.clone(),
                    );
                    failed.push(format!("`{}`: {}", step.name, failure.message));
                    steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.clone(),
                        target: Some(target.clone()),
                        changes: Vec::new(),
                        outcome: StepOutcome::Failed,
                        message: clean(&failure.message),
                    });
                }
            }
        }
        let restored = steps.iter().filter(|s| !s.changes.is_empty()).count();
        let outcome = if halted.is_some() {
            Outcome::Stopped
        } else if failed.is_empty() {
            let mut marked = chosen.clone();
            marked.outcome = RunOutcome::Undone;
            marked.undone = Some(run.stamp());
            for step in &mut marked.steps {
                if step.outcome.left_changes() {
                    step.outcome = StepOutcome::Undone;
                }
            }
            if let Err(err) = self.save_record(namespace, &marked).await {
                tracing::warn!("marking run {} undone: {err}", chosen.id);
            }
            Outcome::Undone
        } else {
            Outcome::Failed
        };
        let _ = lease.release().await;
        let message = match (&halted, failed.is_empty()) {
            (Some(halt), _) => format!(
                "undo of run {} stopped {halt}; {restored} step(s) restored before that, the \
                 rest left as the run set them",
                chosen.id
            ),
            (None, true) if restored == 0 => format!(
                "run {} undone, nothing changed: every field already held its value from \
                 before the run",
                chosen.id
            ),
            (None, true) => format!("run {} undone ({restored} step(s) restored)", chosen.id),
            (None, false) => format!(
                "undo of run {} incomplete: {}",
                chosen.id,
                failed.join("; ")
            ),
        };
        Ok(RunReport {
            plan,
            outcome,
            steps,
            message: clean(&message),
            unreachable,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        })
    }
}

/// A value as shown in messages (`absent` for none).
fn shown_value(value: Option<&Value>) -> String {
    value
        .map(Value::to_string)
        .unwrap_or_else(|| "absent".into())
}

/// Why `warroom undo` refuses to act on `record`, if it does (see
/// [`Engine::undo`]).
pub fn undo_record_problem(record: &RunRecord) -> Option<String> {
    let steps: Vec<&StepRecord> = record
        .steps
        .iter()
        .rev()
        .filter(|s| s.outcome.left_changes() && !s.changes.is_empty())
        .collect();
    record_problem(record, &steps)
}

/// What in a run record `warroom undo` must not act on: an id that cannot be
/// a record key, a step without a target, a target `validate` would refuse
/// (Secrets, names the API server refuses), a path that is not a JSON
/// pointer or touches a field no change may set, or a secret.
fn record_problem(chosen: &RunRecord, steps: &[&StepRecord]) -> Option<String> {
    if let Err(err) = crate::kube::names::config_map_key(&chosen.id) {
        return Some(format!("the run id is not usable: {err}"));
    }
    for step in steps {
        let name = check::printable(&step.name);
        let Some(target) = &step.target else {
            return Some(format!("step `{name}` records changes but no object"));
        };
        if let Some(problem) = check::record_target_problem(target) {
            return Some(format!("step `{name}`: {problem}"));
        }
        for change in &step.changes {
            if !change.path.starts_with('/') {
                return Some(format!(
                    "step `{name}`: {} is not a JSON pointer",
                    crate::kube::names::shown(&change.path)
                ));
            }
            let tokens = record::pointer_tokens(&change.path);
            for value in [change.before.as_ref(), change.after.as_ref()] {
                if let Some(problem) = check::field_problems(target, &tokens, value).first() {
                    return Some(format!(
                        "step `{name}`: {}: {problem}",
                        record::display_tokens(&tokens)
                    ));
                }
            }
        }
    }
    None
}

fn target_of(step: &BoundStep) -> Option<&ObjectRef> {
    match &step.effect {
        Effect::Change(change) => Some(&change.target),
        Effect::Wait(wait) => Some(&wait.target),
        _ => None,
    }
}

/// A condition in words.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Exists => "it exists".into(),
        Check::RolloutComplete => "the rollout is complete".into(),
        Check::Condition(name) => format!("condition {name} is True"),
        Check::Field { path, equals } => format!("{} == {equals}", display_path(path)),
    }
}

/// Permissions a playbook needs: (API group, resource, verb), besides those
/// every run needs ([`engine_permissions`]).
pub fn step_permissions(playbook: &BoundPlaybook) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for step in &playbook.steps {
        match &step.effect {
            Effect::Change(change) => {
                for verb in ["get", "update"] {
                    out.push((
                        change.target.group().to_owned(),
                        change.target.guessed_resource(),
                        verb.to_owned(),
                    ));
                }
            }
            Effect::Wait(wait) => out.push((
                wait.target.group().to_owned(),
                wait.target.guessed_resource(),
                "get".to_owned(),
            )),
            _ => {}
        }
    }
    for precondition in &playbook.preconditions {
        out.push((
            precondition.object.group().to_owned(),
            precondition.object.guessed_resource(),
            "get".to_owned(),
        ));
    }
    out.sort();
    out.dedup();
    out
}

/// Permissions every run needs: the run Lease and the run records.
pub fn engine_permissions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for verb in ["get", "create", "update"] {
        out.push((
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
        ));
        out.push((String::new(), "configmaps".to_owned(), verb.to_owned()));
    }
    out.sort();
    out
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
