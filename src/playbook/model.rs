//! The playbook file format, as typed structs read with serde-saphyr.
//!
//! Unknown fields are rejected everywhere; values keep their source location
//! so that later checks (parameter references, step references, value
//! ranges) can point at the offending text. The JSON Schema committed as
//! `playbooks/schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::step::StepDoc;
use super::template::{Body, Text};

/// A playbook: what it answers, its parameters, what must hold before it
/// runs, and its steps in order.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[schemars(title = "warroom playbook")]
pub struct Playbook {
    /// Short name, shown in plans, run records and the timeline.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// What the playbook does and when to use it.
    pub description: String,
    /// Names of the alerts this playbook answers.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// Parameters by name; steps refer to them as `${name}`. A `namespace`
    /// parameter is filled from `-n/--namespace` when given.
    #[serde(default)]
    pub parameters: BTreeMap<String, Parameter>,
    /// Checks that must hold before anything changes.
    #[serde(default)]
    pub preconditions: Vec<Precondition>,
    /// The steps, run in order.
    #[schemars(with = "Vec<StepDoc>")]
    pub steps: Vec<Spanned<StepDoc>>,
}

/// A parameter declaration.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Parameter {
    /// The value type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// The value used when `--param` does not give one; without a default
    /// the parameter is required.
    #[serde(default)]
    pub default: Option<Body>,
    /// What the parameter means.
    #[serde(default)]
    pub description: Option<String>,
    /// For integers: the smallest value accepted.
    #[serde(default)]
    pub minimum: Option<i64>,
    /// For integers: the largest value accepted.
    #[serde(default)]
    pub maximum: Option<i64>,
}

impl Parameter {
    /// Why `value` is outside the parameter's range, if it is.
    pub fn out_of_range(&self, value: &serde_json::Value) -> Option<String> {
        let number = value.as_i64()?;
        match (self.minimum, self.maximum) {
            (Some(min), Some(max)) if number < min || number > max => {
                Some(format!("{number} is not between {min} and {max}"))
            }
            (Some(min), _) if number < min => Some(format!("{number} is less than {min}")),
            (_, Some(max)) if number > max => Some(format!("{number} is more than {max}")),
            _ => None,
        }
    }
}

/// Parameter value types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ParamType {
    /// Any text.
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
}

impl ParamType {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Boolean => "boolean",
        }
    }

    /// Converts a YAML default to a value of this type.
    pub fn check(self, value: &serde_json::Value) -> Option<serde_json::Value> {
        use serde_json::Value;
        match (self, value) {
            (ParamType::String, Value::String(_)) => Some(value.clone()),
            (ParamType::String, Value::Number(n)) => Some(Value::String(n.to_string())),
            (ParamType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
                Some(value.clone())
            }
            (ParamType::Boolean, Value::Bool(_)) => Some(value.clone()),
            _ => None,
        }
    }

    /// Parses a `--param name=value` value.
    pub fn parse(self, raw: &str) -> Option<serde_json::Value> {
        use serde_json::Value;
        match self {
            ParamType::String => Some(Value::String(raw.to_owned())),
            ParamType::Integer => raw.trim().parse::<i64>().ok().map(Value::from),
            ParamType::Boolean => match raw.trim() {
                "true" => Some(Value::Bool(true)),
                "false" => Some(Value::Bool(false)),
                _ => None,
            },
        }
    }

    /// A stand-in value used to validate a playbook without a run.
    pub fn placeholder(self) -> serde_json::Value {
        match self {
            ParamType::String => "placeholder".into(),
            ParamType::Integer => 1.into(),
            ParamType::Boolean => true.into(),
        }
    }
}

/// A check made before anything changes.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Precondition {
    /// What is checked, in words.
    pub description: String,
    /// The object that must exist.
    pub object: ObjectSpec,
    /// A condition the object must meet now (default: it exists).
    #[serde(default)]
    pub until: Option<Condition>,
}

/// An object named by apiVersion, kind and name (namespace defaults to the
/// run's namespace). Any kind, custom resources included.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    /// `apps/v1`, `v1`, `networking.k8s.io/v1`, `gateway.envoyproxy.io/v1alpha1`, …
    #[serde(rename = "apiVersion")]
    pub api_version: Text,
    /// `Deployment`, `ConfigMap`, `Ingress`, …
    pub kind: Text,
    /// Object name.
    pub name: Text,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
}

/// A condition on an object.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub enum Condition {
    /// The object exists.
    Exists,
    /// A Deployment's rollout is complete: observed generation is current and
    /// updated, ready and available replicas all equal the desired replicas.
    RolloutComplete,
    /// `status.conditions[type == NAME].status` is `True`.
    Condition(Text),
    /// The value at a JSON pointer equals the given value.
    Field(FieldEquals),
}

/// The value at a JSON pointer (e.g. `/status/readyReplicas`) equals a value.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldEquals {
    /// JSON pointer into the object.
    pub path: Text,
    /// The expected value.
    pub equals: Body,
}

/// What happens when a step fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Undo every applied step in reverse order, then stop (the default).
    #[default]
    Undo,
    /// Stop, leaving applied steps in place.
    Stop,
    /// Record the failure and go on with the next step.
    Continue,
}
