//! One `order-service` replica: the body of `warroom drill worker`.
//!
//! A worker consumes orders from the orders stream in the `order-service`
//! consumer group and runs PM-003's pipeline ([`super::orders`]) on each,
//! under the order's lock in the lock mode the drill currently asks for
//! (read live from Redis, see [`super::lock_mode`]; the worker switches
//! between orders and logs the switch). It logs PM-003's lines
//! (`LOCK ACQUIRED order_id=ord-9927431 worker=pod-7f token=…`) to stdout.
//!
//! **Redelivery, as at-least-once delivery does.** An entry a worker has
//! read stays pending under it until acknowledged. Every worker also takes
//! over (`XAUTOCLAIM`) entries that have stayed pending longer than the claim
//! idle time (150 ms by default, under the 200 ms lock TTL): the entries of
//! a worker that is frozen. A taken-over order waits for its lock at most
//! one TTL: a frozen holder's lease has expired by then, and a lock still
//! held belongs to a live (only slow) holder, to which the entry is left. A worker frozen (SIGSTOP: a GC pause) while
//! it holds an order's lock loses the lock when the TTL passes; another
//! worker has meanwhile claimed the entry, waits for the lock, gets it and
//! processes the order. When the frozen worker wakes, it still believes it
//! holds the lock and carries on from what it read before the pause. Under
//! the legacy lock both write (PM-003); fenced, the stale writes are refused.
//! Follow-up entries for the same order (the gateway's hot orders) give the
//! same overlap without redelivery.
//!
//! The worker depends on the lock client, the order store and Redis only:
//! nothing of Kubernetes, HTTP or the console. The Redis URL comes from the
//! environment (never the command line: `/proc/*/cmdline` is world-readable),
//! and so does the PostgreSQL URL when the orders live in PM-003's tables
//! ([`PgOrderStore`]; the lock, the orders stream and the counters stay in
//! Redis). PostgreSQL going away mid-drill fails each order's write with an
//! error line (the unit of work it was in is rolled back whole); the entry
//! stays pending and is retried.
//!
//! On SIGTERM it stops taking orders, finishes those in progress (releasing
//! their locks) and exits 0.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

use super::orders::{
    Claimed, Guard, Optimistic, OrderStatus, OrderStore, RedisOrderStore, StoreError, Writer, keys,
    now_us,
};
use super::pg_orders::PgOrderStore;
use super::stats;
use crate::lock::legacy::LegacyLock;
use crate::lock::{
    EventSink, EventStream, FencedLock, LockError, LockEvent, LockMode, LockOptions, Redlock,
    Release,
};
use crate::redact::redact_text;

/// The service name on application error events (a bounded label).
pub const SERVICE: &str = "order-service";
/// The operation named on application error events.
pub const OPERATION: &str = "POST /v2/orders/fulfill";

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Redis holding the orders, the lock keys and the events.
    pub redis_url: String,
    /// The pod name (`order-service-5d8f7c-x7k2q`): the consumer name.
    pub pod: String,
    /// The three Redlock nodes (empty: redlock mode is unavailable).
    pub redlock_urls: Vec<String>,
    /// Orders processed at the same time.
    pub concurrency: usize,
    /// Lock TTL (PM-003: 200 ms).
    pub lock_ttl: Duration,
    /// How long an entry stays pending before another worker takes it over.
    pub claim_idle: Duration,
    /// Time each service call of the pipeline takes (three per order).
    pub work: Duration,
    /// How long to wait for an order's lock before reporting an error.
    pub lock_wait: Duration,
    /// PostgreSQL holding PM-003's tables: orders, reservations,
    /// fulfillment records and the audit log go there (the lock, the orders
    /// stream and the counters stay in Redis). `None`: all in Redis.
    pub database_url: Option<String>,
}

impl WorkerConfig {
    /// The defaults of the drill for a worker of `pod` on `redis_url`.
    pub fn new(redis_url: impl Into<String>, pod: impl Into<String>) -> Self {
        Self {
            redis_url: redis_url.into(),
            pod: pod.into(),
            redlock_urls: Vec::new(),
            concurrency: 8,
            lock_ttl: Duration::from_millis(200),
            claim_idle: Duration::from_millis(150),
            work: Duration::from_millis(3),
            lock_wait: Duration::from_secs(2),
            database_url: None,
        }
    }
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis could not be reached or refused the setup.
    #[error("cannot reach Redis: {0}")]
    Unreachable(String),
    /// PostgreSQL could not be reached, or its schema is not current.
    #[error("{0}")]
    Database(String),
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
}

/// The short worker name used in log lines and lock events: `pod-7f` for
/// `pod-7f`, `pod-x7k2q` for `order-service-5d8f7c-x7k2q`.
pub fn short_name(pod: &str) -> String {
    if pod.starts_with("pod-") {
        return pod.to_string();
    }
    let last = pod.rsplit('-').next().unwrap_or(pod);
    format!("pod-{last}")
}

/// What happened to one stream entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The pipeline ran to `FULFILLED`.
    Fulfilled,
    /// The order was already fulfilled.
    Skipped,
    /// A newer holder has the order: the entry is left to it.
    Fenced,
    /// An error; the entry stays pending and is redelivered.
    Failed,
    /// A redelivered entry whose order's lock stayed held: its holder is
    /// alive (only slow), so the entry is left pending to it.
    Busy,
}

/// The mode as a byte, for the live switch.
fn mode_code(mode: LockMode) -> u8 {
    match mode {
        LockMode::Legacy => 0,
        LockMode::Fenced => 1,
        LockMode::Redlock => 2,
        LockMode::Watch => 3,
        LockMode::App => 0,
    }
}

fn mode_of(code: u8) -> LockMode {
    match code {
        1 => LockMode::Fenced,
        2 => LockMode::Redlock,
        3 => LockMode::Watch,
        _ => LockMode::Legacy,
    }
}

/// Parses a `LOCK_MODE` value (`legacy`, `fenced`, `redlock`, `watch`).
pub fn parse_mode(text: &str) -> Option<LockMode> {
    match text.trim().to_ascii_lowercase().as_str() {
        "legacy" => Some(LockMode::Legacy),
        "fenced" => Some(LockMode::Fenced),
        "redlock" => Some(LockMode::Redlock),
        "watch" => Some(LockMode::Watch),
        _ => None,
    }
}

struct Shared<S> {
    config: WorkerConfig,
    name: String,
    conn: ConnectionManager,
    store: S,
    legacy: LegacyLock,
    fenced: FencedLock,
    redlock: OnceCell<Option<Redlock>>,
    sink: EventSink,
    mode: AtomicU8,
    last_mode: Mutex<Option<LockMode>>,
    modes_used: Mutex<HashSet<u8>>,
    in_flight: Mutex<HashSet<String>>,
    /// Whether the worker publishes the `rejected` lock events itself (the
    /// PostgreSQL store; the Redis store's scripts write them).
    publish_rejections: bool,
}

/// Prints one log line (stdout goes to the pod's log file), redacted.
fn log(line: impl AsRef<str>) {
    println!("[order-svc] {}", redact_text(line.as_ref()));
}

impl<S: OrderStore> Shared<S> {
    fn error(&self, what: &str, order: &str, reason: impl std::fmt::Display) {
        let reason = redact_text(&reason.to_string()).into_owned();
        log(format!(
            "ERROR {what} order_id={order} worker={} error={reason}",
            self.name
        ));
        self.sink.publish(LockEvent::app_error(
            OPERATION,
            SERVICE,
            format!("{what}: {reason}"),
        ));
    }

    /// Records the first use of a mode by this worker (for the drill's
    /// `lock_modes`).
    fn note_mode(&self, mode: LockMode) {
        let mut used = self.modes_used.lock().unwrap_or_else(|e| e.into_inner());
        if used.insert(mode_code(mode)) {
            let mut conn = self.conn.clone();
            let mode = mode.as_str();
            tokio::spawn(async move {
                let _: Result<(), _> = redis::cmd("HSETNX")
                    .arg(stats::MODES)
                    .arg(mode)
                    .arg(now_us())
                    .query_async(&mut conn)
                    .await;
            });
        }
    }

    /// Applies the mode read from Redis; logs a switch.
    fn set_mode(&self, mode: LockMode) {
        let mut last = self.last_mode.lock().unwrap_or_else(|e| e.into_inner());
        if *last != Some(mode) {
            match *last {
                Some(previous) => log(format!(
                    "LOCK MODE {} -> {} worker={}",
                    previous.as_str(),
                    mode.as_str(),
                    self.name
                )),
                None => log(format!("LOCK MODE {} worker={}", mode.as_str(), self.name)),
            }
            *last = Some(mode);
            self.mode.store(mode_code(mode), Ordering::Release);
        }
    }

    async fn redlock(&self) -> Option<&Redlock> {
        self.redlock
            .get_or_init(|| async {
                if self.config.redlock_urls.len() < 3 {
                    self.error(
                        "redlock unavailable",
                        "-",
                        "LOCK_MODE is redlock but WARROOM_REDLOCK_URLS does not name three nodes",
                    );
                    return None;
                }
                let options = LockOptions::new(self.config.lock_ttl, &self.name);
                match Redlock::connect(&self.config.redlock_urls, options).await {
                    Ok(lock) => Some(lock),
                    Err(e) => {
                        self.error("redlock unavailable", "-", e);
                        None
                    }
                }
            })
            .await
            .as_ref()
    }
}

/// Runs a worker until `shutdown` completes, then finishes the orders in
/// progress and returns. Prints `worker ready` once connected.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    if config.concurrency == 0 {
        return Err(WorkerError::Config("concurrency must be at least 1".into()));
    }
    let name = short_name(&config.pod);
    let unreachable = |e: &dyn std::fmt::Display| {
        WorkerError::Unreachable(redact_text(&e.to_string()).into_owned())
    };
    let conn = crate::lock::connect(&config.redis_url, Some(Duration::from_secs(5)), false)
        .await
        .map_err(|e| unreachable(&e))?;
    // XREADGROUP blocks its connection: it gets its own.
    let reader = crate::lock::connect(&config.redis_url, Some(Duration::from_secs(5)), false)
        .await
        .map_err(|e| unreachable(&e))?;
    // The orders stream and its consumer group are in Redis in any case.
    let redis_store = RedisOrderStore::new(conn.clone(), &config.redis_url);
    redis_store.prepare().await.map_err(|e| unreachable(&e))?;
    match config.database_url.clone() {
        None => serve(config, name, conn, reader, redis_store, false, shutdown).await,
        Some(url) => {
            let store = postgres_store(&url).await?;
            serve(config, name, conn, reader, store, true, shutdown).await
        }
    }
}

/// The PostgreSQL order store on `url`, its schema checked (the drill
/// applies it; a worker never changes it).
async fn postgres_store(url: &str) -> Result<PgOrderStore, WorkerError> {
    let client = super::pg_reconcile::connect(url)
        .await
        .map_err(|e| WorkerError::Database(e.to_string()))?;
    super::pg_reconcile::check_schema(&client)
        .await
        .map_err(|e| WorkerError::Database(e.to_string()))?;
    drop(client);
    let store = PgOrderStore::connect(url)
        .await
        .map_err(|e| WorkerError::Database(e.to_string()))?;
    store
        .seed_lots()
        .await
        .map_err(|e| WorkerError::Database(e.to_string()))?;
    Ok(store)
}

/// Takes orders until `shutdown`, with `store`.
async fn serve<S: OrderStore>(
    config: WorkerConfig,
    name: String,
    conn: ConnectionManager,
    mut reader: ConnectionManager,
    store: S,
    publish_rejections: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let unreachable = |e: &dyn std::fmt::Display| {
        WorkerError::Unreachable(redact_text(&e.to_string()).into_owned())
    };
    let options = LockOptions::new(config.lock_ttl, &name);
    let sink = EventSink::spawn(conn.clone(), EventStream::default());
    let legacy = LegacyLock::with_connection(conn.clone(), options.clone(), Some(sink.clone()))
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    let fenced = FencedLock::with_connection(conn.clone(), options)
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    crate::lock::fence::colocated::prepare(&fenced)
        .await
        .map_err(|e| unreachable(&e))?;
    let shared = Arc::new(Shared {
        name: name.clone(),
        conn: conn.clone(),
        store,
        legacy,
        fenced,
        redlock: OnceCell::new(),
        sink,
        mode: AtomicU8::new(0),
        last_mode: Mutex::new(None),
        modes_used: Mutex::new(HashSet::new()),
        in_flight: Mutex::new(HashSet::new()),
        publish_rejections,
        config,
    });
    refresh_mode(&shared).await;
    let mode_task = tokio::spawn(follow_mode(shared.clone()));
    println!("worker ready");
    log(format!(
        "worker={name} ready concurrency={} lock_ttl_ms={}",
        shared.config.concurrency,
        shared.config.lock_ttl.as_millis()
    ));

    let semaphore = Arc::new(Semaphore::new(shared.config.concurrency));
    let mut tasks = JoinSet::new();
    let claim_every = (shared.config.claim_idle / 3).max(Duration::from_millis(10));
    let mut last_claim = Instant::now();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let first = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            permit = semaphore.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let free = semaphore.available_permits() + 1;
        let mut entries = Vec::new();
        let mut redelivered = false;
        if last_claim.elapsed() >= claim_every {
            last_claim = Instant::now();
            match claim_stale(&shared, &mut reader, free).await {
                Ok(claimed) => {
                    redelivered = !claimed.is_empty();
                    entries = claimed;
                }
                Err(e) => {
                    shared.error("claim failed", "-", e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if entries.is_empty() {
            let options = StreamReadOptions::default()
                .group(keys::CONSUMER_GROUP, &shared.config.pod)
                .count(free)
                .block(50);
            let read = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                read = redis::AsyncCommands::xread_options(
                    &mut reader, &[keys::ORDERS_STREAM], &[">"], &options) => read,
            };
            let read: Result<Option<StreamReadReply>, _> = read;
            match read {
                Ok(Some(reply)) => {
                    entries = reply.keys.into_iter().flat_map(|k| k.ids).collect();
                }
                Ok(None) => {}
                Err(e) => {
                    shared.error("read failed", "-", e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        let mut permit = Some(first);
        for entry in entries {
            let permit = match permit.take() {
                Some(p) => p,
                None => match semaphore.clone().try_acquire_owned() {
                    Ok(p) => p,
                    // Cannot happen (only this loop takes permits); the
                    // entry stays pending and is claimed again.
                    Err(_) => break,
                },
            };
            {
                let mut in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if !in_flight.insert(entry.id.clone()) {
                    // This worker is already on it (its idle time passed
                    // while it waited for the lock).
                    continue;
                }
            }
            let shared = shared.clone();
            tasks.spawn(async move {
                handle_entry(&shared, &entry, redelivered).await;
                shared
                    .in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&entry.id);
                drop(permit);
            });
        }
    }
    log(format!(
        "worker={name} stopping: finishing {} order(s) in progress",
        tasks.len()
    ));
    while tasks.join_next().await.is_some() {}
    mode_task.abort();
    shared.sink.flush(Duration::from_secs(1)).await;
    log(format!("worker={name} stopped"));
    Ok(())
}

/// Takes over entries pending longer than the claim idle time.
async fn claim_stale<S: OrderStore>(
    shared: &Shared<S>,
    conn: &mut ConnectionManager,
    count: usize,
) -> Result<Vec<StreamId>, redis::RedisError> {
    let reply: redis::streams::StreamAutoClaimReply = redis::AsyncCommands::xautoclaim_options(
        conn,
        keys::ORDERS_STREAM,
        keys::CONSUMER_GROUP,
        &shared.config.pod,
        shared.config.claim_idle.as_millis() as u64,
        "0-0",
        StreamAutoClaimOptions::default().count(count),
    )
    .await?;
    let in_flight = shared.in_flight.lock().unwrap_or_else(|e| e.into_inner());
    Ok(reply
        .claimed
        .into_iter()
        .filter(|e| !in_flight.contains(&e.id))
        .inspect(|e| {
            log(format!(
                "REDELIVERED entry={} order_id={} worker={}",
                e.id,
                e.get::<String>("order").unwrap_or_default(),
                shared.name
            ));
        })
        .collect())
}

/// Reads the lock mode key once.
async fn refresh_mode<S: OrderStore>(shared: &Shared<S>) {
    let mut conn = shared.conn.clone();
    let value: Result<Option<String>, _> =
        redis::AsyncCommands::get(&mut conn, keys::LOCK_MODE).await;
    match value {
        Ok(Some(text)) => match parse_mode(&text) {
            Some(mode) => shared.set_mode(mode),
            None => {
                let previous = mode_of(shared.mode.load(Ordering::Acquire));
                let text: String = text.chars().take(40).collect();
                shared.error(
                    "unknown lock mode",
                    "-",
                    format!(
                        "LOCK_MODE {text:?} is not legacy, fenced, redlock or watch; keeping {}",
                        previous.as_str()
                    ),
                );
            }
        },
        Ok(None) => {
            if shared
                .last_mode
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
            {
                shared.set_mode(LockMode::Legacy);
            }
        }
        Err(e) => shared.error("lock mode read failed", "-", e),
    }
}

/// Keeps the mode equal to the lock mode key (polled every 100 ms).
async fn follow_mode<S: OrderStore>(shared: Arc<Shared<S>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        refresh_mode(&shared).await;
    }
}

async fn handle_entry<S: OrderStore>(shared: &Shared<S>, entry: &StreamId, redelivered: bool) {
    let Some(order) = entry.get::<String>("order") else {
        // Not an order: acknowledge it so it is not redelivered forever.
        shared.error(
            "malformed entry",
            "-",
            format!("entry {} has no order", entry.id),
        );
        ack(shared, &entry.id, None, Outcome::Failed).await;
        return;
    };
    let offered_us = entry.get::<u64>("offered_us");
    let mode = mode_of(shared.mode.load(Ordering::Acquire));
    shared.note_mode(mode);
    let outcome = match mode {
        LockMode::Watch => process_watch(shared, &order).await,
        LockMode::Redlock => match shared.redlock().await {
            Some(lock) => {
                process_locked(shared, &order, LockMode::Redlock, Some(lock), redelivered).await
            }
            None => process_locked(shared, &order, LockMode::Fenced, None, redelivered).await,
        },
        other => process_locked(shared, &order, other, None, redelivered).await,
    };
    match outcome {
        Outcome::Fulfilled | Outcome::Skipped => {
            ack(shared, &entry.id, offered_us, outcome).await;
        }
        Outcome::Fenced => {
            let mut conn = shared.conn.clone();
            let _: Result<u64, _> =
                redis::AsyncCommands::incr(&mut conn, stats::FENCE_REJECTIONS, 1).await;
        }
        Outcome::Failed => {
            let mut conn = shared.conn.clone();
            let _: Result<u64, _> = redis::AsyncCommands::incr(&mut conn, stats::ERRORS, 1).await;
        }
        Outcome::Busy => {}
    }
}

/// Acknowledges an entry and, only if this acknowledgement removed it from
/// the pending list (an entry handled twice is counted once), counts it.
/// KEYS: stream, processed, outcome counter, latency hash. ARGV: group, id,
/// latency bucket ('' when unknown).
static ACK: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCR', KEYS[2])
  redis.call('INCR', KEYS[3])
  if ARGV[3] ~= '' then
    redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
  end
  return 1
end
return 0
",
    )
});

async fn ack<S: OrderStore>(
    shared: &Shared<S>,
    id: &str,
    offered_us: Option<u64>,
    outcome: Outcome,
) {
    let counter = match outcome {
        Outcome::Fulfilled => stats::FULFILLED,
        Outcome::Skipped => stats::SKIPPED,
        Outcome::Fenced | Outcome::Failed | Outcome::Busy => stats::ERRORS,
    };
    let bucket = offered_us
        .map(|offered| stats::latency_bucket(now_us().saturating_sub(offered)).to_string())
        .unwrap_or_default();
    let mut conn = shared.conn.clone();
    let acked: Result<i64, _> = ACK
        .key(keys::ORDERS_STREAM)
        .key(stats::PROCESSED)
        .key(counter)
        .key(stats::LATENCY)
        .arg(keys::CONSUMER_GROUP)
        .arg(id)
        .arg(bucket)
        .invoke_async(&mut conn)
        .await;
    if let Err(e) = acked {
        shared.error("ack failed", id, e);
    }
}

/// A lease of any of the three lock clients.
enum Held {
    Legacy(crate::lock::legacy::LegacyLease),
    Lease(crate::lock::Lease),
}

async fn process_locked<S: OrderStore>(
    shared: &Shared<S>,
    order: &str,
    mode: LockMode,
    redlock: Option<&Redlock>,
    redelivered: bool,
) -> Outcome {
    let key = keys::lock(order);
    // A redelivered order waits for its lock at most one TTL (and a little):
    // a frozen holder's lease expires by then; a lock still held after that
    // belongs to a live holder, which keeps the order.
    let wait = if redelivered {
        shared
            .config
            .lock_wait
            .min(shared.config.lock_ttl + Duration::from_millis(50))
    } else {
        shared.config.lock_wait
    };
    let acquired: Result<Held, LockError> = match (mode, redlock) {
        (LockMode::Legacy, _) => shared.legacy.acquire(&key, wait).await.map(Held::Legacy),
        (LockMode::Redlock, Some(lock)) => lock.acquire(&key, wait).await.map(Held::Lease),
        _ => shared.fenced.acquire(&key, wait).await.map(Held::Lease),
    };
    let held = match acquired {
        Ok(held) => held,
        Err(LockError::Timeout { .. }) if redelivered => return Outcome::Busy,
        Err(e) => {
            shared.error("lock not acquired", order, e);
            return Outcome::Failed;
        }
    };
    let guard = match &held {
        Held::Legacy(_) => {
            log(format!(
                "LOCK ACQUIRED order_id={order} worker={} mode=legacy",
                shared.name
            ));
            Guard::Unfenced
        }
        Held::Lease(lease) => {
            log(format!(
                "LOCK ACQUIRED order_id={order} worker={} mode={} fencing_token={}",
                shared.name,
                mode.as_str(),
                lease.token().get()
            ));
            Guard::Fenced {
                token: lease.token().get(),
                colocated_lock: (mode == LockMode::Fenced).then(|| key.clone()),
            }
        }
    };
    let writer = Writer {
        holder: &shared.name,
        mode,
        guard,
    };
    let outcome = match pipeline(shared, order, &writer).await {
        Ok(outcome) => outcome,
        Err(e) => {
            shared.error("write failed", order, e);
            Outcome::Failed
        }
    };
    match held {
        Held::Legacy(lease) => match shared.legacy.release(lease).await {
            Ok(()) => log(format!(
                "LOCK RELEASED order_id={order} worker={}",
                shared.name
            )),
            Err(e) => shared.error("release failed", order, e),
        },
        Held::Lease(lease) => {
            let token = lease.token().get();
            match lease.release().await {
                Ok(Release::Released) => log(format!(
                    "LOCK RELEASED order_id={order} worker={} fencing_token={token}",
                    shared.name
                )),
                Ok(Release::AlreadyLost) => log(format!(
                    "LOCK LOST order_id={order} worker={} fencing_token={token} (expired before release)",
                    shared.name
                )),
                Err(e) => shared.error("release failed", order, e),
            }
        }
    }
    outcome
}

/// The pipeline under a lock: decisions from the first read, each write
/// guarded as `writer` says.
async fn pipeline<S: OrderStore>(
    shared: &Shared<S>,
    order: &str,
    writer: &Writer<'_>,
) -> Result<Outcome, StoreError> {
    let store = &shared.store;
    let work = shared.config.work;
    let view = match store.claim(order, writer).await? {
        Claimed::Order(view) => view,
        Claimed::Rejected { fence } => {
            return Ok(fenced_out(shared, order, writer, fence, "claim"));
        }
    };
    if view.status.as_deref() == Some(OrderStatus::Fulfilled.as_str()) {
        return Ok(Outcome::Skipped);
    }
    macro_rules! guarded {
        ($write:expr, $step:expr) => {
            if let super::orders::Written::Rejected { fence } = $write {
                return Ok(fenced_out(shared, order, writer, fence, $step));
            }
        };
    }
    guarded!(
        store
            .set_status(order, writer, OrderStatus::Processing)
            .await?,
        "status PROCESSING"
    );
    // The inventory service call.
    tokio::time::sleep(work).await;
    let lot = match view.lot {
        Some(lot) => lot,
        None => {
            let lot = store.pick_lot();
            guarded!(store.reserve_lot(order, writer, &lot).await?, "reserve");
            lot
        }
    };
    // The fulfillment service call.
    tokio::time::sleep(work).await;
    if view.fulfillment.is_none() {
        let (written, _fid) = store.create_fulfillment(order, writer, &lot).await?;
        guarded!(written, "fulfillment");
    }
    tokio::time::sleep(work).await;
    guarded!(
        store
            .set_status(order, writer, OrderStatus::Fulfilled)
            .await?,
        "status FULFILLED"
    );
    Ok(Outcome::Fulfilled)
}

fn fenced_out<S: OrderStore>(
    shared: &Shared<S>,
    order: &str,
    writer: &Writer<'_>,
    fence: u64,
    step: &str,
) -> Outcome {
    let token = match writer.guard {
        Guard::Fenced { token, .. } => token,
        Guard::Unfenced => 0,
    };
    log(format!(
        "FENCE REJECTED order_id={order} worker={} fencing_token={token} fence={fence} step={step:?}",
        shared.name
    ));
    if shared.publish_rejections {
        let mut event = LockEvent::new(
            crate::lock::event::EventKind::Rejected,
            writer.mode,
            format!("orders:{order}"),
            shared.name.as_str(),
        )
        .with_token(token);
        event.fence = Some(fence);
        shared.sink.publish(event);
    }
    shared.sink.publish(LockEvent::app_error(
        OPERATION,
        SERVICE,
        format!("stale lock holder refused: token {token} < fence {fence}"),
    ));
    Outcome::Fenced
}

async fn process_watch<S: OrderStore>(shared: &Shared<S>, order: &str) -> Outcome {
    match shared
        .store
        .process_optimistic(order, &shared.name, shared.config.work)
        .await
    {
        Ok(Optimistic::Fulfilled { attempts }) => {
            log(format!(
                "WATCH COMMITTED order_id={order} worker={} attempts={attempts}",
                shared.name
            ));
            Outcome::Fulfilled
        }
        Ok(Optimistic::AlreadyFulfilled) => Outcome::Skipped,
        Err(e) => {
            shared.error("optimistic update failed", order, e);
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_follow_pm003() {
        assert_eq!(short_name("pod-7f"), "pod-7f");
        assert_eq!(short_name("order-service-5d8f7c-x7k2q"), "pod-x7k2q");
        assert_eq!(short_name("solo"), "pod-solo");
    }

    #[test]
    fn lock_modes_parse_and_round_trip() {
        for mode in [
            LockMode::Legacy,
            LockMode::Fenced,
            LockMode::Redlock,
            LockMode::Watch,
        ] {
            assert_eq!(parse_mode(mode.as_str()), Some(mode));
            assert_eq!(mode_of(mode_code(mode)), mode);
        }
        assert_eq!(parse_mode(" Fenced\n"), Some(LockMode::Fenced));
        assert_eq!(parse_mode("app"), None);
        assert_eq!(parse_mode(""), None);
    }
}
