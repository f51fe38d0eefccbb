//! `warroom bench fence`: what fencing costs in PostgreSQL, and what it buys.
//!
//! The unit of work is the order pipeline's status change: in one
//! transaction, set an order's status and append its `order_events` row
//! (PM-003's tables). Run two ways with the same workers, connections,
//! orders and duration:
//!
//! - **unguarded**: `BEGIN`, the two writes, `COMMIT` (PM-003's path);
//! - **fenced**: [`warroom_lock::fence::postgres::write_unit_guarded`]:
//!   `BEGIN`; the same two writes pipelined, the status `UPDATE` carrying
//!   the guard (`fence = $token … WHERE order_id = $1 AND fence <= $token`:
//!   it locks the order's row, checks and raises its fence as it sets the
//!   status); `COMMIT` if it updated the row, else `ROLLBACK` and one
//!   `SELECT` of the fence (refused units only). Three round trips and two
//!   statements, as unguarded;
//! - **fenced-begin**: [`warroom_lock::fence::postgres::begin`] (`BEGIN`, the
//!   fence statement unprepared, answered), then the two writes, `COMMIT`:
//!   one round trip and one statement plan more, for writes that depend on
//!   what the row holds.
//!
//! Each writer takes a fresh token from one counter (as lease grants do), so
//! a fenced unit is refused only when a newer token has written the order in
//! between; those refusals are counted. The paths alternate in rounds
//! (unguarded, fenced, fenced-begin, fenced-begin, fenced, unguarded) so that
//! none gets the warmer cache or the smaller tables. Reported: units/s of
//! each, the ratio fenced ÷ unguarded (target ≥ 0.9) and fenced-begin ÷
//! unguarded, and per-unit latency p50/p99.
//!
//! A second phase adds GC pauses: a holder takes a token for an order and
//! pauses past its lease; a newer holder takes the next token and writes
//! the order; the first wakes up and writes. Unguarded, every such stale
//! write lands; fenced, none does. Both are counted from the tables (audit
//! rows written by the paused holders), not from what the client was told.
//!
//! **Where it writes.** Never in the database `--database` names: it
//! connects there only to create a scratch database `warroom_bench_<pid>`
//! on the same server, applies PM-003's schema to it, runs, and drops it at
//! the end (also when the run fails). The user needs `CREATEDB`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use warroom_lock::fence::postgres::{self as pgfence, Begin, FencedRow, UnitOutcome};

use crate::redact::redact_text;

/// Ranges of the benchmark's numbers (the CLI checks them too).
pub mod limits {
    /// Concurrent writers (one connection each; PostgreSQL's default
    /// `max_connections` is 100).
    pub const CONCURRENCY: std::ops::RangeInclusive<usize> = 1..=64;
    /// Distinct orders written.
    pub const ORDERS: std::ops::RangeInclusive<usize> = 1..=1_000_000;
    /// Seconds each path runs in the throughput phase.
    pub const DURATION_SECONDS: (f64, f64) = (0.2, 3600.0);
    /// Paused holders in the second phase, per path.
    pub const PAUSES: std::ops::RangeInclusive<usize> = 0..=10_000;
    /// Length of a pause in milliseconds.
    pub const PAUSE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;
}

/// The benchmark's parameters.
#[derive(Debug, Clone)]
pub struct FenceBench {
    /// A URL to a database on the server to use (its own tables are not
    /// touched; the scratch database is created next to it).
    pub database: String,
    /// Concurrent writers, each with a connection.
    pub concurrency: usize,
    /// Distinct orders the writers pick from at random.
    pub orders: usize,
    /// How long each path runs in the throughput phase (split in rounds).
    pub duration: Duration,
    /// Paused holders per path in the second phase.
    pub pauses: usize,
    /// How long each paused holder pauses (past its lease).
    pub pause: Duration,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum FenceBenchError {
    /// A parameter is out of range.
    #[error("{0}")]
    Invalid(String),
    /// The database failed or could not be reached (URL password redacted).
    #[error("{0}")]
    Database(String),
}

fn db_error(context: &str, e: impl std::fmt::Display) -> FenceBenchError {
    FenceBenchError::Database(redact_text(&format!("{context}: {e}")).into_owned())
}

/// One path's throughput and latency.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    /// `unguarded`, `fenced` or `fenced-begin`.
    pub path: &'static str,
    /// Units committed.
    pub units: u64,
    /// Units refused by the fence (a newer token had written the order).
    pub refused: u64,
    /// Seconds the path ran, all rounds together.
    pub seconds: f64,
    /// Units (committed or refused) per second.
    pub units_per_sec: f64,
    /// Median latency of a unit, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of a unit, milliseconds.
    pub p99_ms: f64,
}

/// The pause phase of one path.
#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    /// `unguarded` or `fenced`.
    pub path: &'static str,
    /// Holders that paused past their lease and then wrote.
    pub paused_holders: u64,
    /// Their writes the client was told were accepted.
    pub accepted_by_store: u64,
    /// Their audit rows of kind `change` found in the tables afterwards:
    /// stale writes that landed.
    pub stale_writes_in_tables: u64,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct FenceBenchReport {
    /// The scratch database it ran in (dropped since).
    pub scratch_database: String,
    /// The server, as it may be shown.
    pub server: String,
    /// Concurrent writers.
    pub concurrency: usize,
    /// Distinct orders.
    pub orders: usize,
    /// Unguarded, fenced, fenced-begin.
    pub throughput: [PathReport; 3],
    /// fenced units/s ÷ unguarded units/s (target ≥ 0.9).
    pub ratio: f64,
    /// fenced-begin units/s ÷ unguarded units/s.
    pub ratio_begin: f64,
    /// Unguarded, then fenced.
    pub pauses: [PauseReport; 2],
    /// Pause length, milliseconds.
    pub pause_ms: u64,
}

impl FenceBench {
    fn check(&self) -> Result<(), FenceBenchError> {
        let invalid = |m: String| Err(FenceBenchError::Invalid(m));
        if !limits::CONCURRENCY.contains(&self.concurrency) {
            return invalid(format!(
                "concurrency must be 1 to {}, not {}",
                limits::CONCURRENCY.end(),
                self.concurrency
            ));
        }
        if !limits::ORDERS.contains(&self.orders) {
            return invalid(format!(
                "orders must be 1 to {}, not {}",
                limits::ORDERS.end(),
                self.orders
            ));
        }
        let (low, high) = limits::DURATION_SECONDS;
        let seconds = self.duration.as_secs_f64();
        if !(low..=high).contains(&seconds) {
            return invalid(format!(
                "duration must be {low} to {high} seconds, not {seconds}"
            ));
        }
        if !limits::PAUSES.contains(&self.pauses) {
            return invalid(format!(
                "pauses must be 0 to {}, not {}",
                limits::PAUSES.end(),
                self.pauses
            ));
        }
        let pause_ms = self.pause.as_millis() as u64;
        if !limits::PAUSE_MS.contains(&pause_ms) {
            return invalid(format!(
                "pause must be 1 to {} ms, not {pause_ms}",
                limits::PAUSE_MS.end()
            ));
        }
        Ok(())
    }

    /// Runs both phases in a scratch database and drops it.
    pub async fn run(&self) -> Result<FenceBenchReport, FenceBenchError> {
        self.check()?;
        let shown = redact_text(&self.database).into_owned();
        let mut server: tokio_postgres::Config = self.database.parse().map_err(|e| {
            FenceBenchError::Invalid(format!("{shown} is not a usable PostgreSQL URL: {e}"))
        })?;
        server.connect_timeout(Duration::from_secs(5));
        server.application_name("warroom bench fence");
        let scratch = format!("warroom_bench_{}", std::process::id());
        let admin = connect(&server, &shown).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {scratch}"))
            .await
            .map_err(|e| db_error(&format!("cannot create database {scratch} on {shown}"), e))?;
        let mut config = server.clone();
        config.dbname(&scratch);
        let result = self.run_in(&config, &shown, &scratch).await;
        let dropped = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)"))
            .await;
        let report = result?;
        dropped.map_err(|e| db_error(&format!("cannot drop database {scratch}"), e))?;
        Ok(report)
    }

    async fn run_in(
        &self,
        config: &tokio_postgres::Config,
        shown: &str,
        scratch: &str,
    ) -> Result<FenceBenchReport, FenceBenchError> {
        let mut setup = connect(config, shown).await?;
        crate::database::migrate::migrate(&mut setup)
            .await
            .map_err(|e| db_error("cannot apply PM-003's schema", e))?;
        let orders: Vec<String> = (0..self.orders).map(|n| format!("ord-{n:07}")).collect();
        setup
            .query_typed(
                "INSERT INTO orders (order_id, status) SELECT o, 'PROCESSING' FROM unnest($1::text[]) AS o",
                &[(&orders, Type::TEXT_ARRAY)],
            )
            .await
            .map_err(|e| db_error("cannot create the orders", e))?;
        setup
            .batch_execute("VACUUM ANALYZE orders")
            .await
            .map_err(|e| db_error("cannot vacuum", e))?;
        let mut writers = Vec::with_capacity(self.concurrency);
        for _ in 0..self.concurrency {
            writers.push(UnitWriter::connect(config, shown).await?);
        }
        let shared = Arc::new(Shared {
            orders,
            tokens: AtomicU64::new(0),
        });

        // Throughput: rounds in the order U F B B F U.
        let round = self.duration / 2;
        let mut totals = [Totals::new(), Totals::new(), Totals::new()];
        for path in [
            Path::Unguarded,
            Path::Fenced,
            Path::FencedBegin,
            Path::FencedBegin,
            Path::Fenced,
            Path::Unguarded,
        ] {
            let (back, totals_round) = run_round(writers, &shared, path, round).await?;
            writers = back;
            totals[path as usize].merge(&totals_round);
        }
        let throughput = [
            totals[0].report(Path::Unguarded.name()),
            totals[1].report(Path::Fenced.name()),
            totals[2].report(Path::FencedBegin.name()),
        ];
        let ratio_of = |p: &PathReport| {
            if throughput[0].units_per_sec > 0.0 {
                p.units_per_sec / throughput[0].units_per_sec
            } else {
                0.0
            }
        };
        let (ratio, ratio_begin) = (ratio_of(&throughput[1]), ratio_of(&throughput[2]));

        // Pauses: holders whose lease ran out while they were paused (a
        // trial takes two connections).
        if writers.len() < 2 {
            writers.push(UnitWriter::connect(config, shown).await?);
        }
        let mut pauses = Vec::new();
        for fenced in [false, true] {
            let (back, accepted) = run_pauses(writers, &shared, fenced, self).await?;
            writers = back;
            let path = if fenced { "fenced" } else { "unguarded" };
            let in_tables: i64 = setup
                .query_one(
                    "SELECT count(*) FROM order_events WHERE kind = 'change' AND holder LIKE $1",
                    &[&format!("paused-{path}-%")],
                )
                .await
                .map_err(|e| db_error("cannot count stale writes", e))?
                .get(0);
            pauses.push(PauseReport {
                path,
                paused_holders: self.pauses as u64,
                accepted_by_store: accepted,
                stale_writes_in_tables: in_tables.max(0) as u64,
            });
        }
        drop(writers);
        let [unguarded, fenced] = <[PauseReport; 2]>::try_from(pauses).expect("two paths");
        Ok(FenceBenchReport {
            scratch_database: scratch.to_string(),
            server: shown.to_string(),
            concurrency: self.concurrency,
            orders: self.orders,
            throughput,
            ratio,
            ratio_begin,
            pauses: [unguarded, fenced],
            pause_ms: self.pause.as_millis() as u64,
        })
    }
}

async fn connect(config: &tokio_postgres::Config, shown: &str) -> Result<Client, FenceBenchError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| db_error(&format!("cannot connect to PostgreSQL at {shown}"), e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// How a unit is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Unguarded = 0,
    Fenced = 1,
    FencedBegin = 2,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Unguarded => "unguarded",
            Path::Fenced => "fenced",
            Path::FencedBegin => "fenced-begin",
        }
    }
}

struct Shared {
    orders: Vec<String>,
    /// The token counter (a lease grant takes the next one).
    tokens: AtomicU64,
}

impl Shared {
    fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A writer's connection with the unit's statements prepared.
struct UnitWriter {
    client: Client,
    /// The status change carrying the fence's guard.
    guarded: Statement,
    status: Statement,
    event: Statement,
}

/// What one unit did.
enum Unit {
    Committed,
    Refused,
}

impl UnitWriter {
    async fn connect(
        config: &tokio_postgres::Config,
        shown: &str,
    ) -> Result<Self, FenceBenchError> {
        let client = connect(config, shown).await?;
        let status = client
            .prepare(
                "UPDATE orders SET status = $2, updated_at = clock_timestamp() WHERE order_id = $1",
            )
            .await
            .map_err(|e| db_error("prepare", e))?;
        let event = client
            .prepare(
                "INSERT INTO order_events (order_id, event, value, holder, token) \
                 VALUES ($1, 'status', $2, $3, $4)",
            )
            .await
            .map_err(|e| db_error("prepare", e))?;
        let guarded = client
            .prepare_typed(
                "UPDATE orders SET status = $2, updated_at = clock_timestamp(), fence = $3 \
                 WHERE order_id = $1 AND fence <= $3",
                &[Type::TEXT, Type::TEXT, Type::INT8],
            )
            .await
            .map_err(|e| db_error("prepare", e))?;
        Ok(Self {
            client,
            guarded,
            status,
            event,
        })
    }

    /// The unit: the status and its audit row in one transaction; fenced
    /// with `token` when given.
    async fn unit(
        &mut self,
        order: &str,
        status: &str,
        holder: &str,
        path: Path,
        token: u64,
    ) -> Result<Unit, FenceBenchError> {
        let token_param = (path != Path::Unguarded).then_some(token as i64);
        let (status_stmt, event_stmt) = (self.status.clone(), self.event.clone());
        let writes = |tx| {
            unit_writes(
                tx,
                &status_stmt,
                &event_stmt,
                order,
                status,
                holder,
                token_param,
            )
        };
        match path {
            Path::Unguarded => {
                let tx = self
                    .client
                    .transaction()
                    .await
                    .map_err(|e| db_error("begin", e))?;
                writes(&tx).await.map_err(|e| db_error("write", e))?;
                tx.commit().await.map_err(|e| db_error("commit", e))?;
                Ok(Unit::Committed)
            }
            Path::Fenced => {
                let set: [&(dyn ToSql + Sync); 3] = [&order, &status, &token_param];
                let audit: [&(dyn ToSql + Sync); 4] = [&order, &status, &holder, &token_param];
                let outcome = pgfence::write_unit_guarded(
                    &mut self.client,
                    orders_row(),
                    &order,
                    Type::TEXT,
                    token,
                    (&self.guarded, &set),
                    &[(&self.event, &audit)],
                )
                .await
                .map_err(|e| db_error("fenced unit", e))?;
                match outcome {
                    UnitOutcome::Committed { .. } => Ok(Unit::Committed),
                    UnitOutcome::Stale { .. } => Ok(Unit::Refused),
                    UnitOutcome::Missing => Err(FenceBenchError::Database(format!(
                        "order {order} is missing from the scratch database"
                    ))),
                }
            }
            Path::FencedBegin => {
                let begun =
                    pgfence::begin(&mut self.client, orders_row(), &order, Type::TEXT, token)
                        .await
                        .map_err(|e| db_error("fence", e))?;
                match begun {
                    Begin::Fenced(unit) => {
                        writes(unit.transaction())
                            .await
                            .map_err(|e| db_error("write", e))?;
                        unit.commit().await.map_err(|e| db_error("commit", e))?;
                        Ok(Unit::Committed)
                    }
                    Begin::Stale { .. } => Ok(Unit::Refused),
                    Begin::Missing => Err(FenceBenchError::Database(format!(
                        "order {order} is missing from the scratch database"
                    ))),
                }
            }
        }
    }
}

/// The unit's two writes, pipelined on the connection.
async fn unit_writes(
    tx: &tokio_postgres::Transaction<'_>,
    status_stmt: &Statement,
    event_stmt: &Statement,
    order: &str,
    status: &str,
    holder: &str,
    token: Option<i64>,
) -> Result<(), tokio_postgres::Error> {
    let set: [&(dyn ToSql + Sync); 2] = [&order, &status];
    let audit: [&(dyn ToSql + Sync); 4] = [&order, &status, &holder, &token];
    futures::try_join!(
        tx.execute(status_stmt, &set),
        tx.execute(event_stmt, &audit)
    )
    .map(drop)
}

fn orders_row() -> &'static FencedRow {
    static ROW: std::sync::LazyLock<FencedRow> = std::sync::LazyLock::new(|| {
        FencedRow::new("orders", "order_id", "fence").expect("plain identifiers")
    });
    &ROW
}

struct Totals {
    units: u64,
    refused: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Totals {
    fn new() -> Self {
        Self {
            units: 0,
            refused: 0,
            elapsed: Duration::ZERO,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
        }
    }

    fn merge(&mut self, other: &Totals) {
        self.units += other.units;
        self.refused += other.refused;
        self.elapsed += other.elapsed;
        let _ = self.latency_us.add(&other.latency_us);
    }

    fn report(&self, path: &'static str) -> PathReport {
        let seconds = self.elapsed.as_secs_f64();
        PathReport {
            path,
            units: self.units,
            refused: self.refused,
            seconds,
            units_per_sec: if seconds > 0.0 {
                (self.units + self.refused) as f64 / seconds
            } else {
                0.0
            },
            p50_ms: self.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}

/// One round of one path: every writer runs units on random orders for
/// `length`; the writers are handed back for the next round.
async fn run_round(
    writers: Vec<UnitWriter>,
    shared: &Arc<Shared>,
    path: Path,
    length: Duration,
) -> Result<(Vec<UnitWriter>, Totals), FenceBenchError> {
    let start = Instant::now();
    let end = start + length;
    let mut tasks = Vec::with_capacity(writers.len());
    for (n, mut writer) in writers.into_iter().enumerate() {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut totals = Totals::new();
            let holder = format!("bench-{n}");
            let mut result = Ok(());
            while Instant::now() < end {
                let order = &shared.orders[rand::random_range(0..shared.orders.len())];
                let token = shared.token();
                let status = if rand::random::<bool>() {
                    "PROCESSING"
                } else {
                    "FULFILLED"
                };
                let began = Instant::now();
                match writer.unit(order, status, &holder, path, token).await {
                    Ok(Unit::Committed) => totals.units += 1,
                    Ok(Unit::Refused) => totals.refused += 1,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
                let _ = totals
                    .latency_us
                    .record((began.elapsed().as_micros() as u64).max(1));
            }
            (writer, totals, result)
        }));
    }
    let mut back = Vec::with_capacity(tasks.len());
    let mut totals = Totals::new();
    let mut failure = None;
    for task in tasks {
        let (writer, t, result) = task
            .await
            .map_err(|e| FenceBenchError::Database(format!("a writer failed: {e}")))?;
        back.push(writer);
        totals.merge(&t);
        if let Err(e) = result {
            failure.get_or_insert(e);
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Rounds run side by side across writers: the round's wall time.
    totals.elapsed = start.elapsed();
    Ok((back, totals))
}

/// The pause phase of one path: `bench.pauses` holders, spread over the
/// writers, each on an order of its own. Returns the writers and how many
/// stale writes the store accepted.
async fn run_pauses(
    writers: Vec<UnitWriter>,
    shared: &Arc<Shared>,
    fenced: bool,
    bench: &FenceBench,
) -> Result<(Vec<UnitWriter>, u64), FenceBenchError> {
    let kind = if fenced {
        Path::Fenced
    } else {
        Path::Unguarded
    };
    let path = kind.name();
    let pairs = (writers.len() / 2).max(1);
    let per_pair = bench.pauses.div_ceil(pairs);
    let mut tasks = Vec::new();
    let mut next = 0usize;
    // Two connections per trial (the paused holder and its successor).
    let mut writers = writers.into_iter();
    let mut idle = Vec::new();
    loop {
        let (Some(mut paused), Some(mut newer)) = (writers.next(), writers.next()) else {
            break;
        };
        let trials: Vec<usize> = (next..(next + per_pair).min(bench.pauses)).collect();
        next += trials.len();
        if trials.is_empty() {
            idle.push(paused);
            idle.push(newer);
            continue;
        }
        let shared = shared.clone();
        let pause = bench.pause;
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            for trial in trials {
                let order = &shared.orders[trial % shared.orders.len()];
                // The paused holder is granted the lease first…
                let old = shared.token();
                // …pauses past it, while the next holder is granted and writes.
                let sleep = tokio::time::sleep(pause);
                let new = shared.token();
                newer
                    .unit(
                        order,
                        "FULFILLED",
                        &format!("newer-{path}-{trial}"),
                        kind,
                        new,
                    )
                    .await?;
                sleep.await;
                // The paused holder wakes up and writes from its stale read.
                if let Unit::Committed = paused
                    .unit(
                        order,
                        "PROCESSING",
                        &format!("paused-{path}-{trial}"),
                        kind,
                        old,
                    )
                    .await?
                {
                    accepted += 1;
                }
            }
            Ok::<_, FenceBenchError>((paused, newer, accepted))
        }));
    }
    idle.extend(writers);
    let mut accepted = 0;
    let mut failure = None;
    for task in tasks {
        match task
            .await
            .map_err(|e| FenceBenchError::Database(format!("a writer failed: {e}")))?
        {
            Ok((a, b, n)) => {
                idle.push(a);
                idle.push(b);
                accepted += n;
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok((idle, accepted))
}
