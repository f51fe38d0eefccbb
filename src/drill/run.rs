//! One drill from start to end: the drill directory, Redis, the local
//! cluster server and its kubeconfig, the exporter, Prometheus when it is
//! on `PATH`, the incident journal, the workload (worker processes, gateway,
//! load curve, GC pauses), alerting, the automatic mitigation, and at the
//! end the reconciliation scan, the Markdown export and the report.
//!
//! Everything started is stopped on every way out: the parts that own a
//! process (Redis, Prometheus, the supervisor's workers) stop it when
//! dropped or shut down, and every child has `PR_SET_PDEATHSIG` so that
//! even a `SIGKILL`ed drill leaves none behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::alerting::{AlertTransition, Alerting, COLLISION_ALERT};
use super::dir::DrillDir;
use super::prometheus::Prometheus;
use super::report::{AlertSeen, DrillReport, Latency, MitigationSeen, ReplicasAt};
use super::workload::{Workload, WorkloadSetup};
use super::{DrillError, LockChoice};
use crate::cluster::seed::{DRILL_DEPLOYMENT, DRILL_LOCK_CONFIGMAP, DRILL_NAMESPACE};
use crate::cluster::{ClusterServer, StatusMode, Store};
use crate::exporter::{Exporter, ExporterConfig, KeyspaceEvents, StartFrom};
use crate::playbook::LoadedPlaybook;
use crate::redis_node::{NodeOptions, RedisNode};
use crate::timeline::{
    AUTOMATIC_ACTOR, AlertChange, AlertState, Entry, IncidentOpened, Journal, Milestone, NewEvent,
};

/// How often the drill looks at its parts (alerting, replicas, progress).
const TICK: Duration = Duration::from_millis(50);
/// How often Prometheus is asked for its alerts.
const PROMETHEUS_POLL: Duration = Duration::from_millis(500);
/// How long Redis given with `--redis` may take to answer.
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What a drill is asked to do.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Redis URLs to use (one; three for redlock, or one used for all); empty:
    /// start `redis-server` from `PATH`.
    pub redis: Vec<String>,
    /// Incident seconds per wall-clock second.
    pub speed: f64,
    /// Peak load as a multiple of PM-003's baseline (420 orders/min).
    pub spike: f64,
    /// The lock mode the ConfigMap starts with.
    pub lock: LockChoice,
    /// Replicas the Deployment starts with.
    pub replicas: u32,
    /// Seed of the load curve and the pause schedule.
    pub seed: u64,
    /// GC pauses per second across the workers at the baseline load
    /// (scaled by the load factor); 0: none.
    pub pause_rate: f64,
    /// Parent of the drill directory (default: [`super::dir::default_parent`]).
    pub dir: Option<PathBuf>,
    /// How long to run (wall clock); `None`: until stopped.
    pub duration: Option<Duration>,
    /// The playbook to run as soon as the collision alert fires.
    pub auto_mitigate: Option<(PathBuf, std::sync::Arc<LoadedPlaybook>)>,
    /// Where the cluster server listens (port 0: a free one).
    pub cluster_listen: SocketAddr,
    /// Where the exporter serves `/metrics` (port 0: a free one).
    pub exporter_listen: SocketAddr,
    /// The program run as `<program> drill worker` for each pod.
    pub worker_program: PathBuf,
    /// The operator: the kubeconfig user, so the actor of playbook steps.
    pub operator: String,
    /// Start Prometheus when it is on `PATH`.
    pub prometheus: bool,
    /// PostgreSQL holding PM-003's tables, prepared by
    /// [`super::pg_reconcile::prepare`]: the workers keep orders,
    /// reservations, fulfillment records and the audit log there, and the
    /// end's reconciliation reads them there. `None`: all in Redis.
    pub database: Option<String>,
}

/// Where the drill's parts can be reached, announced once they run.
#[derive(Debug, Clone)]
pub struct Started {
    /// The drill directory.
    pub dir: PathBuf,
    /// The kubeconfig for the drill's cluster.
    pub kubeconfig: PathBuf,
    /// The cluster server's URL.
    pub cluster_url: String,
    /// The exporter's `/metrics` URL.
    pub metrics_url: String,
    /// Prometheus' URL, when it runs.
    pub prometheus_url: Option<String>,
    /// Redis, as shown (no password).
    pub redis: Vec<String>,
    /// PostgreSQL, as shown (no password), when the orders live there.
    pub database: Option<String>,
    /// The incident journal.
    pub journal: PathBuf,
    /// The drill's log file.
    pub log: PathBuf,
    /// The pods' logs.
    pub pod_logs: PathBuf,
}

/// A moment of the drill, for the progress display.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Incident seconds elapsed.
    pub incident_s: f64,
    /// Wall-clock seconds elapsed.
    pub elapsed_s: f64,
    /// Orders offered per minute, over the last second.
    pub offered_per_min: f64,
    /// Orders processed per minute, over the last second.
    pub processed_per_min: f64,
    /// Collisions so far.
    pub collisions: u64,
    /// Application errors so far.
    pub errors: u64,
    /// Fencing rejections so far.
    pub fencing_rejections: u64,
    /// Deployment replicas (desired) and worker processes running.
    pub replicas: (i64, u64),
    /// The ConfigMap's lock mode.
    pub lock_mode: String,
    /// Alerts firing (drill's own).
    pub firing: Vec<&'static str>,
}

/// What the drill tells whoever runs it, as it happens.
#[derive(Debug, Clone)]
pub enum Notice {
    /// Everything runs.
    Started(Started),
    /// An alert fired or resolved.
    Alert(AlertTransition),
    /// The automatic mitigation started.
    MitigationStarted(PathBuf),
    /// The automatic mitigation ended.
    MitigationEnded(MitigationSeen),
    /// A problem that does not stop the drill.
    Warning(String),
    /// Once per tick.
    Progress(Progress),
}

/// Redis as the drill uses it: nodes it started, or URLs it was given.
struct Redis {
    nodes: Vec<RedisNode>,
    urls: Vec<String>,
}

fn start_redis(options: &DrillOptions, dir: &DrillDir) -> Result<Redis, DrillError> {
    let count = if options.lock == LockChoice::Redlock {
        3
    } else {
        1
    };
    let mut nodes = Vec::new();
    for _ in 0..count {
        let node = RedisNode::start_with(NodeOptions {
            keyspace_events: Some("Ex".into()),
            parent_dir: Some(dir.redis_data()),
            die_with_parent: true,
            ..NodeOptions::default()
        })
        .map_err(|e| match e {
            crate::redis_node::NodeError::Spawn { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                DrillError::RedisMissing
            }
            other => DrillError::RedisStart(other.to_string()),
        })?;
        nodes.push(node);
    }
    let urls = nodes.iter().map(RedisNode::url).collect();
    Ok(Redis { nodes, urls })
}

/// Checks that every `--redis` answers PING within a deadline.
pub async fn check_redis(urls: &[String]) -> Result<(), DrillError> {
    for url in urls {
        let shown = crate::redis_url::shown(url);
        let client =
            crate::redis_url::parse(url).map_err(|e| DrillError::RedisInvalid(e.to_string()))?;
        let attempt = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(REDIS_CHECK_TIMEOUT, attempt).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(DrillError::RedisUnreachable {
                    url: shown,
                    detail: crate::redis_url::explain(url, &e),
                });
            }
            Err(_) => {
                return Err(DrillError::RedisUnreachable {
                    url: shown,
                    detail: format!("no answer within {REDIS_CHECK_TIMEOUT:?}"),
                });
            }
        }
    }
    Ok(())
}

/// The drill's cluster: the PM-003 objects, status owned by the supervisor,
/// the Deployment at `replicas` and the ConfigMap at `lock`.
fn cluster_store(options: &DrillOptions) -> Result<Store, DrillError> {
    let store = Store::new();
    store.set_status_mode(StatusMode::External);
    let objects = crate::cluster::seed::system_namespaces()
        .into_iter()
        .chain(crate::cluster::seed::drill_objects());
    for mut object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if kind == "Deployment" {
            object["spec"]["replicas"] = options.replicas.into();
        }
        if kind == "ConfigMap" {
            object["data"]["LOCK_MODE"] = options.lock.as_str().into();
        }
        store
            .put(object)
            .map_err(|e| DrillError::Cluster(e.to_string()))?;
    }
    Ok(store)
}

/// The kubeconfig of the local cluster, with the operator as its user so
/// that the engine records playbook steps under the operator's name.
fn kubeconfig_text(cluster: &ClusterServer, operator: &str) -> String {
    let text = cluster.kubeconfig();
    let safe = !operator.is_empty()
        && operator
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if safe {
        text.replace(
            &format!("user: {}", crate::cluster::USER),
            &format!("user: {operator}"),
        )
        .replace(
            &format!("name: {}", crate::cluster::USER),
            &format!("name: {operator}"),
        )
    } else {
        text
    }
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), DrillError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DrillError::Io {
        what: "cannot write",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn ms_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The drill Deployment's `spec.replicas` (0 when it is gone).
pub(crate) fn desired_replicas(store: &Store) -> i64 {
    store
        .get(
            "apps/v1",
            "Deployment",
            Some(DRILL_NAMESPACE),
            DRILL_DEPLOYMENT,
        )
        .and_then(|d| d.pointer("/spec/replicas").and_then(|r| r.as_i64()))
        .unwrap_or(0)
}

fn lock_mode(store: &Store) -> String {
    store
        .get(
            "v1",
            "ConfigMap",
            Some(DRILL_NAMESPACE),
            DRILL_LOCK_CONFIGMAP,
        )
        .and_then(|c| {
            c.pointer("/data/LOCK_MODE")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// Runs a drill until `options.duration` has passed or `stop` turns true.
/// Parts are started in order; whatever fails first is returned and what
/// was started is stopped.
pub async fn run(
    options: DrillOptions,
    dir: DrillDir,
    mut stop: watch::Receiver<bool>,
    notify: &(dyn Fn(Notice) + Sync),
) -> Result<DrillReport, DrillError> {
    // Redis first: it is what a bad flag or a missing tool stops.
    let redis = if options.redis.is_empty() {
        start_redis(&options, &dir)?
    } else {
        check_redis(&options.redis).await?;
        Redis {
            nodes: Vec::new(),
            urls: options.redis.clone(),
        }
    };
    let store = cluster_store(&options)?;
    let cluster = ClusterServer::serve(options.cluster_listen, store.clone())
        .await
        .map_err(|e| DrillError::Listen {
            what: "the cluster server",
            detail: e.to_string(),
        })?;
    let kubeconfig = dir.kubeconfig();
    write_private(&kubeconfig, &kubeconfig_text(&cluster, &options.operator))?;

    let exporter = Exporter::new(ExporterConfig {
        keyspace_events: if redis.nodes.is_empty() {
            KeyspaceEvents::Off
        } else {
            KeyspaceEvents::Allow
        },
        start: StartFrom::Latest,
        ..ExporterConfig::new(redis.urls[0].clone())
    })
    .map_err(|e| DrillError::RedisInvalid(e.to_string()))?;
    let (metrics_addr, metrics_task) =
        exporter
            .bind(options.exporter_listen)
            .await
            .map_err(|e| DrillError::Listen {
                what: "the exporter",
                detail: e.to_string(),
            })?;
    let _metrics_task = AbortOnDrop(metrics_task);
    let readers = exporter.spawn();
    // Workers start only once the exporter knows where the stream starts:
    // no event of theirs can fall before its starting point.
    let positioned = async {
        while exporter.snapshot().last_id.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), positioned)
        .await
        .is_err()
    {
        return Err(DrillError::RedisUnreachable {
            url: crate::redis_url::shown(&redis.urls[0]),
            detail: "the exporter could not read the lock event stream within 10 s".into(),
        });
    }

    let mut warnings = Vec::new();
    let prometheus = match super::prometheus::find().filter(|_| options.prometheus) {
        Some(bin) => match Prometheus::start(&bin, &dir.prometheus_data(), metrics_addr).await {
            Ok(p) => Some(p),
            Err(e) => {
                let warning = format!("{e}; the drill goes on without Prometheus");
                notify(Notice::Warning(warning.clone()));
                warnings.push(warning);
                None
            }
        },
        None => None,
    };

    let journal =
        Journal::open_or_create(dir.journal()).map_err(|e| DrillError::Journal(e.to_string()))?;
    let incident_id = format!("DRILL-{}", dir.id());
    journal
        .append_many_async(vec![
            NewEvent::now(
                &options.operator,
                Entry::Incident(IncidentOpened {
                    id: incident_id,
                    title: Some(format!(
                        "PM-003 drill: {} lock, {}x spike, {} replicas",
                        options.lock.as_str(),
                        options.spike,
                        options.replicas
                    )),
                }),
            ),
            NewEvent::now(&options.operator, Entry::severity("SEV-1")),
            NewEvent::now(&options.operator, Entry::milestone(Milestone::Started)),
        ])
        .await
        .map_err(|e| DrillError::Journal(e.to_string()))?;

    let start = Instant::now();
    let workload = Workload::start(WorkloadSetup {
        store: store.clone(),
        redis_urls: redis.urls.clone(),
        dir: dir.clone(),
        worker_program: options.worker_program.clone(),
        speed: options.speed,
        spike: options.spike,
        seed: options.seed,
        pause_rate: options.pause_rate,
        database: options.database.clone(),
    })
    .await?;

    notify(Notice::Started(Started {
        dir: dir.root().to_path_buf(),
        kubeconfig: kubeconfig.clone(),
        cluster_url: cluster.url(),
        metrics_url: format!("http://{metrics_addr}/metrics"),
        prometheus_url: prometheus.as_ref().map(|p| p.url().to_string()),
        redis: redis
            .urls
            .iter()
            .map(|u| crate::redis_url::shown(u))
            .collect(),
        database: options.database.as_deref().map(crate::database::shown_url),
        journal: dir.journal(),
        log: dir.log(),
        pod_logs: dir.pod_logs(),
    }));

    let mut drive = Drive {
        options: &options,
        store: &store,
        exporter: &exporter,
        journal: &journal,
        workload: &workload,
        prometheus: prometheus.as_ref(),
        kubeconfig: &kubeconfig,
        start,
        alerting: Alerting::new(options.speed),
        alerts: Vec::new(),
        replicas: Vec::new(),
        lock_modes: Vec::new(),
        mitigation_task: None,
        mitigation: None,
        mitigation_started_ms: 0,
        collisions_at_mitigation: None,
        collision_alert_ms: None,
        detected: false,
        warnings,
        last_progress: (start, 0, 0),
    };
    let ended = drive.run_until_done(&mut stop, notify).await;

    // Wind down: no new orders, workers finish theirs and stop, then the
    // data is read back and scanned.
    let finished = workload.finish().await;
    let snapshot = exporter.snapshot();
    let duration_ms = ms_since(start);
    let first_collision = snapshot.first_collision_ms;
    let start_unix_ms = unix_ms_now().saturating_sub(duration_ms);
    let ttd_ms = match (first_collision, drive.collision_alert_ms) {
        (Some(collision), Some(alert_ms)) => Some(
            start_unix_ms
                .saturating_add(alert_ms)
                .saturating_sub(collision),
        ),
        _ => None,
    };
    let prometheus_collision = drive
        .alerts
        .iter()
        .filter(|a| a.alert == COLLISION_ALERT || a.alert == "LockCollisionsIncreasing")
        .filter_map(|a| a.prometheus_at_ms)
        .min();
    let ttd_prometheus_ms = match (first_collision, prometheus_collision) {
        (Some(collision), Some(at)) => {
            Some(start_unix_ms.saturating_add(at).saturating_sub(collision))
        }
        _ => None,
    };
    let ttm_ms = match (&drive.mitigation, drive.collision_alert_ms) {
        (Some(m), Some(alert)) if m.verified => Some(m.ended_at_ms.saturating_sub(alert)),
        _ => None,
    };
    let collisions_after_mitigation = drive
        .collisions_at_mitigation
        .map(|at| snapshot.collisions.saturating_sub(at));

    let contents = journal
        .read()
        .map_err(|e| DrillError::Journal(e.to_string()))?;
    let markdown =
        crate::timeline::export::render(&contents, crate::timeline::export::Format::Markdown);
    std::fs::write(dir.export(), markdown).map_err(|source| DrillError::Io {
        what: "cannot write the timeline export",
        path: dir.export(),
        source,
    })?;

    let mut warnings = std::mem::take(&mut drive.warnings);
    warnings.extend(finished.warnings.iter().cloned());
    let report = DrillReport {
        drill_dir: dir.root().display().to_string(),
        lock: options.lock.as_str().into(),
        spike: options.spike,
        speed: options.speed,
        seed: options.seed,
        duration_ms,
        incident_s: duration_ms as f64 / 1000.0 * options.speed,
        ended: ended.into(),
        orders_offered: finished.offered,
        orders_received: finished.received,
        orders_processed: finished.processed,
        orders_rejected: finished.rejected,
        order_latency_ms: Latency {
            p50: finished.latency_p50_ms,
            p99: finished.latency_p99_ms,
        },
        double_grants: snapshot.collisions,
        fencing_rejections: snapshot.fencing_rejections,
        app_errors: snapshot.app_errors,
        corrupted_orders: finished.corrupted,
        ambiguous_orders: finished.ambiguous,
        reconcile_ms: finished.reconcile_ms,
        collisions_after_mitigation,
        ttd_ms,
        ttd_prometheus_ms,
        ttm_ms,
        lock_modes: if finished.lock_modes.is_empty() {
            drive.lock_modes.clone()
        } else {
            finished.lock_modes.clone()
        },
        replicas: drive.replicas.clone(),
        gc_pauses: finished.pauses,
        alerts: drive.alerts.clone(),
        mitigation: drive.mitigation.clone(),
        prometheus: prometheus.is_some(),
        timeline: dir.journal().display().to_string(),
        timeline_export: dir.export().display().to_string(),
        warnings,
    };
    if let Ok(json) = serde_json::to_string_pretty(&report) {
        let _ = std::fs::write(dir.report(), json);
    }
    // Readers first: Redis going away is not worth a warning now.
    drop(readers);
    drop(prometheus);
    cluster.stop().await;
    drop(redis);
    Ok(report)
}

fn unix_ms_now() -> u64 {
    u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0)
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running drill's bookkeeping, tick by tick.
struct Drive<'a> {
    options: &'a DrillOptions,
    store: &'a Store,
    exporter: &'a Exporter,
    journal: &'a Journal,
    workload: &'a Workload,
    prometheus: Option<&'a Prometheus>,
    kubeconfig: &'a PathBuf,
    start: Instant,
    alerting: Alerting,
    alerts: Vec<AlertSeen>,
    replicas: Vec<ReplicasAt>,
    lock_modes: Vec<String>,
    mitigation_task: Option<tokio::task::JoinHandle<super::mitigate::Mitigation>>,
    mitigation: Option<MitigationSeen>,
    mitigation_started_ms: u64,
    collisions_at_mitigation: Option<u64>,
    collision_alert_ms: Option<u64>,
    detected: bool,
    warnings: Vec<String>,
    /// When progress was last computed, with offered and processed then.
    last_progress: (Instant, u64, u64),
}

impl Drive<'_> {
    /// Ticks until the duration is over or a stop is asked; says which.
    async fn run_until_done(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        notify: &(dyn Fn(Notice) + Sync),
    ) -> &'static str {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_prometheus = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        self.tick(notify).await;
                        return "interrupted";
                    }
                }
            }
            if *stop.borrow() {
                return "interrupted";
            }
            self.tick(notify).await;
            if last_prometheus.elapsed() >= PROMETHEUS_POLL {
                last_prometheus = Instant::now();
                self.poll_prometheus().await;
            }
            if let Some(failure) = self.workload.failure() {
                self.warnings.push(failure);
                return "failed";
            }
            if self
                .options
                .duration
                .is_some_and(|d| self.start.elapsed() >= d)
            {
                // A mitigation under way is let finish (bounded by its
                // own waits): its outcome belongs in the report.
                if let Some(task) = self.mitigation_task.as_mut() {
                    let outcome = tokio::select! {
                        outcome = task => outcome.ok(),
                        _ = stop.changed() => None,
                    };
                    self.mitigation_task = None;
                    self.mitigation_done(outcome, notify).await;
                }
                self.poll_prometheus().await;
                return "completed";
            }
        }
    }

    async fn record(&mut self, event: NewEvent) {
        if let Err(e) = self.journal.append_async(event).await {
            let warning = format!("the incident journal could not be written: {e}");
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
    }

    async fn tick(&mut self, notify: &(dyn Fn(Notice) + Sync)) {
        let now_ms = ms_since(self.start);
        let incident_s = now_ms as f64 / 1000.0 * self.options.speed;
        let snapshot = self.exporter.snapshot();
        let transitions =
            self.alerting
                .observe(incident_s, snapshot.collisions, snapshot.app_errors);
        for change in transitions {
            self.record(NewEvent::automatic(Entry::Alert(AlertChange {
                alert: change.alert.to_string(),
                state: if change.fired {
                    AlertState::Fired
                } else {
                    AlertState::Resolved
                },
                value: Some(change.value),
                labels: [("source".to_string(), "drill".to_string())].into(),
            })))
            .await;
            if change.fired {
                match self.alerts.iter_mut().find(|a| a.alert == change.alert) {
                    Some(seen) => {
                        seen.fired_at_ms.get_or_insert(now_ms);
                    }
                    None => self.alerts.push(AlertSeen {
                        alert: change.alert.to_string(),
                        fired_at_ms: Some(now_ms),
                        prometheus_at_ms: None,
                    }),
                }
            }
            if change.fired && change.alert == COLLISION_ALERT && !self.detected {
                self.detected = true;
                self.collision_alert_ms = Some(now_ms);
                self.record(NewEvent::automatic(Entry::milestone(Milestone::Detected)))
                    .await;
                if let Some((path, playbook)) = &self.options.auto_mitigate {
                    notify(Notice::MitigationStarted(path.clone()));
                    self.mitigation_started_ms = now_ms;
                    let playbook = playbook.clone();
                    let kubeconfig = self.kubeconfig.clone();
                    let journal = self.journal.clone();
                    self.mitigation_task = Some(tokio::spawn(async move {
                        super::mitigate::run(&playbook, &kubeconfig, journal).await
                    }));
                }
            }
            notify(Notice::Alert(change));
        }
        if self
            .mitigation_task
            .as_ref()
            .is_some_and(tokio::task::JoinHandle::is_finished)
            && let Some(task) = self.mitigation_task.take()
        {
            let outcome = task.await.ok();
            self.mitigation_done(outcome, notify).await;
        }

        let desired = desired_replicas(self.store);
        let running = self.workload.running();
        if self
            .replicas
            .last()
            .is_none_or(|last| last.desired != desired || last.running != running)
        {
            self.replicas.push(ReplicasAt {
                at_ms: now_ms,
                incident_s,
                desired,
                running,
            });
        }
        let mode = lock_mode(self.store);
        if self.lock_modes.last() != Some(&mode) {
            self.lock_modes.push(mode.clone());
        }

        let (offered, processed) = self.workload.counts();
        let (then, offered_then, processed_then) = self.last_progress;
        let span = then.elapsed().as_secs_f64();
        let mut progress = Progress {
            incident_s,
            elapsed_s: now_ms as f64 / 1000.0,
            collisions: snapshot.collisions,
            errors: snapshot.app_errors,
            fencing_rejections: snapshot.fencing_rejections,
            replicas: (desired, running),
            lock_mode: mode,
            firing: [
                (self.alerting.collision_firing(), COLLISION_ALERT),
                (self.alerting.error_firing(), super::alerting::ERROR_ALERT),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect(),
            ..Progress::default()
        };
        if span >= 1.0 {
            // Rates per wall-clock minute, as the load curve states them.
            let per_min = 60.0 / span;
            progress.offered_per_min = offered.saturating_sub(offered_then) as f64 * per_min;
            progress.processed_per_min = processed.saturating_sub(processed_then) as f64 * per_min;
            self.last_progress = (Instant::now(), offered, processed);
            notify(Notice::Progress(progress));
        }
    }

    async fn mitigation_done(
        &mut self,
        outcome: Option<super::mitigate::Mitigation>,
        notify: &(dyn Fn(Notice) + Sync),
    ) {
        let now_ms = ms_since(self.start);
        let outcome = outcome.unwrap_or_else(|| super::mitigate::Mitigation {
            verified: false,
            outcome: "failed".into(),
            message: "the mitigation task ended without an outcome".into(),
        });
        if outcome.verified {
            self.collisions_at_mitigation = Some(self.exporter.snapshot().collisions);
            self.record(NewEvent::now(
                &self.options.operator,
                Entry::milestone(Milestone::Mitigated),
            ))
            .await;
        }
        let seen = MitigationSeen {
            playbook: self
                .options
                .auto_mitigate
                .as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default(),
            started_at_ms: self.mitigation_started_ms,
            ended_at_ms: now_ms,
            outcome: outcome.outcome,
            verified: outcome.verified,
            message: outcome.message,
        };
        self.mitigation = Some(seen.clone());
        notify(Notice::MitigationEnded(seen));
    }

    async fn poll_prometheus(&mut self) {
        let Some(prometheus) = self.prometheus else {
            return;
        };
        let Ok(firing) = prometheus.firing().await else {
            return;
        };
        let start_unix_ms = unix_ms_now().saturating_sub(ms_since(self.start));
        for (name, active_ms) in firing {
            let at = active_ms.saturating_sub(start_unix_ms);
            match self.alerts.iter_mut().find(|a| a.alert == name) {
                Some(seen) => {
                    if seen.prometheus_at_ms.is_none() {
                        seen.prometheus_at_ms = Some(at);
                        self.journal_prometheus(&name).await;
                    }
                }
                None => {
                    self.alerts.push(AlertSeen {
                        alert: name.clone(),
                        fired_at_ms: None,
                        prometheus_at_ms: Some(at),
                    });
                    self.journal_prometheus(&name).await;
                }
            }
        }
    }

    async fn journal_prometheus(&mut self, name: &str) {
        self.record(NewEvent::now(
            AUTOMATIC_ACTOR,
            Entry::Alert(AlertChange {
                alert: name.to_string(),
                state: AlertState::Fired,
                value: None,
                labels: [("source".to_string(), "prometheus".to_string())].into(),
            }),
        ))
        .await;
    }
}
