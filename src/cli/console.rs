//! `warroom console`: the war room in a terminal, attached to a real
//! environment (a cluster through a kubeconfig, the collision exporter, a
//! Prometheus server when there is one, the incident journal).

use std::path::{Path, PathBuf};

use clap::Args;
use warroom::console::config::{self, Settings};
use warroom::console::{ConsoleError, ConsoleOptions};
use warroom::kube::{KubeTarget, names};

use super::numbers::whole;
use super::{CommandResult, Exit, Failure};

/// The configuration read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "config/warroom.yaml";

/// `warroom console` arguments. Flags override `WARROOM_*` variables,
/// which override the configuration file.
#[derive(Args)]
pub struct ConsoleArgs {
    /// Kubeconfig file (default: KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    context: Option<String>,
    /// Namespace (default: the context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// The collision exporter's base URL (default: the config's, else
    /// http://127.0.0.1:9464).
    #[arg(long, env = "WARROOM_EXPORTER")]
    exporter: Option<String>,
    /// A Prometheus server's base URL for PromQL.
    #[arg(long, env = "WARROOM_PROMETHEUS")]
    prometheus: Option<String>,
    /// The incident journal to follow and record into.
    #[arg(long, env = "WARROOM_TIMELINE")]
    timeline: Option<PathBuf>,
    /// The playbook folder.
    #[arg(long, env = "WARROOM_PLAYBOOKS")]
    playbooks: Option<PathBuf>,
    /// Poll interval in milliseconds, 100 to 60,000.
    #[arg(long, env = "WARROOM_POLL_MS", value_parser = whole::<u64>(100..=60_000), allow_negative_numbers = true)]
    poll_ms: Option<u64>,
    /// Refuse every change (runs, undo, cancel); the screen says so.
    #[arg(long, env = "WARROOM_READ_ONLY")]
    read_only: bool,
    /// Configuration file (default: config/warroom.yaml when it exists).
    #[arg(long, env = "WARROOM_CONFIG")]
    config: Option<PathBuf>,
    /// Where the console logs (default: the config's, else warroom-console.log).
    #[arg(long, env = "WARROOM_LOG_FILE")]
    log_file: Option<PathBuf>,
}

fn check_url(flag: &str, url: &str) -> Result<(), Failure> {
    if (url.starts_with("http://") || url.starts_with("https://"))
        && reqwest::Url::parse(url).is_ok()
    {
        return Ok(());
    }
    Err(Failure::msg(
        Exit::Invalid,
        format!("{flag} must be an http:// or https:// URL, got {url:?}"),
    ))
}

fn settings(args: &ConsoleArgs) -> Result<Settings, Failure> {
    let mut settings = match &args.config {
        Some(path) => config::load(path).map_err(|e| Failure::msg(Exit::Invalid, e))?,
        None if Path::new(DEFAULT_CONFIG).is_file() => {
            config::load(Path::new(DEFAULT_CONFIG)).map_err(|e| Failure::msg(Exit::Invalid, e))?
        }
        None => Settings::default(),
    };
    if let Some(url) = &args.exporter {
        check_url("--exporter", url)?;
        settings.exporter = Some(url.clone());
    }
    if let Some(url) = &args.prometheus {
        check_url("--prometheus", url)?;
        settings.prometheus = Some(url.clone());
    }
    if let Some(path) = &args.timeline {
        settings.timeline = Some(path.clone());
    }
    if let Some(path) = &args.playbooks {
        settings.playbooks = path.clone();
    }
    if let Some(poll) = args.poll_ms {
        settings.poll_ms = poll;
    }
    if let Some(path) = &args.log_file {
        settings.log_file = path.clone();
    }
    Ok(settings)
}

/// Runs the console until the user quits.
pub fn run(args: ConsoleArgs) -> CommandResult {
    use std::io::IsTerminal;
    if let Some(namespace) = &args.namespace
        && let Err(err) = names::namespace(namespace)
    {
        return Err(Failure::msg(
            Exit::Invalid,
            format!("invalid -n/--namespace: {err}"),
        ));
    }
    let settings = settings(&args)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Failure::msg(
            Exit::Invalid,
            "warroom console needs a terminal (standard input and output are not one); for \
             scripts use warroom run, warroom timeline and warroom exporter",
        ));
    }
    let options = ConsoleOptions {
        kube: KubeTarget {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
            namespace: args.namespace.clone(),
        },
        settings: settings.clone(),
        read_only: args.read_only,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let log = LogRedirect::to(&settings.log_file)?;
    let outcome = runtime.block_on(warroom::console::run(options));
    drop(log);
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match outcome {
        Ok(()) => Ok(Exit::Done),
        Err(ConsoleError::Kube(e)) => Err(Failure::msg(Exit::Invalid, e)),
        Err(e) => Err(Failure::msg(Exit::Failed, e)),
    }
}

/// Standard error goes to the log file while the console owns the screen
/// (logs never reach the terminal); put back when dropped.
pub(super) struct LogRedirect {
    saved: libc::c_int,
}

impl LogRedirect {
    pub(super) fn to(path: &Path) -> Result<Self, Failure> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                Failure::msg(
                    Exit::Invalid,
                    format!("cannot open the log file {}: {e}", path.display()),
                )
            })?;
        // SAFETY: dup and dup2 on descriptors this process owns; the file
        // stays open through the duplicate until it is put back.
        let saved = unsafe { libc::dup(2) };
        if saved < 0 || unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
            return Err(Failure::msg(
                Exit::Failed,
                "cannot send logs to the log file",
            ));
        }
        Ok(Self { saved })
    }
}

impl Drop for LogRedirect {
    fn drop(&mut self) {
        // SAFETY: `saved` is the duplicate of the original standard error.
        unsafe {
            libc::dup2(self.saved, 2);
            libc::close(self.saved);
        }
    }
}
