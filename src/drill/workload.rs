//! The drill's workload: the `order-service` worker processes (the
//! [`Supervisor`]), the lock-mode mirror, the gateway and its load curve,
//! the GC pauses, and at the end the order statistics read back from Redis
//! and the reconciliation scan.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::DrillError;
use super::dir::DrillDir;
use super::gateway::{Gateway, GatewayConfig, GatewayStats};
use super::load::LoadCurve;
use super::lock_mode::LockModeMirror;
use super::pauses::{PauseSchedule, PauseStats, PauseTarget, Pauser};
use super::stats::OrderStats;
use super::supervisor::{Supervisor, SupervisorConfig, WorkerCommand};
use crate::cluster::Store;

/// Environment variable naming the drill directory in every worker: what
/// finds a drill's processes (`/proc/*/environ`).
pub const DRILL_DIR_ENV: &str = "WARROOM_DRILL_DIR";
/// Environment variable holding the worker's Redis URL.
pub const REDIS_URL_ENV: &str = "WARROOM_REDIS_URL";
/// Environment variable holding the Redlock nodes' URLs (comma-separated).
pub const REDLOCK_URLS_ENV: &str = "WARROOM_REDLOCK_URLS";
/// Environment variable holding the PostgreSQL URL (PM-003's tables), like
/// the Redis URL only in the workers' environment: never on a command line
/// nor in a Pod object.
pub const DATABASE_URL_ENV: &str = "WARROOM_DATABASE_URL";
/// How often the drill checks that PostgreSQL still answers.
const DATABASE_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How long PostgreSQL may take to answer that check.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the workers may take to be ready before orders flow.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long accepted orders may take to be processed once the gateway stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the order statistics are read back while the drill runs.
const STATS_EVERY: Duration = Duration::from_millis(500);

/// What the workload needs from the drill.
#[derive(Clone)]
pub struct WorkloadSetup {
    /// The drill cluster's objects.
    pub store: Store,
    /// Redis URLs (the first holds orders and the lock event stream).
    pub redis_urls: Vec<String>,
    /// The drill directory.
    pub dir: DrillDir,
    /// The program run as `<program> drill worker`.
    pub worker_program: PathBuf,
    /// Incident seconds per wall-clock second.
    pub speed: f64,
    /// Peak load as a multiple of the baseline.
    pub spike: f64,
    /// Seed of the load curve and pauses.
    pub seed: u64,
    /// GC pauses per second across the workers at the baseline load
    /// (scaled by the load factor); 0: none.
    pub pause_rate: f64,
    /// PostgreSQL holding the orders (prepared), or `None`: Redis.
    pub database: Option<String>,
}

/// What the workload did, read back at its end.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// Orders offered by the load curve.
    pub offered: u64,
    /// Orders the gateway let through.
    pub received: u64,
    /// Orders the gateway rejected.
    pub rejected: u64,
    /// Orders processed.
    pub processed: u64,
    /// Median order latency.
    pub latency_p50_ms: f64,
    /// 99th percentile order latency.
    pub latency_p99_ms: f64,
    /// Orders found inconsistent.
    pub corrupted: u64,
    /// Of those, the ambiguous ones.
    pub ambiguous: u64,
    /// How long the scan took.
    pub reconcile_ms: u64,
    /// Lock modes the workers used, in order.
    pub lock_modes: Vec<String>,
    /// The GC pauses made.
    pub pauses: PauseStats,
    /// Problems met while winding down.
    pub warnings: Vec<String>,
}

/// The supervisor's pods as the pause schedule sees them.
struct Pods(Supervisor);

impl PauseTarget for Pods {
    fn pods(&self) -> Vec<String> {
        self.0
            .pods()
            .into_iter()
            .filter(|p| p.pid.is_some() && !p.paused && !p.terminating)
            .map(|p| p.name)
            .collect()
    }

    async fn pause(&self, pod: &str, length: Duration) {
        if let Err(e) = self.0.pause(pod, length).await {
            tracing::debug!("pause of {pod} skipped: {e}");
        }
    }
}

/// Parts stopped at the end, each once.
struct Parts {
    gateway: Gateway,
    pauser: Option<Pauser>,
    mirror: LockModeMirror,
    stats_task: tokio::task::JoinHandle<()>,
}

/// The running workload.
pub struct Workload {
    supervisor: Supervisor,
    conn: ConnectionManager,
    parts: Mutex<Option<Parts>>,
    stats: Arc<Mutex<OrderStats>>,
    gateway_stats: Mutex<GatewayStats>,
    database: Option<String>,
    /// Why PostgreSQL can no longer be used, once it cannot.
    database_failure: Arc<Mutex<Option<String>>>,
    database_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(task) = &self.database_task {
            task.abort();
        }
    }
}

/// Checks every [`DATABASE_CHECK_EVERY`] that PostgreSQL answers; the first
/// failure is kept in `failure` (and the check stops).
fn watch_database(url: String, failure: Arc<Mutex<Option<String>>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shown = crate::database::shown_url(&url);
        let mut client = None;
        loop {
            let problem = match &client {
                None => match super::pg_reconcile::connect(&url).await {
                    Ok(c) => {
                        client = Some(c);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                },
                Some(c) => {
                    let c: &tokio_postgres::Client = c;
                    match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, c.simple_query("SELECT 1"))
                        .await
                    {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(super::pg_reconcile::describe(&e)),
                        Err(_) => Some(format!("no answer within {DATABASE_CHECK_TIMEOUT:?}")),
                    }
                }
            };
            if let Some(problem) = problem {
                if let Ok(mut f) = failure.lock() {
                    *f = Some(format!(
                        "PostgreSQL at {shown} stopped answering ({problem}); the workers cannot \
                         write orders: the drill stops. Once it is back, `warroom reconcile \
                         --database URL` shows what the drill left"
                    ));
                }
                return;
            }
            tokio::time::sleep(DATABASE_CHECK_EVERY).await;
        }
    })
}

fn redis_failure(url: &str, e: &redis::RedisError) -> DrillError {
    DrillError::RedisUnreachable {
        url: crate::redis_url::shown(url),
        detail: crate::redis_url::explain(url, e),
    }
}

impl Workload {
    /// Starts the workers and waits (bounded) until they are ready, then
    /// the gateway and the pauses.
    pub async fn start(setup: WorkloadSetup) -> Result<Workload, DrillError> {
        let url = setup.redis_urls[0].clone();
        let client =
            crate::redis_url::parse(&url).map_err(|e| DrillError::RedisInvalid(e.to_string()))?;
        let conn = ConnectionManager::new(client)
            .await
            .map_err(|e| redis_failure(&url, &e))?;
        let mirror = LockModeMirror::start(setup.store.clone(), conn.clone());
        let mut env = vec![
            (REDIS_URL_ENV.to_string(), url.clone()),
            (
                DRILL_DIR_ENV.to_string(),
                setup.dir.root().display().to_string(),
            ),
        ];
        if setup.redis_urls.len() > 1 {
            env.push((REDLOCK_URLS_ENV.to_string(), setup.redis_urls.join(",")));
        }
        if let Some(database) = &setup.database {
            env.push((DATABASE_URL_ENV.to_string(), database.clone()));
        }
        let command = WorkerCommand {
            program: setup.worker_program.clone(),
            args: vec!["drill".into(), "worker".into()],
            env,
        };
        let supervisor = Supervisor::start(
            setup.store.clone(),
            SupervisorConfig::new(setup.dir.pod_logs(), command),
        )
        .map_err(|e| DrillError::Workers(e.to_string()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let pods = supervisor.pods();
            let desired = super::run::desired_replicas(&setup.store);
            let ready = pods.iter().filter(|p| p.ready).count() as i64;
            if ready >= desired {
                break;
            }
            if Instant::now() > deadline {
                supervisor.shutdown().await;
                mirror.stop();
                return Err(DrillError::Workers(format!(
                    "{ready} of {desired} workers ready after {READY_TIMEOUT:?} (see the pod logs in {})",
                    setup.dir.pod_logs().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let curve = LoadCurve::new(setup.spike, setup.speed, setup.seed);
        let gateway = Gateway::start(
            conn.clone(),
            Some(setup.store.clone()),
            GatewayConfig::new(curve.clone(), setup.seed),
        );
        let pauser = (setup.pause_rate > 0.0).then(|| {
            Pauser::start(
                Arc::new(Pods(supervisor.clone())),
                PauseSchedule::with_rate(curve, setup.seed, setup.pause_rate),
            )
        });
        let stats = Arc::new(Mutex::new(OrderStats::default()));
        let database_failure = Arc::new(Mutex::new(None));
        let stats_task = {
            let stats = stats.clone();
            let mut conn = conn.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(read) = super::stats::read(&mut conn).await
                        && let Ok(mut stats) = stats.lock()
                    {
                        *stats = read;
                    }
                    tokio::time::sleep(STATS_EVERY).await;
                }
            })
        };
        Ok(Workload {
            supervisor,
            conn,
            parts: Mutex::new(Some(Parts {
                gateway,
                pauser,
                mirror,
                stats_task,
            })),
            stats,
            gateway_stats: Mutex::new(GatewayStats::default()),
            database_task: setup
                .database
                .clone()
                .map(|url| watch_database(url, database_failure.clone())),
            database: setup.database,
            database_failure,
        })
    }

    /// Worker processes running.
    pub fn running(&self) -> u64 {
        self.supervisor
            .pods()
            .iter()
            .filter(|p| p.pid.is_some() && !p.terminating)
            .count() as u64
    }

    /// Orders offered and processed so far.
    pub fn counts(&self) -> (u64, u64) {
        let offered = match self.parts.lock().ok().as_ref().and_then(|p| p.as_ref()) {
            Some(parts) => parts.gateway.stats().offered,
            None => self.gateway_stats.lock().map(|g| g.offered).unwrap_or(0),
        };
        let processed = self.stats.lock().map(|s| s.processed).unwrap_or(0);
        (offered, processed)
    }

    /// Why the workload cannot go on, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.database_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Stops taking orders, lets the workers process what was accepted
    /// (bounded), stops them and reads the results back.
    pub async fn finish(&self) -> Finished {
        let mut finished = Finished::default();
        let parts = self.parts.lock().ok().and_then(|mut p| p.take());
        let Some(parts) = parts else {
            return finished;
        };
        let gateway = parts.gateway.stop().await;
        if let Some(pauser) = parts.pauser {
            finished.pauses = pauser.stop().await;
        }
        parts.stats_task.abort();
        if let Ok(mut g) = self.gateway_stats.lock() {
            *g = gateway;
        }
        let mut conn = self.conn.clone();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut stats = OrderStats::default();
        let database_failed = self.failure();
        if let Some(failure) = &database_failed {
            finished.warnings.push(failure.clone());
        }
        // Without PostgreSQL the accepted orders cannot be processed: no
        // waiting for them.
        while database_failed.is_none() {
            match super::stats::read(&mut conn).await {
                Ok(read) => stats = read,
                Err(e) => {
                    finished
                        .warnings
                        .push(format!("cannot read the order statistics: {e}"));
                    break;
                }
            }
            if stats.processed >= gateway.received {
                break;
            }
            if Instant::now() > deadline {
                finished.warnings.push(format!(
                    "{} accepted orders were still unprocessed {DRAIN_TIMEOUT:?} after the gateway stopped",
                    gateway.received.saturating_sub(stats.processed)
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.supervisor.shutdown().await;
        let history = parts.mirror.history();
        parts.mirror.stop();
        if let Ok(read) = super::stats::read(&mut conn).await {
            stats = read;
        }
        let scan_started = Instant::now();
        let scan = match &self.database {
            None => super::reconcile::scan(&mut conn)
                .await
                .map_err(|e| e.to_string()),
            Some(url) => match super::pg_reconcile::connect(url).await {
                Ok(mut client) => super::pg_reconcile::scan(&mut client)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        match scan {
            Ok(scan) => {
                finished.corrupted = scan.inconsistent;
                finished.ambiguous = scan.ambiguous;
            }
            Err(e) => finished
                .warnings
                .push(format!("the reconciliation scan failed: {e}")),
        }
        finished.reconcile_ms =
            u64::try_from(scan_started.elapsed().as_millis()).unwrap_or(u64::MAX);
        finished.offered = gateway.offered;
        finished.received = gateway.received;
        finished.rejected = gateway.rejected;
        finished.processed = stats.processed;
        finished.latency_p50_ms = stats.latency_ms.p50;
        finished.latency_p99_ms = stats.latency_ms.p99;
        finished.lock_modes = if stats.lock_modes.is_empty() {
            history.iter().map(|m| m.as_str().to_string()).collect()
        } else {
            stats.lock_modes.clone()
        };
        finished
    }
}
