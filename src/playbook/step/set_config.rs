//! `set-config`: set one key of a ConfigMap (e.g. `LOCK_MODE: watch`).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::template::Text;

/// `set-config: {configmap, key, value, namespace?}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// ConfigMap name.
    pub configmap: Text,
    /// The data key.
    pub key: Text,
    /// The value to set.
    pub value: Text,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
}

impl StepSpec for SetConfig {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.named("v1", "ConfigMap", &self.configmap, &self.namespace);
        let key = resolve.render.text(&self.key);
        let valid_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_key {
            resolve.problem(
                self.key.location(),
                format!("ConfigMap key {key:?} must be letters, digits, `-`, `_` or `.`"),
            );
        }
        let value = resolve.render.text(&self.value);
        Effect::Change(Change {
            target,
            edit: Edit::Set(vec![(
                format!("/data/{}", escape(&key)),
                Some(value.into()),
            )]),
            record: true,
        })
    }
}

/// Escapes a key for use in a JSON pointer.
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}
