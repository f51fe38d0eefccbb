//! warroom: the war-room console, playbooks, fenced Redis locks and incident
//! timeline for lock-contention incidents (PM-003 and its successors).
//!
//! Modules, by what they own:
//! - [`lock`] (the `warroom-lock` crate): the lock client services embed (fenced leases, Redlock, WATCH
//!   mode, and the legacy PM-003 lock kept as a reference).
//! - [`fence`]: the store side: writes checked against fencing tokens.
//! - [`redis_node`]: `redis-server` processes started for drills and tests.
//! - [`playbook`]: YAML playbooks (model, validation, plan, apply, verify,
//!   undo) run through [`kube`], the only module that talks to an API server.
//! - [`database`]: PM-003's tables in PostgreSQL (versioned migrations).
//! - [`drill`]: PM-003 on one machine (`warroom drill`, the default command).
//! - [`exporter`]: the collision exporter: lock events and expired-key
//!   notices in, Prometheus metrics (`/metrics`) out.
//! - [`bench`]: benchmarks that print numbers (`warroom bench …`).
//! - [`cluster`]: a local Kubernetes-API-compatible server for drills and
//!   tests (`warroom cluster`).
//! - [`timeline`]: the append-only incident journal and its postmortem exports.
//! - [`redact`]: the one redactor every output that can carry a secret goes
//!   through (errors, logs, plans, run records, the journal, exports, metrics).
//! - [`redis_url`]: Redis URLs as the operator gives them: checked, shown
//!   without their password, connection failures explained.

pub mod bench;
pub mod cluster;
pub mod console;
pub mod database;
pub mod drill;
pub mod exporter;
pub use warroom_lock::fence;
pub mod kube;
pub use warroom_lock as lock;
pub mod playbook;
pub mod redact;
pub mod redis_node;
pub mod redis_url;
pub mod timeline;
