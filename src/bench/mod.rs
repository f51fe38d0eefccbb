//! Benchmarks that print numbers (`warroom bench …`). Each one measures a
//! target from the project's requirements in one run and reports it; none of
//! them is a pass/fail test.
//!
//! - [`lock`]: lock contention throughput, latency and correctness counts
//!   (double grants, stale writes) per lock mode, against a peer library.
//! - [`cluster`]: requests per second of the local cluster server.
//! - [`playbook`]: time from `warroom run PLAYBOOK --yes` to every step
//!   verified, against a local cluster server.
//! - [`proxy`]: a delaying TCP proxy that puts each lock node "on another
//!   host" for the lock benchmark, and counts the requests sent through it.
//! - [`exporter`]: collision detection latency, stream throughput on one
//!   core and memory of the collision exporter.
//! - [`fence`]: fenced against unguarded units of work in PostgreSQL
//!   (throughput ratio, latency) and the stale writes each lets through.

pub mod cluster;
pub mod exporter;
pub mod fence;
pub mod lock;
pub mod playbook;
pub mod proxy;
