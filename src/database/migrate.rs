//! Versioned migrations of PM-003's tables.
//!
//! Each migration runs in its own transaction together with the row that
//! records it in `warroom_migrations`, under a transaction-level advisory
//! lock, so two processes migrating the same database at once apply each
//! version exactly once, and a failed migration leaves nothing behind.

use tokio_postgres::Client;

/// One version of the schema.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Its version, from 1, in the order they apply.
    pub version: i32,
    /// A short name (the file name without the version and `.sql`).
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
    /// The tables it creates: present once it is recorded as applied, and
    /// not warroom's if present before.
    pub tables: &'static [&'static str],
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "pm003_tables",
    sql: include_str!("../../migrations/0001_pm003_tables.sql"),
    tables: &[
        "orders",
        "inventory_lots",
        "inventory_reservations",
        "fulfillment_records",
        "order_events",
        "inventory_events",
    ],
}];

/// The advisory lock key migrations hold (`warroom` in ASCII).
const LOCK_KEY: i64 = 0x0077_6172_726f_6f6d;

/// The version a database is at and what is left to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaState {
    /// The highest version applied (0: none).
    pub version: i32,
    /// Versions not applied yet, in order.
    pub pending: Vec<i32>,
}

impl SchemaState {
    /// Whether every migration is applied.
    pub fn current(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Why the schema cannot be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database failed or could not be reached.
    #[error("{0}")]
    Database(#[from] tokio_postgres::Error),
    /// The database is at a version this warroom does not know.
    #[error(
        "the database's schema is at version {found}, newer than this warroom knows ({known}); \
         use a newer warroom"
    )]
    Newer {
        /// The version found.
        found: i32,
        /// The newest version known here.
        known: i32,
    },
    /// Tables a migration creates exist already, but the migration is not
    /// recorded: they are someone else's (or a failed hand-made copy).
    #[error(
        "the database already holds table(s) {} that warroom's schema (version {version}) \
         would create, but no warroom migration is recorded: nothing was changed; use another \
         database, or move those tables away",
        tables.join(", ")
    )]
    Foreign {
        /// The migration that would create them.
        version: i32,
        /// The tables found.
        tables: Vec<String>,
    },
    /// A migration is recorded as applied but tables it creates are missing
    /// (dropped by hand, or the record written by hand).
    #[error(
        "the database's schema is recorded at version {version} but table(s) {} are missing: \
         nothing was changed; restore them, or use another database",
        missing.join(", ")
    )]
    Incomplete {
        /// The version recorded.
        version: i32,
        /// The tables missing.
        missing: Vec<String>,
    },
}

/// The tables of `migration` that exist (`present`) or not (`!present`),
/// as the search path resolves them.
async fn tables_where(
    client: &impl tokio_postgres::GenericClient,
    migration: &Migration,
    present: bool,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let names: Vec<String> = migration.tables.iter().map(|t| t.to_string()).collect();
    Ok(client
        .query(
            "SELECT t FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n) \
             WHERE (to_regclass(quote_ident(t)) IS NOT NULL) = $2 ORDER BY n",
            &[&names, &present],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// Checks that the tables of every applied migration exist.
async fn check_applied(
    client: &impl tokio_postgres::GenericClient,
    version: i32,
) -> Result<(), MigrateError> {
    for migration in MIGRATIONS.iter().filter(|m| m.version <= version) {
        let missing = tables_where(client, migration, false).await?;
        if !missing.is_empty() {
            return Err(MigrateError::Incomplete { version, missing });
        }
    }
    Ok(())
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS warroom_migrations (\
     version integer PRIMARY KEY, \
     name text NOT NULL, \
     applied_at timestamptz NOT NULL DEFAULT now())";

/// The schema's state, read without changing anything.
pub async fn state(client: &Client) -> Result<SchemaState, MigrateError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('warroom_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    let version: i32 = if exists {
        client
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM warroom_migrations",
                &[],
            )
            .await?
            .get(0)
    } else {
        0
    };
    let state = state_at(version)?;
    check_applied(client, version).await?;
    if let Some(next) = MIGRATIONS.iter().find(|m| m.version == version + 1) {
        let tables = tables_where(client, next, true).await?;
        if !tables.is_empty() {
            return Err(MigrateError::Foreign {
                version: next.version,
                tables,
            });
        }
    }
    Ok(state)
}

fn state_at(version: i32) -> Result<SchemaState, MigrateError> {
    let known = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    if version > known {
        return Err(MigrateError::Newer {
            found: version,
            known,
        });
    }
    Ok(SchemaState {
        version,
        pending: MIGRATIONS
            .iter()
            .filter(|m| m.version > version)
            .map(|m| m.version)
            .collect(),
    })
}

/// Applies every pending migration; returns those applied (none when the
/// schema is current).
pub async fn migrate(client: &mut Client) -> Result<Vec<Migration>, MigrateError> {
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        tx.batch_execute(CREATE_TABLE).await?;
        let done: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM warroom_migrations WHERE version = $1)",
                &[&migration.version],
            )
            .await?
            .get(0);
        let newest: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM warroom_migrations",
                &[],
            )
            .await?
            .get(0);
        state_at(newest)?;
        if done {
            check_applied(&tx, migration.version).await?;
            tx.rollback().await?;
            continue;
        }
        let tables = tables_where(&tx, migration, true).await?;
        if !tables.is_empty() {
            return Err(MigrateError::Foreign {
                version: migration.version,
                tables,
            });
        }
        tx.batch_execute(migration.sql).await?;
        tx.execute(
            "INSERT INTO warroom_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await?;
        tx.commit().await?;
        applied.push(*migration);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "{}", m.name);
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        assert!(matches!(
            state_at(MIGRATIONS.len() as i32 + 1),
            Err(MigrateError::Newer { .. })
        ));
        assert!(state_at(0).unwrap().pending.len() == MIGRATIONS.len());
        assert!(state_at(MIGRATIONS.len() as i32).unwrap().current());
    }
}
