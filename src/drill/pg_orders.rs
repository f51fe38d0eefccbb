//! The drill's order store in PostgreSQL, in PM-003's own tables (`orders`,
//! `inventory_lots`, `inventory_reservations`, `fulfillment_records` and the
//! append-only audit log `order_events` / `inventory_events`, see
//! `migrations/0001_pm003_tables.sql`), with the semantics of
//! [`super::orders::RedisOrderStore`]:
//!
//! - **unfenced** (PM-003's path) every write lands, unguarded: a holder
//!   paused past its lease wakes up and adds a second reservation (another
//!   lot ID), a second fulfillment record and a status row the audit log
//!   contradicts — the incident's corruption, row for row;
//! - **fenced** every write is a unit of work opened by
//!   [`warroom_lock::fence::postgres::begin_or_insert`] on the order's row
//!   (`orders.fence`): the row is locked, the token compared with the fence
//!   and the fence raised, then the change and its audit rows are written in
//!   the same transaction. A stale holder's write is refused before any of
//!   it runs: nothing changes in any table; a `rejected` row is appended to
//!   the audit log afterwards, on its own. The single-node lease's
//!   co-located fence counter ([`Guard::Fenced`]'s `colocated_lock`) lives
//!   in Redis and is not consulted here: a newer holder's claim raises the
//!   order's fence at once, which closes the same gap;
//! - **optimistic** (WATCH mode) the pipeline reads the order with its row
//!   version (PostgreSQL's `xmin`, which every update of the row changes),
//!   waits for the service calls without holding a transaction or a
//!   connection, then commits everything in one transaction only if the
//!   version is unchanged (checked under `SELECT … FOR UPDATE`), retrying
//!   otherwise. A version check rather than SERIALIZABLE: SERIALIZABLE
//!   would have to keep the transaction open across the service calls.
//!
//! Each change and its audit rows commit in ONE transaction (READ
//! COMMITTED; the order's row lock serialises the writers of an order, see
//! [`warroom_lock::fence::postgres`]). Every transaction locks the order row
//! first and a lot row second, so writers cannot deadlock.
//!
//! **Connections.** Workers are separate processes running a few orders at
//! once, and each write is a short transaction that needs a connection of
//! its own for its duration (tokio-postgres transactions borrow the client
//! mutably). The store keeps a small fixed-size pool: up to
//! `max_connections` clients (default [`DEFAULT_CONNECTIONS`]), opened on
//! demand, reused, and dropped when they fail (a client whose server went
//! away is never handed out again). No pooling crate: the pool is the
//! twenty lines below, with no configuration to get wrong, and a worker
//! needs no more. Every operation, including the wait for a connection, is
//! bounded by [`OPERATION_TIMEOUT`]; a dropped or stopped server is an error,
//! never a panic or a hang. Connections are unencrypted (`NoTls`): the drill
//! runs on one machine.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, NoTls};
use warroom_lock::fence::postgres::{self as pgfence, Begin, FencedRow, PgFenceError};

use super::orders::{
    Claimed, Guard, LOT_STOCK, LOTS, Optimistic, OrderStatus, OrderStore, OrderView, StoreError,
    Writer, Written, lot_id, new_fulfillment_id,
};
use crate::redact::redact_text;

/// Connections a store opens at most, unless told otherwise.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Longest an operation (waiting for a connection included) may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an order's fence lives.
fn orders_fence() -> &'static FencedRow {
    static ROW: std::sync::LazyLock<FencedRow> = std::sync::LazyLock::new(|| {
        FencedRow::new("orders", "order_id", "fence").expect("plain identifiers")
    });
    &ROW
}

/// A database error as text, with any secret redacted.
fn database(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(redact_text(&e.to_string()).into_owned())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The cause (the server's message) is part of the text.
        let mut text = e.to_string();
        if let Some(db) = e.as_db_error()
            && let Some(detail) = db.detail()
        {
            text.push_str(&format!(" ({detail})"));
        }
        database(text)
    }
}

impl From<PgFenceError> for StoreError {
    fn from(e: PgFenceError) -> Self {
        database(e)
    }
}

struct Pool {
    config: tokio_postgres::Config,
    /// The URL as it may be shown (password redacted).
    shown: String,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A client taken from the pool; given back by [`Conn::give_back`], dropped
/// (closed) otherwise.
struct Conn<'p> {
    pool: &'p Pool,
    client: Option<Client>,
    _permit: SemaphorePermit<'p>,
}

impl Conn<'_> {
    fn client(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until given back")
    }

    fn give_back(mut self) {
        if let Some(client) = self.client.take()
            && !client.is_closed()
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(client);
        }
    }
}

impl Pool {
    async fn open(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(NoTls).await.map_err(|e| {
            database(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                self.shown
            ))
        })?;
        tokio::spawn(async move {
            // Ends when the server or the client goes away; the client then
            // reports closed and is dropped from the pool.
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn get(&self) -> Result<Conn<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| database("the connection pool is closed"))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(client) => client,
            None => self.open().await?,
        };
        Ok(Conn {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }
}

/// PM-003's order pipeline over PM-003's tables in PostgreSQL.
#[derive(Clone)]
pub struct PgOrderStore {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PgOrderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOrderStore")
            .field("database", &self.pool.shown)
            .finish_non_exhaustive()
    }
}

/// One change of the pipeline.
enum Change<'a> {
    Status(OrderStatus),
    Reserve { lot: &'a str },
    Fulfill { fid: &'a str, lot: &'a str },
}

/// A statement of one round trip with its parameters' types.
async fn run<const N: usize>(
    c: &(impl GenericClient + Sync),
    sql: &str,
    params: [(&(dyn ToSql + Sync), Type); N],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    c.query_typed(sql, &params).await
}

const UPSERT_STATUS: &str = "INSERT INTO orders (order_id, status) VALUES ($1, $2) \
     ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status, updated_at = clock_timestamp()";
const ENSURE_ORDER: &str = "INSERT INTO orders (order_id, status) VALUES ($1, 'PROCESSING') \
     ON CONFLICT (order_id) DO NOTHING";
const ORDER_EVENT: &str = "INSERT INTO order_events (order_id, kind, event, value, holder, token) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const TAKE_STOCK: &str =
    "UPDATE inventory_lots SET stock = stock - 1 WHERE lot_id = $1 RETURNING stock";
const SET_LOT: &str =
    "UPDATE orders SET lot_id = $2, updated_at = clock_timestamp() WHERE order_id = $1";
const RESERVATION: &str =
    "INSERT INTO inventory_reservations (order_id, lot_id, holder, token) VALUES ($1, $2, $3, $4)";
const INVENTORY_EVENT: &str = "INSERT INTO inventory_events \
     (order_id, lot_id, kind, event, quantity, holder, token) VALUES ($1, $2, $3, 'reserved', $4, $5, $6)";
const FULFILLMENT: &str = "INSERT INTO fulfillment_records \
     (fulfillment_id, order_id, lot_id, holder, token) VALUES ($1, $2, $3, $4, $5)";
const SET_FULFILLMENT: &str =
    "UPDATE orders SET fulfillment_id = $2, updated_at = clock_timestamp() WHERE order_id = $1";
const READ_ORDER: &str =
    "SELECT status, lot_id, fulfillment_id, xmin::text FROM orders WHERE order_id = $1";

/// Appends an `order_events` row.
async fn order_event(
    c: &(impl GenericClient + Sync),
    order: &str,
    kind: &str,
    event: &str,
    value: Option<&str>,
    holder: &str,
    token: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    run(
        c,
        ORDER_EVENT,
        [
            (&order, Type::TEXT),
            (&kind, Type::TEXT),
            (&event, Type::TEXT),
            (&value, Type::TEXT),
            (&holder, Type::TEXT),
            (&token, Type::INT8),
        ],
    )
    .await
    .map(drop)
}

/// The writes of one change (the order row already exists or is created
/// here), pipelined on the connection. Runs inside a transaction.
async fn apply(
    tx: &tokio_postgres::Transaction<'_>,
    order: &str,
    holder: &str,
    token: Option<i64>,
    change: &Change<'_>,
) -> Result<(), StoreError> {
    match change {
        Change::Status(status) => {
            let status = status.as_str();
            futures::try_join!(
                run(
                    tx,
                    UPSERT_STATUS,
                    [(&order, Type::TEXT), (&status, Type::TEXT)]
                ),
                order_event(tx, order, "change", "status", Some(status), holder, token),
            )?;
        }
        Change::Reserve { lot } => {
            let (_, _, stock, _, _) = futures::try_join!(
                run(tx, ENSURE_ORDER, [(&order, Type::TEXT)]),
                run(tx, SET_LOT, [(&order, Type::TEXT), (lot, Type::TEXT)]),
                run(tx, TAKE_STOCK, [(lot, Type::TEXT)]),
                run(
                    tx,
                    RESERVATION,
                    [
                        (&order, Type::TEXT),
                        (lot, Type::TEXT),
                        (&holder, Type::TEXT),
                        (&token, Type::INT8)
                    ]
                ),
                run(
                    tx,
                    INVENTORY_EVENT,
                    [
                        (&order, Type::TEXT),
                        (lot, Type::TEXT),
                        (&"change", Type::TEXT),
                        (&1i64, Type::INT8),
                        (&holder, Type::TEXT),
                        (&token, Type::INT8)
                    ]
                ),
            )?;
            if stock.is_empty() {
                // The transaction is dropped, so rolled back.
                return Err(StoreError::Database(format!(
                    "no inventory lot {lot} (are the lots seeded?)"
                )));
            }
        }
        Change::Fulfill { fid, lot } => {
            futures::try_join!(
                run(tx, ENSURE_ORDER, [(&order, Type::TEXT)]),
                run(
                    tx,
                    FULFILLMENT,
                    [
                        (fid, Type::TEXT),
                        (&order, Type::TEXT),
                        (lot, Type::TEXT),
                        (&holder, Type::TEXT),
                        (&token, Type::INT8)
                    ]
                ),
                run(
                    tx,
                    SET_FULFILLMENT,
                    [(&order, Type::TEXT), (fid, Type::TEXT)]
                ),
                order_event(
                    tx,
                    order,
                    "change",
                    "fulfillment_created",
                    Some(fid),
                    holder,
                    token
                ),
            )?;
        }
    }
    Ok(())
}

/// Appends the `rejected` audit row of a refused change (on its own: the
/// refused transaction was rolled back).
async fn record_rejection(
    client: &Client,
    order: &str,
    holder: &str,
    token: i64,
    change: Option<&Change<'_>>,
) -> Result<(), tokio_postgres::Error> {
    let token = Some(token);
    match change {
        None => order_event(client, order, "rejected", "claim", None, holder, token).await,
        Some(Change::Status(status)) => {
            let status = status.as_str();
            order_event(
                client,
                order,
                "rejected",
                "status",
                Some(status),
                holder,
                token,
            )
            .await
        }
        Some(Change::Reserve { lot }) => run(
            client,
            INVENTORY_EVENT,
            [
                (&order, Type::TEXT),
                (lot, Type::TEXT),
                (&"rejected", Type::TEXT),
                (&0i64, Type::INT8),
                (&holder, Type::TEXT),
                (&token, Type::INT8),
            ],
        )
        .await
        .map(drop),
        Some(Change::Fulfill { fid, .. }) => {
            order_event(
                client,
                order,
                "rejected",
                "fulfillment_created",
                Some(fid),
                holder,
                token,
            )
            .await
        }
    }
}

fn token_of(writer: &Writer<'_>) -> Result<Option<i64>, StoreError> {
    match writer.guard {
        Guard::Unfenced => Ok(None),
        Guard::Fenced { token, .. } => i64::try_from(token)
            .map(Some)
            .map_err(|_| PgFenceError::TokenOutOfRange(token).into()),
    }
}

fn text(row: &tokio_postgres::Row, i: usize) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<_, Option<String>>(i)?)
}

/// One change on a connection: unfenced, or as a fenced unit of work.
async fn write_on(
    client: &mut Client,
    order: &str,
    writer: &Writer<'_>,
    change: &Change<'_>,
) -> Result<Written, StoreError> {
    let Some(token) = token_of(writer)? else {
        let tx = client.transaction().await?;
        apply(&tx, order, writer.holder, None, change).await?;
        tx.commit().await?;
        return Ok(Written::Accepted);
    };
    let status = match change {
        Change::Status(status) => status.as_str(),
        _ => OrderStatus::Processing.as_str(),
    };
    let fence = {
        let begun = pgfence::begin_or_insert(
            client,
            orders_fence(),
            &order,
            Type::TEXT,
            token as u64,
            &[("status", &status, Type::TEXT)],
        )
        .await?;
        match begun {
            Begin::Fenced(unit) => {
                let tx = unit.transaction();
                if unit.created() && !matches!(change, Change::Status(_)) {
                    order_event(
                        tx,
                        order,
                        "change",
                        "status",
                        Some(status),
                        writer.holder,
                        Some(token),
                    )
                    .await?;
                }
                apply(tx, order, writer.holder, Some(token), change).await?;
                unit.commit().await?;
                return Ok(Written::Accepted);
            }
            Begin::Stale { fence } => fence,
            Begin::Missing => {
                return Err(StoreError::Database(format!(
                    "order {order} vanished while being written"
                )));
            }
        }
    };
    record_rejection(client, order, writer.holder, token, Some(change)).await?;
    Ok(Written::Rejected { fence })
}

async fn claim_on(
    client: &mut Client,
    order: &str,
    writer: &Writer<'_>,
) -> Result<Claimed, StoreError> {
    let view = |row: &tokio_postgres::Row| -> Result<OrderView, StoreError> {
        Ok(OrderView {
            status: text(row, 0)?,
            lot: text(row, 1)?,
            fulfillment: text(row, 2)?,
        })
    };
    let Some(token) = token_of(writer)? else {
        let rows = run(&*client, READ_ORDER, [(&order, Type::TEXT)]).await?;
        return match rows.first() {
            Some(row) => Ok(Claimed::Order(view(row)?)),
            None => Ok(Claimed::Order(OrderView::default())),
        };
    };
    let processing = OrderStatus::Processing.as_str();
    let fence = {
        let begun = pgfence::begin_or_insert(
            client,
            orders_fence(),
            &order,
            Type::TEXT,
            token as u64,
            &[("status", &processing, Type::TEXT)],
        )
        .await?;
        match begun {
            Begin::Fenced(unit) => {
                let found = if unit.created() {
                    // A new order: its row exists from now on, holding the fence.
                    order_event(
                        unit.transaction(),
                        order,
                        "change",
                        "status",
                        Some(processing),
                        writer.holder,
                        Some(token),
                    )
                    .await?;
                    OrderView::default()
                } else {
                    let rows = run(unit.transaction(), READ_ORDER, [(&order, Type::TEXT)]).await?;
                    match rows.first() {
                        Some(row) => view(row)?,
                        None => OrderView::default(),
                    }
                };
                unit.commit().await?;
                return Ok(Claimed::Order(found));
            }
            Begin::Stale { fence } => fence,
            Begin::Missing => {
                return Err(StoreError::Database(format!(
                    "order {order} vanished while being claimed"
                )));
            }
        }
    };
    record_rejection(client, order, writer.holder, token, None).await?;
    Ok(Claimed::Rejected { fence })
}

/// The read of an optimistic run: the order and its row version.
struct Versioned {
    view: OrderView,
    version: Option<String>,
}

async fn read_versioned(client: &Client, order: &str) -> Result<Versioned, StoreError> {
    let rows = run(client, READ_ORDER, [(&order, Type::TEXT)]).await?;
    Ok(match rows.first() {
        Some(row) => Versioned {
            view: OrderView {
                status: text(row, 0)?,
                lot: text(row, 1)?,
                fulfillment: text(row, 2)?,
            },
            version: text(row, 3)?,
        },
        None => Versioned {
            view: OrderView::default(),
            version: None,
        },
    })
}

/// Commits the whole pipeline if the order's version is still `read`'s;
/// `false` on conflict (nothing written).
async fn commit_optimistic(
    client: &mut Client,
    order: &str,
    holder: &str,
    read: &Versioned,
    lot: &str,
) -> Result<bool, StoreError> {
    let tx = client.transaction().await?;
    let unchanged = match &read.version {
        Some(version) => {
            let rows = run(
                &tx,
                "SELECT xmin::text FROM orders WHERE order_id = $1 FOR UPDATE",
                [(&order, Type::TEXT)],
            )
            .await?;
            match rows.first() {
                Some(row) => text(row, 0)?.as_deref() == Some(version.as_str()),
                None => false,
            }
        }
        None => !run(
            &tx,
            "INSERT INTO orders (order_id, status) VALUES ($1, 'PROCESSING') \
             ON CONFLICT (order_id) DO NOTHING RETURNING 1",
            [(&order, Type::TEXT)],
        )
        .await?
        .is_empty(),
    };
    if !unchanged {
        tx.rollback().await?;
        return Ok(false);
    }
    apply(
        &tx,
        order,
        holder,
        None,
        &Change::Status(OrderStatus::Processing),
    )
    .await?;
    if read.view.lot.is_none() {
        apply(&tx, order, holder, None, &Change::Reserve { lot }).await?;
    }
    if read.view.fulfillment.is_none() {
        let fid = new_fulfillment_id();
        apply(
            &tx,
            order,
            holder,
            None,
            &Change::Fulfill { fid: &fid, lot },
        )
        .await?;
    }
    apply(
        &tx,
        order,
        holder,
        None,
        &Change::Status(OrderStatus::Fulfilled),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

impl PgOrderStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/db`)
    /// with a pool of at most [`DEFAULT_CONNECTIONS`] connections. One
    /// connection is opened now, so an unreachable server is reported here.
    /// Messages never show the URL's password.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, DEFAULT_CONNECTIONS).await
    }

    /// As [`PgOrderStore::connect`], with at most `max_connections`
    /// connections (1 to 1024).
    pub async fn connect_with(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let shown = crate::database::shown_url(url);
        if !(1..=1024).contains(&max_connections) {
            return Err(StoreError::Database(format!(
                "max connections must be between 1 and 1024, not {max_connections}"
            )));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| database(format!("{shown} is not a usable PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(5));
        if config.get_application_name().is_none() {
            config.application_name("warroom");
        }
        let pool = Pool {
            config,
            shown,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_connections),
        };
        let first = tokio::time::timeout(OPERATION_TIMEOUT, pool.open())
            .await
            .map_err(|_| database(format!("connecting to {} timed out", pool.shown)))??;
        pool.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(first);
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// The database's URL as it may be shown (password redacted).
    pub fn shown_url(&self) -> &str {
        &self.pool.shown
    }

    async fn conn(&self) -> Result<Conn<'_>, StoreError> {
        tokio::time::timeout(OPERATION_TIMEOUT, self.pool.get())
            .await
            .map_err(|_| database(format!("no connection to {} in time", self.pool.shown)))?
    }

    /// Applies PM-003's schema if it is missing or behind; returns the
    /// versions applied.
    pub async fn migrate(&self) -> Result<Vec<i32>, StoreError> {
        let mut conn = self.conn().await?;
        let mut owned = conn.client.take().expect("present");
        let applied = tokio::time::timeout(
            OPERATION_TIMEOUT,
            crate::database::migrate::migrate(&mut owned),
        )
        .await
        .map_err(|_| database("migrating timed out"))?
        .map_err(database)?;
        conn.client = Some(owned);
        conn.give_back();
        Ok(applied.iter().map(|m| m.version).collect())
    }

    /// Stocks the drill's lots ([`LOTS`] lots of [`LOT_STOCK`]), only those
    /// not stocked yet. Idempotent: every worker may run it at start.
    pub async fn seed_lots(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let lots: Vec<String> = (0..LOTS).map(lot_id).collect();
        let op = async {
            run(
                &*conn.client(),
                "INSERT INTO inventory_lots (lot_id, initial_stock, stock) \
                 SELECT lot, $2, $2 FROM unnest($1::text[]) AS lot \
                 ON CONFLICT (lot_id) DO NOTHING",
                [(&lots, Type::TEXT_ARRAY), (&LOT_STOCK, Type::INT8)],
            )
            .await?;
            Ok(())
        };
        let result = tokio::time::timeout(OPERATION_TIMEOUT, op).await;
        match result {
            Ok(Ok(())) => {
                conn.give_back();
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(database("seeding the lots timed out")),
        }
    }

    async fn write(
        &self,
        order: &str,
        writer: &Writer<'_>,
        change: Change<'_>,
    ) -> Result<Written, StoreError> {
        let mut conn = self.conn().await?;
        let mut owned = conn.client.take().expect("present");
        let result = tokio::time::timeout(
            OPERATION_TIMEOUT,
            write_on(&mut owned, order, writer, &change),
        )
        .await;
        conn.client = Some(owned);
        self.settle(conn, result)
    }

    fn settle<T>(
        &self,
        mut conn: Conn<'_>,
        result: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match result {
            Ok(Ok(value)) => {
                conn.give_back();
                Ok(value)
            }
            Ok(Err(e)) => {
                conn.client = None;
                Err(e)
            }
            Err(_) => Err(database(format!(
                "no answer from {} within {OPERATION_TIMEOUT:?}",
                self.pool.shown
            ))),
        }
    }
}

impl OrderStore for PgOrderStore {
    async fn claim(&self, order: &str, writer: &Writer<'_>) -> Result<Claimed, StoreError> {
        let mut conn = self.conn().await?;
        let mut owned = conn.client.take().expect("present");
        let result =
            tokio::time::timeout(OPERATION_TIMEOUT, claim_on(&mut owned, order, writer)).await;
        conn.client = Some(owned);
        self.settle(conn, result)
    }

    async fn set_status(
        &self,
        order: &str,
        writer: &Writer<'_>,
        status: OrderStatus,
    ) -> Result<Written, StoreError> {
        self.write(order, writer, Change::Status(status)).await
    }

    async fn reserve_lot(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> Result<Written, StoreError> {
        self.write(order, writer, Change::Reserve { lot }).await
    }

    async fn create_fulfillment(
        &self,
        order: &str,
        writer: &Writer<'_>,
        lot: &str,
    ) -> Result<(Written, String), StoreError> {
        let fid = new_fulfillment_id();
        let written = self
            .write(order, writer, Change::Fulfill { fid: &fid, lot })
            .await?;
        Ok((written, fid))
    }

    async fn process_optimistic(
        &self,
        order: &str,
        holder: &str,
        work: Duration,
    ) -> Result<Optimistic, StoreError> {
        const ATTEMPTS: u32 = 16;
        for attempt in 1..=ATTEMPTS {
            let conn = self.conn().await?;
            let read = {
                let client: &Client = conn.client.as_ref().expect("present");
                tokio::time::timeout(OPERATION_TIMEOUT, read_versioned(client, order)).await
            };
            let read = self.settle(conn, read)?;
            if read.view.status.as_deref() == Some(OrderStatus::Fulfilled.as_str()) {
                return Ok(Optimistic::AlreadyFulfilled);
            }
            // The service calls, with no transaction and no connection held;
            // a pause here is what the version check catches.
            tokio::time::sleep(work * 3).await;
            let lot = read.view.lot.clone().unwrap_or_else(|| self.pick_lot());
            let mut conn = self.conn().await?;
            let mut owned = conn.client.take().expect("present");
            let committed = tokio::time::timeout(
                OPERATION_TIMEOUT,
                commit_optimistic(&mut owned, order, holder, &read, &lot),
            )
            .await;
            conn.client = Some(owned);
            if self.settle(conn, committed)? {
                return Ok(Optimistic::Fulfilled { attempts: attempt });
            }
            let jitter = rand::random_range(1..=(4u64 << attempt.min(4)));
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        Err(StoreError::Conflict {
            order: order.to_string(),
            attempts: ATTEMPTS,
        })
    }
}
