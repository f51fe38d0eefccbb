//! The `order-service` Deployment as real worker processes: a reconcile loop
//! that keeps one worker process per replica, as the Deployment and
//! ReplicaSet controllers and the kubelet together would.
//!
//! The loop reads the Deployment from the local cluster's [`Store`] (woken by
//! its changes, and every [`TICK`] to look at the processes), and:
//! - starts and stops processes to match `spec.replicas`; a changed pod
//!   template (`kubectl rollout restart`) makes a new ReplicaSet hash, and
//!   its pods replace the old ones surge-first (25% surge, 25% unavailable,
//!   as the Deployment defaults);
//! - stops a process with SIGTERM (the worker finishes its order and
//!   releases its lock), then SIGKILL after [`SupervisorConfig::grace`], and
//!   deletes the Pod once the process is gone;
//! - restarts a process that died on its own, in the same pod
//!   (`restartCount` + 1, with a back-off and a Warning event);
//! - writes one Pod per process, one ReplicaSet per template, the
//!   Deployment's `status` (so `kubectl rollout status` and playbook waits
//!   see the truth) and Events for scaling, starts, stops, restarts and
//!   pauses.
//!
//! A worker is ready once its log holds a line containing [`READY_MARKER`].
//!
//! No orphans: every worker has `PR_SET_PDEATHSIG(SIGKILL)` (see
//! `process.rs`), [`Supervisor::shutdown`] is bounded, a paused worker is
//! always resumed (also when its pause is cancelled), and dropping the last
//! [`Supervisor`] handle kills what is still running.
//!
//! The Store must be in [`StatusMode::External`](crate::cluster::StatusMode)
//! ([`Supervisor::start`] sets it), or the server would fake the status.
//! This module knows processes and cluster objects; it knows nothing about
//! orders, locks or Redis.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{broadcast, watch};

use super::pods::{self, LastExit, PodView, ReplicaSetCounts};
pub use super::process::WorkerCommand;
use super::process::{ProcessError, Spawner, Worker, WorkerSpec};
use super::rollout::{self, Candidate, plan};
use crate::cluster::{
    EventKind, EventRecorder, LogSpan, PodLogs, StatusMode, Store, seed, template_hash,
};

/// A worker is ready once its log holds a line containing this.
pub const READY_MARKER: &str = "worker ready";
/// How often the loop looks at the processes when nothing else wakes it.
pub const TICK: Duration = Duration::from_millis(50);
/// Default SIGTERM → SIGKILL grace.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Longest grace accepted.
pub const MAX_GRACE: Duration = Duration::from_secs(300);
/// Longest pause accepted.
pub const MAX_PAUSE: Duration = Duration::from_secs(600);
/// First restart back-off; it doubles per restart up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest restart back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Old ReplicaSets kept (the Deployment default `revisionHistoryLimit`).
const HISTORY_LIMIT: usize = 10;
/// Source named in the events the supervisor records.
const COMPONENT: &str = "warroom-drill";
/// Most log bytes read per pod per pass while looking for [`READY_MARKER`].
const SCAN_LIMIT: u64 = 1 << 20;

/// What the supervisor runs and where.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Namespace of the Deployment.
    pub namespace: String,
    /// The Deployment whose replicas are worker processes.
    pub deployment: String,
    /// Directory of the pods' log files (`<pod>.log`); created if missing.
    pub log_dir: PathBuf,
    /// The worker command (every worker also gets `WARROOM_POD_NAME`).
    pub command: WorkerCommand,
    /// SIGTERM → SIGKILL grace for a stopping worker (at most [`MAX_GRACE`]).
    pub grace: Duration,
}

impl SupervisorConfig {
    /// The drill's Deployment (`orders/order-service`), logs in `log_dir`,
    /// grace [`DEFAULT_GRACE`].
    pub fn new(log_dir: impl Into<PathBuf>, command: WorkerCommand) -> Self {
        Self {
            namespace: seed::DRILL_NAMESPACE.to_string(),
            deployment: seed::DRILL_DEPLOYMENT.to_string(),
            log_dir: log_dir.into(),
            command,
            grace: DEFAULT_GRACE,
        }
    }
}

/// Why the supervisor could not start, or could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The log directory could not be created.
    #[error("cannot create the worker log directory {path}: {source}")]
    LogDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The worker program is not there.
    #[error("the worker program {0} was not found (or is not executable)")]
    Program(PathBuf),
    /// A setting is out of its range.
    #[error("{0}")]
    Range(String),
    /// The process spawner could not start.
    #[error("cannot start the worker spawner: {0}")]
    Spawner(std::io::Error),
    /// No such pod.
    #[error("pod {0:?} not found")]
    NoPod(String),
    /// The pod has no running process (it is restarting).
    #[error("pod {0:?} has no running worker process")]
    NotRunning(String),
    /// The supervisor is shutting down.
    #[error("the supervisor is shutting down")]
    Stopping,
}

/// One pod as [`Supervisor::pods`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Pod name (`order-service-<hash>-<5 chars>`).
    pub name: String,
    /// The worker process id; None while the pod waits to restart it.
    pub pid: Option<u32>,
    /// Whether the worker has said it is ready.
    pub ready: bool,
    /// Whether the worker is stopped (SIGSTOP) by a pause now.
    pub paused: bool,
    /// Whether the pod is being stopped (SIGTERM sent).
    pub terminating: bool,
    /// Restarts after unexpected deaths.
    pub restarts: u32,
}

/// A pod's stopping: when SIGTERM went out, and whether SIGKILL followed.
#[derive(Debug)]
struct Termination {
    since: Instant,
    killed: bool,
}

#[derive(Debug)]
struct PodState {
    name: String,
    hash: String,
    /// Creation order (scale-down stops the newest first).
    serial: u64,
    worker: Option<Worker>,
    started: String,
    running_since: String,
    ready: bool,
    /// Where the current process's output begins in the pod's log.
    run_start: u64,
    /// The previous process's output (start, end), after a restart.
    previous_run: Option<(u64, u64)>,
    /// Log offset scanned for the ready marker, and the bytes carried over.
    scanned: u64,
    carry: Vec<u8>,
    restarts: u32,
    last_exit: Option<LastExit>,
    restart_at: Option<Instant>,
    terminating: Option<Termination>,
    deleting: Option<String>,
    pauses: u32,
    /// The Pod object as last written.
    written: Option<Value>,
    /// Deleted through the API (`kubectl delete pod`): its process is
    /// stopped and the object is not written again.
    deleted: bool,
}

#[derive(Debug)]
struct ReplicaSetState {
    name: String,
    template: Value,
    revision: u64,
    /// Replicas it is scaled to (for scaling events).
    desired: i64,
    object: Option<Value>,
}

#[derive(Default)]
struct State {
    pods: BTreeMap<String, PodState>,
    /// By template hash.
    replica_sets: HashMap<String, ReplicaSetState>,
    serial: u64,
    stopping: bool,
    /// Pods deleted through the API since the last pass.
    deleted: Vec<String>,
}

struct Inner {
    store: Store,
    config: SupervisorConfig,
    events: EventRecorder,
    spawner: Spawner,
    state: Mutex<State>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The reconcile loop and its worker processes. Cheap to clone; the last
/// clone dropped without [`Supervisor::shutdown`] kills the workers.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// Whether `program` can be started: an executable file at that path, or
/// (a bare name) on `PATH`.
fn program_exists(program: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return executable(program);
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

fn describe_exit(status: std::process::ExitStatus) -> (i32, String) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => (0, "Completed".into()),
        (Some(code), _) => (code, "Error".into()),
        (None, Some(signal)) => (128 + signal, signal_name(signal)),
        (None, None) => (-1, "Unknown".into()),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "OOMKilled or SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGINT => "SIGINT".into(),
        other => format!("signal {other}"),
    }
}

impl Supervisor {
    /// Sets the store's Deployment status to [`StatusMode::External`] and
    /// starts the reconcile loop on the current tokio runtime.
    pub fn start(store: Store, config: SupervisorConfig) -> Result<Supervisor, SupervisorError> {
        if config.grace > MAX_GRACE {
            return Err(SupervisorError::Range(format!(
                "the worker grace period must be at most {}s (got {}s)",
                MAX_GRACE.as_secs(),
                config.grace.as_secs()
            )));
        }
        if !program_exists(&config.command.program) {
            return Err(SupervisorError::Program(config.command.program.clone()));
        }
        std::fs::create_dir_all(&config.log_dir).map_err(|source| SupervisorError::LogDir {
            path: config.log_dir.clone(),
            source,
        })?;
        let spawner = Spawner::start().map_err(SupervisorError::Spawner)?;
        store.set_status_mode(StatusMode::External);
        let changes = store.subscribe();
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            events: EventRecorder::new(store.clone(), COMPONENT),
            store,
            config,
            spawner,
            state: Mutex::new(State::default()),
            stop,
            task: Mutex::new(None),
        });
        inner
            .store
            .set_pod_logs(Some(Arc::new(SupervisorLogs(Arc::downgrade(&inner)))));
        let task = tokio::spawn(run(Arc::downgrade(&inner), changes, stopped));
        *inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(Supervisor { inner })
    }

    /// The pods and their processes now, by name.
    pub fn pods(&self) -> Vec<PodInfo> {
        let state = self.inner.state();
        state
            .pods
            .values()
            .map(|pod| PodInfo {
                name: pod.name.clone(),
                pid: pod.worker.as_ref().map(Worker::pid),
                ready: pod.ready,
                paused: pod.pauses > 0,
                terminating: pod.terminating.is_some(),
                restarts: pod.restarts,
            })
            .collect()
    }

    /// The log file of `pod` (whether or not it exists yet).
    pub fn log_path(&self, pod: &str) -> PathBuf {
        self.inner.log_path(pod)
    }

    /// A GC pause: SIGSTOP the pod's worker, record a `Paused` event, and
    /// SIGCONT it after `duration` (with a `Resumed` event). The worker is
    /// resumed even if this future is dropped early or the supervisor shuts
    /// down meanwhile. Overlapping pauses of one pod end with the last one.
    pub async fn pause(&self, pod: &str, duration: Duration) -> Result<(), SupervisorError> {
        if duration > MAX_PAUSE {
            return Err(SupervisorError::Range(format!(
                "a pause must be at most {}s (got {:?})",
                MAX_PAUSE.as_secs(),
                duration
            )));
        }
        let pid = {
            let mut state = self.inner.state();
            if state.stopping {
                return Err(SupervisorError::Stopping);
            }
            let entry = state
                .pods
                .get_mut(pod)
                .ok_or_else(|| SupervisorError::NoPod(pod.to_string()))?;
            let Some(worker) = entry.worker.as_mut() else {
                return Err(SupervisorError::NotRunning(pod.to_string()));
            };
            if entry.pauses == 0 && !worker.signal(libc::SIGSTOP) {
                return Err(SupervisorError::NotRunning(pod.to_string()));
            }
            entry.pauses += 1;
            worker.pid()
        };
        let guard = Resume {
            inner: self.inner.clone(),
            pod: pod.to_string(),
            started: Instant::now(),
        };
        self.inner.pod_event(
            pod,
            EventKind::Normal,
            "Paused",
            &format!(
                "Paused worker process {pid} (SIGSTOP) for {} ms",
                duration.as_millis()
            ),
        );
        tokio::time::sleep(duration).await;
        drop(guard);
        Ok(())
    }

    /// Stops every worker: resumes paused ones, sends SIGTERM, waits at most
    /// the grace period, SIGKILLs the rest, deletes their Pods and stops the
    /// loop. Bounded; safe to call more than once.
    pub async fn shutdown(&self) {
        {
            let mut state = self.inner.state();
            state.stopping = true;
            let names: Vec<String> = state.pods.keys().cloned().collect();
            for name in names {
                self.inner
                    .terminate(&mut state, &name, "the drill is stopping");
            }
        }
        let _ = self.inner.stop.send(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let deadline = Instant::now() + self.inner.config.grace;
        loop {
            let remaining = {
                let mut state = self.inner.state();
                self.inner.reap(&mut state);
                if Instant::now() >= deadline {
                    for pod in state.pods.values_mut() {
                        if let Some(worker) = pod.worker.as_mut() {
                            worker.signal(libc::SIGKILL);
                        }
                    }
                }
                state.pods.len()
            };
            if remaining == 0 {
                break;
            }
            if Instant::now() >= deadline + Duration::from_secs(2) {
                tracing::warn!("{remaining} worker process(es) did not exit after SIGKILL");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut state = self.inner.state();
        self.inner.write_status(&mut state);
    }
}

/// The supervisor as the cluster server's source of pod logs.
struct SupervisorLogs(Weak<Inner>);

impl PodLogs for SupervisorLogs {
    fn log(&self, namespace: &str, pod: &str, previous: bool) -> Option<LogSpan> {
        let inner = self.0.upgrade()?;
        if namespace != inner.config.namespace {
            return None;
        }
        let path = inner.log_path(pod);
        let state = inner.state();
        let entry = state.pods.get(pod)?;
        let (from, to) = match (previous, &entry.worker) {
            (true, _) => {
                let (from, to) = entry.previous_run?;
                (from, Some(to))
            }
            (false, Some(_)) => (entry.run_start, None),
            // Waiting to restart: the run that just ended, as kubectl shows
            // a crash-looping container.
            (false, None) => {
                let (from, to) = entry.previous_run?;
                (from, Some(to))
            }
        };
        Some(LogSpan { path, from, to })
    }
}

/// Ends one pause when dropped (see [`Supervisor::pause`]).
struct Resume {
    inner: Arc<Inner>,
    pod: String,
    started: Instant,
}

impl Drop for Resume {
    fn drop(&mut self) {
        let resumed = {
            let mut state = self.inner.state();
            match state.pods.get_mut(&self.pod) {
                Some(pod) if pod.pauses > 0 => {
                    pod.pauses -= 1;
                    pod.pauses == 0
                        && pod
                            .worker
                            .as_mut()
                            .is_some_and(|worker| worker.signal(libc::SIGCONT))
                }
                _ => false,
            }
        };
        if resumed {
            self.inner.pod_event(
                &self.pod,
                EventKind::Normal,
                "Resumed",
                &format!(
                    "Resumed worker process (SIGCONT) after {} ms",
                    self.started.elapsed().as_millis()
                ),
            );
        }
    }
}

async fn run(
    inner: Weak<Inner>,
    mut changes: broadcast::Receiver<Arc<crate::cluster::StoreEvent>>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            if *stopped.borrow() {
                return;
            }
            inner.pass();
        }
        // Wake on a change of the Deployment, on the tick, or on stop.
        let deadline = tokio::time::Instant::now() + TICK;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stopped.changed() => return,
                change = changes.recv() => match change {
                    Ok(change) => {
                        let Some(inner) = inner.upgrade() else {
                            return;
                        };
                        if inner.concerns_us(&change) {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        tokio::time::sleep_until(deadline).await;
                        break;
                    }
                },
            }
        }
    }
}

/// Annotation carrying the Deployment's and each ReplicaSet's revision.
const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";

/// The template hash the pods should have: the Deployment's template, or
/// while its rollout is paused, the newest ReplicaSet already running.
fn active_hash(state: &State, deployment: &Value) -> String {
    let wanted = template_hash(deployment.pointer("/spec/template").unwrap_or(&Value::Null));
    if !rollout::is_paused(deployment) {
        return wanted;
    }
    state
        .replica_sets
        .iter()
        .max_by_key(|(_, rs)| rs.revision)
        .map_or(wanted, |(hash, _)| hash.clone())
}

impl Inner {
    /// Whether a store change needs a pass now: a change of the
    /// Deployment, or one of our pods deleted by someone else (noted for
    /// the pass, which stops its process).
    fn concerns_us(&self, change: &crate::cluster::StoreEvent) -> bool {
        let object = &change.object;
        let name = object.pointer("/metadata/name").and_then(Value::as_str);
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str);
        if namespace != Some(self.ns()) {
            return false;
        }
        match object.get("kind").and_then(Value::as_str) {
            Some("Deployment") => name == Some(self.config.deployment.as_str()),
            Some("Pod") if change.event_type == crate::cluster::EventType::Deleted => {
                let Some(name) = name else {
                    return false;
                };
                let mut state = self.state();
                let ours = state
                    .pods
                    .get(name)
                    .is_some_and(|p| p.terminating.is_none() && !p.deleted);
                if ours {
                    state.deleted.push(name.to_string());
                }
                ours
            }
            _ => false,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Pod state is replaced field by field; a panic cannot leave it
        // unusable, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log_path(&self, pod: &str) -> PathBuf {
        self.config.log_dir.join(format!("{pod}.log"))
    }

    fn ns(&self) -> &str {
        &self.config.namespace
    }

    fn pod_event(&self, pod: &str, kind: EventKind, reason: &str, message: &str) {
        if let Some(object) = self.store.get("v1", "Pod", Some(self.ns()), pod) {
            self.events.record(&object, kind, reason, message);
        }
    }

    fn deployment(&self) -> Option<Value> {
        self.store.get(
            "apps/v1",
            "Deployment",
            Some(self.ns()),
            &self.config.deployment,
        )
    }

    /// One reconcile pass.
    fn pass(&self) {
        let mut state = self.state();
        for name in std::mem::take(&mut state.deleted) {
            if let Some(pod) = state.pods.get_mut(&name) {
                pod.deleted = true;
            }
            self.terminate(&mut state, &name, "the pod was deleted");
        }
        self.reap(&mut state);
        self.scan_readiness(&mut state);
        self.restart_due(&mut state);
        if !state.stopping {
            let deployment = self.deployment();
            self.scale(&mut state, deployment.as_ref());
        }
        self.write_pods(&mut state);
        self.write_status(&mut state);
    }

    /// Looks at every process: a stopping one that is gone loses its Pod; one
    /// that died on its own is scheduled for a restart; one past its grace
    /// gets SIGKILL.
    fn reap(&self, state: &mut State) {
        let grace = self.config.grace;
        let mut gone = Vec::new();
        let mut died = Vec::new();
        for pod in state.pods.values_mut() {
            let Some(worker) = pod.worker.as_mut() else {
                if pod.terminating.is_some() {
                    gone.push(pod.name.clone());
                }
                continue;
            };
            if let Some(status) = worker.exit_status() {
                if pod.terminating.is_some() {
                    gone.push(pod.name.clone());
                } else {
                    died.push((pod.name.clone(), status));
                }
                continue;
            }
            if let Some(termination) = pod.terminating.as_mut()
                && !termination.killed
                && termination.since.elapsed() >= grace
            {
                termination.killed = true;
                worker.signal(libc::SIGKILL);
            }
        }
        for (name, status) in died {
            let (code, reason) = describe_exit(status);
            let Some(pod) = state.pods.get_mut(&name) else {
                continue;
            };
            let pid = pod.worker.as_ref().map(Worker::pid).unwrap_or_default();
            pod.worker = None;
            pod.ready = false;
            pod.pauses = 0;
            let end = std::fs::metadata(self.log_path(&name)).map_or(pod.run_start, |m| m.len());
            pod.previous_run = Some((pod.run_start, end));
            pod.last_exit = Some(LastExit {
                code,
                reason: reason.clone(),
                started: pod.running_since.clone(),
                finished: now(),
            });
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << pod.restarts.min(10))
                .min(MAX_BACKOFF);
            pod.restart_at = Some(Instant::now() + backoff);
            let container = self.container_name(state, &name);
            self.pod_event(
                &name,
                EventKind::Warning,
                "BackOff",
                &format!(
                    "Back-off {} ms restarting failed container {container} in pod {name}: \
                     process {pid} exited ({reason}, exit code {code})",
                    backoff.as_millis()
                ),
            );
        }
        for name in gone {
            if let Some(pod) = state.pods.remove(&name) {
                if let Some(rs) = state.replica_sets.get(&pod.hash)
                    && let Some(object) = &rs.object
                {
                    self.events.record(
                        object,
                        EventKind::Normal,
                        "SuccessfulDelete",
                        &format!("Deleted pod: {name}"),
                    );
                }
                self.store.delete("v1", "Pod", Some(self.ns()), &name);
            }
        }
    }

    fn container_name(&self, state: &State, pod: &str) -> String {
        state
            .pods
            .get(pod)
            .and_then(|p| state.replica_sets.get(&p.hash))
            .and_then(|rs| rs.template.pointer("/spec/containers/0/name"))
            .and_then(Value::as_str)
            .unwrap_or("worker")
            .to_string()
    }

    /// Marks pods ready whose log now holds [`READY_MARKER`].
    fn scan_readiness(&self, state: &mut State) {
        use std::io::{Read, Seek, SeekFrom};
        for pod in state.pods.values_mut() {
            if pod.ready || pod.worker.is_none() || pod.terminating.is_some() {
                continue;
            }
            let Ok(mut file) = std::fs::File::open(self.log_path(&pod.name)) else {
                continue;
            };
            if file.seek(SeekFrom::Start(pod.scanned)).is_err() {
                continue;
            }
            let mut chunk = Vec::new();
            let Ok(read) = file.take(SCAN_LIMIT).read_to_end(&mut chunk) else {
                continue;
            };
            pod.scanned += read as u64;
            let mut window = std::mem::take(&mut pod.carry);
            window.extend_from_slice(&chunk);
            let marker = READY_MARKER.as_bytes();
            if window.windows(marker.len()).any(|w| w == marker) {
                pod.ready = true;
            } else {
                let keep = window.len().saturating_sub(marker.len() - 1);
                pod.carry = window.split_off(keep);
            }
        }
    }

    /// Starts again the processes whose restart back-off is over.
    fn restart_due(&self, state: &mut State) {
        if state.stopping {
            return;
        }
        let due: Vec<String> = state
            .pods
            .values()
            .filter(|p| {
                p.worker.is_none()
                    && p.terminating.is_none()
                    && p.restart_at.is_some_and(|at| Instant::now() >= at)
            })
            .map(|p| p.name.clone())
            .collect();
        for name in due {
            let Some(pod) = state.pods.get_mut(&name) else {
                continue;
            };
            pod.restart_at = None;
            pod.restarts += 1;
            let restarts = pod.restarts;
            match self.spawn(&name) {
                Ok(worker) => {
                    let pid = worker.pid();
                    pod.scanned = worker.log_start;
                    pod.run_start = worker.log_start;
                    pod.carry.clear();
                    pod.worker = Some(worker);
                    pod.running_since = now();
                    self.pod_event(
                        &name,
                        EventKind::Normal,
                        "Started",
                        &format!("Restarted worker process {pid} (restart {restarts})"),
                    );
                }
                Err(e) => {
                    pod.restart_at = Some(Instant::now() + MAX_BACKOFF);
                    self.pod_event(&name, EventKind::Warning, "Failed", &e.to_string());
                }
            }
        }
    }

    fn spawn(&self, pod: &str) -> Result<Worker, ProcessError> {
        self.spawner.spawn(WorkerSpec {
            command: self.config.command.clone(),
            env: vec![
                ("WARROOM_POD_NAME".into(), pod.to_string()),
                ("WARROOM_POD_NAMESPACE".into(), self.ns().to_string()),
            ],
            log: self.log_path(pod),
        })
    }

    /// Sends SIGTERM (after SIGCONT, so a paused worker can act on it) and
    /// marks the pod terminating.
    fn terminate(&self, state: &mut State, name: &str, why: &str) {
        let Some(pod) = state.pods.get_mut(name) else {
            return;
        };
        if pod.terminating.is_some() {
            return;
        }
        pod.terminating = Some(Termination {
            since: Instant::now(),
            killed: false,
        });
        pod.deleting = Some(now());
        pod.ready = false;
        let pid = pod.worker.as_mut().map(|worker| {
            if pod.pauses > 0 {
                worker.signal(libc::SIGCONT);
                pod.pauses = 0;
            }
            worker.signal(libc::SIGTERM);
            worker.pid()
        });
        let message = match pid {
            Some(pid) => format!("Stopping worker process {pid} (SIGTERM): {why}"),
            None => format!("Stopping pod: {why}"),
        };
        // A pod deleted through the API is reported as it was last written.
        let object = self
            .store
            .get("v1", "Pod", Some(self.ns()), name)
            .or_else(|| pod.written.clone());
        if let Some(object) = object {
            self.events
                .record(&object, EventKind::Normal, "Killing", &message);
        }
    }

    /// The ReplicaSet of `hash`, created (and recorded) if new.
    fn ensure_replica_set(&self, state: &mut State, deployment: &Value, hash: &str) {
        let latest = state
            .replica_sets
            .values()
            .map(|rs| rs.revision)
            .max()
            .unwrap_or(0);
        if let Some(rs) = state.replica_sets.get_mut(hash) {
            // A template seen before (`kubectl rollout undo`) becomes the
            // latest revision again, as the Deployment controller does.
            if rs.revision != latest {
                rs.revision = latest + 1;
                self.write_replica_set(state, deployment, hash);
            }
            return;
        }
        let template = deployment
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_default();
        let revision = latest + 1;
        state.replica_sets.insert(
            hash.to_string(),
            ReplicaSetState {
                name: format!("{}-{hash}", self.config.deployment),
                template,
                revision,
                desired: 0,
                object: None,
            },
        );
        self.write_replica_set(state, deployment, hash);
        // Forget the oldest templates beyond the history limit (never one
        // that still has pods).
        while state.replica_sets.len() > HISTORY_LIMIT + 1 {
            let in_use: Vec<&String> = state.pods.values().map(|p| &p.hash).collect();
            let Some(oldest) = state
                .replica_sets
                .iter()
                .filter(|(h, _)| *h != hash && !in_use.contains(h))
                .min_by_key(|(_, rs)| rs.revision)
                .map(|(h, _)| h.clone())
            else {
                break;
            };
            if let Some(rs) = state.replica_sets.remove(&oldest) {
                self.store
                    .delete("apps/v1", "ReplicaSet", Some(self.ns()), &rs.name);
            }
        }
    }

    fn write_replica_set(&self, state: &mut State, deployment: &Value, hash: &str) {
        let (current, ready) = state
            .pods
            .values()
            .filter(|p| p.hash == hash && p.terminating.is_none())
            .fold((0, 0), |(c, r), p| (c + 1, r + i64::from(p.ready)));
        let Some(rs) = state.replica_sets.get_mut(hash) else {
            return;
        };
        let object = pods::replica_set(
            deployment,
            &rs.template,
            &rs.name,
            hash,
            rs.revision,
            ReplicaSetCounts {
                desired: rs.desired,
                current,
                ready,
            },
        );
        let unchanged = rs.object.as_ref().is_some_and(|written| {
            written.get("spec") == object.get("spec")
                && written.get("status") == object.get("status")
                && written.pointer("/metadata/annotations")
                    == object.pointer("/metadata/annotations")
        });
        if unchanged {
            return;
        }
        match self.store.put(object) {
            Ok(stored) => rs.object = Some(stored),
            Err(e) => tracing::warn!("cannot write replica set {}: {e}", rs.name),
        }
    }

    /// Starts and stops processes to match the Deployment.
    fn scale(&self, state: &mut State, deployment: Option<&Value>) {
        let (desired, hash) = match deployment {
            Some(d) => (
                d.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
                    .max(0) as usize,
                Some(active_hash(state, d)),
            ),
            None => (0, None),
        };
        if let (Some(d), Some(hash)) = (deployment, &hash) {
            self.ensure_replica_set(state, d, hash);
            if let Some(rs) = state.replica_sets.get(hash) {
                let revision = rs.revision.to_string();
                let recorded = d
                    .pointer("/metadata/annotations/deployment.kubernetes.io~1revision")
                    .and_then(Value::as_str);
                if recorded != Some(revision.as_str())
                    && let Err(e) = self.store.set_annotation(
                        "apps/v1",
                        "Deployment",
                        Some(self.ns()),
                        &self.config.deployment,
                        REVISION_ANNOTATION,
                        &revision,
                    )
                {
                    tracing::warn!(
                        "cannot record the revision of {}: {e}",
                        self.config.deployment
                    );
                }
            }
        }
        let live = |p: &&PodState| p.terminating.is_none();
        let candidate = |p: &PodState| Candidate {
            name: p.name.clone(),
            ready: p.ready,
            serial: p.serial,
        };
        let current: Vec<Candidate> = state
            .pods
            .values()
            .filter(live)
            .filter(|p| Some(&p.hash) == hash.as_ref())
            .map(candidate)
            .collect();
        let old: Vec<Candidate> = state
            .pods
            .values()
            .filter(live)
            .filter(|p| Some(&p.hash) != hash.as_ref())
            .map(candidate)
            .collect();
        let plan = plan(desired, current, old);
        for name in &plan.stop {
            self.terminate(state, name, "scaled down");
        }
        if let Some(hash) = &hash {
            for _ in 0..plan.start {
                self.start_pod(state, hash);
            }
        }
        // Scale each ReplicaSet to what it now has, with the Deployment's event.
        let Some(d) = deployment else {
            return;
        };
        let hashes: Vec<String> = state.replica_sets.keys().cloned().collect();
        for h in hashes {
            let count = state
                .pods
                .values()
                .filter(|p| p.hash == h && p.terminating.is_none())
                .count() as i64;
            let Some(rs) = state.replica_sets.get_mut(&h) else {
                continue;
            };
            if rs.desired != count {
                let direction = if count > rs.desired { "up" } else { "down" };
                self.events.record(
                    d,
                    EventKind::Normal,
                    "ScalingReplicaSet",
                    &format!(
                        "Scaled {direction} replica set {} from {} to {count}",
                        rs.name, rs.desired
                    ),
                );
                rs.desired = count;
            }
            self.write_replica_set(state, d, &h);
        }
    }

    fn start_pod(&self, state: &mut State, hash: &str) {
        let Some(rs) = state.replica_sets.get(hash) else {
            return;
        };
        let rs_name = rs.name.clone();
        let rs_object = rs.object.clone();
        let name = loop {
            let name = pods::pod_name(&rs_name);
            if !state.pods.contains_key(&name) {
                break name;
            }
        };
        state.serial += 1;
        let started = now();
        let mut pod = PodState {
            name: name.clone(),
            hash: hash.to_string(),
            serial: state.serial,
            worker: None,
            started: started.clone(),
            running_since: started,
            ready: false,
            run_start: 0,
            previous_run: None,
            scanned: 0,
            carry: Vec::new(),
            restarts: 0,
            last_exit: None,
            restart_at: None,
            terminating: None,
            deleting: None,
            pauses: 0,
            written: None,
            deleted: false,
        };
        let spawned = self.spawn(&name);
        if let Ok(worker) = &spawned {
            pod.scanned = worker.log_start;
            pod.run_start = worker.log_start;
        }
        let (worker, failure) = match spawned {
            Ok(worker) => (Some(worker), None),
            Err(e) => (None, Some(e)),
        };
        if worker.is_none() {
            pod.restart_at = Some(Instant::now() + FIRST_BACKOFF);
        }
        pod.worker = worker;
        state.pods.insert(name.clone(), pod);
        self.write_pod(state, &name);
        if let Some(rs_object) = &rs_object {
            self.events.record(
                rs_object,
                EventKind::Normal,
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
            );
        }
        match failure {
            None => {
                let pid = state
                    .pods
                    .get(&name)
                    .and_then(|p| p.worker.as_ref())
                    .map(Worker::pid)
                    .unwrap_or_default();
                self.pod_event(
                    &name,
                    EventKind::Normal,
                    "Scheduled",
                    &format!(
                        "Successfully assigned {}/{name} to {}",
                        self.ns(),
                        pods::NODE_NAME
                    ),
                );
                self.pod_event(
                    &name,
                    EventKind::Normal,
                    "Started",
                    &format!("Started worker process {pid}"),
                );
            }
            Some(e) => self.pod_event(&name, EventKind::Warning, "Failed", &e.to_string()),
        }
    }

    fn write_pod(&self, state: &mut State, name: &str) {
        let Some(pod) = state.pods.get(name) else {
            return;
        };
        if pod.deleted {
            return;
        }
        let Some(rs) = state.replica_sets.get(&pod.hash) else {
            return;
        };
        let Some(rs_object) = &rs.object else {
            return;
        };
        let object = pods::pod(
            &rs.template,
            rs_object,
            &PodView {
                name: &pod.name,
                hash: &pod.hash,
                pid: pod.worker.as_ref().map(Worker::pid),
                ready: pod.ready,
                restarts: pod.restarts,
                started: &pod.started,
                running_since: &pod.running_since,
                last_exit: pod.last_exit.as_ref(),
                deleting: pod.deleting.as_deref(),
                grace_seconds: self.config.grace.as_secs(),
            },
        );
        if pod.written.as_ref() == Some(&object) {
            return;
        }
        match self.store.put(object.clone()) {
            Ok(_) => {
                if let Some(pod) = state.pods.get_mut(name) {
                    pod.written = Some(object);
                }
            }
            Err(e) => tracing::warn!("cannot write pod {name}: {e}"),
        }
    }

    fn write_pods(&self, state: &mut State) {
        let names: Vec<String> = state.pods.keys().cloned().collect();
        for name in names {
            self.write_pod(state, &name);
        }
    }

    /// Writes the Deployment's status from the processes.
    fn write_status(&self, state: &mut State) {
        let Some(deployment) = self.deployment() else {
            return;
        };
        let hash = active_hash(state, &deployment);
        let live: Vec<&PodState> = state
            .pods
            .values()
            .filter(|p| p.terminating.is_none())
            .collect();
        let total = live.len() as i64;
        let updated = live.iter().filter(|p| p.hash == hash).count() as i64;
        let ready = live.iter().filter(|p| p.ready).count() as i64;
        let rs_name = format!("{}-{hash}", self.config.deployment);
        let status = rollout::deployment_status(
            &deployment,
            rollout::Counts {
                total,
                updated,
                ready,
            },
            &rs_name,
            &now(),
        );
        if deployment.get("status") == Some(&status) {
            return;
        }
        if let Err(e) = self.store.set_status(
            "apps/v1",
            "Deployment",
            Some(self.ns()),
            &self.config.deployment,
            status,
        ) {
            tracing::warn!("cannot write the status of {}: {e}", self.config.deployment);
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone: no worker may outlive it.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        for pod in state.pods.values_mut() {
            if let Some(worker) = pod.worker.as_mut() {
                worker.signal(libc::SIGCONT);
                worker.signal(libc::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(1);
                while worker.exit_status().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}
