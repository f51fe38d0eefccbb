//! The drill: PM-003 reproduced on one machine with real parts — redis-server,
//! one worker process per replica of the `order-service` Deployment, GC pauses
//! (SIGSTOP), PM-003's 10x spike, the local cluster server, the exporter,
//! alerting, the timeline and the playbook engine — so an on-call engineer can
//! rehearse the war room, and every claim warroom makes is measured end to end.
//!
//! Module map (orchestration): [`run`] starts and stops every part in order;
//! [`dir`] is the drill's directory; [`alerting`] evaluates the alert rules on
//! the exporter's counters; [`prometheus`] runs a real Prometheus beside it;
//! [`mitigate`] runs a playbook through the engine; [`workload`] drives the
//! worker processes, gateway and pauses; [`report`] is what a drill measured.
//! (cluster side): the supervisor keeps one worker process per replica and
//! writes pods, status and events; (order side): the worker and the order
//! pipeline under each lock mode, the gateway and load curve, the GC pause
//! schedule and the reconciliation.
//!
//! The worker process depends on the lock client and the order store only:
//! nothing of Kubernetes, HTTP or the console runs in it.

pub mod alerting;
pub mod dir;
pub mod gateway;
pub mod load;
pub mod lock_mode;
pub mod mitigate;
pub mod orders;
pub mod pauses;
pub mod pg_orders;
pub mod pg_reconcile;
pub mod playbooks;
pub mod pods;
pub mod process;
pub mod prometheus;
pub mod reconcile;
pub mod report;
pub mod rollout;
pub mod run;
pub mod stats;
pub mod supervisor;
pub mod worker;
pub mod workload;

/// The lock modes a drill's workers can use (the ConfigMap's `LOCK_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockChoice {
    /// PM-003's hand-rolled lock: `GET` then `SET NX`, unconditional `DEL`.
    Legacy,
    /// Single-node lease with fencing tokens checked by the store.
    Fenced,
    /// Redlock over three Redis nodes, with fencing tokens.
    Redlock,
    /// Optimistic `WATCH`/`MULTI` updates, no lease.
    Watch,
}

impl LockChoice {
    /// Every mode.
    pub const ALL: [LockChoice; 4] = [
        LockChoice::Legacy,
        LockChoice::Fenced,
        LockChoice::Redlock,
        LockChoice::Watch,
    ];

    /// The `LOCK_MODE` value.
    pub fn as_str(self) -> &'static str {
        match self {
            LockChoice::Legacy => "legacy",
            LockChoice::Fenced => "fenced",
            LockChoice::Redlock => "redlock",
            LockChoice::Watch => "watch",
        }
    }
}

/// Why a drill (or one of its parts) could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// A file or directory of the drill could not be created, read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `redis-server` is not on `PATH`.
    #[error(
        "redis-server is not on PATH: install it (Debian/Ubuntu: `apt-get install -y \
         redis-server`, macOS: `brew install redis`) or give a running server with --redis URL"
    )]
    RedisMissing,
    /// `redis-server` was found but did not start.
    #[error("cannot start redis-server: {0}")]
    RedisStart(String),
    /// A `--redis` URL is not a Redis URL.
    #[error("{0}")]
    RedisInvalid(String),
    /// A `--redis` server does not answer.
    #[error("cannot reach Redis at {url}: {detail}; nothing was started")]
    RedisUnreachable {
        /// The URL, without its password.
        url: String,
        /// What went wrong (redacted).
        detail: String,
    },
    /// A listener could not be bound.
    #[error("cannot start {what}: {detail}")]
    Listen {
        /// Which part.
        what: &'static str,
        /// The error.
        detail: String,
    },
    /// The cluster's objects could not be set up.
    #[error("cannot set up the drill cluster: {0}")]
    Cluster(String),
    /// The incident journal could not be opened or written.
    #[error("{0}")]
    Journal(String),
    /// The worker processes could not be started or supervised.
    #[error("cannot run the order-service workers: {0}")]
    Workers(String),
}
