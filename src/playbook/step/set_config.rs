//! `set-config`: set one key of a ConfigMap (e.g. `LOCK_MODE: watch`).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::kube::names;
use crate::playbook::check;
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
        if let Err(err) = names::config_map_key(&key) {
            resolve.text_problem(&self.key, err);
        } else if check::secret_named(&key) {
            resolve.text_problem(
                &self.key,
                format!(
                    "ConfigMap key {key:?} names a secret, so its old and new values would be \
                     kept in clear; {}",
                    check::SECRET_ADVICE
                ),
            );
        }
        let value = resolve.render.text(&self.value);
        if check::secret_value(&value.clone().into()) {
            resolve.text_problem(
                &self.value,
                format!(
                    "the value for ConfigMap key {key:?} looks like a secret (a password, token \
                     or credential) and would be kept in clear; {}",
                    check::SECRET_ADVICE
                ),
            );
        }
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
