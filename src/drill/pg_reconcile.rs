//! PM-003's reconciliation over its real tables: the 11:03 query that found
//! the orders whose `orders`, `inventory_reservations` and
//! `fulfillment_records` rows disagree, and the 12:44 repair, from the
//! append-only audit tables (`order_events`, `inventory_events`).
//!
//! The findings and the rules are those of [`super::reconcile`] (read its
//! top comment), on the tables of `migrations/0001_pm003_tables.sql`:
//!
//! - **Detection is one query** ([`CHECK`]): per order, its `held`
//!   reservations, its `active` fulfillment records and the last `status`
//!   in `order_events`, flagged `two_lots`, `two_fulfillments`,
//!   `lot_mismatch` and `status_contradicts_audit` by the same rules as the
//!   Redis scan; and per lot, `stock_mismatch`: `initial_stock − stock` ≠
//!   reservations held ([`LOTS`]). Both run in one `REPEATABLE READ`
//!   snapshot, so a worker writing meanwhile is never seen half-way.
//! - **The decision** (which chain to keep, or what a person must decide)
//!   is taken per flagged order from its rows and its audit log, as the
//!   Redis reconciliation takes it: each writer's rows are a chain (holder
//!   and token on every row); the first chain to reach `FULFILLED` in
//!   `order_events` is kept.
//! - **Each order's repair is its own transaction**: the order's row is
//!   locked (`SELECT … FOR UPDATE`), its rows are read again and judged
//!   again, and only if the same repair still applies are the other
//!   reservations released (state `released`, the lot's stock back, an
//!   `inventory_events` row), the other fulfillment records cancelled (an
//!   `order_events` row), and the order's lot, fulfillment and status set
//!   to the kept ones (an `order_events` row each that changed). Every row
//!   the repair writes in the audit tables has kind `repair` and holder
//!   `reconcile`. An order that changed meanwhile is left (`changed`) for
//!   the next run.
//!
//! A repaired order passes the query, so a second repair changes nothing.
//!
//! The schema must be current: [`check_schema`] says which command applies
//! it (`warroom reconcile --database URL --migrate`); only [`prepare`]
//! changes it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, IsolationLevel, NoTls, Row};

use super::orders::{LOT_STOCK, LOTS, OrderStatus, lot_id};
use super::reconcile::{
    AuditEntry, LotFinding, OrderFinding, OrderRecords, Plan, ReconcileReport, Verdict,
    judge_found, problems,
};
use crate::database::migrate::{self, MigrateError, Migration, SchemaState};
use crate::redact::redact_text;

/// Orders whose rows are read per round trip.
const BATCH: usize = 256;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The holder named on the audit rows a repair writes.
pub const REPAIR_HOLDER: &str = "reconcile";

/// Why the database cannot be reconciled (or used by the drill).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is not a PostgreSQL URL.
    #[error("invalid --database URL {url}: {detail}")]
    Invalid {
        /// The URL, without its password.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The server could not be reached, or refused the connection.
    #[error("cannot reach PostgreSQL at {url}: {detail}")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// What went wrong (redacted).
        detail: String,
    },
    /// The schema is missing or behind, and was not to be changed.
    #[error("{0}")]
    Schema(String),
    /// A query failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
}

impl PgError {
    /// A failed query or connection, redacted.
    pub fn query(e: &tokio_postgres::Error) -> PgError {
        PgError::Query(describe(e))
    }
}

/// A PostgreSQL error as one redacted line, with the server's message when
/// it sent one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    let text = match e.as_db_error() {
        Some(db) => format!("{e}: {}", db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    redact_text(&text).into_owned()
}

/// Connects to `url` (bounded in time); the connection runs on the current
/// runtime until the client is dropped.
pub async fn connect(url: &str) -> Result<Client, PgError> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| PgError::Invalid {
        url: crate::database::shown_url(url),
        detail: redact_text(&format!("{e}")).into_owned(),
    })?;
    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        return Err(PgError::Invalid {
            url: crate::database::shown_url(url),
            detail: "expected postgres://[user[:password]@]host[:port]/database".into(),
        });
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    let unreachable = |detail: String| PgError::Unreachable {
        url: crate::database::shown_url(url),
        detail,
    };
    let connecting = config.connect(NoTls);
    let (client, connection) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(unreachable(describe(&e))),
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {}", describe(&e));
        }
    });
    Ok(client)
}

/// Checks that the schema is current; otherwise says how to apply it.
pub async fn check_schema(client: &Client) -> Result<SchemaState, PgError> {
    let state = migrate::state(client).await.map_err(migrate_error)?;
    if state.current() {
        return Ok(state);
    }
    let wanted = migrate::MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    Err(PgError::Schema(if state.version == 0 {
        format!(
            "the database has no warroom schema (PM-003's tables, version {wanted}); nothing was \
             changed: run again with --migrate to apply it"
        )
    } else {
        format!(
            "the database's schema is at version {}, this warroom needs {wanted}; nothing was \
             changed: run again with --migrate to apply the missing migration(s)",
            state.version
        )
    }))
}

/// Applies the pending migrations; returns those applied.
pub async fn apply_schema(client: &mut Client) -> Result<Vec<Migration>, PgError> {
    migrate::migrate(client).await.map_err(migrate_error)
}

fn migrate_error(e: MigrateError) -> PgError {
    match e {
        MigrateError::Database(e) => PgError::query(&e),
        refused @ (MigrateError::Newer { .. }
        | MigrateError::Foreign { .. }
        | MigrateError::Incomplete { .. }) => PgError::Schema(refused.to_string()),
    }
}

/// What [`prepare`] did.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Migrations applied (empty: the schema was current).
    pub applied: Vec<Migration>,
    /// The schema version now.
    pub version: i32,
    /// Lots stocked by this call (0 when they were).
    pub lots_stocked: u64,
}

/// Makes a database ready for a drill: applies the migrations, refuses a
/// database that already holds orders (the drill's report scans every
/// order in it), and stocks the lots the workers reserve from.
pub async fn prepare(client: &mut Client) -> Result<Prepared, PgError> {
    let applied = apply_schema(client).await?;
    let version = migrate::state(client).await.map_err(migrate_error)?.version;
    let orders: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .map_err(|e| PgError::query(&e))?
        .get(0);
    if orders > 0 {
        return Err(PgError::Schema(format!(
            "the database already holds {orders} order(s) from an earlier drill; the drill's \
             reconciliation scans every order in it: give an empty database (CREATE DATABASE …)"
        )));
    }
    let lots: Vec<String> = (0..LOTS).map(lot_id).collect();
    let stocked = client
        .execute(
            "INSERT INTO inventory_lots (lot_id, initial_stock, stock) \
             SELECT unnest($1::text[]), $2, $2 ON CONFLICT (lot_id) DO NOTHING",
            &[&lots, &LOT_STOCK],
        )
        .await
        .map_err(|e| PgError::query(&e))?;
    Ok(Prepared {
        applied,
        version,
        lots_stocked: stocked,
    })
}

/// PM-003's 11:03 query: every order with its held reservations, active
/// fulfillment records and last audited status, and the rules of
/// [`super::reconcile`] as flags. `$1`: order IDs to restrict to (NULL: all).
pub const CHECK: &str = "
WITH res AS (
    SELECT order_id, array_agg(lot_id ORDER BY reservation_id) AS lots
    FROM inventory_reservations WHERE state = 'held' GROUP BY order_id
), ful AS (
    SELECT order_id,
           array_agg(fulfillment_id ORDER BY created_at, fulfillment_id) AS fids,
           array_agg(lot_id ORDER BY created_at, fulfillment_id) AS ful_lots
    FROM fulfillment_records WHERE state = 'active' GROUP BY order_id
), last_status AS (
    SELECT DISTINCT ON (order_id) order_id, value
    FROM order_events WHERE event = 'status' AND kind IN ('change', 'repair')
    ORDER BY order_id, event_id DESC
), audit_fulfilled AS (
    SELECT DISTINCT order_id FROM order_events
    WHERE event = 'status' AND value = 'FULFILLED' AND kind IN ('change', 'repair')
), checked AS (
    SELECT o.order_id, o.status,
           coalesce(res.lots, '{}') AS lots,
           coalesce(ful.fids, '{}') AS fids,
           cardinality(res.lots) > 1 AS two_lots,
           cardinality(ful.fids) > 1 AS two_fulfillments,
           (cardinality(res.lots) = 1 AND o.lot_id IS DISTINCT FROM res.lots[1])
             OR (cardinality(ful.fids) = 1
                 AND (o.fulfillment_id IS DISTINCT FROM ful.fids[1]
                      OR (o.lot_id IS NOT NULL AND ful.ful_lots[1] <> o.lot_id)))
             AS lot_mismatch,
           (ls.value IS NOT NULL AND o.status <> ls.value)
             OR (af.order_id IS NOT NULL AND o.status <> 'FULFILLED')
             OR (o.status = 'FULFILLED' AND (res.lots IS NULL OR ful.fids IS NULL))
             AS status_contradicts_audit
    FROM orders o
    LEFT JOIN res USING (order_id)
    LEFT JOIN ful USING (order_id)
    LEFT JOIN last_status ls USING (order_id)
    LEFT JOIN audit_fulfilled af USING (order_id)
    WHERE $1::text[] IS NULL OR o.order_id = ANY($1)
)";

/// The lots whose stock does not match the reservations held on them.
pub const LOTS_CHECK: &str = "
SELECT l.lot_id, l.initial_stock, l.stock,
       count(r.reservation_id) FILTER (WHERE r.state = 'held') AS held
FROM inventory_lots l LEFT JOIN inventory_reservations r USING (lot_id)
GROUP BY l.lot_id, l.initial_stock, l.stock
HAVING l.initial_stock - l.stock <> count(r.reservation_id) FILTER (WHERE r.state = 'held')
ORDER BY l.lot_id";

/// An order the query flagged.
#[derive(Debug, Clone)]
struct Flagged {
    order: String,
    flags: Vec<&'static str>,
}

async fn flagged(
    client: &impl tokio_postgres::GenericClient,
    only: Option<&[String]>,
) -> Result<(u64, u64, u64, Vec<Flagged>), tokio_postgres::Error> {
    let only: Option<Vec<String>> = only.map(<[String]>::to_vec);
    let counts = client
        .query_one(
            &format!(
                "{CHECK} SELECT count(*), \
                 count(*) FILTER (WHERE NOT (two_lots OR two_fulfillments OR lot_mismatch \
                   OR status_contradicts_audit) AND status = 'PROCESSING') \
                 FROM (SELECT order_id, status, \
                   coalesce(two_lots, false) AS two_lots, \
                   coalesce(two_fulfillments, false) AS two_fulfillments, \
                   coalesce(lot_mismatch, false) AS lot_mismatch, \
                   coalesce(status_contradicts_audit, false) AS status_contradicts_audit \
                   FROM checked) c"
            ),
            &[&only],
        )
        .await?;
    let scanned: i64 = counts.get(0);
    let in_progress: i64 = counts.get(1);
    let rows = client
        .query(
            &format!(
                "{CHECK} SELECT order_id, coalesce(two_lots, false), \
                 coalesce(two_fulfillments, false), coalesce(lot_mismatch, false), \
                 coalesce(status_contradicts_audit, false) FROM checked \
                 WHERE coalesce(two_lots OR two_fulfillments OR lot_mismatch \
                   OR status_contradicts_audit, false) \
                 ORDER BY order_id"
            ),
            &[&only],
        )
        .await?;
    let names = [
        "two_lots",
        "two_fulfillments",
        "lot_mismatch",
        "status_contradicts_audit",
    ];
    let flagged: Vec<Flagged> = rows
        .iter()
        .map(|row| Flagged {
            order: row.get(0),
            flags: names
                .iter()
                .enumerate()
                .filter(|(i, _)| row.get::<_, bool>(i + 1))
                .map(|(_, n)| *n)
                .collect(),
        })
        .collect();
    let consistent = (scanned - in_progress) as u64 - flagged.len() as u64;
    Ok((scanned as u64, consistent, in_progress as u64, flagged))
}

fn token_text(row: &Row, column: &str) -> String {
    row.get::<_, Option<i64>>(column)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The rows and audit log of `ids`, as [`OrderRecords`]. The chains come
/// from the audit tables (every row carries the holder and token it was
/// written under): `status` and `fulfillment_created` rows of
/// `order_events`, `reserved` rows of `inventory_events` (kind `change`;
/// `repair` rows kept apart as the repairs'), merged in time order.
async fn read_records(
    client: &impl tokio_postgres::GenericClient,
    ids: &[String],
) -> Result<Vec<OrderRecords>, tokio_postgres::Error> {
    let mut by_id: HashMap<String, OrderRecords> = HashMap::new();
    for row in client
        .query(
            "SELECT order_id, status, lot_id, fulfillment_id FROM orders \
             WHERE order_id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        by_id.insert(
            row.get(0),
            OrderRecords {
                status: row.get(1),
                lot: row.get(2),
                fulfillment: row.get(3),
                ..OrderRecords::default()
            },
        );
    }
    for row in client
        .query(
            "SELECT order_id, lot_id, state FROM inventory_reservations \
             WHERE order_id = ANY($1) ORDER BY reservation_id",
            &[&ids],
        )
        .await?
    {
        let order: String = row.get("order_id");
        let state: String = row.get("state");
        if let Some(r) = by_id.get_mut(&order)
            && state == "held"
        {
            r.reservations.push(row.get("lot_id"));
        }
    }
    for row in client
        .query(
            "SELECT order_id, fulfillment_id, lot_id, state FROM fulfillment_records \
             WHERE order_id = ANY($1) ORDER BY created_at, fulfillment_id",
            &[&ids],
        )
        .await?
    {
        let order: String = row.get("order_id");
        let fid: String = row.get("fulfillment_id");
        if let Some(r) = by_id.get_mut(&order) {
            r.fulfillments.push(fid.clone());
            r.records.insert(fid, (row.get("lot_id"), row.get("state")));
        }
    }
    // The audit log: (order, created_at µs, table rank, event id) → entry,
    // merged in time order below. Rejected rows changed nothing: left out.
    let mut audit: Vec<(String, i64, u8, i64, AuditEntry)> = Vec::new();
    for row in client
        .query(
            "SELECT order_id, lot_id, holder, token, event_id, \
             (extract(epoch FROM created_at) * 1000000)::bigint AS at \
             FROM inventory_events WHERE order_id = ANY($1) AND kind = 'change' \
             AND event = 'reserved' ORDER BY event_id",
            &[&ids],
        )
        .await?
    {
        audit.push((
            row.get("order_id"),
            row.get("at"),
            1,
            row.get("event_id"),
            AuditEntry {
                table: "inventory_events".into(),
                event: "reserve".into(),
                value: row.get("lot_id"),
                holder: row.get("holder"),
                token: token_text(&row, "token"),
            },
        ));
    }
    for row in client
        .query(
            "SELECT order_id, kind, event, value, holder, token, event_id, \
             (extract(epoch FROM created_at) * 1000000)::bigint AS at \
             FROM order_events WHERE order_id = ANY($1) \
             AND event IN ('status', 'fulfillment_created') \
             AND kind IN ('change', 'repair') ORDER BY event_id",
            &[&ids],
        )
        .await?
    {
        let kind: String = row.get("kind");
        let event: String = row.get("event");
        let (table, event) = match (kind.as_str(), event.as_str()) {
            ("repair", _) => ("repairs", event.as_str()),
            (_, "fulfillment_created") => ("fulfillment_events", "fulfill"),
            _ => ("order_events", "status"),
        };
        audit.push((
            row.get("order_id"),
            row.get("at"),
            0,
            row.get("event_id"),
            AuditEntry {
                table: table.into(),
                event: event.into(),
                value: row.get::<_, Option<String>>("value").unwrap_or_default(),
                holder: row.get("holder"),
                token: token_text(&row, "token"),
            },
        ));
    }
    audit.sort_by_key(|a| (a.1, a.2, a.3));
    for (order, _, _, _, entry) in audit {
        if let Some(r) = by_id.get_mut(&order) {
            r.audit.push(entry);
        }
    }
    Ok(ids
        .iter()
        .map(|id| by_id.remove(id).unwrap_or_default())
        .collect())
}

async fn stock(
    client: &impl tokio_postgres::GenericClient,
) -> Result<HashMap<String, i64>, tokio_postgres::Error> {
    Ok(client
        .query("SELECT lot_id, stock FROM inventory_lots", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// A flagged order as judged in the scan's snapshot: what the report shows
/// of it, and the verdict.
struct Judged {
    order: String,
    lots: Vec<String>,
    fulfillments: Vec<String>,
    status: Option<String>,
    verdict: Verdict,
}

/// What the repair of one order did.
enum Applied {
    Repaired,
    Changed,
}

/// Repairs one order in its own transaction: its row locked, its rows read
/// and judged again, the plan applied only if it still holds.
/// A deadlock with a worker writing the order (or a serialization
/// failure) leaves the order for the next run.
async fn apply(client: &mut Client, order: &str, plan: &Plan) -> Result<Applied, PgError> {
    use tokio_postgres::error::SqlState;
    match apply_once(client, order, plan).await {
        Ok(applied) => Ok(applied),
        Err(e)
            if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
                || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) =>
        {
            Ok(Applied::Changed)
        }
        Err(e) => Err(PgError::query(&e)),
    }
}

async fn apply_once(
    client: &mut Client,
    order: &str,
    plan: &Plan,
) -> Result<Applied, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let locked = tx
        .query_opt(
            "SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE",
            &[&order],
        )
        .await?;
    if locked.is_none() {
        tx.rollback().await?;
        return Ok(Applied::Changed);
    }
    let ids = [order.to_string()];
    let records = read_records(&tx, &ids).await?.pop().unwrap_or_default();
    let stock = stock(&tx).await?;
    let found = problems(&records);
    match judge_found(&records, &stock, found) {
        Verdict::Repairable { plan: now, .. } if now == *plan => {}
        _ => {
            tx.rollback().await?;
            return Ok(Applied::Changed);
        }
    }
    // Reservations: keep the first held one on the kept lot.
    let held = tx
        .query(
            "SELECT reservation_id, lot_id FROM inventory_reservations \
             WHERE order_id = $1 AND state = 'held' ORDER BY reservation_id FOR UPDATE",
            &[&order],
        )
        .await?;
    let mut kept = false;
    for row in held {
        let id: i64 = row.get(0);
        let lot: String = row.get(1);
        if lot == plan.lot && !kept {
            kept = true;
            continue;
        }
        tx.execute(
            "UPDATE inventory_reservations SET state = 'released' WHERE reservation_id = $1",
            &[&id],
        )
        .await?;
        tx.execute(
            "UPDATE inventory_lots SET stock = stock + 1 WHERE lot_id = $1",
            &[&lot],
        )
        .await?;
        tx.execute(
            "INSERT INTO inventory_events (order_id, lot_id, kind, event, quantity, holder) \
             VALUES ($1, $2, 'repair', 'released', -1, $3)",
            &[&order, &lot, &REPAIR_HOLDER],
        )
        .await?;
    }
    let cancelled = tx
        .query(
            "UPDATE fulfillment_records SET state = 'cancelled' \
             WHERE order_id = $1 AND state = 'active' AND fulfillment_id <> $2 \
             RETURNING fulfillment_id",
            &[&order, &plan.fulfillment],
        )
        .await?;
    let mut events: Vec<(&str, String)> = cancelled
        .iter()
        .map(|row| ("fulfillment_cancelled", row.get::<_, String>(0)))
        .collect();
    if records.lot.as_deref() != Some(plan.lot.as_str()) {
        events.push(("lot", plan.lot.clone()));
    }
    if records.fulfillment.as_deref() != Some(plan.fulfillment.as_str()) {
        events.push(("fulfillment", plan.fulfillment.clone()));
    }
    let fulfilled = OrderStatus::Fulfilled.as_str();
    // Also when the status already says FULFILLED but the audit log's last
    // status does not: the repair's status row settles it.
    let last_status = records
        .audit
        .iter()
        .rev()
        .find(|e| e.event == "status")
        .map(|e| e.value.as_str());
    if records.status.as_deref() != Some(fulfilled) || last_status != Some(fulfilled) {
        events.push(("status", fulfilled.to_string()));
    }
    tx.execute(
        "UPDATE orders SET lot_id = $2, fulfillment_id = $3, status = $4, \
         updated_at = clock_timestamp() WHERE order_id = $1",
        &[&order, &plan.lot, &plan.fulfillment, &fulfilled],
    )
    .await?;
    for (event, value) in events {
        tx.execute(
            "INSERT INTO order_events (order_id, kind, event, value, holder) \
             VALUES ($1, 'repair', $2, $3, $4)",
            &[&order, &event, &value, &REPAIR_HOLDER],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Applied::Repaired)
}

/// Finds the orders and lots whose rows disagree; changes nothing.
pub async fn scan(client: &mut Client) -> Result<ReconcileReport, PgError> {
    run(client, false).await
}

/// Finds the orders and lots whose rows disagree and repairs the orders
/// the audit log makes unambiguous, each in its own transaction; the report
/// says which.
pub async fn repair(client: &mut Client) -> Result<ReconcileReport, PgError> {
    run(client, true).await
}

async fn run(client: &mut Client, repairing: bool) -> Result<ReconcileReport, PgError> {
    let q = |e: tokio_postgres::Error| PgError::query(&e);
    let started = Instant::now();
    let mut report = ReconcileReport::default();
    // The scan: one snapshot.
    let mut judged = Vec::new();
    let lots_before;
    {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(q)?;
        let (scanned, consistent, in_progress, flagged) = flagged(&tx, None).await.map_err(q)?;
        report.orders_scanned = scanned;
        report.consistent = consistent;
        report.in_progress = in_progress;
        let stock = stock(&tx).await.map_err(q)?;
        for chunk in flagged.chunks(BATCH) {
            let ids: Vec<String> = chunk.iter().map(|f| f.order.clone()).collect();
            let records = read_records(&tx, &ids).await.map_err(q)?;
            for (f, r) in chunk.iter().zip(records) {
                let mut found = problems(&r);
                if found.is_empty() {
                    found = f.flags.iter().map(|s| s.to_string()).collect();
                }
                let verdict = judge_found(&r, &stock, found);
                // Only what the report shows is kept: the rows and audit
                // log read (the bulk) are dropped here, batch by batch.
                judged.push(Judged {
                    order: f.order.clone(),
                    fulfillments: r.active_fulfillments(),
                    lots: r.reservations,
                    status: r.status,
                    verdict,
                });
            }
        }
        lots_before = lot_findings(&tx).await.map_err(q)?;
        tx.commit().await.map_err(q)?;
    }
    for Judged {
        order,
        lots,
        fulfillments,
        status,
        verdict,
    } in judged
    {
        let finding = |action: &str, problems: Vec<String>| OrderFinding {
            order: order.clone(),
            problems,
            lots: lots.clone(),
            fulfillments: fulfillments.clone(),
            status: status.clone(),
            action: action.to_string(),
            repair: None,
            decide: None,
        };
        report.inconsistent += 1;
        match verdict {
            // The query flagged it; the rules found it consistent after all
            // (it cannot happen while both apply the same rules).
            Verdict::Consistent | Verdict::InProgress => {
                report.ambiguous += 1;
                report.orders.push(OrderFinding {
                    decide: Some("the query and the rules disagree: look at the order".into()),
                    ..finding("ambiguous", Vec::new())
                });
            }
            Verdict::Ambiguous { decide, problems } => {
                report.ambiguous += 1;
                report.orders.push(OrderFinding {
                    decide: Some(decide),
                    ..finding("ambiguous", problems)
                });
            }
            Verdict::Repairable { plan, problems } => {
                report.repairable += 1;
                let what = format!(
                    "keep {} and {} (the first chain to reach FULFILLED); release {} other \
                     reservation(s), cancel {} other fulfillment(s)",
                    plan.lot,
                    plan.fulfillment,
                    lots.len().saturating_sub(1),
                    fulfillments.len().saturating_sub(1)
                );
                let action = if repairing {
                    match apply(client, &order, &plan).await? {
                        Applied::Repaired => {
                            report.repaired += 1;
                            "repaired"
                        }
                        Applied::Changed => "changed",
                    }
                } else {
                    "repairable"
                };
                report.orders.push(OrderFinding {
                    repair: Some(what),
                    ..finding(action, problems)
                });
            }
        }
    }
    // Lots after the repairs made above.
    report.lots = if report.repaired > 0 {
        lot_findings(&*client).await.map_err(q)?
    } else {
        lots_before
    };
    report.lots_mismatched = report.lots.len() as u64;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

async fn lot_findings(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<LotFinding>, tokio_postgres::Error> {
    let mut out = BTreeMap::new();
    for row in client.query(LOTS_CHECK, &[]).await? {
        let lot: String = row.get(0);
        let initial: i64 = row.get(1);
        let left: i64 = row.get(2);
        let held: i64 = row.get(3);
        out.insert(
            lot.clone(),
            LotFinding {
                decide: format!(
                    "{} unit(s) of {lot} are unaccounted for ({} taken from stock, {held} \
                     reserved on orders): count the lot and correct its stock",
                    initial - left - held,
                    initial - left
                ),
                lot,
                initial,
                stock: left,
                reserved: held,
            },
        );
    }
    Ok(out.into_values().collect())
}
