//! Fenced units of work in PostgreSQL: a transaction that is refused, and
//! changes nothing, when the writer's fencing token is lower than the
//! highest token its row has seen.
//!
//! A unit of work (an order's status change with its audit row, a lot
//! reservation with its stock, reservation and audit rows, …) touches
//! several rows and tables. One of its rows carries the fence: a
//! `fence bigint NOT NULL DEFAULT 0` column on the row every writer of the
//! unit locks first (for PM-003's tables: the `orders` row of the order).
//! [`begin`] opens a transaction and, in one statement, locks that row,
//! compares the token with the fence and raises the fence to the token:
//!
//! ```sql
//! UPDATE orders SET fence = CASE WHEN fence <= $2 THEN $2 ELSE fence END
//!  WHERE order_id = $1 RETURNING fence
//! ```
//!
//! A returned fence equal to the token means the writer may go on: the
//! transaction is handed to the caller ([`FencedTransaction`]) for its
//! writes, which it then commits. A higher fence means a newer holder has
//! claimed or written the unit: the transaction is rolled back and the
//! caller gets [`Begin::Stale`], so none of its writes can land. An equal
//! token is accepted, so one holder may write several times under one
//! lease; a lower one never is.
//!
//! # What it guarantees
//!
//! Once a transaction fenced with token `t` has committed, no transaction
//! fenced with a token lower than `t` commits on that unit. The row lock
//! serialises the fenced transactions of a unit: the second waits on the
//! first's lock, and when the lock is released PostgreSQL re-reads the
//! committed row before going on, so it compares against the fence the
//! first one left. READ COMMITTED (PostgreSQL's default) is therefore
//! enough; SERIALIZABLE adds nothing for this check and costs retries.
//! The writes of a refused holder never run, and writes of a holder that
//! becomes stale while its transaction is open are safe too: the newer
//! holder waits for the row lock, so it starts from what the older one
//! committed.
//!
//! # What it assumes
//!
//! - **Every write path of the unit goes through the fence.** A statement
//!   that writes the unit's tables without first locking the fenced row
//!   in the same transaction (a batch job, a console `UPDATE`, a second
//!   service) is not fenced and can overwrite anything. Writers of the
//!   same unit must also lock its rows in the same order (the fenced row
//!   first) so that they cannot deadlock.
//! - **The fence lives on the row every writer locks first.** A fence on a
//!   child row (one reservation) does not protect its siblings.
//! - **Tokens come from one lease per unit** and are strictly increasing
//!   per grant (see the crate's safety argument), and fit in a `bigint`
//!   (below 2^63; larger tokens are refused with
//!   [`PgFenceError::TokenOutOfRange`]).
//! - **A lost commit acknowledgement leaves the outcome unknown.** If the
//!   connection fails while `COMMIT` is in flight, the transaction may or
//!   may not have committed ([`PgFenceError::CommitOutcomeUnknown`]). The
//!   fence does not decide this for the caller: a retry under the same
//!   token is accepted (equal tokens are), so a retried write that is not
//!   idempotent (a stock decrement, an appended audit row) can land twice.
//!   Before retrying, read the unit back on a new connection and look for
//!   the first attempt's effect (a row it inserted, an ID it wrote), or make
//!   the write idempotent. A retry under a lower token than the unit's
//!   fence is refused, as it should be.
//!
//! # Pipelined units
//!
//! [`begin`] answers before the caller writes: `BEGIN`, the fence, the
//! writes, `COMMIT` are four round trips at least. When the unit's writes do
//! not depend on what the fence statement returns, [`write_unit`] sends the
//! fence statement and the writes together (tokio-postgres pipelines them on
//! the connection, in order, in the same transaction) and commits only if
//! the fence accepted the token; a stale holder's writes have run inside the
//! transaction but are rolled back, so none of them is ever visible or
//! committed (only sequence values they drew are consumed, as with any
//! rollback). Three round trips, as many as the same writes unguarded.
//!
//! # The single-statement form: the guard on the unit's own write
//!
//! A write path that is one statement on the fenced row needs no
//! transaction of its own: put the check and the raise in the statement.
//!
//! ```sql
//! UPDATE orders SET status = $3, fence = $2
//!  WHERE order_id = $1 AND fence <= $2;
//! -- 0 rows updated: the row is missing or a newer holder has it (stale)
//! ```
//!
//! (`fence < $2` would refuse a holder's second write under the same
//! lease.) Two separately guarded statements can be interleaved by a newer
//! holder between them, so a unit that writes more than one row puts them
//! in one transaction. When the unit writes the fenced row anyway (an
//! order's status change and its audit row), [`write_unit_guarded`] lets
//! that write carry the guard instead of a fence statement of its own:
//! `BEGIN`; the guarded `UPDATE` of the fenced row (it locks the row,
//! compares and raises the fence, and makes the unit's change to it) first,
//! pipelined with the unit's other writes; `COMMIT` if it updated exactly
//! one row, `ROLLBACK` otherwise. One statement and one row version fewer
//! than [`write_unit`], the same three round trips; only a refused unit
//! pays a fourth, a `SELECT` of the fence that tells
//! [`UnitOutcome::Stale`] from [`UnitOutcome::Missing`].

use std::fmt;

use futures_util::future::{join, try_join_all};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, Transaction};

/// Errors of a fenced unit of work.
#[derive(Debug, thiserror::Error)]
pub enum PgFenceError {
    /// The database failed or could not be reached; the transaction did not
    /// commit.
    #[error("postgres: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// The connection failed while `COMMIT` was in flight: the transaction
    /// may or may not have committed. Read the unit back before retrying
    /// (see the module's documentation).
    #[error("postgres: commit outcome unknown (the connection failed during COMMIT): {0}")]
    CommitOutcomeUnknown(#[source] tokio_postgres::Error),
    /// The token does not fit in a `bigint`.
    #[error("fencing token {0} is above the largest bigint")]
    TokenOutOfRange(u64),
    /// The guarded statement of [`write_unit_guarded`] updated `rows` rows
    /// where exactly one was expected, and the row's fence does not explain
    /// it (the row exists with a fence at most the token, or several rows
    /// matched): its `WHERE` has conditions beyond the key and the fence
    /// that did not hold, or the key is not unique. Rolled back; nothing of
    /// the unit committed.
    #[error(
        "the guarded statement updated {rows} rows, not 1, and the fence did not refuse the token"
    )]
    GuardUnmatched {
        /// Rows the guarded statement updated.
        rows: u64,
    },
    /// A table or column name is not a plain SQL identifier.
    #[error("{0:?} is not a plain SQL identifier (letters, digits and _, optionally schema.name)")]
    InvalidIdentifier(String),
}

/// Where a unit's fence lives: the table, the column holding the unit's key
/// and the column holding the fence (`bigint NOT NULL DEFAULT 0`).
#[derive(Clone, PartialEq, Eq)]
pub struct FencedRow {
    table: String,
    key_column: String,
    fence_column: String,
    raise_sql: String,
    fence_sql: String,
}

impl fmt::Debug for FencedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FencedRow")
            .field("table", &self.table)
            .field("key_column", &self.key_column)
            .field("fence_column", &self.fence_column)
            .finish()
    }
}

fn identifier(name: &str) -> Result<String, PgFenceError> {
    let plain = |part: &str| {
        let mut chars = part.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part.len() <= 63
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
        return Err(PgFenceError::InvalidIdentifier(name.to_string()));
    }
    Ok(parts
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join("."))
}

impl FencedRow {
    /// The fence of `table` (optionally `schema.table`), keyed by
    /// `key_column`, in `fence_column`. Names must be plain identifiers
    /// (letters, digits, `_`); they are quoted in the SQL.
    pub fn new(table: &str, key_column: &str, fence_column: &str) -> Result<Self, PgFenceError> {
        let (table, key_column, fence_column) = (
            identifier(table)?,
            identifier(key_column)?,
            identifier(fence_column)?,
        );
        let raise_sql = format!(
            "UPDATE {table} SET {fence_column} = \
             CASE WHEN {fence_column} <= $2 THEN $2 ELSE {fence_column} END \
             WHERE {key_column} = $1 RETURNING {fence_column}"
        );
        let fence_sql = format!("SELECT {fence_column} FROM {table} WHERE {key_column} = $1");
        Ok(Self {
            table,
            key_column,
            fence_column,
            raise_sql,
            fence_sql,
        })
    }

    /// The table, quoted as used in SQL.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The key column, quoted.
    pub fn key_column(&self) -> &str {
        &self.key_column
    }

    /// The fence column, quoted.
    pub fn fence_column(&self) -> &str {
        &self.fence_column
    }
}

/// What [`begin`] found.
pub enum Begin<'a> {
    /// The token is at least the row's fence; the fence is now the token
    /// and the row is locked until the transaction ends.
    Fenced(FencedTransaction<'a>),
    /// A newer holder has the unit: the row's fence is above the token.
    /// The transaction was rolled back; nothing changed.
    Stale {
        /// The row's fence.
        fence: u64,
    },
    /// No row has the key (nothing changed). See [`begin_or_insert`].
    Missing,
}

impl fmt::Debug for Begin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Begin::Fenced(tx) => f
                .debug_struct("Fenced")
                .field("token", &tx.token)
                .field("created", &tx.created)
                .finish(),
            Begin::Stale { fence } => f.debug_struct("Stale").field("fence", fence).finish(),
            Begin::Missing => f.write_str("Missing"),
        }
    }
}

/// An open transaction whose unit is fenced at the writer's token. Make the
/// unit's writes through [`FencedTransaction::transaction`], then
/// [`FencedTransaction::commit`]. Dropped without commit, it rolls back.
pub struct FencedTransaction<'a> {
    tx: Transaction<'a>,
    token: u64,
    created: bool,
}

impl<'a> FencedTransaction<'a> {
    /// The transaction, for the unit's writes.
    pub fn transaction(&self) -> &Transaction<'a> {
        &self.tx
    }

    /// The token the unit is fenced at.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Whether [`begin_or_insert`] created the row in this transaction.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Commits the unit. A failure of the connection during `COMMIT` is
    /// [`PgFenceError::CommitOutcomeUnknown`]; a refusal by the server is
    /// [`PgFenceError::Database`] (nothing committed).
    pub async fn commit(self) -> Result<(), PgFenceError> {
        self.tx.commit().await.map_err(|e| {
            if e.as_db_error().is_some() {
                PgFenceError::Database(e)
            } else {
                PgFenceError::CommitOutcomeUnknown(e)
            }
        })
    }

    /// Rolls the unit back.
    pub async fn rollback(self) -> Result<(), PgFenceError> {
        Ok(self.tx.rollback().await?)
    }
}

fn token_param(token: u64) -> Result<i64, PgFenceError> {
    i64::try_from(token).map_err(|_| PgFenceError::TokenOutOfRange(token))
}

/// Checks and raises the fence in an open transaction.
async fn raise<'a>(
    tx: Transaction<'a>,
    row: &FencedRow,
    key: &(dyn ToSql + Sync),
    key_type: Type,
    token: u64,
    created: bool,
) -> Result<Begin<'a>, PgFenceError> {
    let param = token_param(token)?;
    let found = tx
        .query_typed_opt(&row.raise_sql, &[(key, key_type), (&param, Type::INT8)])
        .await?;
    let Some(found) = found else {
        tx.rollback().await?;
        return Ok(Begin::Missing);
    };
    let fence: i64 = found.try_get(0)?;
    let fence = fence.max(0) as u64;
    if fence > token {
        tx.rollback().await?;
        return Ok(Begin::Stale { fence });
    }
    Ok(Begin::Fenced(FencedTransaction { tx, token, created }))
}

/// Opens a fenced unit of work on the row whose key column is `key` (of SQL
/// type `key_type`, e.g. [`Type::TEXT`]): locks the row, refuses a token
/// lower than its fence ([`Begin::Stale`]), raises the fence to the token and
/// returns the open transaction ([`Begin::Fenced`]). One round trip after
/// `BEGIN`. A missing row is [`Begin::Missing`].
pub async fn begin<'a>(
    client: &'a mut Client,
    row: &FencedRow,
    key: &(dyn ToSql + Sync),
    key_type: Type,
    token: impl Into<u64>,
) -> Result<Begin<'a>, PgFenceError> {
    let token = token.into();
    token_param(token)?;
    let tx = client.transaction().await?;
    raise(tx, row, key, key_type, token, false).await
}

/// As [`begin`], creating the row first when it is missing:
/// `INSERT … (key, fence, columns…) VALUES (key, 0, values…) ON CONFLICT
/// (key) DO NOTHING`, then the same lock, check and raise, all in one
/// transaction. `columns` gives the values of the row's other required
/// columns (names are plain identifiers, values with their SQL types); they
/// are used only when the row is created. [`FencedTransaction::created`]
/// tells whether it was.
pub async fn begin_or_insert<'a>(
    client: &'a mut Client,
    row: &FencedRow,
    key: &(dyn ToSql + Sync),
    key_type: Type,
    token: impl Into<u64>,
    columns: &[(&str, &(dyn ToSql + Sync), Type)],
) -> Result<Begin<'a>, PgFenceError> {
    let token = token.into();
    token_param(token)?;
    let mut names = vec![row.key_column.clone(), row.fence_column.clone()];
    let mut values = vec!["$1".to_string(), "0".to_string()];
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = vec![(key, key_type.clone())];
    for (i, (name, value, ty)) in columns.iter().enumerate() {
        names.push(identifier(name)?);
        values.push(format!("${}", i + 2));
        params.push((*value, ty.clone()));
    }
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING RETURNING 1",
        row.table,
        names.join(", "),
        values.join(", "),
        row.key_column
    );
    let tx = client.transaction().await?;
    let created = tx.query_typed_opt(&insert, &params).await?.is_some();
    raise(tx, row, key, key_type, token, created).await
}

/// What [`write_unit`], [`write_unit_prepared`] or [`write_unit_guarded`]
/// did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitOutcome {
    /// The token was at least the row's fence: the fence is now the token
    /// and the writes are committed.
    Committed {
        /// Rows each write changed, in order (for [`write_unit_guarded`],
        /// the guarded statement's 1 first).
        rows: Vec<u64>,
    },
    /// A newer holder has the unit (the row's fence is above the token):
    /// rolled back, nothing of the unit committed.
    Stale {
        /// The row's fence.
        fence: u64,
    },
    /// No row has the key: rolled back, nothing committed.
    Missing,
}

/// A fenced unit whose writes are known up front, in three round trips:
/// `BEGIN`; the fence statement of [`begin`] followed by `writes` (prepared
/// statements with their parameters), pipelined in one transaction; then
/// `COMMIT` if the fence accepted the token, `ROLLBACK` otherwise. The row
/// lock is taken by the fence statement, before any write runs. A write
/// that fails rolls the unit back and is returned as the error (unless the
/// token was stale, which is reported first).
pub async fn write_unit(
    client: &mut Client,
    row: &FencedRow,
    key: &(dyn ToSql + Sync),
    key_type: Type,
    token: impl Into<u64>,
    writes: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Result<UnitOutcome, PgFenceError> {
    write_unit_with(
        client,
        Fence::Typed(row, key_type),
        key,
        token.into(),
        writes,
    )
    .await
}

/// As [`write_unit`], with the fence statement prepared on this connection
/// by [`FencedRow::prepare`] (the server then plans it once per connection
/// rather than once per unit).
pub async fn write_unit_prepared(
    client: &mut Client,
    fence: &PreparedFence,
    key: &(dyn ToSql + Sync),
    token: impl Into<u64>,
    writes: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Result<UnitOutcome, PgFenceError> {
    write_unit_with(
        client,
        Fence::Prepared(&fence.statement),
        key,
        token.into(),
        writes,
    )
    .await
}

/// The fence statement of a [`FencedRow`], prepared on one connection (use
/// it on that connection only).
#[derive(Debug, Clone)]
pub struct PreparedFence {
    statement: Statement,
}

impl FencedRow {
    /// Prepares the fence statement on `client`'s connection, for a key of
    /// SQL type `key_type`.
    pub async fn prepare(
        &self,
        client: &Client,
        key_type: Type,
    ) -> Result<PreparedFence, PgFenceError> {
        let statement = client
            .prepare_typed(&self.raise_sql, &[key_type, Type::INT8])
            .await?;
        Ok(PreparedFence { statement })
    }
}

enum Fence<'a> {
    Typed(&'a FencedRow, Type),
    Prepared(&'a Statement),
}

async fn write_unit_with(
    client: &mut Client,
    fence_statement: Fence<'_>,
    key: &(dyn ToSql + Sync),
    token: u64,
    writes: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Result<UnitOutcome, PgFenceError> {
    let param = token_param(token)?;
    let tx = client.transaction().await?;
    let raise = async {
        match fence_statement {
            Fence::Typed(row, key_type) => {
                tx.query_typed_opt(&row.raise_sql, &[(key, key_type), (&param, Type::INT8)])
                    .await
            }
            Fence::Prepared(statement) => tx.query_opt(statement, &[key, &param]).await,
        }
    };
    let (found, written) = join(
        raise,
        try_join_all(
            writes
                .iter()
                .map(|(statement, params)| tx.execute(*statement, params)),
        ),
    )
    .await;
    let Some(found) = found? else {
        tx.rollback().await?;
        return Ok(UnitOutcome::Missing);
    };
    let fence: i64 = found.try_get(0)?;
    let fence = fence.max(0) as u64;
    if fence > token {
        tx.rollback().await?;
        return Ok(UnitOutcome::Stale { fence });
    }
    let rows = written?;
    tx.commit().await.map_err(|e| {
        if e.as_db_error().is_some() {
            PgFenceError::Database(e)
        } else {
            PgFenceError::CommitOutcomeUnknown(e)
        }
    })?;
    Ok(UnitOutcome::Committed { rows })
}

/// A fenced unit whose first write of the fenced row carries the guard, in
/// three round trips and without a fence statement of its own (see the
/// module's documentation, "The single-statement form").
///
/// `guarded` is the caller's `UPDATE` of the fenced row (prepared, with its
/// parameters), written so that it checks and raises the fence itself:
///
/// ```sql
/// UPDATE orders SET status = $2, fence = $3
///  WHERE order_id = $1 AND fence <= $3
/// ```
///
/// - its `WHERE` **must** select the row of `key` by `row`'s key column and
///   carry the condition `fence <= token` (`<=`: an equal token is
///   accepted, so one holder may write several times under one lease);
/// - it **must** set the fence to the token (`fence = token`);
/// - the token it is given among its parameters must be `token`.
///
/// None of this can be checked here; a statement without the condition is
/// not fenced. `BEGIN`; `guarded`, then `rest`, pipelined in one
/// transaction (the guarded statement runs first, so it takes the row lock
/// before any other write runs, and a unit waiting on that lock re-reads
/// the fence the previous holder committed); `COMMIT` if the guarded
/// statement updated exactly one row. Otherwise the unit is rolled back
/// (the writes of `rest` ran in the transaction and are never visible) and
/// one `SELECT` of the row's fence tells [`UnitOutcome::Stale`] (a fence
/// above the token) from [`UnitOutcome::Missing`] (no row); a row whose
/// fence is at most the token, or several rows updated, is
/// [`PgFenceError::GuardUnmatched`]. A write that fails rolls the unit back
/// and is returned as the error (unless the unit was refused, which is
/// reported first). `key` (of SQL type `key_type`) is used by that `SELECT`
/// only.
pub async fn write_unit_guarded(
    client: &mut Client,
    row: &FencedRow,
    key: &(dyn ToSql + Sync),
    key_type: Type,
    token: impl Into<u64>,
    guarded: (&Statement, &[&(dyn ToSql + Sync)]),
    rest: &[(&Statement, &[&(dyn ToSql + Sync)])],
) -> Result<UnitOutcome, PgFenceError> {
    let token = token.into();
    token_param(token)?;
    let tx = client.transaction().await?;
    let (first, written) = join(
        tx.execute(guarded.0, guarded.1),
        try_join_all(
            rest.iter()
                .map(|(statement, params)| tx.execute(*statement, params)),
        ),
    )
    .await;
    let first = match first {
        Ok(rows) => rows,
        Err(e) => {
            tx.rollback().await?;
            return Err(e.into());
        }
    };
    if first != 1 {
        tx.rollback().await?;
        if first > 1 {
            return Err(PgFenceError::GuardUnmatched { rows: first });
        }
        let found = client
            .query_typed_opt(&row.fence_sql, &[(key, key_type)])
            .await?;
        let Some(found) = found else {
            return Ok(UnitOutcome::Missing);
        };
        let fence: i64 = found.try_get(0)?;
        let fence = fence.max(0) as u64;
        if fence > token {
            return Ok(UnitOutcome::Stale { fence });
        }
        return Err(PgFenceError::GuardUnmatched { rows: 0 });
    }
    let mut rows = vec![first];
    rows.extend(written?);
    tx.commit().await.map_err(|e| {
        if e.as_db_error().is_some() {
            PgFenceError::Database(e)
        } else {
            PgFenceError::CommitOutcomeUnknown(e)
        }
    })?;
    Ok(UnitOutcome::Committed { rows })
}
