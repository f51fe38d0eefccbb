//! `confirm`: a human gate. With `answer`, the step is dangerous and the
//! operator must type the answer exactly; without, a yes/no question.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Effect, Gate, Resolve, StepSpec};
use crate::playbook::template::Text;

/// `confirm: {prompt, answer?}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// The question.
    pub prompt: Text,
    /// Text the operator must type to go on (dangerous steps).
    #[serde(default)]
    pub answer: Option<Text>,
}

impl StepSpec for Confirm {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let prompt = resolve.render.text(&self.prompt);
        let answer = resolve.render.opt_text(&self.answer);
        if let (Some(text), Some(answer)) = (&self.answer, &answer)
            && answer.trim().is_empty()
        {
            resolve.problem(text.location(), "the typed answer must not be empty");
        }
        Effect::Gate(Gate { prompt, answer })
    }
}
