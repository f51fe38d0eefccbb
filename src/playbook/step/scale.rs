//! `scale`: set a Deployment's replicas. The replicas it replaced are
//! recorded on the Deployment itself, so a restore works from anywhere.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::template::{Int, Text};

/// `scale: {deployment, replicas, namespace?}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    /// Deployment name.
    pub deployment: Text,
    /// Desired replicas (0 or more).
    pub replicas: Int,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
}

impl StepSpec for Scale {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.named("apps/v1", "Deployment", &self.deployment, &self.namespace);
        let replicas = resolve.render.int(&self.replicas);
        if replicas < 0 {
            resolve.problem(
                self.replicas.0.referenced,
                format!("replicas must be 0 or more, got {replicas}"),
            );
        }
        Effect::Change(Change {
            target,
            edit: Edit::Set(vec![("/spec/replicas".into(), Some(replicas.into()))]),
            record: true,
        })
    }
}
