//! `warroom drill` (and `warroom` with no subcommand): PM-003 on this
//! machine. Starts Redis, the local cluster server, the worker processes,
//! the exporter, alerting (and Prometheus when it is on PATH) and the
//! incident journal; prints where each can be reached; on a terminal shows
//! a progress line; at the end prints the report.
//!
//! With `--database postgres://…` the orders, reservations, fulfillment
//! records and the audit log are kept in PM-003's PostgreSQL tables (the
//! lock stays in Redis): the drill applies the schema (and says so), stocks
//! the lots, hands the URL to the workers in their environment only, and
//! reconciles from those tables at the end.
//!
//! Exit codes: 0 the drill ran (to its `--duration`, or until Ctrl-C /
//! SIGTERM), 1 the drill or its automatic mitigation failed (PostgreSQL
//! stopping mid-drill included), 2 invalid flags or files (a playbook that
//! does not validate, a listen address in use, a database that already
//! holds orders), 4 Redis or PostgreSQL unreachable, missing or not
//! starting, 130 a second Ctrl-C (or SIGTERM) quit at once without a
//! report.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::sync::watch;
use warroom::drill::dir::DrillDir;
use warroom::drill::run::{DrillOptions, Notice, Progress};
use warroom::drill::{DrillError, LockChoice};

use super::{CommandResult, Exit, Failure, output};

/// Lock mode the drill's ConfigMap starts with.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum LockArg {
    /// PM-003's lock (GET then SET NX; unconditional DEL): collides.
    Legacy,
    /// Single-node lease with fencing tokens.
    Fenced,
    /// Redlock on three Redis nodes, with fencing tokens.
    Redlock,
    /// Optimistic WATCH/MULTI updates.
    Watch,
}

impl From<LockArg> for LockChoice {
    fn from(arg: LockArg) -> Self {
        match arg {
            LockArg::Legacy => LockChoice::Legacy,
            LockArg::Fenced => LockChoice::Fenced,
            LockArg::Redlock => LockChoice::Redlock,
            LockArg::Watch => LockChoice::Watch,
        }
    }
}

/// Report format.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
pub enum ReportArg {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// `warroom drill` arguments.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DrillArgs {
    /// Parts of the drill run as their own processes (hidden).
    #[command(subcommand)]
    part: Option<super::drill_worker::DrillCommand>,
    /// Use this Redis (repeat three times for redlock's three nodes) instead
    /// of starting redis-server; it must answer within 3 s.
    #[arg(long, value_name = "URL")]
    redis: Vec<String>,
    /// Keep orders, inventory reservations, fulfillment records and the
    /// audit log in PM-003's tables in this PostgreSQL database
    /// (postgres://user[:password]@host[:port]/database; an empty database:
    /// the drill applies the schema and stocks the lots); the lock stays in
    /// Redis. The password is never shown, nor put on a command line or in
    /// a Pod.
    #[arg(
        long,
        value_name = "URL",
        env = "WARROOM_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<String>,
    /// Incident seconds per second, 0.1 to 1,000 (10 plays PM-003's 40
    /// minutes in 4).
    #[arg(long, default_value_t = 10.0, value_parser = super::numbers::decimal(0.1, 1_000.0), allow_hyphen_values = true)]
    speed: f64,
    /// Peak load as a multiple of PM-003's baseline of 420 orders/min, 1 to
    /// 1,000.
    #[arg(long, default_value_t = 10.0, value_parser = super::numbers::decimal(1.0, 1_000.0), allow_hyphen_values = true)]
    spike: f64,
    /// Lock mode the workers start with (the order-service-lock ConfigMap).
    #[arg(long, value_enum, default_value = "legacy")]
    lock: LockArg,
    /// Replicas of the order service at start, 1 to 64.
    #[arg(long, default_value_t = 8, value_parser = super::numbers::whole::<u32>(1..=64), allow_negative_numbers = true)]
    replicas: u32,
    /// Seed of the load curve and the GC pauses, 0 to 2^64-1.
    #[arg(long, default_value_t = 3, value_parser = super::numbers::whole::<u64>(0..=u64::MAX), allow_negative_numbers = true)]
    seed: u64,
    /// GC pauses per second across the workers at PM-003's baseline load,
    /// 0 to 10, scaled by the load (0: none).
    #[arg(long, default_value_t = 0.4, value_parser = super::numbers::decimal(0.0, 10.0), allow_hyphen_values = true)]
    gc_pauses: f64,
    /// Parent directory of the drill's directory (default:
    /// $XDG_STATE_HOME/warroom/drills, else ~/.local/state/warroom/drills).
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// No progress display; print the report at the end.
    #[arg(long)]
    headless: bool,
    /// Stop after this many seconds, 1 to 86,400 (default: headless, the
    /// 40 incident minutes of PM-003's ramp; on a terminal, until Ctrl-C).
    #[arg(long, value_name = "SECONDS", value_parser = super::numbers::seconds(1.0, 86_400.0), allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Run this playbook (every gate approved) as soon as the collision
    /// alert fires.
    #[arg(long, value_name = "PLAYBOOK")]
    auto_mitigate: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value = "text")]
    report: ReportArg,
    /// Loopback address of the drill's cluster server (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    cluster_listen: SocketAddr,
    /// Loopback address of the exporter's /metrics (port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    exporter_listen: SocketAddr,
    /// Do not start Prometheus even when it is on PATH.
    #[arg(long)]
    no_prometheus: bool,
    /// On a terminal, show a progress line instead of the console.
    #[arg(long)]
    no_console: bool,
}

impl Default for DrillArgs {
    fn default() -> Self {
        use clap::FromArgMatches;
        let command = <DrillArgs as Args>::augment_args(clap::Command::new("drill"));
        let matches = command
            .try_get_matches_from(["drill"])
            .expect("the defaults parse");
        DrillArgs::from_arg_matches(&matches).expect("the defaults parse")
    }
}

impl DrillArgs {
    /// Whether this runs a part of a drill (a worker) rather than a drill.
    pub fn is_worker(&self) -> bool {
        self.part.is_some()
    }
}

/// The operator's name: `$USER`, else `$LOGNAME`, else `operator`.
fn operator() -> String {
    ["USER", "LOGNAME"]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// Runs a drill; `warroom` with no subcommand calls this with the defaults.
pub fn run(mut args: DrillArgs, log_filter: &str) -> CommandResult {
    if let Some(part) = args.part.take() {
        return super::drill_worker::run(part);
    }
    for (flag, addr) in [
        ("--cluster-listen", args.cluster_listen),
        ("--exporter-listen", args.exporter_listen),
    ] {
        if !addr.ip().is_loopback() {
            return Err(Failure::msg(
                Exit::Invalid,
                format!(
                    "{flag} {addr} is not a loopback address (127.0.0.1, ::1): the drill serves only this machine"
                ),
            ));
        }
    }
    let auto_mitigate = match &args.auto_mitigate {
        Some(path) => {
            let loaded = warroom::playbook::load_file(path)
                .map_err(|err| Failure::new(Exit::Invalid, miette::Report::new(err)))?;
            Some((path.clone(), Arc::new(loaded)))
        }
        None => None,
    };
    for url in &args.redis {
        warroom::redis_url::parse(url).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    }
    if args.lock == LockArg::Redlock && !matches!(args.redis.len(), 0 | 1 | 3) {
        return Err(Failure::msg(
            Exit::Invalid,
            "--lock redlock takes one --redis (used for all three nodes) or three",
        ));
    }
    if args.lock != LockArg::Redlock && args.redis.len() > 1 {
        return Err(Failure::msg(
            Exit::Invalid,
            "more than one --redis is only for --lock redlock",
        ));
    }
    let worker_program = std::env::current_exe()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot find this program: {e}")))?;
    let duration = args.duration.or_else(|| {
        args.headless
            .then(|| Duration::from_secs_f64(40.0 * 60.0 / args.speed))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    // A --redis that does not answer stops the drill before it has a
    // directory or a process.
    if !args.redis.is_empty() {
        runtime
            .block_on(warroom::drill::run::check_redis(&args.redis))
            .map_err(drill_failure)?;
    }
    // So does a --database that does not answer; its schema is applied and
    // its lots stocked before anything starts.
    if let Some(url) = &args.database {
        runtime.block_on(prepare_database(url))?;
    }
    let dir = DrillDir::create(args.dir.as_deref()).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    init_file_logging(&dir.log(), log_filter)?;
    let options = DrillOptions {
        redis: args.redis.clone(),
        speed: args.speed,
        spike: args.spike,
        lock: args.lock.into(),
        replicas: args.replicas,
        seed: args.seed,
        pause_rate: args.gc_pauses,
        dir: args.dir.clone(),
        duration,
        auto_mitigate,
        cluster_listen: args.cluster_listen,
        exporter_listen: args.exporter_listen,
        worker_program,
        operator: operator(),
        prometheus: !args.no_prometheus,
        database: args.database.clone(),
    };
    output::say(format_args!("drill directory: {}", dir.root().display()));
    // On a terminal the drill is the console's: it owns the screen, the
    // drill's lines go to the drill's log, and quitting it ends the drill.
    let console = !args.headless
        && !args.no_console
        && std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal();
    let show_progress = !console && !args.headless && std::io::stderr().is_terminal();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let display = Display::new(show_progress, console.then_some(started_tx));
    let report_format = args.report;
    let console_outcome: Arc<Mutex<Option<String>>> = Arc::default();
    let outcome = runtime.block_on(async {
        let signals = stop_signal()?;
        let (stop, stopped) = watch::channel(false);
        forward_stop(signals, stop.clone());
        if console {
            tokio::spawn(console_session(started_rx, stop, console_outcome.clone()));
        }
        let notify = |notice: Notice| display.show(notice);
        warroom::drill::run::run(options, dir, stopped, &notify)
            .await
            .map_err(drill_failure)
    });
    display.clear();
    if let Some(problem) = console_outcome.lock().ok().and_then(|mut o| o.take()) {
        output::say(format!("console: {problem}"));
    }
    // Nothing the drill started may outlive the command.
    runtime.shutdown_timeout(Duration::from_secs(2));
    let report = outcome?;
    match report_format {
        ReportArg::Json => output::json(serde_json::to_value(&report).unwrap_or_default()),
        ReportArg::Text => output::line(report.text().trim_end()),
    }
    let mitigation_failed = report.mitigation.as_ref().is_some_and(|m| !m.verified);
    if report.ended == "failed" || mitigation_failed {
        return Ok(Exit::Failed);
    }
    Ok(Exit::Done)
}

/// Applies PM-003's schema to `url` and stocks the lots, saying what it did.
async fn prepare_database(url: &str) -> Result<(), Failure> {
    use warroom::drill::pg_reconcile::{self, PgError};
    let failure = |e: PgError| {
        let exit = match e {
            PgError::Unreachable { .. } | PgError::Query(_) => Exit::Unreachable,
            PgError::Invalid { .. } | PgError::Schema(_) => Exit::Invalid,
        };
        Failure::msg(exit, e)
    };
    let mut client = pg_reconcile::connect(url).await.map_err(failure)?;
    let prepared = pg_reconcile::prepare(&mut client).await.map_err(failure)?;
    let shown = warroom::database::shown_url(url);
    if prepared.applied.is_empty() {
        output::say(format!(
            "database: {shown}: schema current (version {})",
            prepared.version
        ));
    }
    for m in &prepared.applied {
        output::say(format!(
            "database: {shown}: applied migration {:04} {}",
            m.version, m.name
        ));
    }
    output::say(format!(
        "database: {} lot(s) stocked",
        prepared.lots_stocked
    ));
    Ok(())
}

fn drill_failure(err: DrillError) -> Failure {
    let exit = match &err {
        DrillError::RedisMissing
        | DrillError::RedisStart(_)
        | DrillError::RedisUnreachable { .. } => Exit::Unreachable,
        DrillError::RedisInvalid(_) | DrillError::Listen { .. } => Exit::Invalid,
        _ => Exit::Failed,
    };
    Failure::msg(exit, err)
}

/// SIGINT and SIGTERM, as a flag the drill watches.
fn stop_signal() -> Result<watch::Receiver<bool>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind| {
        signal(kind)
            .map_err(|e| Failure::msg(Exit::Failed, format!("cannot wait for signals: {e}")))
    };
    let mut interrupt = listen(SignalKind::interrupt())?;
    let mut terminate = listen(SignalKind::terminate())?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        output::say(
            "stopping the drill: workers finish their orders, then the report \
             (Ctrl-C again to quit at once)",
        );
        let _ = stop.send(true);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        // Every child dies with this process (PR_SET_PDEATHSIG).
        output::say("quitting at once: no report; the journal has what was recorded");
        std::process::exit(130);
    });
    Ok(stopped)
}

/// Passes a stop asked by a signal on to the drill.
fn forward_stop(mut signals: watch::Receiver<bool>, stop: watch::Sender<bool>) {
    tokio::spawn(async move {
        while signals.changed().await.is_ok() {
            if *signals.borrow() {
                let _ = stop.send(true);
                return;
            }
        }
    });
}

/// The console over a running drill: attached once everything runs, and
/// the drill stops when it quits. Its failure, if any, is kept for after
/// the screen is restored.
async fn console_session(
    started: tokio::sync::oneshot::Receiver<warroom::drill::run::Started>,
    stop: watch::Sender<bool>,
    problem: Arc<Mutex<Option<String>>>,
) {
    let Ok(started) = started.await else {
        return;
    };
    let settings = match warroom::drill::playbooks::folder(&started.dir) {
        Ok(playbooks) => warroom::console::config::Settings {
            exporter: Some(started.metrics_url.clone()),
            prometheus: started.prometheus_url.clone(),
            timeline: Some(started.journal.clone()),
            playbooks,
            log_file: started.dir.join("console.log"),
            ..Default::default()
        },
        Err(e) => {
            if let Ok(mut p) = problem.lock() {
                *p = Some(e.to_string());
            }
            let _ = stop.send(true);
            return;
        }
    };
    let options = warroom::console::ConsoleOptions {
        kube: warroom::kube::KubeTarget {
            kubeconfig: Some(started.kubeconfig.clone()),
            context: None,
            namespace: None,
        },
        settings,
        read_only: false,
    };
    // Anything written to standard error while the console owns the
    // screen goes to the console's log instead.
    let redirect = super::console::LogRedirect::to(&started.dir.join("console.log"));
    let result = warroom::console::run(options).await;
    drop(redirect);
    if let Err(e) = result
        && let Ok(mut p) = problem.lock()
    {
        *p = Some(warroom::redact::redact_text(&e.to_string()).into_owned());
    }
    let _ = stop.send(true);
}

/// Drill logs go to the drill's log file, redacted.
fn init_file_logging(path: &std::path::Path, filter: &str) -> Result<(), Failure> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            Failure::msg(
                Exit::Failed,
                format!("cannot open the log {}: {e}", path.display()),
            )
        })?;
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(FileLog(Arc::new(Mutex::new(file))))
        .try_init();
    Ok(())
}

/// The log file, written one redacted line at a time.
#[derive(Clone)]
struct FileLog(Arc<Mutex<std::fs::File>>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for FileLog {
    type Writer = FileLine;

    fn make_writer(&'a self) -> FileLine {
        FileLine(self.0.clone(), Vec::new())
    }
}

/// One log line being formatted.
struct FileLine(Arc<Mutex<std::fs::File>>, Vec<u8>);

impl Write for FileLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for FileLine {
    fn drop(&mut self) {
        let text = warroom::redact::redact_text(&String::from_utf8_lossy(&self.1)).into_owned();
        if let Ok(mut file) = self.0.lock() {
            let _ = file.write_all(text.as_bytes());
        }
    }
}

/// What the drill shows on standard error: where things are, alerts and
/// the mitigation as lines, and on a terminal one redrawn progress line.
struct Display {
    progress: bool,
    drawn: Mutex<bool>,
    /// With the console on screen: where the drill's addresses go, and
    /// every other notice goes to the log, not the screen.
    console: Option<Mutex<Option<tokio::sync::oneshot::Sender<warroom::drill::run::Started>>>>,
}

impl Display {
    fn new(
        progress: bool,
        console: Option<tokio::sync::oneshot::Sender<warroom::drill::run::Started>>,
    ) -> Self {
        Self {
            progress,
            drawn: Mutex::new(false),
            console: console.map(|c| Mutex::new(Some(c))),
        }
    }

    fn clear(&self) {
        if let Ok(mut drawn) = self.drawn.lock()
            && *drawn
        {
            eprint!("\r\x1b[2K");
            *drawn = false;
        }
    }

    fn say(&self, text: String) {
        self.clear();
        output::say(text);
    }

    fn show(&self, notice: Notice) {
        if let Some(console) = &self.console {
            match notice {
                Notice::Started(s) => {
                    if let Some(tx) = console.lock().ok().and_then(|mut c| c.take()) {
                        let _ = tx.send(s);
                    }
                }
                Notice::Progress(_) => {}
                other => tracing::info!("{other:?}"),
            }
            return;
        }
        match notice {
            Notice::Started(s) => {
                let mut lines = vec![format!("redis: {}", s.redis.join(", "))];
                if let Some(database) = &s.database {
                    lines.push(format!("database: {database}"));
                }
                lines.extend([
                    format!("cluster: {}", s.cluster_url),
                    format!("kubeconfig: {}", s.kubeconfig.display()),
                    format!(
                        "  try: kubectl --kubeconfig {} get deploy,pods -n orders",
                        s.kubeconfig.display()
                    ),
                    format!("metrics: {}", s.metrics_url),
                ]);
                if let Some(url) = s.prometheus_url {
                    lines.push(format!("prometheus: {url}"));
                }
                lines.push(format!("journal: {}", s.journal.display()));
                lines.push(format!("log: {}", s.log.display()));
                lines.push(format!("pod logs: {}", s.pod_logs.display()));
                self.say(lines.join("\n"));
            }
            Notice::Alert(change) => self.say(format!(
                "alert {} {} (value {})",
                change.alert,
                if change.fired { "FIRING" } else { "resolved" },
                change.value
            )),
            Notice::MitigationStarted(path) => {
                self.say(format!("running {} (every gate approved)", path.display()));
            }
            Notice::MitigationEnded(m) => self.say(format!(
                "{}: {}{}",
                m.playbook,
                m.outcome,
                if m.verified {
                    ", verified: mitigated"
                } else {
                    ""
                }
            )),
            Notice::Warning(w) => self.say(format!("warning: {w}")),
            Notice::Progress(p) => self.draw(&p),
        }
    }

    fn draw(&self, p: &Progress) {
        if !self.progress {
            return;
        }
        let minutes = (p.incident_s / 60.0).floor();
        let seconds = p.incident_s - minutes * 60.0;
        let line = format!(
            "T+{:02}:{:02.0} | offered {:.0}/min processed {:.0}/min | collisions {} errors {} fenced {} | replicas {}/{} | lock {}{}",
            minutes,
            seconds.floor(),
            p.offered_per_min,
            p.processed_per_min,
            p.collisions,
            p.errors,
            p.fencing_rejections,
            p.replicas.1,
            p.replicas.0,
            p.lock_mode,
            if p.firing.is_empty() {
                String::new()
            } else {
                format!(" | FIRING {}", p.firing.join(", "))
            }
        );
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{}", output::redacted(&line));
        let _ = stderr.flush();
        if let Ok(mut drawn) = self.drawn.lock() {
            *drawn = true;
        }
    }
}
