//! `warroom bench lock`: a contention benchmark and correctness checker.
//!
//! Clients loop: take a lock on one of K keys, read the protected record,
//! write it back incremented, release. Every Nth grant stalls while holding
//! (a GC pause) for longer than the TTL. A referee in this process keeps the
//! ground truth:
//!
//! - **double grant**: a grant while another holder still held the key. A
//!   fenced or Redlock lease holds until release or its validity deadline; a
//!   legacy (or peer library) lock holds until release, because its holder
//!   cannot know better.
//! - **stale write**: a write sent by a holder after another holder had been
//!   granted the key and had read the record. The store either took it
//!   (`stale_writes_accepted`: the PM-003 corruption) or refused it
//!   (`stale_writes_rejected`: the fence at work).
//! - **lost updates**: accepted increments missing from the records at the
//!   end (each accepted write adds one).
//!
//! In WATCH mode there is no lock: a stale write is an optimistic update whose
//! `EXEC` was aborted (rejected) or that overwrote a newer value (accepted,
//! which shows up as a lost update).
//!
//! Latency is per completed cycle (acquire to release), excluding the
//! deliberate pause.
//!
//! [`LockBench::run_across`] puts every node behind a [`DelayProxy`], for the
//! peer library as well, so that the nodes behave as if on other hosts. Each
//! run reports its Redis work per completed cycle ([`PerCycle`]): commands
//! the nodes ran (`INFO commandstats`) and, behind proxies, requests the
//! clients sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use redis::AsyncCommands;
use serde::Serialize;

use super::proxy::{DelayProxy, Traffic};
use crate::fence::{Claim, FencedStore, WriteOutcome, colocated};
use crate::lock::legacy::LegacyLock;
use crate::lock::{
    Backoff, EventSink, EventStream, FencedLock, LockError, LockOptions, Redlock, WatchSession,
};

/// Which lock the clients use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// PM-003's lock: GET then SET NX, unconditional DEL, unfenced writes.
    Legacy,
    /// Single-node fenced lock with fenced store.
    Fenced,
    /// Fenced Redlock over all given nodes, fenced store on the first.
    Redlock,
    /// Optimistic WATCH/MULTI/EXEC updates, no lock.
    Watch,
}

/// A lock library to run the same benchmark against, for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    /// The `rslock` crate (Redlock without fencing tokens): one node for
    /// single-node modes, all nodes for `redlock`.
    Rslock,
}

/// The stall injected into every Nth holder.
#[derive(Debug, Clone, Copy)]
pub struct PauseSchedule {
    /// Every Nth grant stalls (N ≥ 1).
    pub every: u64,
    /// For this long, while holding (should exceed the TTL).
    pub pause: Duration,
}

/// What to run. Its `Debug` shows the node URLs without their passwords.
#[derive(Clone)]
pub struct LockBench {
    /// Redis URLs; single-node modes use the first.
    pub nodes: Vec<String>,
    /// Lock mode.
    pub mode: BenchMode,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct lock keys (and records).
    pub keys: usize,
    /// How long clients keep starting cycles.
    pub duration: Duration,
    /// Lock TTL.
    pub ttl: Duration,
    /// Optional GC-pause schedule.
    pub pauses: Option<PauseSchedule>,
    /// Publish lock events (as services do).
    pub events: bool,
    /// Also run the same benchmark against a peer library.
    pub compare: Option<Peer>,
    /// Fenced mode: records on the lock's node, read in the grant's script
    /// ([`crate::fence::colocated::acquire_and_read`]) and written with
    /// [`crate::fence::colocated::write_and_release`] instead of separate
    /// acquire, claim, write and release calls.
    pub colocated: bool,
    /// Connections per node, shared round-robin by the clients.
    pub connections: usize,
}

impl std::fmt::Debug for LockBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|url| crate::redis_url::shown(url))
            .collect();
        f.debug_struct("LockBench")
            .field("nodes", &nodes)
            .field("mode", &self.mode)
            .field("clients", &self.clients)
            .field("keys", &self.keys)
            .field("duration", &self.duration)
            .field("ttl", &self.ttl)
            .field("pauses", &self.pauses)
            .field("events", &self.events)
            .field("compare", &self.compare)
            .field("colocated", &self.colocated)
            .field("connections", &self.connections)
            .finish()
    }
}

/// How long a client waits for any one Redis reply: lock operations answer
/// in milliseconds, and a node that stops answering (paused, cut off) must
/// end the run with errors rather than hang it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Results of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Which lock ran (`legacy`, `fenced`, `redlock`, `watch`, `rslock`).
    pub name: String,
    /// Completed cycles.
    pub cycles: u64,
    /// Completed cycles per second of wall time.
    pub cycles_per_sec: f64,
    /// Cycle latency.
    pub latency_ms: Latency,
    /// Grants while another holder still held the key.
    pub double_grants: u64,
    /// Stale writes the store took.
    pub stale_writes_accepted: u64,
    /// Stale writes the store refused.
    pub stale_writes_rejected: u64,
    /// Claims (fenced reads) refused because a newer holder came first.
    pub claims_rejected: u64,
    /// Accepted increments missing from the records at the end.
    pub lost_updates: u64,
    /// Accepted writes.
    pub writes_accepted: u64,
    /// Stalls injected.
    pub pauses: u64,
    /// Acquire attempts that gave up (timeout or no quorum).
    pub acquire_failures: u64,
    /// Redis errors on other operations.
    pub errors: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// What the run sent to and ran on the nodes, per completed cycle.
    pub per_cycle: PerCycle,
    /// Cores' worth of CPU that other processes on the machine used during
    /// the run (`/proc/stat` minus the nodes and this process; `None`
    /// without `/proc/stat` or `INFO cpu`, or when a node is on another
    /// host, whose CPU is not this machine's). With clients and nodes sharing
    /// a few cores, a comparison moves with it: measure with it near 0.
    pub other_cpu_cores: Option<f64>,
}

/// Redis work per completed cycle, measured on the nodes and on the wire
/// while the clients ran (setup, read-back and clean-up excluded; failed
/// acquire attempts are included, so they raise the per-cycle numbers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerCycle {
    /// Commands the nodes ran (`INFO commandstats` deltas summed over all
    /// nodes): a script call counts once, and so does every command the
    /// script ran; likewise `MULTI`, `EXEC` and the commands between them.
    /// `None` when a node refused `INFO` or no cycle completed.
    pub commands_run: Option<f64>,
    /// Script calls the nodes ran (`EVAL`, `EVALSHA`, `FCALL` and the
    /// read-only forms).
    pub scripts_run: Option<f64>,
    /// [`PerCycle::commands_run`] by command name (lower case, as Redis
    /// names them).
    pub by_command: BTreeMap<String, f64>,
    /// Requests the clients sent (counted at the delaying proxies, so only
    /// with a node delay): every command and every script call counts once,
    /// whatever the script runs inside.
    pub requests_sent: Option<f64>,
    /// Of those requests, script calls.
    pub scripts_sent: Option<f64>,
    /// CPU time the nodes' `redis-server` processes used, in microseconds
    /// (`INFO cpu`: `used_cpu_sys` + `used_cpu_user` deltas summed over all
    /// nodes). On loopback a single node saturates first, so this bounds
    /// the cycles per second: about 10⁶ / this per node-core.
    pub redis_cpu_us: Option<f64>,
    /// CPU time this process used (`getrusage`), in microseconds: the
    /// clients, the runtime and, with a node delay, the proxies' threads.
    pub client_cpu_us: Option<f64>,
    /// Sequential round trips per cycle on the critical path, estimated as
    /// the median cycle latency divided by the measured `PING` round trip
    /// (only with a node delay, where the network dominates).
    pub round_trips_p50: Option<f64>,
}

/// The comparison run, as reported next to the main one.
#[derive(Debug, Clone, Serialize)]
pub struct PeerReport {
    /// Peer library name.
    pub name: String,
    /// Completed cycles per second.
    pub cycles_per_sec: f64,
    /// Cycle latency.
    pub latency_ms: Latency,
    /// The peer's full run.
    pub run: RunReport,
}

/// The benchmark's output (`--output json` prints this).
#[derive(Debug, Clone, Serialize)]
pub struct LockBenchReport {
    /// Lock mode.
    pub mode: BenchMode,
    /// Nodes used by the mode.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys.
    pub keys: usize,
    /// Requested duration, seconds.
    pub duration_s: f64,
    /// TTL, milliseconds.
    pub ttl_ms: u64,
    /// Pause schedule: every Nth grant.
    pub pause_every: Option<u64>,
    /// Pause length, milliseconds.
    pub pause_ms: Option<u64>,
    /// Whether lock events were published.
    pub events: bool,
    /// One-way delay added in each direction between clients and every
    /// node, milliseconds (`None`: direct connections).
    pub node_delay_ms: Option<u64>,
    /// Median of 20 sequential `PING` round trips to the first node through
    /// its proxy before the runs, milliseconds: the delay as the clients
    /// experience it (twice the one-way delay, plus forwarding and
    /// scheduling). `None` without a node delay.
    pub node_round_trip_ms: Option<f64>,
    /// Completed cycles.
    pub cycles: u64,
    /// Completed cycles per second.
    pub cycles_per_sec: f64,
    /// Cycle latency.
    pub latency_ms: Latency,
    /// Grants while another holder still held the key.
    pub double_grants: u64,
    /// Stale writes the store took.
    pub stale_writes_accepted: u64,
    /// Stale writes the store refused.
    pub stale_writes_rejected: u64,
    /// The main run in full.
    pub run: RunReport,
    /// The peer run, with `--compare`.
    pub compare: Option<PeerReport>,
    /// Main cycles/s divided by the peer's.
    pub ratio: Option<f64>,
}

/// How long a client waits for a lock before counting an acquire failure.
const CLIENT_ACQUIRE_WAIT: Duration = Duration::from_secs(5);
/// How long past the last possible cycle the run waits for its clients.
const FINISH_GRACE: Duration = Duration::from_secs(30);

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The arguments do not describe a runnable benchmark.
    #[error("{0}")]
    Invalid(String),
    /// A node could not be reached, refused the setup, or went away during
    /// the run (so the counts would mean nothing).
    #[error("{message}")]
    Setup {
        /// The node, its password redacted.
        url: String,
        /// What failed and what to check, the URL redacted.
        message: String,
    },
    /// A node stopped answering during the run; its counts cannot be
    /// trusted.
    #[error("{0}")]
    Stalled(String),
}

impl BenchError {
    /// A node failure: `what` went wrong on `url`, with the cause and what
    /// to check; the URL is shown redacted.
    fn node(what: &str, url: &str, source: &LockError) -> Self {
        let detail = match source {
            LockError::Redis(e) => crate::redis_url::explain(url, e),
            other => format!(
                "Redis at {}: {}",
                crate::redis_url::shown(url),
                crate::redact::redact_text(&other.to_string())
            ),
        };
        BenchError::Setup {
            url: crate::redis_url::shown(url),
            message: format!("{what}: {detail}"),
        }
    }
}

impl LockBench {
    fn check(&self) -> Result<(), BenchError> {
        let invalid = |m: &str| Err(BenchError::Invalid(m.to_string()));
        if self.nodes.is_empty() {
            return invalid("at least one --redis URL is needed");
        }
        if self.mode != BenchMode::Redlock && self.nodes.len() > 1 {
            return invalid("only redlock mode uses several nodes; give one --redis URL");
        }
        for url in &self.nodes {
            check_url(url)?;
        }
        if self.clients == 0 || self.keys == 0 {
            return invalid("--clients and --keys must be at least 1");
        }
        if let Some(p) = self.pauses
            && p.every == 0
        {
            return invalid("--pause-every must be at least 1");
        }
        if self.ttl < Duration::from_millis(10) {
            return invalid("--ttl-ms must be at least 10");
        }
        for url in &self.nodes {
            crate::redis_url::parse(url)
                .map_err(|e| BenchError::Invalid(format!("--redis: {e}")))?;
        }
        Ok(())
    }

    /// Runs the benchmark (and the comparison, if asked) and reports.
    pub async fn run(&self) -> Result<LockBenchReport, BenchError> {
        self.run_with_delay(None).await
    }

    /// Runs the benchmark with every node behind a [`DelayProxy`] adding
    /// `delay` in each direction (both the main run and the peer connect
    /// through the proxies), as if each node were on its own host.
    pub async fn run_across(&self, delay: Duration) -> Result<LockBenchReport, BenchError> {
        self.run_with_delay(Some(delay)).await
    }

    async fn run_with_delay(&self, delay: Option<Duration>) -> Result<LockBenchReport, BenchError> {
        self.check()?;
        if delay.is_some_and(|d| d > MAX_NODE_DELAY) {
            return Err(BenchError::Invalid(format!(
                "the node delay must be at most {} ms",
                MAX_NODE_DELAY.as_millis()
            )));
        }
        let mut proxies = Vec::new();
        let mut routes = Vec::with_capacity(self.nodes.len());
        if let Some(delay) = delay {
            for url in &self.nodes {
                let (proxy, proxied) = behind_proxy(url, delay)?;
                proxies.push(proxy);
                routes.push(proxied);
            }
        } else {
            routes.clone_from(&self.nodes);
        }
        // What a request to a node costs before any lock traffic: the
        // modelled network (and on a busy machine, the scheduling delays the
        // proxies add to it).
        let round_trip = if proxies.is_empty() {
            None
        } else {
            ping_round_trip(&routes[0]).await
        };
        let network = Network {
            routes,
            proxies: &proxies,
        };
        let name = match self.mode {
            BenchMode::Legacy => "legacy",
            BenchMode::Fenced => "fenced",
            BenchMode::Redlock => "redlock",
            BenchMode::Watch => "watch",
        };
        let estimate = |run: &mut RunReport| {
            run.per_cycle.round_trips_p50 = round_trip
                .filter(|&rtt| rtt > 0.0 && run.cycles > 0)
                .map(|rtt| run.latency_ms.p50 / rtt);
        };
        let mut run = self
            .run_one(Contender::Mode(self.mode), name, &network)
            .await?;
        estimate(&mut run);
        let compare = match self.compare {
            Some(Peer::Rslock) => {
                let mut peer = self.run_one(Contender::Rslock, "rslock", &network).await?;
                estimate(&mut peer);
                Some(PeerReport {
                    name: peer.name.clone(),
                    cycles_per_sec: peer.cycles_per_sec,
                    latency_ms: peer.latency_ms,
                    run: peer,
                })
            }
            None => None,
        };
        let ratio = compare
            .as_ref()
            .filter(|p| p.cycles_per_sec > 0.0)
            .map(|p| run.cycles_per_sec / p.cycles_per_sec);
        Ok(LockBenchReport {
            mode: self.mode,
            nodes: self.nodes.len(),
            clients: self.clients,
            keys: self.keys,
            duration_s: self.duration.as_secs_f64(),
            ttl_ms: self.ttl.as_millis() as u64,
            pause_every: self.pauses.map(|p| p.every),
            pause_ms: self.pauses.map(|p| p.pause.as_millis() as u64),
            events: self.events,
            node_delay_ms: delay.map(|d| d.as_millis() as u64),
            node_round_trip_ms: round_trip,
            cycles: run.cycles,
            cycles_per_sec: run.cycles_per_sec,
            latency_ms: run.latency_ms,
            double_grants: run.double_grants,
            stale_writes_accepted: run.stale_writes_accepted,
            stale_writes_rejected: run.stale_writes_rejected,
            run,
            compare,
            ratio,
        })
    }

    async fn run_one(
        &self,
        contender: Contender,
        name: &str,
        network: &Network<'_>,
    ) -> Result<RunReport, BenchError> {
        let prefix = format!("bench:{:08x}", rand::random::<u32>());
        let events = self.events.then(EventStream::default);
        let setup = |url: &str| {
            let url = url.to_string();
            move |source: LockError| BenchError::node("cannot set up the benchmark", &url, &source)
        };
        let first = &self.nodes[0];
        // Clients reach the nodes by these URLs (through the proxies, if any).
        let routes = &network.routes;
        // One connection per node, shared by every client, as the worker tasks
        // of one service share theirs.
        let connections = self.connections.clamp(1, self.clients);
        let mut pools: Vec<Vec<redis::aio::ConnectionManager>> = Vec::new();
        for _ in 0..connections {
            let mut node_conns = Vec::with_capacity(self.nodes.len());
            for (url, route) in self.nodes.iter().zip(routes) {
                node_conns.push(
                    crate::lock::connect(route, Some(RESPONSE_TIMEOUT), false)
                        .await
                        .map_err(setup(url))?,
                );
            }
            pools.push(node_conns);
        }
        let store_conn = pools[0][0].clone();
        let sink = events
            .clone()
            .map(|stream| EventSink::spawn(store_conn.clone(), stream));
        let shared = Arc::new(Shared {
            referee: Referee::new(self.keys),
            stats: Stats::default(),
            grants: AtomicU64::new(0),
            prefix: prefix.clone(),
            keys: self.keys,
            pauses: self.pauses,
            colocated: self.colocated && self.mode == BenchMode::Fenced,
            deadline: Instant::now(),
        });
        let mut clients = Vec::with_capacity(self.clients);
        let rslock = match contender {
            Contender::Rslock => {
                let urls = if self.mode == BenchMode::Redlock {
                    routes.clone()
                } else {
                    vec![routes[0].clone()]
                };
                let mut manager = rslock::LockManager::new(urls);
                manager.set_retry(1, Duration::from_millis(1));
                Some(manager)
            }
            Contender::Mode(_) => None,
        };
        for id in 0..self.clients {
            let node_conns = pools[id % connections].clone();
            let store_conn = node_conns[0].clone();
            let holder = format!("bench-{id}");
            let options = LockOptions {
                events: events.clone(),
                ..LockOptions::new(self.ttl, &holder)
            };
            let store = FencedStore::with_connection(store_conn.clone(), &holder, events.clone());
            let lock = match contender {
                Contender::Mode(BenchMode::Legacy) => ClientLock::Legacy(
                    LegacyLock::with_connection(store_conn.clone(), options, sink.clone())
                        .map_err(setup(first))?,
                ),
                Contender::Mode(BenchMode::Fenced) => {
                    let lock = FencedLock::with_connection(store_conn.clone(), options)
                        .map_err(setup(first))?;
                    if id == 0 {
                        colocated::prepare(&lock)
                            .await
                            .map_err(|crate::fence::FenceError::Redis(e)| LockError::Redis(e))
                            .map_err(setup(first))?;
                    }
                    ClientLock::Fenced(lock)
                }
                // The sink appends to the first node's stream, as
                // `Redlock::connect`'s does for a service.
                Contender::Mode(BenchMode::Redlock) => ClientLock::Redlock(
                    match sink.clone() {
                        Some(sink) => Redlock::with_connections_and_first_node_sink(
                            node_conns.clone(),
                            options,
                            sink,
                        ),
                        None => Redlock::with_connections(node_conns.clone(), options, None),
                    }
                    .map_err(setup(first))?,
                ),
                Contender::Mode(BenchMode::Watch) => ClientLock::Watch(
                    WatchSession::connect(&routes[0])
                        .await
                        .map_err(setup(first))?
                        .with_max_attempts(10_000),
                ),
                Contender::Rslock => ClientLock::Rslock(
                    rslock
                        .clone()
                        .expect("rslock manager is built for the rslock contender"),
                    self.ttl,
                ),
            };
            clients.push((id, lock, store));
        }

        let counts_before = Counts::take(&self.nodes, network.proxies).await;
        let started = Instant::now();
        let shared = Arc::new(Shared {
            deadline: started + self.duration,
            ..Arc::try_unwrap(shared).unwrap_or_else(|_| unreachable!("not shared yet"))
        });
        let mut tasks = Vec::with_capacity(clients.len());
        for (id, lock, store) in clients {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                client_loop(id, lock, store, shared).await
            }));
        }
        let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
            .expect("static histogram bounds are valid");
        // Clients stop starting cycles at the deadline; one in a cycle then
        // needs at most its acquire wait, its stall and a few commands. A
        // node that stops answering (killed, or frozen like a paused
        // process) must not keep the benchmark waiting for ever.
        let finish_by = started
            + self.duration
            + CLIENT_ACQUIRE_WAIT
            + self.pauses.map_or(Duration::ZERO, |p| p.pause)
            + FINISH_GRACE;
        let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
        let joined = tokio::time::timeout_at(finish_by.into(), async {
            for task in tasks {
                if let Ok(h) = task.await {
                    let _ = latency.add(h);
                }
            }
        })
        .await;
        if joined.is_err() {
            aborts.iter().for_each(tokio::task::AbortHandle::abort);
            return Err(BenchError::Stalled(format!(
                "the clients were still waiting on Redis {:.0} s after the run should have \
                 ended: a node stopped answering (is it stopped, paused or overloaded?)",
                (finish_by - started - self.duration).as_secs_f64()
            )));
        }
        let elapsed = started.elapsed();
        let counts_after = Counts::take(&self.nodes, network.proxies).await;

        // Lost updates: every accepted write added one to its record. A
        // record that cannot be read back is not a lost update: the run
        // cannot be judged.
        let mut conn = store_conn.clone();
        let mut total: u64 = 0;
        for chunk in (0..self.keys).collect::<Vec<_>>().chunks(512) {
            let mut pipe = redis::pipe();
            for &k in chunk {
                pipe.cmd("HGET").arg(record_key(&prefix, k)).arg("value");
            }
            let values: Vec<Option<String>> = match pipe.query_async(&mut conn).await {
                Ok(values) => values,
                Err(e) => {
                    cleanup(&self.nodes, &prefix).await;
                    return Err(BenchError::node(
                        "lost Redis during the run, so the counts would mean nothing",
                        first,
                        &LockError::Redis(e),
                    ));
                }
            };
            total += values
                .iter()
                .map(|v| {
                    v.as_deref()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                })
                .sum::<u64>();
        }
        cleanup(&self.nodes, &prefix).await;

        let s = &shared.stats;
        let accepted = s.writes_accepted.load(Ordering::Relaxed);
        let cycles = s.cycles.load(Ordering::Relaxed);
        let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
        let mut stale_rejected = s.stale_writes_rejected.load(Ordering::Relaxed);
        if contender == Contender::Mode(BenchMode::Watch) {
            stale_rejected += s.conflicts.load(Ordering::Relaxed);
        }
        Ok(RunReport {
            name: name.to_string(),
            cycles,
            cycles_per_sec: cycles as f64 / elapsed.as_secs_f64(),
            latency_ms: Latency {
                p50: ms(0.5),
                p99: ms(0.99),
                max: latency.max() as f64 / 1000.0,
            },
            double_grants: s.double_grants.load(Ordering::Relaxed),
            stale_writes_accepted: s.stale_writes_accepted.load(Ordering::Relaxed)
                + if contender == Contender::Mode(BenchMode::Watch) {
                    accepted.saturating_sub(total)
                } else {
                    0
                },
            stale_writes_rejected: stale_rejected,
            claims_rejected: s.claims_rejected.load(Ordering::Relaxed),
            lost_updates: accepted.saturating_sub(total),
            writes_accepted: accepted,
            pauses: s.pauses.load(Ordering::Relaxed),
            acquire_failures: s.acquire_failures.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            elapsed_s: elapsed.as_secs_f64(),
            per_cycle: counts_after.per_cycle_since(&counts_before, cycles),
            other_cpu_cores: nodes_on_this_machine(&self.nodes)
                .then(|| counts_after.other_cpu_since(&counts_before))
                .flatten(),
        })
    }
}

/// The median of 20 sequential `PING`s to `url`, in milliseconds; `None`
/// if the node does not answer.
async fn ping_round_trip(url: &str) -> Option<f64> {
    let mut conn = crate::lock::connect(url, Some(RESPONSE_TIMEOUT), false)
        .await
        .ok()?;
    let mut samples = Vec::with_capacity(20);
    for _ in 0..20 {
        let start = Instant::now();
        let _: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    Some(samples[samples.len() / 2])
}

/// Longest one-way node delay: a second each way already makes every cycle
/// take seconds; beyond it only the acquire waits time out.
pub const MAX_NODE_DELAY: Duration = Duration::from_secs(1);

/// How the clients reach the nodes during a run.
struct Network<'a> {
    /// One URL per node: the node's own, or its proxy's.
    routes: Vec<String>,
    /// The proxies, in node order (empty without a node delay).
    proxies: &'a [DelayProxy],
}

/// Whether every node runs on this machine (a loopback address, `localhost`
/// or a Unix socket): only then is their CPU part of this machine's.
fn nodes_on_this_machine(nodes: &[String]) -> bool {
    nodes.iter().all(|url| {
        let Ok(client) = crate::redis_url::parse(url) else {
            return false;
        };
        let host = match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, _) | redis::ConnectionAddr::TcpTls { host, .. } => {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            }
            _ => return true,
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Puts the node at `url` behind a delaying proxy; returns the proxy and
/// the URL that reaches the node through it (same scheme, credentials and
/// database).
fn behind_proxy(url: &str, delay: Duration) -> Result<(DelayProxy, String), BenchError> {
    let client =
        crate::redis_url::parse(url).map_err(|e| BenchError::Invalid(format!("--redis: {e}")))?;
    let (host, port) = match client.get_connection_info().addr() {
        redis::ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure: true,
            ..
        } => (host.clone(), *port),
        redis::ConnectionAddr::TcpTls { .. } => {
            return Err(BenchError::Invalid(format!(
                "{}: behind the delaying proxy a TLS node is reached as 127.0.0.1, which its \
                 certificate does not name; add #insecure to the URL for the benchmark",
                crate::redis_url::shown(url)
            )));
        }
        _ => {
            return Err(BenchError::Invalid(format!(
                "{}: the node delay needs TCP nodes, not a Unix socket",
                crate::redis_url::shown(url)
            )));
        }
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let upstream = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    // A node that cannot be reached is reported as such, not as a
    // connection the proxy accepted and then closed.
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&upstream.as_str())
        .and_then(|mut addrs| {
            addrs
                .next()
                .ok_or_else(|| std::io::Error::other("the host resolves to no address"))
        })
        .and_then(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
    if let Err(e) = reachable {
        return Err(BenchError::Setup {
            url: crate::redis_url::shown(url),
            message: format!(
                "cannot set up the benchmark: cannot reach {}: {e}; is redis-server running \
                 there?",
                crate::redis_url::shown(url)
            ),
        });
    }
    let proxy = DelayProxy::start(&upstream, delay).map_err(|e| BenchError::Setup {
        url: crate::redis_url::shown(url),
        message: format!(
            "cannot put {} behind a delaying proxy: {e}",
            crate::redis_url::shown(url)
        ),
    })?;
    let proxied = replace_host(url, host, &proxy.local_addr().to_string()).ok_or_else(|| {
        BenchError::Invalid(format!(
            "{}: cannot find the host in the URL to route it through the delaying proxy",
            crate::redis_url::shown(url)
        ))
    })?;
    Ok((proxy, proxied))
}

/// `url` with its `host[:port]` (after any credentials) replaced by
/// `address`, or `None` if the authority does not start with `host`.
fn replace_host(url: &str, host: &str, address: &str) -> Option<String> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host_start = authority.rfind('@').map_or(0, |at| at + 1);
    let host_port = &authority[host_start..];
    let bare = host_port.trim_start_matches('[');
    if !bare
        .to_ascii_lowercase()
        .starts_with(&host.to_ascii_lowercase())
    {
        return None;
    }
    Some(format!(
        "{}{}{}",
        &url[..start + host_start],
        address,
        &rest[end..]
    ))
}

/// Command counters of every node and proxy at one instant.
struct Counts {
    /// Calls by command name, summed over the nodes; `None` if a node
    /// refused `INFO commandstats`.
    calls: Option<BTreeMap<String, u64>>,
    /// Traffic through the proxies, summed; `None` without proxies.
    traffic: Option<Traffic>,
    /// CPU seconds of the nodes' servers, summed; `None` if a node refused
    /// `INFO cpu`.
    server_cpu_s: Option<f64>,
    /// CPU seconds of this process.
    client_cpu_s: Option<f64>,
    /// CPU seconds every process on the machine has used (`/proc/stat`);
    /// `None` where there is no `/proc/stat`.
    machine_cpu_s: Option<f64>,
    /// When the counts were taken.
    at: Instant,
}

/// Script-calling commands as `INFO commandstats` names them.
const SCRIPT_COMMANDS: &[&str] = &[
    "eval",
    "evalsha",
    "eval_ro",
    "evalsha_ro",
    "fcall",
    "fcall_ro",
];

impl Counts {
    async fn take(nodes: &[String], proxies: &[DelayProxy]) -> Counts {
        let mut calls = Some(BTreeMap::new());
        let mut server_cpu_s = Some(0.0);
        for url in nodes {
            match node_stats(url).await {
                Some((node, cpu)) => {
                    if let Some(total) = calls.as_mut() {
                        for (name, n) in node {
                            *total.entry(name).or_insert(0) += n;
                        }
                    }
                    server_cpu_s = match (server_cpu_s, cpu) {
                        (Some(sum), Some(cpu)) => Some(sum + cpu),
                        _ => None,
                    };
                }
                None => {
                    calls = None;
                    server_cpu_s = None;
                }
            }
        }
        let traffic = (!proxies.is_empty()).then(|| {
            proxies
                .iter()
                .fold(Traffic::default(), |sum, p| sum.plus(&p.traffic()))
        });
        Counts {
            calls,
            traffic,
            server_cpu_s,
            client_cpu_s: process_cpu_seconds(),
            machine_cpu_s: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|stat| parse_machine_cpu(&stat, clock_ticks_per_second()?)),
            at: Instant::now(),
        }
    }

    /// Cores' worth of CPU that processes other than the nodes and this one
    /// used between `before` and `self`: what else ran during the run.
    fn other_cpu_since(&self, before: &Counts) -> Option<f64> {
        let wall = self.at.checked_duration_since(before.at)?.as_secs_f64();
        let delta = |after: Option<f64>, before: Option<f64>| Some(after? - before?);
        let machine = delta(self.machine_cpu_s, before.machine_cpu_s)?;
        let nodes = delta(self.server_cpu_s, before.server_cpu_s)?;
        let this = delta(self.client_cpu_s, before.client_cpu_s)?;
        (wall > 0.0).then(|| ((machine - nodes - this) / wall).max(0.0))
    }

    fn per_cycle_since(&self, before: &Counts, cycles: u64) -> PerCycle {
        if cycles == 0 {
            return PerCycle::default();
        }
        let per = |n: u64| n as f64 / cycles as f64;
        let mut out = PerCycle::default();
        if let (Some(after), Some(before)) = (&self.calls, &before.calls) {
            let mut commands = 0;
            let mut scripts = 0;
            for (name, &n) in after {
                // The counting itself.
                if name == "info" {
                    continue;
                }
                let delta = n.saturating_sub(before.get(name).copied().unwrap_or(0));
                if delta == 0 {
                    continue;
                }
                commands += delta;
                if SCRIPT_COMMANDS.contains(&name.as_str()) {
                    scripts += delta;
                }
                out.by_command.insert(name.clone(), per(delta));
            }
            out.commands_run = Some(per(commands));
            out.scripts_run = Some(per(scripts));
        }
        if let (Some(after), Some(before)) = (&self.traffic, &before.traffic) {
            let sent = after.since(before);
            out.requests_sent = Some(per(sent.requests));
            out.scripts_sent = Some(per(sent.scripts));
        }
        let micros_per = |after: Option<f64>, before: Option<f64>| match (after, before) {
            (Some(a), Some(b)) if a >= b => Some((a - b) * 1e6 / cycles as f64),
            _ => None,
        };
        out.redis_cpu_us = micros_per(self.server_cpu_s, before.server_cpu_s);
        out.client_cpu_us = micros_per(self.client_cpu_s, before.client_cpu_s);
        out
    }
}

/// `INFO commandstats` and `INFO cpu` of one node, directly (not through a
/// proxy): calls by command name, and the server's CPU seconds (`None` if
/// the section lacks them). `None` if the node cannot be asked.
async fn node_stats(url: &str) -> Option<(BTreeMap<String, u64>, Option<f64>)> {
    let mut conn = crate::lock::connect(url, Some(Duration::from_secs(5)), false)
        .await
        .ok()?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some((parse_commandstats(&info), parse_server_cpu(&info)))
}

/// `used_cpu_sys` + `used_cpu_user` from `INFO cpu` text, in seconds.
fn parse_server_cpu(info: &str) -> Option<f64> {
    let field = |name: &str| {
        info.lines().find_map(|line| {
            line.trim()
                .strip_prefix(name)?
                .strip_prefix(':')?
                .parse::<f64>()
                .ok()
        })
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// Clock ticks per second of `/proc/stat` (`_SC_CLK_TCK`).
fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf reads a configuration value and touches no memory.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

/// CPU seconds the whole machine has spent running something (user, nice,
/// system, interrupts), from the `cpu` line of `/proc/stat`. Time stolen by
/// a hypervisor is not counted: no process on this machine used it.
fn parse_machine_cpu(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq …
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| fields.get(i).copied())
        .sum::<Option<u64>>()?;
    Some(busy as f64 / ticks_per_second)
}

/// CPU seconds (user and system) this process has used so far.
fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given
    // and reads nothing from it; the struct lives on this stack frame.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled the struct.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// Calls by command name from `INFO commandstats` text
/// (`cmdstat_set:calls=12,usec=…`).
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, fields) = line.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// Refuses a `--redis` value that is not a Redis URL, before connecting.
fn check_url(url: &str) -> Result<(), BenchError> {
    crate::redis_url::parse(url)
        .map(drop)
        .map_err(|e| BenchError::Invalid(format!("--redis: {e}")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    Mode(BenchMode),
    Rslock,
}

enum ClientLock {
    Legacy(LegacyLock),
    Fenced(FencedLock),
    Redlock(Redlock),
    Watch(WatchSession),
    Rslock(rslock::LockManager, Duration),
}

fn lock_key(prefix: &str, k: usize) -> String {
    format!("{prefix}:lock:{k}")
}

fn record_key(prefix: &str, k: usize) -> String {
    format!("{prefix}:order:{k}")
}

#[derive(Default)]
struct Stats {
    cycles: AtomicU64,
    double_grants: AtomicU64,
    stale_writes_accepted: AtomicU64,
    stale_writes_rejected: AtomicU64,
    claims_rejected: AtomicU64,
    writes_accepted: AtomicU64,
    pauses: AtomicU64,
    acquire_failures: AtomicU64,
    errors: AtomicU64,
    conflicts: AtomicU64,
}

impl Stats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Shared {
    referee: Referee,
    stats: Stats,
    grants: AtomicU64,
    prefix: String,
    keys: usize,
    pauses: Option<PauseSchedule>,
    colocated: bool,
    deadline: Instant,
}

impl Shared {
    /// Counts a grant; the stall to inject if it is the Nth.
    fn next_pause(&self) -> Option<Duration> {
        let schedule = self.pauses?;
        let n = self.grants.fetch_add(1, Ordering::Relaxed) + 1;
        if !n.is_multiple_of(schedule.every) {
            return None;
        }
        Stats::bump(&self.stats.pauses);
        Some(schedule.pause)
    }

    /// Stalls if this grant is the Nth; returns how long it stalled.
    async fn maybe_pause(&self) -> Duration {
        match self.next_pause() {
            Some(pause) => {
                let start = Instant::now();
                tokio::time::sleep(pause).await;
                start.elapsed()
            }
            None => Duration::ZERO,
        }
    }
}

/// Ground truth about who holds what, kept in this process.
struct Referee {
    keys: Mutex<Vec<KeyTruth>>,
}

#[derive(Default, Clone)]
struct KeyTruth {
    /// Bumped each time a new holder takes the key over.
    generation: u64,
    holders: Vec<(usize, Option<Instant>)>,
}

impl Referee {
    fn new(keys: usize) -> Self {
        Self {
            keys: Mutex::new(vec![KeyTruth::default(); keys]),
        }
    }

    fn with<T>(&self, k: usize, f: impl FnOnce(&mut KeyTruth) -> T) -> T {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut keys[k])
    }

    /// Records a grant; returns whether another holder still held the key.
    fn granted(&self, k: usize, client: usize, valid_until: Option<Instant>, at: Instant) -> bool {
        self.with(k, |t| {
            let overlap = t
                .holders
                .iter()
                .any(|&(other, until)| other != client && until.is_none_or(|u| u > at));
            t.holders.push((client, valid_until));
            overlap
        })
    }

    /// Records that a new holder has taken the key over (granted, or for a
    /// general store, claimed the record); returns its generation.
    fn takeover(&self, k: usize) -> u64 {
        self.with(k, |t| {
            t.generation += 1;
            t.generation
        })
    }

    fn superseded(&self, k: usize, generation: u64) -> bool {
        self.with(k, |t| t.generation > generation)
    }

    fn released(&self, k: usize, client: usize) {
        self.with(k, |t| t.holders.retain(|&(c, _)| c != client));
    }
}

fn counter_value(value: Option<&str>) -> u64 {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn client_loop(
    id: usize,
    mut lock: ClientLock,
    store: FencedStore,
    shared: Arc<Shared>,
) -> Histogram<u64> {
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .expect("static histogram bounds are valid");
    let wait = CLIENT_ACQUIRE_WAIT;
    let stats = &shared.stats;
    while Instant::now() < shared.deadline {
        let k = rand::random_range(0..shared.keys);
        let key = lock_key(&shared.prefix, k);
        let record = record_key(&shared.prefix, k);
        let start = Instant::now();
        let paused = match &mut lock {
            ClientLock::Fenced(l) if shared.colocated => {
                match colocated::acquire_and_read(l, &key, &record, wait).await {
                    Ok((lease, current)) => {
                        Some(colocated_cycle(id, k, &record, lease, current, &shared).await)
                    }
                    Err(_) => None,
                }
            }
            ClientLock::Fenced(l) => match l.acquire(&key, wait).await {
                Ok(lease) => {
                    let until = lease.valid_until();
                    let paused =
                        fenced_cycle(id, k, &record, lease.token(), until, &store, &shared).await;
                    let _ = lease.release().await;
                    Some(paused)
                }
                Err(_) => None,
            },
            ClientLock::Redlock(l) => match l.acquire(&key, wait).await {
                Ok(lease) => {
                    let until = lease.valid_until();
                    let paused =
                        fenced_cycle(id, k, &record, lease.token(), until, &store, &shared).await;
                    let _ = lease.release().await;
                    Some(paused)
                }
                Err(_) => None,
            },
            ClientLock::Legacy(l) => match l.acquire(&key, wait).await {
                Ok(lease) => {
                    let paused = unfenced_cycle(id, k, &record, None, &store, &shared).await;
                    if l.release(lease).await.is_err() {
                        Stats::bump(&stats.errors);
                    }
                    Some(paused)
                }
                Err(_) => None,
            },
            ClientLock::Rslock(manager, ttl) => {
                match rslock_acquire(manager, key.as_bytes(), *ttl, wait).await {
                    Some(held) => {
                        let until = start + Duration::from_millis(held.validity_time as u64);
                        let paused =
                            unfenced_cycle(id, k, &record, Some(until), &store, &shared).await;
                        manager.unlock(&held).await;
                        Some(paused)
                    }
                    None => None,
                }
            }
            ClientLock::Watch(session) => {
                // The stall goes between the read and EXEC, on the first attempt.
                let pause = shared.next_pause();
                let pending = Arc::new(std::sync::atomic::AtomicBool::new(pause.is_some()));
                let in_update = pending.clone();
                let stall_start = Instant::now();
                let outcome = session
                    .update(&record, async move |current: Option<String>| {
                        if let Some(pause) = pause
                            && in_update.swap(false, Ordering::Relaxed)
                        {
                            tokio::time::sleep(pause).await;
                        }
                        Some((counter_value(current.as_deref()) + 1).to_string())
                    })
                    .await;
                let paused = match pause {
                    Some(p) => p.min(stall_start.elapsed()),
                    None => Duration::ZERO,
                };
                match outcome {
                    Ok(o) => {
                        if o.written {
                            Stats::bump(&stats.writes_accepted);
                        }
                        stats
                            .conflicts
                            .fetch_add(u64::from(o.attempts - 1), Ordering::Relaxed);
                        Some(paused)
                    }
                    Err(_) => {
                        Stats::bump(&stats.errors);
                        None
                    }
                }
            }
        };
        match paused {
            Some(paused) => {
                Stats::bump(&stats.cycles);
                let micros = start.elapsed().saturating_sub(paused).as_micros() as u64;
                let _ = latency.record(micros.max(1));
            }
            None => Stats::bump(&stats.acquire_failures),
        }
    }
    latency
}

/// Claim (fenced read), maybe stall, fenced write. Returns the stall.
async fn fenced_cycle(
    id: usize,
    k: usize,
    record: &str,
    token: crate::lock::FencingToken,
    valid_until: Instant,
    store: &FencedStore,
    shared: &Shared,
) -> Duration {
    let stats = &shared.stats;
    let referee = &shared.referee;
    if referee.granted(k, id, Some(valid_until), Instant::now()) {
        Stats::bump(&stats.double_grants);
    }
    let mut paused = Duration::ZERO;
    match store.read_for_update(record, token).await {
        Ok(Claim::Claimed { value, .. }) => {
            let generation = referee.takeover(k);
            paused = shared.maybe_pause().await;
            let stale = referee.superseded(k, generation);
            let next = (counter_value(value.as_deref()) + 1).to_string();
            match store.write(record, token, &next).await {
                Ok(WriteOutcome::Accepted { .. }) => {
                    Stats::bump(&stats.writes_accepted);
                    if stale {
                        Stats::bump(&stats.stale_writes_accepted);
                    }
                }
                // Refused: a newer holder has claimed the record, whether or
                // not the referee had seen it yet when the write was sent.
                Ok(WriteOutcome::Rejected { .. }) => Stats::bump(&stats.stale_writes_rejected),
                Err(_) => Stats::bump(&stats.errors),
            }
        }
        Ok(Claim::Rejected { .. }) => Stats::bump(&stats.claims_rejected),
        Err(_) => Stats::bump(&stats.errors),
    }
    referee.released(k, id);
    paused
}

/// Colocated: the record was read in the grant's script; maybe stall, then
/// write-and-release (refused if a newer lease was granted meanwhile).
async fn colocated_cycle(
    id: usize,
    k: usize,
    record: &str,
    lease: crate::lock::Lease,
    current: crate::fence::Record,
    shared: &Shared,
) -> Duration {
    let stats = &shared.stats;
    let referee = &shared.referee;
    if referee.granted(k, id, Some(lease.valid_until()), Instant::now()) {
        Stats::bump(&stats.double_grants);
    }
    let generation = referee.takeover(k);
    let paused = shared.maybe_pause().await;
    let stale = referee.superseded(k, generation);
    let next = (counter_value(current.value.as_deref()) + 1).to_string();
    referee.released(k, id);
    match colocated::write_and_release(lease, record, &next).await {
        Ok((WriteOutcome::Accepted { .. }, _)) => {
            Stats::bump(&stats.writes_accepted);
            if stale {
                Stats::bump(&stats.stale_writes_accepted);
            }
        }
        Ok((WriteOutcome::Rejected { .. }, _)) => Stats::bump(&stats.stale_writes_rejected),
        Err(_) => Stats::bump(&stats.errors),
    }
    paused
}

/// Plain read, maybe stall, unfenced write (PM-003's write path).
async fn unfenced_cycle(
    id: usize,
    k: usize,
    record: &str,
    valid_until: Option<Instant>,
    store: &FencedStore,
    shared: &Shared,
) -> Duration {
    let stats = &shared.stats;
    let referee = &shared.referee;
    if referee.granted(k, id, valid_until, Instant::now()) {
        Stats::bump(&stats.double_grants);
    }
    let generation = referee.takeover(k);
    let mut paused = Duration::ZERO;
    match store.read(record).await {
        Ok(current) => {
            paused = shared.maybe_pause().await;
            let stale = referee.superseded(k, generation);
            let next = (counter_value(current.value.as_deref()) + 1).to_string();
            match store.write_unfenced(record, &next).await {
                Ok(()) => {
                    Stats::bump(&stats.writes_accepted);
                    if stale {
                        Stats::bump(&stats.stale_writes_accepted);
                    }
                }
                Err(_) => Stats::bump(&stats.errors),
            }
        }
        Err(_) => Stats::bump(&stats.errors),
    }
    referee.released(k, id);
    paused
}

/// `rslock` with the same jittered backoff as warroom's clients.
async fn rslock_acquire(
    manager: &rslock::LockManager,
    key: &[u8],
    ttl: Duration,
    wait: Duration,
) -> Option<rslock::Lock> {
    let deadline = Instant::now() + wait;
    let backoff = Backoff::default();
    let mut attempt = 0;
    loop {
        if let Ok(lock) = manager.lock(key, ttl).await {
            return Some(lock);
        }
        attempt += 1;
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        tokio::time::sleep(backoff.delay(attempt).min(deadline - now)).await;
    }
}

/// Deletes the run's keys (locks, fence counters, records) on every node.
async fn cleanup(nodes: &[String], prefix: &str) {
    for url in nodes {
        let Ok(mut conn) = crate::lock::connect(url, Some(Duration::from_secs(5)), false).await
        else {
            continue;
        };
        let mut cursor: u64 = 0;
        loop {
            let reply: Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}:*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await;
            let Ok((next, keys)) = reply else { break };
            if !keys.is_empty() {
                let _: Result<i64, _> = conn.unlink(&keys).await;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_replaces_only_host_and_port() {
        let cases = [
            (
                "redis://127.0.0.1:6379",
                "127.0.0.1",
                "redis://127.0.0.1:40001",
            ),
            (
                "redis://:pa%40ss@h1.example:6380/2",
                "h1.example",
                "redis://:pa%40ss@127.0.0.1:40001/2",
            ),
            (
                "rediss://user:p@ss@db-2:6390/#insecure",
                "db-2",
                "rediss://user:p@ss@127.0.0.1:40001/#insecure",
            ),
            ("redis://H3", "h3", "redis://127.0.0.1:40001"),
            ("redis://[::1]:7000", "::1", "redis://127.0.0.1:40001"),
        ];
        for (url, host, expected) in cases {
            assert_eq!(
                replace_host(url, host, "127.0.0.1:40001").as_deref(),
                Some(expected),
                "{url}"
            );
        }
        assert_eq!(replace_host("redis://a:1", "b", "127.0.0.1:1"), None);
    }

    #[test]
    fn info_cpu_gives_system_plus_user_seconds() {
        let info = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:0.750000\r\n\
            used_cpu_sys_children:9.000000\r\n";
        assert_eq!(parse_server_cpu(info), Some(2.0));
        assert_eq!(parse_server_cpu("used_cpu_sys:1.0\r\n"), None);
    }

    #[test]
    fn commandstats_lines_give_calls_by_name() {
        let info = "# Commandstats\r\n\
            cmdstat_set:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_client|setinfo:calls=2,usec=1,usec_per_call=0.50,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_evalsha:calls=7,usec=70,usec_per_call=10.00,rejected_calls=1,failed_calls=0\r\n\
            garbage\r\n";
        let calls = parse_commandstats(info);
        assert_eq!(calls.get("set"), Some(&12));
        assert_eq!(calls.get("client|setinfo"), Some(&2));
        assert_eq!(calls.get("evalsha"), Some(&7));
        assert_eq!(calls.len(), 3);
    }

    #[test]
    fn only_loopback_and_socket_nodes_count_as_this_machine() {
        let nodes = |urls: &[&str]| urls.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert!(nodes_on_this_machine(&nodes(&[
            "redis://127.0.0.1:6379",
            "redis://:pw@localhost:7000/2",
            "redis://[::1]:6380",
            "redis+unix:///tmp/redis.sock",
        ])));
        assert!(!nodes_on_this_machine(&nodes(&[
            "redis://127.0.0.1:6379",
            "redis://10.0.0.7:6379",
        ])));
        assert!(!nodes_on_this_machine(&nodes(&[
            "redis://cache.internal:6379"
        ])));
        assert!(!nodes_on_this_machine(&nodes(&["not a url"])));
    }

    #[test]
    fn proc_stat_gives_busy_seconds_without_idle_or_stolen_time() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let stat = "cpu  100 20 30 5000 70 4 6 900 0 0\ncpu0 50 10 15 2500 35 2 3 450 0 0\n";
        assert_eq!(parse_machine_cpu(stat, 100.0), Some(1.6));
        assert_eq!(parse_machine_cpu("cpu0 1 2 3\n", 100.0), None);
        assert_eq!(parse_machine_cpu("cpu  1 2 x 4 5 6 7\n", 100.0), None);
        assert_eq!(parse_machine_cpu("cpu  1 2 3\n", 100.0), None);
    }

    #[test]
    fn other_cpu_is_the_machine_minus_the_nodes_and_this_process() {
        let at = Instant::now();
        let counts = |machine: f64, nodes: f64, this: f64, after: Duration| Counts {
            calls: None,
            traffic: None,
            server_cpu_s: Some(nodes),
            client_cpu_s: Some(this),
            machine_cpu_s: Some(machine),
            at: at + after,
        };
        let before = counts(100.0, 10.0, 5.0, Duration::ZERO);
        let after = counts(118.0, 16.0, 9.0, Duration::from_secs(10));
        let other = after.other_cpu_since(&before).unwrap();
        assert!((other - 0.8).abs() < 1e-9, "{other}");
        // Clock ticks round: never below zero.
        let after = counts(109.0, 16.0, 9.0, Duration::from_secs(10));
        assert_eq!(after.other_cpu_since(&before), Some(0.0));
        let unknown = Counts {
            machine_cpu_s: None,
            ..counts(0.0, 16.0, 9.0, Duration::from_secs(10))
        };
        assert_eq!(unknown.other_cpu_since(&before), None);
    }

    #[test]
    fn per_cycle_counts_are_deltas_divided_by_cycles() {
        let counts = |set: u64, evalsha: u64, info: u64, requests: u64| Counts {
            calls: Some(BTreeMap::from([
                ("set".to_string(), set),
                ("evalsha".to_string(), evalsha),
                ("info".to_string(), info),
            ])),
            traffic: Some(Traffic {
                requests,
                scripts: evalsha,
                ..Traffic::default()
            }),
            server_cpu_s: Some(set as f64 / 1e6),
            client_cpu_s: None,
            machine_cpu_s: None,
            at: Instant::now(),
        };
        let before = counts(10, 4, 1, 14);
        let after = counts(30, 14, 2, 44);
        let per = after.per_cycle_since(&before, 10);
        assert_eq!(per.commands_run, Some(3.0));
        assert_eq!(per.scripts_run, Some(1.0));
        assert_eq!(per.requests_sent, Some(3.0));
        assert_eq!(per.scripts_sent, Some(1.0));
        assert!(!per.by_command.contains_key("info"));
        assert_eq!(per.by_command.get("set"), Some(&2.0));
        assert_eq!(per.redis_cpu_us, Some(2.0));
        assert_eq!(per.client_cpu_us, None);
        assert!(after.per_cycle_since(&before, 0).commands_run.is_none());
    }
}
