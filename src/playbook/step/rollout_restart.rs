//! `rollout-restart`: restart a Deployment's pods the way
//! `kubectl rollout restart` does (a new `restartedAt` template annotation).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::template::Text;

/// `rollout-restart: {deployment, namespace?}`. Use `when-changed` on the
/// step to restart only when an earlier step changed something, so a
/// re-run changes nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRestart {
    /// Deployment name.
    pub deployment: Text,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
}

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str =
    "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt";

impl StepSpec for RolloutRestart {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.named("apps/v1", "Deployment", &self.deployment, &self.namespace);
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        Effect::Change(Change {
            target,
            edit: Edit::Set(vec![(RESTARTED_AT.into(), Some(now.to_string().into()))]),
            // A restart is not state to go back to.
            record: false,
        })
    }
}
