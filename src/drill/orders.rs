//! PM-003's order pipeline and the store it writes to.
//!
//! Under an order's lock a worker: reads (or, fenced, claims) the order; sets
//! its status to `PROCESSING`; reserves an inventory lot (the lot's stock goes
//! down by one, the reservation is recorded and the lot ID is written on the
//! order); creates a fulfillment record; sets the status to `FULFILLED`. Every
//! change is appended to the order's append-only audit log (PM-003's
//! `order_events` / `inventory_events`), with who made it and under which
//! fencing token.
//!
//! The decisions (reserve a lot? create a fulfillment?) are taken from what
//! the worker read when it started, as PM-003's service did. A holder that
//! is paused past its lock's TTL wakes up and acts on that stale read:
//! - **unfenced** (the legacy lock) its writes land, so the order ends with two
//!   reservations (two lot IDs), two fulfillment records and a status history
//!   that goes backwards — PM-003's corruption;
//! - **fenced** (fenced and redlock modes) each write is one script that first
//!   compares the writer's token with the highest token the order has seen
//!   (and, for a single-node lease, with the lock's fence counter, which every
//!   newer grant raised): a stale holder changes nothing and gets `Rejected`;
//! - **optimistic** (WATCH mode) the whole order is one `MULTI … EXEC` that
//!   fails when any other writer touched the order since it was read.
//!
//! [`OrderStore`] speaks of orders, lots and fulfillments only, so a
//! PostgreSQL store with PM-003's tables can implement it (the fence becomes
//! a column checked in each `UPDATE`, see [`crate::fence`]).
//! [`RedisOrderStore`] keeps everything on one Redis node; the key layout is
//! in [`keys`] and in the README ("Drill data in Redis").

use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use redis::aio::{ConnectionManager, MultiplexedConnection};

use crate::lock::EventStream;
use crate::lock::event::LockMode;

/// The Redis keys of the drill's data. Every key starts with `drill:` except
/// the lock keys, which use the lock client's `lock:<order>` convention.
pub mod keys {
    /// The stream the gateway appends orders to and workers consume.
    pub const ORDERS_STREAM: &str = "drill:orders";
    /// The consumer group of the order-service workers on [`ORDERS_STREAM`].
    pub const CONSUMER_GROUP: &str = "order-service";
    /// The lock mode the workers use (mirrored from the ConfigMap).
    pub const LOCK_MODE: &str = "drill:lock-mode";
    /// Set of every order ID a worker has claimed.
    pub const ORDER_INDEX: &str = "drill:order-ids";
    /// Hash lot ID → stock left.
    pub const LOT_STOCK: &str = "drill:lots:stock";
    /// Hash lot ID → stock the lot started with.
    pub const LOT_INITIAL: &str = "drill:lots:initial";

    /// Hash of one order: `status`, `lot`, `fulfillment`, `fence`, `updated_us`.
    pub fn order(id: &str) -> String {
        format!("drill:order:{id}")
    }

    /// List of the lot IDs reserved for an order (PM-003's
    /// `inventory_reservations` rows), in the order they were made.
    pub fn reservations(id: &str) -> String {
        format!("drill:order:{id}:reservations")
    }

    /// List of the fulfillment record IDs of an order.
    pub fn fulfillments(id: &str) -> String {
        format!("drill:order:{id}:fulfillments")
    }

    /// Hash of one fulfillment record: `order`, `lot`, `holder`, `state`
    /// (`active` or `cancelled`), `created_us`.
    pub fn fulfillment(fid: &str) -> String {
        format!("drill:fulfillment:{fid}")
    }

    /// Stream: the order's append-only audit log. Fields: `table`
    /// (`order_events`, `inventory_events`, `fulfillment_events`, `repairs`),
    /// `event`, `value`, `holder`, `token` (empty when unfenced), and for
    /// some events `lot`.
    pub fn audit(id: &str) -> String {
        format!("drill:audit:{id}")
    }

    /// The lock key of an order.
    pub fn lock(id: &str) -> String {
        format!("lock:{id}")
    }
}

/// Number of inventory lots the drill stocks.
pub const LOTS: usize = 32;
/// Stock each lot starts with.
pub const LOT_STOCK: i64 = 1_000_000;

/// The lot ID of lot number `n` (`lot-0007`).
pub fn lot_id(n: usize) -> String {
    format!("lot-{n:04}")
}

/// An order's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// A worker has started on it.
    Processing,
    /// Lot reserved, fulfillment created.
    Fulfilled,
}

impl OrderStatus {
    /// As stored (`PROCESSING`, `FULFILLED`).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Processing => "PROCESSING",
            OrderStatus::Fulfilled => "FULFILLED",
        }
    }

    /// Parses a stored status.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PROCESSING" => Some(OrderStatus::Processing),
            "FULFILLED" => Some(OrderStatus::Fulfilled),
            _ => None,
        }
    }
}

/// How a write is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// PM-003's write path: no token, no check.
    Unfenced,
    /// The write carries a fencing token and is refused when the order has
    /// seen a higher one.
    Fenced {
        /// The lease's fencing token.
        token: u64,
        /// For a single-node lease on the same Redis: the lock key, whose fence
        /// counter is checked too (a newer grant refuses the stale holder at
        /// once, before the new holder has written anything).
        colocated_lock: Option<String>,
    },
}

/// Who writes and how.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    /// The holder's short name (`pod-7f`), recorded in the audit log.
    pub holder: &'a str,
    /// The lock mode, named in `rejected` events.
    pub mode: LockMode,
    /// How writes are checked.
    pub guard: Guard,
}

/// An order as read at the start of a pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderView {
    /// Current status (`None` for a new order).
    pub status: Option<String>,
    /// The lot ID on the order.
    pub lot: Option<String>,
    /// The fulfillment record ID on the order.
    pub fulfillment: Option<String>,
}

/// What a guarded write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The change was made.
    Accepted,
    /// A newer holder has the order; nothing changed.
    Rejected {
        /// The token the order (or its lock) had already reached.
        fence: u64,
    },
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The order as it is now.
    Order(OrderView),
    /// A newer holder has the order.
    Rejected {
        /// The token the order (or its lock) had already reached.
        fence: u64,
    },
}

/// What an optimistic (WATCH) run of the whole pipeline did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Optimistic {
    /// Committed in this many attempts.
    Fulfilled {
        /// Attempts (1 without conflict).
        attempts: u32,
    },
    /// The order was already fulfilled; nothing written.
    AlreadyFulfilled,
}

/// Errors of the order store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store failed or could not be reached.
    #[error("order store: {0}")]
    Redis(#[from] redis::RedisError),
    /// The PostgreSQL store failed or could not be reached (the text never
    /// holds the URL's password).
    #[error("order database: {0}")]
    Database(String),
    /// An optimistic update kept conflicting.
    #[error("order {order}: {attempts} optimistic attempts conflicted")]
    Conflict {
        /// The order.
        order: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// The order service's data: orders, lots, fulfillment records and the audit
/// log. Every change method appends its audit entries in the same atomic step
/// as the change.
pub trait OrderStore: Clone + Send + Sync + 'static {
    /// Reads the order; fenced, also raises the order's fence to the token
    /// (so that older holders are refused from now on) or is refused.
    fn claim(
        &self,
        order: &str,
        writer: &Writer<'_>,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Sets the order's status.
    fn set_status(
        &self,
        order: &str,
        writer: &Writer<'_>,
        status: OrderStatus,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Reserves one unit of `lot` for the order and records the lot on it.
    fn reserve_lot(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> impl Future<Output = Result<Written, StoreError>> + Send;

    /// Creates a fulfillment record for the order from `lot`; returns its ID
    /// when accepted.
    fn create_fulfillment(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> impl Future<Output = Result<(Written, String), StoreError>> + Send;

    /// The whole pipeline as one optimistic transaction: read, wait `work`
    /// per step (the service calls), commit only if nobody wrote the order in
    /// between; retried on conflict.
    fn process_optimistic(
        &self,
        order: &str,
        holder: &str,
        work: Duration,
    ) -> impl Future<Output = Result<Optimistic, StoreError>> + Send;

    /// A lot to reserve from, chosen at random among the stocked lots.
    fn pick_lot(&self) -> String {
        lot_id(rand::random_range(0..LOTS))
    }
}

/// Microseconds since the Unix epoch (the drill's timestamps: the gateway and
/// the workers run on one machine).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The guard every script starts with. KEYS[1] order, KEYS[2] lock fence
/// counter (or the order again), KEYS[3] lock event stream, KEYS[4] audit.
/// ARGV[1] token ('0': unguarded), ARGV[2] '1' to check the counter,
/// ARGV[3] holder, ARGV[4] event maxlen ('0': no events), ARGV[5] mode.
const GUARD: &str = r"
local token = tonumber(ARGV[1])
local tok = ''
if token > 0 then
  tok = ARGV[1]
  local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if ARGV[2] == '1' then
    fence = math.max(fence, tonumber(redis.call('GET', KEYS[2]) or '0'))
  end
  if token < fence then
    if ARGV[4] ~= '0' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
        'v', '1', 'kind', 'rejected', 'mode', ARGV[5], 'key', KEYS[1],
        'holder', ARGV[3], 'token', ARGV[1], 'fence', tostring(fence))
    end
    return {0, fence}
  end
  redis.call('HSET', KEYS[1], 'fence', ARGV[1])
end
";

/// Claim/read. KEYS[5] order index. ARGV[6] order ID.
/// Returns {1, 0, status, lot, fulfillment} or {0, fence}.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GUARD}
redis.call('SADD', KEYS[5], ARGV[6])
local o = redis.call('HMGET', KEYS[1], 'status', 'lot', 'fulfillment')
return {{1, 0, o[1], o[2], o[3]}}
"
    ))
});

/// Status. ARGV[6] status, ARGV[7] now (µs).
static STATUS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GUARD}
redis.call('HSET', KEYS[1], 'status', ARGV[6], 'updated_us', ARGV[7])
redis.call('XADD', KEYS[4], '*', 'table', 'order_events', 'event', 'status',
  'value', ARGV[6], 'holder', ARGV[3], 'token', tok)
return {{1, 0}}
"
    ))
});

/// Reserve. KEYS[5] lot stock hash, KEYS[6] reservations. ARGV[6] lot, ARGV[7] now.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GUARD}
redis.call('HINCRBY', KEYS[5], ARGV[6], -1)
redis.call('RPUSH', KEYS[6], ARGV[6])
redis.call('HSET', KEYS[1], 'lot', ARGV[6], 'updated_us', ARGV[7])
redis.call('XADD', KEYS[4], '*', 'table', 'inventory_events', 'event', 'reserve',
  'value', ARGV[6], 'holder', ARGV[3], 'token', tok)
return {{1, 0}}
"
    ))
});

/// Fulfill. KEYS[5] fulfillment record, KEYS[6] fulfillments list.
/// ARGV[6] fulfillment ID, ARGV[7] lot, ARGV[8] now, ARGV[9] order ID.
static FULFILL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{GUARD}
redis.call('HSET', KEYS[5], 'order', ARGV[9], 'lot', ARGV[7], 'holder', ARGV[3],
  'state', 'active', 'created_us', ARGV[8])
redis.call('RPUSH', KEYS[6], ARGV[6])
redis.call('HSET', KEYS[1], 'fulfillment', ARGV[6], 'updated_us', ARGV[8])
redis.call('XADD', KEYS[4], '*', 'table', 'fulfillment_events', 'event', 'fulfill',
  'value', ARGV[6], 'lot', ARGV[7], 'holder', ARGV[3], 'token', tok)
return {{1, 0}}
"
    ))
});

/// The order store on one Redis node.
#[derive(Clone)]
pub struct RedisOrderStore {
    conn: ConnectionManager,
    url: Arc<str>,
    events: EventStream,
    /// Dedicated connections for WATCH (its state belongs to a connection).
    watch_pool: Arc<Mutex<Vec<MultiplexedConnection>>>,
}

impl std::fmt::Debug for RedisOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOrderStore").finish_non_exhaustive()
    }
}

impl RedisOrderStore {
    /// Uses `conn` for everything but WATCH, which opens dedicated
    /// connections to `url` as needed. Rejections are published to the lock
    /// event stream (the exporter counts them).
    pub fn new(conn: ConnectionManager, url: &str) -> Self {
        Self {
            conn,
            url: url.into(),
            events: EventStream::default(),
            watch_pool: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Stocks the lots (only those not stocked yet) and creates the
    /// consumer group on the orders stream (if missing). Idempotent: every
    /// worker runs it at start.
    pub async fn prepare(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for n in 0..LOTS {
            pipe.hset_nx(keys::LOT_INITIAL, lot_id(n), LOT_STOCK)
                .ignore()
                .hset_nx(keys::LOT_STOCK, lot_id(n), LOT_STOCK)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys::ORDERS_STREAM)
            .arg(keys::CONSUMER_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        for script in [&CLAIM, &STATUS, &RESERVE, &FULFILL] {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        Ok(())
    }

    fn invocation<'s>(
        &self,
        script: &'s Script,
        order: &str,
        writer: &Writer<'_>,
    ) -> redis::ScriptInvocation<'s> {
        let (token, counter) = match &writer.guard {
            Guard::Unfenced => (0, None),
            Guard::Fenced {
                token,
                colocated_lock,
            } => (
                *token,
                colocated_lock
                    .as_deref()
                    .map(crate::lock::fence_counter_key),
            ),
        };
        let mut inv = script.prepare_invoke();
        let order_key = keys::order(order);
        inv.key(&order_key)
            .key(counter.as_deref().unwrap_or(&order_key))
            .key(&self.events.key)
            .key(keys::audit(order))
            .arg(token)
            .arg(if counter.is_some() { "1" } else { "0" })
            .arg(writer.holder)
            .arg(self.events.maxlen.max(1))
            .arg(writer.mode.as_str());
        inv
    }

    fn watch_conn_take(&self) -> Option<MultiplexedConnection> {
        self.watch_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
    }

    fn watch_conn_give(&self, conn: MultiplexedConnection) {
        self.watch_pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }

    async fn watch_once(
        &self,
        conn: &mut MultiplexedConnection,
        order: &str,
        holder: &str,
        work: Duration,
    ) -> Result<Option<Optimistic>, StoreError> {
        let order_key = keys::order(order);
        redis::cmd("WATCH")
            .arg(&order_key)
            .query_async::<()>(conn)
            .await?;
        let (status, lot, fulfillment): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(&order_key)
                .arg("status")
                .arg("lot")
                .arg("fulfillment")
                .query_async(conn)
                .await?;
        if status.as_deref() == Some(OrderStatus::Fulfilled.as_str()) {
            redis::cmd("UNWATCH").query_async::<()>(conn).await?;
            return Ok(Some(Optimistic::AlreadyFulfilled));
        }
        // The service calls happen between the read and the commit; a pause
        // here is what the commit's WATCH catches.
        tokio::time::sleep(work * 3).await;
        let now = now_us();
        let audit = keys::audit(order);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .sadd(keys::ORDER_INDEX, order)
            .ignore()
            .hset_multiple(
                &order_key,
                &[
                    ("status", OrderStatus::Processing.as_str().to_string()),
                    ("updated_us", now.to_string()),
                ],
            )
            .ignore()
            .xadd(
                &audit,
                "*",
                &[
                    ("table", "order_events"),
                    ("event", "status"),
                    ("value", OrderStatus::Processing.as_str()),
                    ("holder", holder),
                    ("token", ""),
                ],
            )
            .ignore();
        let lot = match lot {
            Some(lot) => lot,
            None => {
                let lot = self.pick_lot();
                pipe.hincr(keys::LOT_STOCK, &lot, -1)
                    .ignore()
                    .rpush(keys::reservations(order), &lot)
                    .ignore()
                    .hset(&order_key, "lot", &lot)
                    .ignore()
                    .xadd(
                        &audit,
                        "*",
                        &[
                            ("table", "inventory_events"),
                            ("event", "reserve"),
                            ("value", lot.as_str()),
                            ("holder", holder),
                            ("token", ""),
                        ],
                    )
                    .ignore();
                lot
            }
        };
        if fulfillment.is_none() {
            let fid = new_fulfillment_id();
            pipe.hset_multiple(
                keys::fulfillment(&fid),
                &[
                    ("order", order),
                    ("lot", lot.as_str()),
                    ("holder", holder),
                    ("state", "active"),
                    ("created_us", now.to_string().as_str()),
                ],
            )
            .ignore()
            .rpush(keys::fulfillments(order), &fid)
            .ignore()
            .hset(&order_key, "fulfillment", &fid)
            .ignore()
            .xadd(
                &audit,
                "*",
                &[
                    ("table", "fulfillment_events"),
                    ("event", "fulfill"),
                    ("value", fid.as_str()),
                    ("lot", lot.as_str()),
                    ("holder", holder),
                    ("token", ""),
                ],
            )
            .ignore();
        }
        pipe.hset(&order_key, "status", OrderStatus::Fulfilled.as_str())
            .ignore()
            .xadd(
                &audit,
                "*",
                &[
                    ("table", "order_events"),
                    ("event", "status"),
                    ("value", OrderStatus::Fulfilled.as_str()),
                    ("holder", holder),
                    ("token", ""),
                ],
            )
            .ignore();
        let committed: Option<()> = pipe.query_async(conn).await?;
        Ok(committed.map(|()| Optimistic::Fulfilled { attempts: 0 }))
    }
}

/// A fresh fulfillment record ID (`ful-3f9a0c1d2b4e5f60`).
pub fn new_fulfillment_id() -> String {
    format!("ful-{:016x}", rand::random::<u64>())
}

fn written(reply: (i64, u64)) -> Written {
    if reply.0 == 1 {
        Written::Accepted
    } else {
        Written::Rejected { fence: reply.1 }
    }
}

impl OrderStore for RedisOrderStore {
    async fn claim(&self, order: &str, writer: &Writer<'_>) -> Result<Claimed, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.invocation(&CLAIM, order, writer);
        inv.key(keys::ORDER_INDEX).arg(order);
        let reply: Vec<redis::Value> = inv.invoke_async(&mut conn).await?;
        let int = |i: usize| match reply.get(i) {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let text = |i: usize| match reply.get(i) {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        };
        if int(0) != 1 {
            return Ok(Claimed::Rejected {
                fence: int(1).max(0) as u64,
            });
        }
        Ok(Claimed::Order(OrderView {
            status: text(2),
            lot: text(3),
            fulfillment: text(4),
        }))
    }

    async fn set_status(
        &self,
        order: &str,
        writer: &Writer<'_>,
        status: OrderStatus,
    ) -> Result<Written, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.invocation(&STATUS, order, writer);
        inv.arg(status.as_str()).arg(now_us());
        Ok(written(inv.invoke_async(&mut conn).await?))
    }

    async fn reserve_lot(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> Result<Written, StoreError> {
        let mut conn = self.conn.clone();
        let mut inv = self.invocation(&RESERVE, order, writer);
        inv.key(keys::LOT_STOCK)
            .key(keys::reservations(order))
            .arg(lot)
            .arg(now_us());
        Ok(written(inv.invoke_async(&mut conn).await?))
    }

    async fn create_fulfillment(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> Result<(Written, String), StoreError> {
        let mut conn = self.conn.clone();
        let fid = new_fulfillment_id();
        let mut inv = self.invocation(&FULFILL, order, writer);
        inv.key(keys::fulfillment(&fid))
            .key(keys::fulfillments(order))
            .arg(&fid)
            .arg(lot)
            .arg(now_us())
            .arg(order);
        Ok((written(inv.invoke_async(&mut conn).await?), fid))
    }

    async fn process_optimistic(
        &self,
        order: &str,
        holder: &str,
        work: Duration,
    ) -> Result<Optimistic, StoreError> {
        const ATTEMPTS: u32 = 16;
        let mut conn = match self.watch_conn_take() {
            Some(conn) => conn,
            None => {
                let client = redis::Client::open(&*self.url)?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        for attempt in 1..=ATTEMPTS {
            match self.watch_once(&mut conn, order, holder, work).await {
                Ok(Some(Optimistic::Fulfilled { .. })) => {
                    self.watch_conn_give(conn);
                    return Ok(Optimistic::Fulfilled { attempts: attempt });
                }
                Ok(Some(other)) => {
                    self.watch_conn_give(conn);
                    return Ok(other);
                }
                Ok(None) => {
                    let jitter = rand::random_range(1..=(4u64 << attempt.min(4)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                // The connection may be mid-transaction: drop it.
                Err(e) => return Err(e),
            }
        }
        self.watch_conn_give(conn);
        Err(StoreError::Conflict {
            order: order.to_string(),
            attempts: ATTEMPTS,
        })
    }
}
