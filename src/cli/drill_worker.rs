//! `warroom drill worker` (hidden): one `order-service` replica of the drill,
//! started by the drill's reconcile loop. It reads the Redis URL from
//! `WARROOM_REDIS_URL` (never from the command line, which other users of
//! the machine can read), the pod name from `WARROOM_POD_NAME`, the
//! Redlock nodes from `WARROOM_REDLOCK_URLS` (comma-separated), and, when
//! the orders live in PostgreSQL, its URL from `WARROOM_DATABASE_URL`.

use std::time::Duration;

use clap::{Args, Subcommand};
use warroom::drill::worker::{self, WorkerConfig, WorkerError};

use super::numbers::whole;
use super::{CommandResult, Exit, Failure};

/// Environment variable holding the Redis URL.
pub const ENV_REDIS_URL: &str = "WARROOM_REDIS_URL";
/// Environment variable holding the pod name.
pub const ENV_POD_NAME: &str = "WARROOM_POD_NAME";
/// Environment variable holding the Redlock node URLs.
pub const ENV_REDLOCK_URLS: &str = "WARROOM_REDLOCK_URLS";
/// Environment variable holding the PostgreSQL URL (PM-003's tables).
pub const ENV_DATABASE_URL: &str = "WARROOM_DATABASE_URL";

/// Parts of the drill run as their own processes.
#[derive(Subcommand)]
pub enum DrillCommand {
    /// One order-service worker (started by the drill).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// `warroom drill worker` arguments.
#[derive(Args)]
pub struct WorkerArgs {
    /// Orders processed at the same time, 1 to 1,024.
    #[arg(long, default_value_t = 8, value_parser = whole::<usize>(1..=1_024), allow_negative_numbers = true)]
    concurrency: usize,
    /// Lock TTL in milliseconds, 10 to 60,000 (PM-003: 200).
    #[arg(long, default_value_t = 200, value_parser = whole::<u64>(10..=60_000), allow_negative_numbers = true)]
    lock_ttl_ms: u64,
    /// Milliseconds an order stays unacknowledged before another worker
    /// takes it over, 10 to 600,000.
    #[arg(long, default_value_t = 150, value_parser = whole::<u64>(10..=600_000), allow_negative_numbers = true)]
    claim_idle_ms: u64,
    /// Milliseconds each of the pipeline's three service calls takes, 0 to 10,000.
    #[arg(long, default_value_t = 3, value_parser = whole::<u64>(0..=10_000), allow_negative_numbers = true)]
    work_ms: u64,
    /// Milliseconds to wait for an order's lock before reporting an error,
    /// 1 to 600,000.
    #[arg(long, default_value_t = 2_000, value_parser = whole::<u64>(1..=600_000), allow_negative_numbers = true)]
    lock_wait_ms: u64,
}

/// Runs `warroom drill <subcommand>`.
pub fn run(command: DrillCommand) -> CommandResult {
    match command {
        DrillCommand::Worker(args) => run_worker(args),
    }
}

fn env_text(name: &str) -> Result<Option<String>, Failure> {
    match std::env::var(name) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::msg(
            Exit::Invalid,
            format!("{name} is not valid UTF-8"),
        )),
    }
}

/// Runs one worker until SIGTERM or Ctrl-C.
pub fn run_worker(args: WorkerArgs) -> CommandResult {
    let Some(url) = env_text(ENV_REDIS_URL)? else {
        return Err(Failure::msg(
            Exit::Invalid,
            format!("{ENV_REDIS_URL} is not set; the worker reads its Redis URL from it"),
        ));
    };
    warroom::redis_url::parse(&url).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    let pod = env_text(ENV_POD_NAME)?.unwrap_or_else(|| format!("pod-{}", std::process::id()));
    let redlock_urls: Vec<String> = env_text(ENV_REDLOCK_URLS)?
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for node in &redlock_urls {
        warroom::redis_url::parse(node).map_err(|e| Failure::msg(Exit::Invalid, e))?;
    }
    let database_url = env_text(ENV_DATABASE_URL)?;
    if let Some(url) = &database_url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "{ENV_DATABASE_URL} is not a postgres:// URL: {}",
                warroom::database::shown_url(url)
            ),
        ));
    }
    let config = WorkerConfig {
        redlock_urls,
        database_url,
        concurrency: args.concurrency,
        lock_ttl: Duration::from_millis(args.lock_ttl_ms),
        claim_idle: Duration::from_millis(args.claim_idle_ms),
        work: Duration::from_millis(args.work_ms),
        lock_wait: Duration::from_millis(args.lock_wait_ms),
        ..WorkerConfig::new(url, pod)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::msg(Exit::Failed, format!("cannot handle SIGTERM: {e}")))?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        match worker::run(config, shutdown).await {
            Ok(()) => Ok(Exit::Done),
            Err(e @ (WorkerError::Unreachable(_) | WorkerError::Database(_))) => {
                Err(Failure::msg(Exit::Unreachable, e))
            }
            Err(e @ WorkerError::Config(_)) => Err(Failure::msg(Exit::Invalid, e)),
        }
    })
}
