//! `scale`: set a Deployment's replicas. The replicas it replaced are
//! recorded on the Deployment itself, so a restore works from anywhere.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::template::{Int, IntOrRef, Text, references};

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
        if !(0..=i64::from(i32::MAX)).contains(&replicas) {
            let refs = match &self.replicas.0.value {
                IntOrRef::Text(raw) => references(raw),
                IntOrRef::Int(_) => Vec::new(),
            };
            resolve.value_problem(
                self.replicas.0.referenced,
                &refs,
                format!(
                    "replicas must be between 0 and {} (what a Deployment holds), got {replicas}",
                    i32::MAX
                ),
            );
        }
        Effect::Change(Change {
            target,
            edit: Edit::Set(vec![("/spec/replicas".into(), Some(replicas.into()))]),
            record: true,
        })
    }
}
