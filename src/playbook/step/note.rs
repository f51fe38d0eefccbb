//! `note`: a line for the incident timeline; changes nothing.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Effect, Resolve, StepSpec};
use crate::playbook::template::Text;

/// `note: "text"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Note(pub Text);

impl StepSpec for Note {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        Effect::Note(resolve.render.text(&self.0))
    }
}
