//! `warroom validate`, `warroom run` and `warroom undo`: playbooks from the
//! command line, with a terminal prompt for human gates and `--output json`
//! for scripts.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use warroom::kube::{KubeAccess, KubeError, KubeTarget};
use warroom::playbook::event::{ConfirmFuture, Observers};
use warroom::playbook::journal::TimelineRecorder;
use warroom::playbook::{
    AutoApprove, ConfirmRequest, Confirmation, Confirmer, Engine, EventLog, LoadError, Outcome,
    RunOptions, RunReport, StepEvent, StepObserver, StepPhase,
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
    /// Namespace (default: the playbook's, then the context's).
    #[arg(short, long)]
    namespace: Option<String>,
}

impl KubeArgs {
    fn target(&self) -> KubeTarget {
        KubeTarget {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
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
    /// The run to undo (see the `warroom-runs` ConfigMap).
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
                eprintln!("{:?}", load_report(err));
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
                format!("--param {p:?}: expected NAME=VALUE"),
            )),
        })
        .collect()
}

fn kube_failure(err: KubeError) -> Failure {
    let exit = match &err {
        KubeError::Config(_) => Exit::Invalid,
        KubeError::Unreachable { .. } => Exit::Unreachable,
        _ => Exit::Failed,
    };
    Failure::msg(exit, err)
}

fn run_playbook(args: RunArgs) -> CommandResult {
    let loaded = warroom::playbook::load_file(&args.playbook)
        .map_err(|err| Failure::new(Exit::Invalid, load_report(err)))?;
    let params = parse_params(&args.params)?;
    let recorder = open_recorder(args.timeline.as_deref())?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let kube = Arc::new(
            KubeAccess::connect(&args.kube.target())
                .await
                .map_err(kube_failure)?,
        );
        let bound = loaded
            .bind(&params, args.kube.namespace.as_deref(), kube.namespace())
            .map_err(|err| Failure::msg(Exit::Invalid, err))?;
        if args.output == Output::Text {
            println!(
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
            );
        }
        let (engine, log) = engine_for(&kube, args.output, args.yes, recorder.as_ref());
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
        Ok(finish(&report, &log.events(), args.output))
    })
}

fn undo(args: UndoArgs) -> CommandResult {
    let recorder = open_recorder(args.timeline.as_deref())?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let kube = Arc::new(
            KubeAccess::connect(&args.kube.target())
                .await
                .map_err(kube_failure)?,
        );
        let namespace = kube.namespace().to_owned();
        let (engine, log) = engine_for(&kube, args.output, args.yes, recorder.as_ref());
        let report = engine
            .undo(
                &namespace,
                if args.last {
                    None
                } else {
                    args.run_id.as_deref()
                },
            )
            .await
            .map_err(run_failure)?;
        report_recorder(recorder.as_deref());
        Ok(finish(&report, &log.events(), args.output))
    })
}

/// The engine for a run or an undo: events kept for the report, printed as
/// they happen in text mode and recorded in the timeline when asked; gates
/// answered by `--yes` or on the terminal.
fn engine_for(
    kube: &Arc<KubeAccess>,
    output: Output,
    yes: bool,
    recorder: Option<&Arc<TimelineRecorder>>,
) -> (Engine, Arc<EventLog>) {
    let log = Arc::new(EventLog::default());
    let mut observers: Vec<Arc<dyn StepObserver>> = vec![log.clone()];
    if output == Output::Text {
        observers.push(Arc::new(TextEvents));
    }
    if let Some(recorder) = recorder {
        observers.push(recorder.clone());
    }
    let confirmer: Arc<dyn Confirmer> = if yes {
        Arc::new(AutoApprove)
    } else {
        Arc::new(TerminalConfirmer)
    };
    let engine = Engine::new(kube.clone(), Arc::new(Observers(observers)), confirmer);
    (engine, log)
}

fn run_failure(err: warroom::playbook::engine::RunError) -> Failure {
    match err {
        warroom::playbook::engine::RunError::Unreachable(e) => Failure::msg(Exit::Unreachable, e),
        warroom::playbook::engine::RunError::Kube(e) => kube_failure(e),
    }
}

/// Opens the incident journal a run records into, before anything changes.
fn open_recorder(path: Option<&std::path::Path>) -> Result<Option<Arc<TimelineRecorder>>, Failure> {
    let Some(path) = path else {
        return Ok(None);
    };
    let journal = warroom::timeline::Journal::open_or_create(path)
        .map_err(|e| Failure::msg(Exit::Failed, format!("{e}; nothing was changed")))?;
    for skipped in journal.recovered() {
        eprintln!(
            "warning: {}: line {} is unreadable and was skipped ({})",
            path.display(),
            skipped.line,
            skipped.reason
        );
    }
    Ok(Some(Arc::new(TimelineRecorder::new(journal))))
}

/// Says loudly when the timeline missed events: the postmortem needs them.
fn report_recorder(recorder: Option<&TimelineRecorder>) {
    let Some(recorder) = recorder else { return };
    match recorder.failures() {
        (0, _) => {}
        (n, first) => eprintln!(
            "warning: {n} step event(s) could not be recorded in {}: {}",
            recorder.journal().path().display(),
            first.unwrap_or_default()
        ),
    }
}

/// The exit status of a run or undo.
fn exit_of(report: &RunReport) -> Exit {
    if report.unreachable {
        return Exit::Unreachable;
    }
    match report.outcome {
        Outcome::Done | Outcome::DryRun | Outcome::Undone => Exit::Done,
        Outcome::PlanFailed | Outcome::FailedUndone | Outcome::Failed => Exit::Failed,
        Outcome::Refused => Exit::Refused,
    }
}

fn finish(report: &RunReport, events: &[StepEvent], output: Output) -> Exit {
    let exit = exit_of(report);
    match output {
        Output::Json => {
            let value = serde_json::json!({
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
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into())
            );
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
            };
            println!(
                "{verb}: {} (run {}, {} ms, {} ms waiting)",
                report.message, report.plan.run_id, report.elapsed_ms, report.waited_ms
            );
            if report.outcome == Outcome::Done {
                println!(
                    "undo with: warroom undo {} -n {}",
                    report.plan.run_id, report.plan.namespace
                );
            }
        }
    }
    exit
}

/// Prints each event as one line.
struct TextEvents;

impl StepObserver for TextEvents {
    fn on_event(&self, e: &StepEvent) {
        let target = e.target.as_ref().map(|t| t.to_string()).unwrap_or_default();
        let fields = match (&e.before, &e.after) {
            (Some(serde_json::Value::Object(before)), Some(serde_json::Value::Object(after))) => {
                before
                    .iter()
                    .map(|(path, b)| {
                        let a = after.get(path).cloned().unwrap_or(serde_json::Value::Null);
                        format!("{path}: {b} -> {a}")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
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
        println!(
            "  {when:<12} {phase:<10} {:<24} {:<16} {target}  {detail}",
            e.step, e.kind
        );
        let _ = std::io::stdout().flush();
    }
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
            let request = request.clone();
            tokio::task::spawn_blocking(move || ask(&request))
                .await
                .unwrap_or(Confirmation::Declined)
        })
    }
}

fn ask(request: &ConfirmRequest) -> Confirmation {
    let mut stderr = std::io::stderr();
    let _ = match &request.answer {
        Some(answer) => write!(
            stderr,
            "\n[{}] {}\nType {answer:?} to go on: ",
            request.step, request.prompt
        ),
        None => write!(stderr, "\n[{}] {} [y/N] ", request.step, request.prompt),
    };
    let _ = stderr.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return Confirmation::Declined;
    }
    let line = line.trim();
    let approved = match &request.answer {
        Some(answer) => line == answer,
        None => matches!(line, "y" | "Y" | "yes" | "YES" | "Yes"),
    };
    if approved {
        Confirmation::Approved
    } else {
        Confirmation::Declined
    }
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
