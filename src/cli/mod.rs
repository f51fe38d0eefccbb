//! Command-line interface: one file per command family, each turning parsed
//! arguments into library calls, and [`output`] for everything written to
//! standard error (failure reports, warnings, logs: redacted, each once).
//!
//! Exit codes are stable and documented in the README:
//! 0 done, 1 failed (for `run`: a step failed and was undone), 2 invalid input,
//! 3 refused or needs confirmation, 4 could not reach a required service
//! (Kubernetes API server or Redis).

mod bench;
mod cluster;
mod completions;
mod config;
mod console;
mod drill;
mod drill_worker;
mod exporter;
mod numbers;
pub mod output;
mod playbook;
mod reconcile;
mod timeline;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Stable process exit statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked.
    Done = 0,
    /// The command ran and failed (for `run`: a step failed and was undone).
    Failed = 1,
    /// Arguments or input files are invalid; nothing was changed.
    Invalid = 2,
    /// The command refused to act, or needs a confirmation it could not get.
    Refused = 3,
    /// A required service (Kubernetes API server, Redis) could not be reached.
    Unreachable = 4,
}

/// A command failure: what to tell the user and which exit status to use.
pub struct Failure {
    /// Exit status for the process.
    pub exit: Exit,
    /// The message, with its causes and any source snippet.
    pub report: miette::Report,
}

impl Failure {
    /// A failure with the given exit status.
    pub fn new(exit: Exit, report: impl Into<miette::Report>) -> Self {
        Self {
            exit,
            report: report.into(),
        }
    }

    /// A failure built from a plain message, redacted now: a URL or token
    /// in it must not survive, even split across wrapped lines.
    pub fn msg(exit: Exit, message: impl std::fmt::Display) -> Self {
        let message = warroom::redact::redact_text(&message.to_string()).into_owned();
        Self::new(exit, miette::miette!("{message}"))
    }
}

/// Result of a command handler.
pub type CommandResult = Result<Exit, Failure>;

#[derive(Parser)]
#[command(
    name = "warroom",
    version,
    about = "War-room console, playbooks, fenced Redis locks and incident timeline",
    long_about = None
)]
pub(crate) struct Cli {
    /// Log filter (tracing env-filter syntax: a level such as warn, info or
    /// debug, or targets such as warroom=debug); logs go to stderr, redacted.
    #[arg(
        long,
        global = true,
        env = "WARROOM_LOG",
        hide_env_values = true,
        default_value = "warn"
    )]
    log: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks that print numbers: throughput, latency and correctness counts.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Playbooks: validate, run and undo.
    #[command(flatten)]
    Playbook(playbook::PlaybookCommand),
    /// Run a local Kubernetes-API-compatible server (seeded with the PM-003
    /// drill objects) and write a kubeconfig for it; runs until Ctrl-C.
    Cluster(cluster::ClusterArgs),
    /// Incident timeline: record milestones, notes and steps; export the postmortem.
    #[command(subcommand)]
    Timeline(timeline::TimelineCommand),
    /// Collision exporter: lock events and expired-key notices in,
    /// Prometheus /metrics out.
    Exporter(exporter::ExporterArgs),
    /// The war room in a terminal, attached to a cluster, the exporter and
    /// the incident journal.
    Console(console::ConsoleArgs),
    /// Console configuration: `warroom config check [FILE]`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print a shell completion script (bash, zsh, fish).
    Completions(completions::CompletionsArgs),
    /// Print the man page (or write one per command with --dir).
    Man(completions::ManArgs),
    /// PM-003 on this machine: Redis, worker processes, GC pauses, the
    /// spike, the local cluster, exporter, alerting and timeline (the
    /// default command).
    Drill(drill::DrillArgs),
    /// Find the drill's orders whose records disagree (in Redis, or in
    /// PM-003's PostgreSQL tables); repair what the audit log makes
    /// unambiguous.
    Reconcile(reconcile::ReconcileArgs),
}

/// Parses arguments, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    let _ = err.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    // The message quotes the value it refuses, which may be
                    // a URL with its password.
                    let rendered = err.render();
                    output::say(if output::use_color() {
                        rendered.ansi().to_string()
                    } else {
                        rendered.to_string()
                    });
                    ExitCode::from(Exit::Invalid as u8)
                }
            };
        }
    };
    // A drill logs to a file in its directory.
    let drill = match &cli.command {
        Some(Command::Drill(args)) => !args.is_worker(),
        None => true,
        _ => false,
    };
    if let Err(failure) = init_logging(&cli.log, !drill) {
        output::report(&failure.report);
        return ExitCode::from(failure.exit as u8);
    }
    let outcome = match cli.command {
        Some(Command::Bench(cmd)) => bench::run(cmd),
        Some(Command::Playbook(cmd)) => playbook::run(cmd),
        Some(Command::Cluster(args)) => cluster::run(args),
        Some(Command::Timeline(cmd)) => timeline::run(cmd),
        Some(Command::Exporter(args)) => exporter::run(args),
        Some(Command::Console(args)) => console::run(args),
        Some(Command::Config(cmd)) => config::run(cmd),
        Some(Command::Completions(args)) => completions::completions(args),
        Some(Command::Man(args)) => completions::man(args),
        Some(Command::Drill(args)) => drill::run(args, &cli.log),
        Some(Command::Reconcile(args)) => reconcile::run(args),
        None => drill::run(drill::DrillArgs::default(), &cli.log),
    };
    match outcome {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(failure) => {
            output::report(&failure.report);
            ExitCode::from(failure.exit as u8)
        }
    }
}

/// Logs go to standard error through the redactor, each line once, in
/// colour only on a terminal without `NO_COLOR` (when `install`; otherwise
/// the filter is only checked).
fn init_logging(filter: &str, install: bool) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| {
        Failure::msg(
            Exit::Invalid,
            format!(
                "--log (or WARROOM_LOG) {filter:?} is not a log filter: {e}; use a level such \
                 as warn, info or debug, or targets such as warroom=debug"
            ),
        )
    })?;
    if !install {
        return Ok(());
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::use_color())
        .with_writer(output::LogSink)
        .try_init();
    Ok(())
}
