//! Playbooks: YAML files describing a mitigation (scale to one replica,
//! rate-limit at the gateway, enable WATCH locking, …) and the engine that
//! runs them through the Kubernetes API.
//!
//! This module owns the file format ([`model`], [`step`]), its validation
//! with file:line:col reports ([`load`], [`validate`]), the JSON Schema
//! ([`schema`]), what a change may touch ([`check`]: names the API server
//! accepts, no field warroom must not set, no secret), the engine by stage
//! (plan → dry run → apply + verify → undo, [`engine`]) and its words for
//! what happens ([`outcome`]), the run guard
//! ([`lease`]), stopping a run ([`cancel`]) and what a run records on
//! objects and in the namespace ([`record`]). Step events go out on async
//! channels ([`event`]); humans are asked through [`event::Confirmer`];
//! [`journal`] is the task that records a run in the incident timeline.
//! It knows nothing about terminals or the console.
//! All API server traffic goes through [`crate::kube`].
//!
//! One entry point for callers: bind a playbook ([`load_file`], then
//! [`LoadedPlaybook::bind`]), build an [`Engine`] with a [`Confirmer`] and a
//! [`Cancel`], and [`Engine::start`] it: a [`engine::RunHandle`] with the
//! run's events as they happen and its [`RunReport`] at the end
//! ([`Engine::plan`] alone for a plan, `RunOptions { dry_run: true }` for a
//! dry run, [`Engine::undo`] to put a recorded run back).

pub mod cancel;
pub mod check;
pub mod engine;
pub mod event;
pub mod journal;
pub mod lease;
pub mod load;
pub mod model;
pub mod outcome;
pub mod record;
pub mod schema;
pub mod step;
pub mod template;
pub mod validate;

pub use cancel::Cancel;
pub use engine::{Engine, Outcome, Plan, RunHandle, RunOptions, RunReport};
pub use event::{
    AutoApprove, ConfirmRequest, Confirmation, Confirmer, EventLog, StepEvent, StepObserver,
    StepPhase,
};
pub use load::{BoundPlaybook, LoadError, LoadedPlaybook, load_file, parse};
pub use validate::{InvalidPlaybook, Problem};
