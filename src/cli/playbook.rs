//! `warroom validate`, `warroom run` and `warroom undo`: playbooks from the
//! command line, with a terminal prompt for human gates and `--output json`
//! for scripts.
//!
//! Results go to stdout (the plan, the steps, "done", the undo command);
//! refusals and failures go to stderr. Ctrl-C or SIGTERM cancels a run: it
//! stops before its next write and undoes what it applied (asking first on a
//! terminal, default yes); a second one stops that undo before its next
//! write and says what is left and how to put it back; a third quits at once.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;

use clap::{Args, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use warroom::kube::{KubeAccess, KubeError, KubeTarget, names};
use warroom::playbook::event::{AckedEvents, ConfirmFuture};
use warroom::playbook::journal::{APPEND_TIMEOUT, TimelineRecorder};
use warroom::playbook::record::display_path;
use warroom::playbook::{
    AutoApprove, Cancel, ConfirmRequest, Confirmation, Confirmer, Engine, EventLog, LoadError,
    Outcome, RunOptions, RunReport, StepEvent, StepPhase,
};

use super::{CommandResult, Exit, Failure};

/// Playbook commands.
#[derive(Subcommand)]
pub enum PlaybookCommand {
    /// Check playbook files; every problem is reported with file:line:col.
    Validate(ValidateArgs),
    /// Run a playbook against the cluster of the current kubeconfig context.
    Run(RunArgs),
    /// Restore what a recorded run changed, from the values it recorded.
    Undo(UndoArgs),
}

/// Output format.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// `warroom validate`.
#[derive(Args)]
pub struct ValidateArgs {
    /// Playbook files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Where to connect, as kubectl.
#[derive(Args, Clone)]
pub struct KubeArgs {
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Namespace, an RFC 1123 label (default: the playbook's, then the context's).
    #[arg(short, long)]
    namespace: Option<String>,
}

impl KubeArgs {
    /// The connection target, once the flags are known to be usable.
    fn target(&self) -> Result<KubeTarget, Failure> {
        if let Some(namespace) = &self.namespace
            && let Err(err) = names::namespace(namespace)
        {
            return Err(Failure::msg(
                Exit::Invalid,
                format!("invalid -n/--namespace: {err}; nothing was changed"),
            ));
        }
        if let Some(context) = &self.context
            && (context.is_empty() || context.chars().any(char::is_control))
        {
            return Err(Failure::msg(
                Exit::Invalid,
                format!(
                    "invalid --context {}: give a context name from the kubeconfig \
                     (kubectl config get-contexts); nothing was changed",
                    names::shown(context)
                ),
            ));
        }
        Ok(KubeTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        })
    }
}

/// `warroom run`.
#[derive(Args)]
pub struct RunArgs {
    /// The playbook file.
    playbook: PathBuf,
    #[command(flatten)]
    kube: KubeArgs,
    /// A parameter value, `name=value` (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Plan and have the API server dry-run every change; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Approve every confirmation step.
    #[arg(long)]
    yes: bool,
    /// Record every step in this incident journal (see `warroom timeline`).
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// `warroom undo`.
#[derive(Args)]
pub struct UndoArgs {
    /// The run to undo, as printed by `warroom run` (see the `warroom-runs`
    /// ConfigMap).
    #[arg(required_unless_present = "last", conflicts_with = "last")]
    run_id: Option<String>,
    /// Undo the latest run that left changes.
    #[arg(long)]
    last: bool,
    #[command(flatten)]
    kube: KubeArgs,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Record every step in this incident journal (see `warroom timeline`).
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Runs a playbook command.
pub fn run(cmd: PlaybookCommand) -> CommandResult {
    wide_reports();
    match cmd {
        PlaybookCommand::Validate(args) => validate(args),
        PlaybookCommand::Run(args) => run_playbook(args),
        PlaybookCommand::Undo(args) => undo(args),
    }
}

/// Reports wide enough that `file:line:col` lines are never wrapped.
fn wide_reports() {
    let _ = miette::set_hook(Box::new(|_| {
        Box::new(miette::MietteHandlerOpts::new().width(160).build())
    }));
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))
}

fn validate(args: ValidateArgs) -> CommandResult {
    let mut invalid = 0;
    for file in &args.files {
        match warroom::playbook::load_file(file) {
            Ok(loaded) => println!(
                "{}: ok ({} step{})",
                file.display(),
                loaded.doc.steps.len(),
                if loaded.doc.steps.len() == 1 { "" } else { "s" }
            ),
            Err(err) => {
                invalid += 1;
                super::output::report(&load_report(err));
            }
        }
    }
    Ok(if invalid == 0 {
        Exit::Done
    } else {
        Exit::Invalid
    })
}

fn load_report(err: LoadError) -> miette::Report {
    match err {
        LoadError::Invalid(invalid) => miette::Report::new(*invalid),
        other => miette::Report::new(other),
    }
}

fn parse_params(raw: &[String]) -> Result<Vec<(String, String)>, Failure> {
    raw.iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => Err(Failure::msg(
                Exit::Invalid,
                format!(
                    "--param {}: expected NAME=VALUE (e.g. --param replicas=1)",
                    names::shown(p)
                ),
            )),
        })
        .collect()
}

fn kube_failure(err: KubeError) -> Failure {
    let exit = match &err {
        KubeError::Config(_) | KubeError::InvalidReference { .. } => Exit::Invalid,
        KubeError::Unreachable { .. } => Exit::Unreachable,
        _ => Exit::Failed,
    };
    // The API server's message can quote an object's values.
    Failure::msg(exit, warroom::redact::redact_text(&err.to_string()))
}

/// What Ctrl-C and SIGTERM do to the command they interrupt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interrupts {
    /// `warroom run`: cancel and undo, then stop the undo, then quit.
    Run,
    /// `warroom undo`: stop before the next step, then quit.
    Undo,
}

/// Ctrl-C and SIGTERM, turned into a [`Cancel`] the engine watches. The
/// first asks the run to stop before its next write and undo what it
/// applied (an undo just stops); for a run, the second stops that undo
/// before its next write (the report then lists what is left and the undo
/// command); the last quits at once.
fn interrupt_signal(kind: Interrupts) -> Result<Cancel, Failure> {
    let cancel = Cancel::new();
    let listen = |which: SignalKind| {
        signal(which)
            .map_err(|e| Failure::msg(Exit::Failed, format!("cannot listen for signals: {e}")))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let watched = cancel.clone();
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            let who = tokio::select! {
                Some(()) = interrupt.recv() => "Ctrl-C",
                Some(()) = terminate.recv() => "SIGTERM",
                else => return,
            };
            count += 1;
            match (kind, count) {
                (Interrupts::Run, 1) => {
                    watched.cancel(who);
                    super::output::say(format_args!(
                        "\n{who}: cancelling: stopping before the next change and undoing what \
                         was applied ({who} again to stop the undo)"
                    ));
                }
                (Interrupts::Run, 2) => {
                    watched.abandon(who);
                    super::output::say(format_args!(
                        "\n{who}: stopping the undo before its next change; what is left is \
                         listed below with the command that puts it back ({who} again to quit \
                         at once)"
                    ));
                }
                (Interrupts::Undo, 1) => {
                    watched.cancel(who);
                    super::output::say(format_args!(
                        "\n{who}: stopping before the next step ({who} again to quit at once)"
                    ));
                }
                _ => {
                    super::output::say(format_args!(
                        "\n{who}: quitting at once: the run record may still say `running` and \
                         list changes still applied; `warroom undo --last` puts them back"
                    ));
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(cancel)
}

/// Where a run's commands go, to print an undo command that works as it is.
struct Context<'a> {
    kube: &'a KubeAccess,
    timeline: Option<&'a Path>,
}

fn run_playbook(args: RunArgs) -> CommandResult {
    let loaded = warroom::playbook::load_file(&args.playbook)
        .map_err(|err| Failure::new(Exit::Invalid, load_report(err)))?;
    let params = parse_params(&args.params)?;
    let target = args.kube.target()?;
    let recorder = open_recorder(args.timeline.as_deref())?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let kube = Arc::new(KubeAccess::connect(&target).await.map_err(kube_failure)?);
        let bound = loaded
            .bind(&params, args.kube.namespace.as_deref(), kube.namespace())
            .map_err(|err| Failure::msg(Exit::Invalid, err))?;
        if args.output == Output::Text {
            super::output::line(format_args!(
                "{} {} in namespace {} as {} ({}){}",
                if args.dry_run {
                    "Dry run of"
                } else {
                    "Running"
                },
                bound.name,
                bound.namespace,
                kube.user(),
                kube.server(),
                if bound.params.is_empty() {
                    String::new()
                } else {
                    format!(
                        " with {}",
                        warroom::playbook::engine::params_line(&bound.params)
                    )
                }
            ));
        }
        let (engine, log) = engine_for(&kube, args.output, args.yes, recorder.as_ref());
        let engine = engine.with_cancel(interrupt_signal(Interrupts::Run)?);
        let report = engine
            .run(
                &bound,
                RunOptions {
                    dry_run: args.dry_run,
                },
            )
            .await
            .map_err(run_failure)?;
        report_recorder(recorder.as_deref());
        let context = Context {
            kube: &kube,
            timeline: args.timeline.as_deref(),
        };
        Ok(finish(&report, &log.events(), args.output, &context))
    })
}

/// A run id as `warroom run` prints it can be stored as a ConfigMap key;
/// anything else cannot name a run.
fn check_run_id(run_id: &str) -> Result<(), Failure> {
    names::config_map_key(run_id).map_err(|err| {
        Failure::msg(
            Exit::Invalid,
            format!(
                "invalid RUN-ID: {err}; run ids look like 20261126T231500Z-3f9a (warroom run \
                 prints them; `warroom undo --last` takes the latest); nothing was changed"
            ),
        )
    })
}

fn undo(args: UndoArgs) -> CommandResult {
    if let Some(run_id) = &args.run_id {
        check_run_id(run_id)?;
    }
    let target = args.kube.target()?;
    let recorder = open_recorder(args.timeline.as_deref())?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let kube = Arc::new(KubeAccess::connect(&target).await.map_err(kube_failure)?);
        let namespace = kube.namespace().to_owned();
        if let Err(err) = names::namespace(&namespace) {
            return Err(Failure::msg(
                Exit::Invalid,
                format!(
                    "invalid namespace of the kubeconfig context: {err}; give -n NAMESPACE; \
                     nothing was changed"
                ),
            ));
        }
        let (engine, log) = engine_for(&kube, args.output, args.yes, recorder.as_ref());
        let engine = engine.with_cancel(interrupt_signal(Interrupts::Undo)?);
        let run_id = if args.last {
            None
        } else {
            args.run_id.as_deref()
        };
        if args.output == Output::Text {
            announce_undo(&engine, &kube, &namespace, run_id).await;
        }
        let report = engine.undo(&namespace, run_id).await.map_err(run_failure)?;
        report_recorder(recorder.as_deref());
        let context = Context {
            kube: &kube,
            timeline: args.timeline.as_deref(),
        };
        Ok(finish(&report, &log.events(), args.output, &context))
    })
}

/// Says what an undo is about to put back, before it asks or acts: the
/// run, its playbook and each change. Records the engine would refuse are
/// not shown (the engine says why).
async fn announce_undo(engine: &Engine, kube: &KubeAccess, namespace: &str, run_id: Option<&str>) {
    let Ok(Some(record)) = engine.undo_target(namespace, run_id).await else {
        return;
    };
    if !record.undoable() || warroom::playbook::engine::undo_record_problem(&record).is_some() {
        return;
    }
    let mut lines = vec![format!(
        "Undoing run {} of {} (run by {} at {}) in namespace {namespace} ({}):",
        record.id,
        record.playbook,
        record.actor,
        record.started.strftime("%Y-%m-%d %H:%M:%SZ"),
        kube.server()
    )];
    for step in record.steps.iter().rev() {
        if !step.outcome.left_changes() {
            continue;
        }
        let Some(target) = &step.target else { continue };
        for change in &step.changes {
            lines.push(format!(
                "  {:<24} {target}  {}: back to {} (the run set {})",
                step.name,
                display_path(&change.path),
                shown_value(change.before.as_ref()),
                shown_value(change.after.as_ref())
            ));
        }
    }
    let text = warroom::redact::redact_text(&lines.join("\n")).into_owned();
    println!("{}", warroom::playbook::check::printable_lines(&text));
}

fn shown_value(value: Option<&serde_json::Value>) -> String {
    value
        .map(serde_json::Value::to_string)
        .unwrap_or_else(|| "absent".into())
}

/// The engine for a run or an undo: events kept for the report, printed as
/// they happen in text mode and recorded in the timeline when asked (both
/// subscribers the engine waits for); gates answered by `--yes` or on the
/// terminal.
fn engine_for(
    kube: &Arc<KubeAccess>,
    output: Output,
    yes: bool,
    recorder: Option<&Arc<TimelineRecorder>>,
) -> (Engine, Arc<EventLog>) {
    let log = Arc::new(EventLog::default());
    let confirmer: Arc<dyn Confirmer> = if yes {
        Arc::new(AutoApprove)
    } else {
        Arc::new(TerminalConfirmer)
    };
    let engine = Engine::new(kube.clone(), log.clone(), confirmer);
    if output == Output::Text {
        tokio::spawn(print_events(engine.subscribe_acknowledged()));
    }
    if let Some(recorder) = recorder {
        tokio::spawn(recorder.clone().record(engine.subscribe_acknowledged()));
    }
    (engine, log)
}

fn run_failure(err: warroom::playbook::engine::RunError) -> Failure {
    match err {
        warroom::playbook::engine::RunError::Unreachable(e) => Failure::msg(
            Exit::Unreachable,
            warroom::redact::redact_text(&e.to_string()),
        ),
        warroom::playbook::engine::RunError::Kube(e) => kube_failure(e),
    }
}

/// Opens the incident journal a run records into, before anything changes.
fn open_recorder(path: Option<&std::path::Path>) -> Result<Option<Arc<TimelineRecorder>>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    // Opening reads the journal under its lock: another process holding
    // the lock, or a file that never ends, must not hang the war room.
    let (opened, answer) = std::sync::mpsc::channel();
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("journal-open".into())
        .spawn(move || {
            // A missing journal is created with its incident (named after
            // the file), as `timeline note` does.
            let start = warroom::timeline::IncidentStart::for_journal(
                &owned,
                None,
                warroom::timeline::AUTOMATIC_ACTOR,
                jiff::Timestamp::now(),
            );
            let lock = warroom::timeline::LockWait {
                timeout: APPEND_TIMEOUT,
                on_wait: Some(Arc::new(|held: &warroom::timeline::LockHeld| {
                    super::output::say(format_args!(
                        "waiting for the lock on the journal {} (held by {}), at most {:?}",
                        held.path.display(),
                        held.holder
                            .map_or_else(|| "another process".into(), |p| format!("process {p}")),
                        held.timeout
                    ));
                })),
            };
            let _ = opened.send(
                warroom::timeline::Journal::open_incident(&owned, &start, &lock).map(|(j, _)| j),
            );
        })
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot open the journal: {e}")))?;
    let journal = match answer.recv_timeout(APPEND_TIMEOUT) {
        Ok(opened) => {
            opened.map_err(|e| Failure::msg(Exit::Failed, format!("{e}; nothing was changed")))?
        }
        Err(_) => {
            return Err(Failure::msg(
                Exit::Failed,
                format!(
                    "the incident journal {} could not be opened within {APPEND_TIMEOUT:?} \
                     (another process may hold its lock, or it is not a regular file); \
                     nothing was changed",
                    path.display()
                ),
            ));
        }
    };
    for skipped in journal.recovered() {
        super::output::say(format_args!(
            "warning: {}: line {} is unreadable and was skipped ({})",
            path.display(),
            skipped.line,
            skipped.reason
        ));
    }
    Ok(Some(Arc::new(TimelineRecorder::new(journal))))
}

/// Says loudly when the timeline missed events: the postmortem needs them.
fn report_recorder(recorder: Option<&TimelineRecorder>) {
    let Some(recorder) = recorder else { return };
    match recorder.failures() {
        (0, _) => {}
        (n, first) => super::output::say(format_args!(
            "error: the incident journal {} could not be written: {n} step event(s) are missing \
             from it ({}); add what happened by hand with `warroom timeline note` once it is \
             writable",
            recorder.journal().path().display(),
            first.unwrap_or_default()
        )),
    }
}

/// The exit status of a run or undo.
fn exit_of(report: &RunReport) -> Exit {
    if report.unreachable {
        return Exit::Unreachable;
    }
    match report.outcome {
        Outcome::Done | Outcome::DryRun | Outcome::Undone if report.journal_error.is_some() => {
            Exit::Failed
        }
        Outcome::Done | Outcome::DryRun | Outcome::Undone => Exit::Done,
        Outcome::PlanFailed
        | Outcome::FailedUndone
        | Outcome::Failed
        | Outcome::Stopped
        | Outcome::Cancelled
        | Outcome::Running => Exit::Failed,
        Outcome::Refused | Outcome::Declined => Exit::Refused,
    }
}

/// A word as the shell reads it back: as it is when it has no character
/// the shell treats specially, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn absolute(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .to_string_lossy()
        .into_owned()
}

/// The command that undoes `run_id`, complete enough to work when pasted
/// anywhere: this warroom binary, the kubeconfig file(s) as absolute paths,
/// the context, the namespace and the incident journal.
fn undo_command(run_id: &str, namespace: &str, context: &Context<'_>) -> String {
    let mut words: Vec<String> = Vec::new();
    let origin = context.kube.origin();
    if origin.kubeconfigs.len() > 1 {
        let joined = std::env::join_paths(&origin.kubeconfigs)
            .map(|j| j.to_string_lossy().into_owned())
            .unwrap_or_default();
        words.push(format!("KUBECONFIG={}", shell_word(&joined)));
    }
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.components().count() > 1)
        .map(|p| shell_word(&absolute(&p)))
        .unwrap_or_else(|| "warroom".into());
    words.push(program);
    words.push("undo".into());
    words.push(shell_word(run_id));
    if let [kubeconfig] = origin.kubeconfigs.as_slice() {
        words.push("--kubeconfig".into());
        words.push(shell_word(&absolute(kubeconfig)));
    }
    if let Some(name) = &origin.context {
        words.push("--context".into());
        words.push(shell_word(name));
    }
    words.push("-n".into());
    words.push(shell_word(namespace));
    if let Some(timeline) = context.timeline {
        words.push("--timeline".into());
        words.push(shell_word(&absolute(timeline)));
    }
    words.join(" ")
}

fn finish(report: &RunReport, events: &[StepEvent], output: Output, context: &Context<'_>) -> Exit {
    let exit = exit_of(report);
    let left_changes =
        report.outcome != Outcome::Undone && report.steps.iter().any(|s| s.outcome.left_changes());
    let undo =
        left_changes.then(|| undo_command(&report.plan.run_id, &report.plan.namespace, context));
    match output {
        Output::Json => {
            let mut value = serde_json::json!({
                "run_id": report.plan.run_id,
                "playbook": report.plan.playbook,
                "namespace": report.plan.namespace,
                "actor": report.plan.actor,
                "outcome": report.outcome,
                "exit_code": exit as u8,
                "message": report.message,
                "elapsed_ms": report.elapsed_ms,
                "waited_ms": report.waited_ms,
                "plan": report.plan.steps,
                "steps": report.steps,
                "events": events,
            });
            if let Some(undo) = &undo {
                value["undo_command"] = undo.clone().into();
            }
            if let Some(err) = &report.journal_error {
                value["journal_error"] = err.clone().into();
            }
            super::output::json(value);
        }
        Output::Text => {
            let verb = match report.outcome {
                Outcome::Done => "done",
                Outcome::DryRun => "dry run",
                Outcome::Undone => "undone",
                Outcome::PlanFailed => "not started",
                Outcome::FailedUndone => "failed, undone",
                Outcome::Failed => "failed",
                Outcome::Refused => "refused",
                Outcome::Declined => "declined",
                Outcome::Stopped => "stopped",
                Outcome::Cancelled => "cancelled",
                Outcome::Running => "still running",
            };
            let mut lines = vec![format!(
                "{verb}: {} (run {}, {} ms, {} ms waiting)",
                report.message, report.plan.run_id, report.elapsed_ms, report.waited_ms
            )];
            if let Some(err) = &report.journal_error
                && report.outcome != Outcome::Stopped
            {
                lines.push(format!(
                    "the incident journal could not be written: {err}; its last events are \
                     missing"
                ));
            }
            if let Some(undo) = &undo {
                lines.push(format!("undo with: {undo}"));
            }
            let text = lines.join("\n");
            if exit == Exit::Done {
                super::output::line(text);
            } else {
                super::output::say(text);
            }
        }
    }
    exit
}

/// Prints each event as one line, acknowledging it once printed (so that
/// the lines come before the next prompt).
async fn print_events(mut events: AckedEvents) {
    while let Some(event) = events.recv().await {
        print_event(&event);
        events.acknowledge(Ok(()));
    }
}

/// One event as one line.
fn print_event(e: &StepEvent) {
    let target = e.target.as_ref().map(|t| t.to_string()).unwrap_or_default();
    let fields = match (&e.before, &e.after) {
        (Some(serde_json::Value::Object(before)), Some(serde_json::Value::Object(after))) => before
            .iter()
            .map(|(path, b)| {
                let a = after.get(path).cloned().unwrap_or(serde_json::Value::Null);
                format!("{}: {b} -> {a}", display_path(path))
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    let detail = if fields.is_empty() {
        e.message.clone()
    } else {
        fields
    };
    let phase = format!("{:?}", e.phase).to_lowercase();
    let when = if e.phase == StepPhase::Planned {
        "plan".to_owned()
    } else {
        e.at.strftime("%H:%M:%S%.3f").to_string()
    };
    super::output::line(format_args!(
        "  {when:<12} {phase:<10} {:<24} {:<16} {target}  {detail}",
        e.step, e.kind
    ));
}

/// Asks on the terminal; refuses when stdin is not one.
struct TerminalConfirmer;

impl Confirmer for TerminalConfirmer {
    fn can_ask(&self) -> Result<(), String> {
        if std::io::stdin().is_terminal() {
            Ok(())
        } else {
            Err("stdin is not a terminal: run it from a terminal, or pass --yes to approve every confirmation".into())
        }
    }

    fn confirm<'a>(&'a self, request: &'a ConfirmRequest) -> ConfirmFuture<'a> {
        Box::pin(async move {
            if let Err(reason) = self.can_ask() {
                return Confirmation::Unavailable(reason);
            }
            match terminal_lines() {
                Some(lines) => ask(request, lines).await,
                None => Confirmation::Unavailable("cannot read the terminal".into()),
            }
        })
    }
}

/// Lines typed on the terminal, read by one plain thread for the whole
/// process: a prompt cut short by Ctrl-C leaves its read to the next prompt
/// instead of a second reader racing the first for the same line. A plain
/// thread, not the runtime's blocking pool, so the process never waits for
/// a read on its way out.
fn terminal_lines() -> Option<&'static tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>> {
    static LINES: OnceLock<Option<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>>> =
        OnceLock::new();
    LINES
        .get_or_init(|| {
            let (line, lines) = tokio::sync::mpsc::channel(16);
            std::thread::Builder::new()
                .name("terminal".into())
                .spawn(move || {
                    let stdin = std::io::stdin();
                    loop {
                        let mut text = String::new();
                        match stdin.lock().read_line(&mut text) {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line.blocking_send(text).is_err() {
                            return;
                        }
                    }
                })
                .ok()?;
            Some(tokio::sync::Mutex::new(lines))
        })
        .as_ref()
}

/// Asks one question on the terminal. A typed answer must match exactly:
/// anything else but an empty line, `n` or `no` asks again. Otherwise `y`
/// or `n`, an empty line giving the request's default. End of input
/// declines, except where an empty reply would approve.
async fn ask(
    request: &ConfirmRequest,
    lines: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>,
) -> Confirmation {
    let prompt = super::output::redacted(&request.prompt);
    show_prompt(&match &request.answer {
        Some(answer) => format!(
            "\n[{}] {prompt}\nType {answer:?} to go on (Enter or n to stop here): ",
            request.step
        ),
        None if request.default_yes => format!("\n[{}] {prompt} [Y/n] ", request.step),
        None => format!("\n[{}] {prompt} [y/N] ", request.step),
    });
    let mut lines = lines.lock().await;
    loop {
        let Some(line) = lines.recv().await else {
            return if request.default_yes && request.answer.is_none() {
                Confirmation::Approved
            } else {
                Confirmation::Declined
            };
        };
        let line = line.trim();
        let no = matches!(line, "n" | "N" | "no" | "NO" | "No");
        let yes = matches!(line, "y" | "Y" | "yes" | "YES" | "Yes");
        match &request.answer {
            Some(answer) if line == answer => return Confirmation::Approved,
            Some(_) if line.is_empty() || no => {
                return Confirmation::Declined;
            }
            Some(answer) => show_prompt(&format!(
                "{} is not {answer:?}. Type {answer:?} exactly to go on (Enter or n to stop \
                 here): ",
                names::shown(line)
            )),
            None if yes || (line.is_empty() && request.default_yes) => {
                return Confirmation::Approved;
            }
            None => return Confirmation::Declined,
        }
    }
}

/// Writes a question on standard error in one piece: written a part at a
/// time, another line (an event printed on standard output, say) could land
/// between the question and its `[Y/n]`.
fn show_prompt(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// `warroom bench playbook`.
#[derive(Args)]
pub struct BenchArgs {
    /// The playbook to run.
    #[arg(default_value = "playbooks/lock-contention.yaml")]
    playbook: PathBuf,
    /// Runs to measure, 1 to 1,000 (each is undone before the next).
    #[arg(long, default_value_t = 10, value_parser = super::numbers::whole::<usize>(1..=1_000), allow_negative_numbers = true)]
    runs: usize,
    /// Use this cluster instead of starting a local cluster server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// Runs `warroom bench playbook`.
pub fn bench(args: BenchArgs) -> CommandResult {
    use warroom::bench::playbook::{PlaybookBench, PlaybookBenchError};
    let binary = std::env::current_exe()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot find the warroom binary: {e}")))?;
    let bench = PlaybookBench {
        playbook: args.playbook,
        runs: args.runs,
        binary,
        kubeconfig: args.kubeconfig,
    };
    let report = runtime()?.block_on(bench.run()).map_err(|e| match e {
        PlaybookBenchError::Invalid(_) => Failure::msg(Exit::Invalid, e),
        PlaybookBenchError::Setup(_) => Failure::msg(Exit::Failed, e),
    })?;
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
        ),
        Output::Text => {
            println!(
                "{} ({} steps), {} runs against {}",
                report.playbook, report.steps, report.runs, report.server
            );
            println!(
                "{:<28}{:>10}{:>10}{:>10}{:>10}",
                "ms", "min", "p50", "max", "mean"
            );
            for (name, m) in [
                ("wall (process start..exit)", &report.wall_ms),
                ("engine (start..verified)", &report.engine_ms),
                ("waits and gates", &report.waited_ms),
                ("wall excluding waits", &report.wall_excluding_waits_ms),
            ] {
                println!(
                    "{name:<28}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                    m.min, m.p50, m.max, m.mean
                );
            }
            println!(
                "target < {:.0} ms excluding waits: {}",
                report.target_ms,
                if report.met { "met" } else { "NOT met" }
            );
        }
    }
    Ok(Exit::Done)
}
