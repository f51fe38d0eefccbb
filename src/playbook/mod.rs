//! Playbooks: YAML files describing a mitigation (scale to one replica,
//! rate-limit at the gateway, enable WATCH locking, …) and the engine that
//! runs them through the Kubernetes API.
//!
//! This module owns the file format ([`model`], [`step`]), its validation
//! with file:line:col reports ([`load`], [`validate`]), the JSON Schema
//! ([`schema`]), what a change may touch ([`check`]: names the API server
//! accepts, no field warroom must not set, no secret), the engine (plan → dry run → apply + verify → undo,
//! [`engine`]), the run guard ([`lease`]) and what a run records on objects
//! and in the namespace ([`record`]). It reports step events through
//! [`event::StepObserver`] and asks humans through [`event::Confirmer`];
//! [`journal`] is the observer that records a run in the incident timeline.
//! It knows nothing about terminals or the console.
//! All API server traffic goes through [`crate::kube`].

pub mod cancel;
pub mod check;
pub mod engine;
pub mod event;
pub mod journal;
pub mod lease;
pub mod load;
pub mod model;
pub mod record;
pub mod schema;
pub mod step;
pub mod template;
pub mod validate;

pub use cancel::Cancel;
pub use engine::{Engine, Outcome, Plan, RunOptions, RunReport};
pub use event::{
    AutoApprove, ConfirmRequest, Confirmation, Confirmer, EventLog, StepEvent, StepObserver,
    StepPhase,
};
pub use load::{BoundPlaybook, LoadError, LoadedPlaybook, load_file, parse};
pub use validate::{InvalidPlaybook, Problem};
