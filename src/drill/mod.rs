//! The drill: PM-003 reproduced on one machine with real parts — redis-server,
//! one worker process per replica of the `order-service` Deployment, GC pauses
//! (SIGSTOP), PM-003's 10x spike, the local cluster server, the exporter,
//! alerting, the timeline and the playbook engine — so an on-call engineer can
//! rehearse the war room, and every claim warroom makes is measured end to end.
//!
//! Module map (cluster side): the supervisor keeps one worker process per
//! replica and writes pods, status and events; (order side): the worker and
//! the order pipeline under each lock mode, the gateway and load curve, the GC
//! pause schedule and the reconciliation.
//!
//! The worker process depends on the lock client and the order store only:
//! nothing of Kubernetes, HTTP or the console runs in it.

pub mod gateway;
pub mod load;
pub mod lock_mode;
pub mod orders;
pub mod pauses;
pub mod pods;
pub mod process;
pub mod reconcile;
pub mod stats;
pub mod supervisor;
pub mod worker;

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
}
