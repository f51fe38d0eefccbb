//! PM-003's tables in PostgreSQL: the versioned schema ([`migrate`]) the
//! drill's PostgreSQL order store and `warroom reconcile --database` use.
//!
//! The schema is in `migrations/` at the repository's root, one file per
//! version, embedded in the binary. It is applied only when asked: the drill
//! applies it to the database it is given (and says so), `warroom reconcile`
//! with `--migrate`; anything else that finds the schema missing or behind
//! stops with the command that applies it.

pub mod migrate;
