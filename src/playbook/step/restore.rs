//! `restore`: put back every value recorded on an object by earlier runs
//! (its `warroom.io/previous` annotation), whoever ran them and wherever.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::model::ObjectSpec;

/// `restore: {apiVersion, kind, name, namespace?}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Restore(pub ObjectSpec);

impl StepSpec for Restore {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.changed_object(&self.0);
        Effect::Change(Change {
            target,
            edit: Edit::Restore,
            record: true,
        })
    }
}
