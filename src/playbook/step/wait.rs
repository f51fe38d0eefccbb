//! `wait`: poll an object until a condition holds, or fail at the timeout.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{Check, Effect, Resolve, StepSpec, WaitFor, parse_duration};
use crate::playbook::model::{Condition, ObjectSpec};

/// `wait: {object, until, timeout?}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Wait {
    /// The object watched.
    pub object: ObjectSpec,
    /// The condition: `exists`, `rollout-complete`, `{condition: NAME}` or
    /// `{field: {path, equals}}`.
    pub until: Condition,
    /// `30s`, `2m`, … (default `2m`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Spanned<String>>,
}

impl StepSpec for Wait {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.object(&self.object);
        let until = resolve.condition(&self.until);
        let timeout = match &self.timeout {
            None => std::time::Duration::from_secs(120),
            Some(raw) => match parse_duration(&raw.value) {
                Some(timeout) => timeout,
                None => {
                    resolve.problem(
                        raw.referenced,
                        format!(
                            "timeout {:?} is not a duration like 30s, 2m or 1h",
                            raw.value
                        ),
                    );
                    std::time::Duration::from_secs(120)
                }
            },
        };
        Effect::Wait(WaitFor {
            target,
            until,
            timeout,
        })
    }
}

impl Check {
    /// Whether the condition holds on the object (`None`: it does not exist),
    /// with what was seen.
    pub fn holds(&self, object: Option<&Value>) -> (bool, String) {
        let Some(object) = object else {
            return (false, "object does not exist".into());
        };
        match self {
            Check::Exists => (true, "exists".into()),
            Check::RolloutComplete => {
                let int = |p: &str| object.pointer(p).and_then(Value::as_i64);
                let desired = int("/spec/replicas").unwrap_or(1);
                let generation = int("/metadata/generation").unwrap_or(0);
                let observed = int("/status/observedGeneration").unwrap_or(0);
                let updated = int("/status/updatedReplicas").unwrap_or(0);
                let ready = int("/status/readyReplicas").unwrap_or(0);
                let available = int("/status/availableReplicas").unwrap_or(0);
                let total = int("/status/replicas").unwrap_or(0);
                let done = observed >= generation
                    && updated == desired
                    && ready == desired
                    && available == desired
                    && total == desired;
                (
                    done,
                    format!(
                        "rollout {ready}/{desired} ready (updated {updated}, available \
                         {available}, total {total}, generation {observed}/{generation})"
                    ),
                )
            }
            Check::Condition(name) => {
                let status = object
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|all| {
                        all.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some(name))
                    })
                    .and_then(|c| c.get("status").and_then(Value::as_str))
                    .unwrap_or("absent");
                (status == "True", format!("condition {name} is {status}"))
            }
            Check::Field { path, equals } => {
                let found = object.pointer(path);
                let ok = match (found, equals) {
                    (Some(Value::String(s)), Value::Number(n)) => s == &n.to_string(),
                    (Some(Value::Number(n)), Value::String(s)) => s == &n.to_string(),
                    (Some(v), e) => v == e,
                    (None, Value::Null) => true,
                    (None, _) => false,
                };
                let seen = found
                    .map(Value::to_string)
                    .unwrap_or_else(|| "absent".into());
                (
                    ok,
                    format!(
                        "{} is {seen}, want {equals}",
                        crate::playbook::record::display_path(path)
                    ),
                )
            }
        }
    }
}
