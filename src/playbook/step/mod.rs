//! Step kinds: what each kind means, turned into one of a few effects the
//! engine knows how to carry out (change an object, wait for a condition,
//! ask a human, write a note).
//!
//! Adding a step kind: write `step/<kind>.rs` with a struct implementing
//! [`StepSpec`], and add one line to the `step_kinds!` list below. The model,
//! the JSON Schema, validation, planning, apply, verify, undo and RBAC
//! coverage follow from the effect the kind resolves to.

pub mod confirm;
pub mod note;
pub mod patch;
pub mod restore;
pub mod rollout_restart;
pub mod scale;
pub mod set_config;
pub mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::check;
use super::model::{Condition, ObjectSpec, OnFailure};
use super::template::{Render, Text, references};
use super::validate::Problem;
use crate::kube::{ObjectRef, names};

/// What a step kind does once its parameters are filled in.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Change one object; the engine records the replaced values on it.
    Change(Change),
    /// Wait until a condition holds on an object.
    Wait(WaitFor),
    /// Ask a human before going on.
    Gate(Gate),
    /// Write a line to the timeline.
    Note(String),
}

/// A change to one object.
#[derive(Debug, Clone)]
pub struct Change {
    /// The object changed.
    pub target: ObjectRef,
    /// How the desired object is computed from the current one.
    pub edit: Edit,
    /// Whether the replaced values are recorded on the object for restore
    /// (false for changes that are not state to go back to, like a restart).
    pub record: bool,
}

/// How a change computes the desired object from the current one.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Set (or with `None` remove) the value at each JSON pointer.
    Set(Vec<(String, Option<Value>)>),
    /// Set the value at a JSON pointer to the time the edit is applied
    /// (UTC, whole seconds, never ahead of the clock).
    Now(String),
    /// An RFC 7386 JSON merge patch.
    Merge(Value),
    /// An RFC 6902 JSON patch.
    Json(json_patch::Patch),
    /// Put back every value recorded in the object's
    /// `warroom.io/previous` annotation.
    Restore,
}

/// A wait for a condition on an object.
#[derive(Debug, Clone)]
pub struct WaitFor {
    /// The object watched.
    pub target: ObjectRef,
    /// The condition.
    pub until: Check,
    /// How long to wait before the step fails.
    pub timeout: Duration,
}

/// A condition with its parameters filled in.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The object exists.
    Exists,
    /// A Deployment rollout is complete.
    RolloutComplete,
    /// `status.conditions[type == NAME].status == "True"`.
    Condition(String),
    /// The value at a JSON pointer equals a value.
    Field {
        /// JSON pointer.
        path: String,
        /// Expected value.
        equals: Value,
    },
}

/// A human gate.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The question.
    pub prompt: String,
    /// For dangerous steps: the exact text the operator must type.
    pub answer: Option<String>,
}

/// Fills in a step's parameters; problems are collected, not fatal, so
/// validation reports all of them.
pub struct Resolve<'a> {
    /// Parameter rendering.
    pub render: Render<'a>,
    /// The run's namespace (default for objects).
    pub namespace: String,
    /// How each parameter given on the command line was given
    /// (`--param deployment`, `-n/--namespace`), by parameter name.
    pub given: BTreeMap<String, String>,
    /// Problems with values given on the command line.
    pub given_problems: Vec<GivenProblem>,
}

/// A problem caused by a value given on the command line rather than one
/// written in the playbook.
#[derive(Debug, Clone)]
pub struct GivenProblem {
    /// How the value was given (`--param deployment`).
    pub given: String,
    /// What is wrong.
    pub message: String,
    /// Where the playbook uses the value.
    pub at: Location,
}

impl<'a> Resolve<'a> {
    /// Resolves with `render`'s parameter values; objects default to
    /// `namespace`.
    pub fn new(render: Render<'a>, namespace: impl Into<String>) -> Self {
        Self {
            render,
            namespace: namespace.into(),
            given: BTreeMap::new(),
            given_problems: Vec::new(),
        }
    }

    /// Records a problem at a location.
    pub fn problem(&mut self, at: Location, message: impl Into<String>) {
        self.render.problems.push(Problem::at(at, message));
    }

    /// Records a problem with a value made from playbook text at `at` that
    /// refers to the parameters `refs`: charged to the command-line value
    /// when one of them was given there, to the playbook otherwise.
    pub fn value_problem(&mut self, at: Location, refs: &[String], message: impl Into<String>) {
        match refs.iter().find_map(|name| self.given.get(name)) {
            Some(given) => self.given_problems.push(GivenProblem {
                given: given.clone(),
                message: message.into(),
                at,
            }),
            None => self.problem(at, message),
        }
    }

    /// [`Self::value_problem`] for a rendered [`Text`].
    pub fn text_problem(&mut self, text: &Text, message: impl Into<String>) {
        self.value_problem(text.location(), &references(text.raw()), message);
    }

    /// Renders an object reference; apiVersion, kind, name and namespace
    /// must be what the API server accepts.
    pub fn object(&mut self, spec: &ObjectSpec) -> ObjectRef {
        let api_version = self.render.text(&spec.api_version);
        let kind = self.render.text(&spec.kind);
        let name = self.render.text(&spec.name);
        let namespace = self.render.opt_text(&spec.namespace);
        type Rule = fn(&str, &str) -> Result<(), String>;
        let checks: [(&str, &Text, Rule); 3] = [
            (&api_version, &spec.api_version, |_, v| {
                names::api_version(v)
            }),
            (&kind, &spec.kind, |_, v| names::kind(v)),
            (&name, &spec.name, names::object_name),
        ];
        for ((value, text, rule), what) in checks.into_iter().zip(["apiVersion", "kind", "name"]) {
            if value.trim().is_empty() {
                self.text_problem(text, format!("{what} must not be empty"));
            } else if let Err(err) = rule(&kind, value) {
                self.text_problem(text, err);
            }
        }
        let namespace = self.namespace_of(namespace, &spec.namespace);
        ObjectRef::namespaced(&api_version, &kind, &namespace, &name)
    }

    /// The namespace written on a step (checked), or the run's.
    fn namespace_of(&mut self, rendered: Option<String>, text: &Option<Text>) -> String {
        match (rendered, text) {
            (Some(namespace), Some(text)) => {
                if let Err(err) = names::namespace(&namespace) {
                    self.text_problem(text, err);
                }
                namespace
            }
            _ => self.namespace.clone(),
        }
    }

    /// Renders the object a changing step writes. Secrets are refused:
    /// a change records the values it replaces (on the object and in the
    /// run record), and warroom never records Secret values.
    pub fn changed_object(&mut self, spec: &ObjectSpec) -> ObjectRef {
        let target = self.object(spec);
        if check::is_secret_kind(&target) {
            self.text_problem(&spec.kind, check::SECRET_KIND_ADVICE);
        }
        target
    }

    /// Renders a named object of a fixed kind.
    pub fn named(
        &mut self,
        api_version: &str,
        kind: &str,
        name: &Text,
        namespace: &Option<Text>,
    ) -> ObjectRef {
        let rendered = self.render.text(name);
        if rendered.trim().is_empty() {
            self.text_problem(name, format!("{kind} name must not be empty"));
        } else if let Err(err) = names::object_name(kind, &rendered) {
            self.text_problem(name, err);
        }
        let given = self.render.opt_text(namespace);
        let namespace = self.namespace_of(given, namespace);
        ObjectRef::namespaced(api_version, kind, &namespace, &rendered)
    }

    /// Checks the fields a change touches: keys the API server accepts, no
    /// field a change must not set, no secret (see [`check`]). Problems
    /// are reported at `at` and charged to the parameters each field came
    /// from.
    pub fn touched(&mut self, target: &ObjectRef, at: Location, touched: &[check::Touched]) {
        if check::is_secret_kind(target) {
            // Refused as a whole already.
            return;
        }
        for field in touched {
            for problem in check::field_problems(target, &field.tokens, field.value.as_ref()) {
                self.value_problem(
                    at,
                    &field.references,
                    format!("{}: {problem}", field.shown()),
                );
            }
        }
    }

    /// Renders a condition.
    pub fn condition(&mut self, condition: &Condition) -> Check {
        match condition {
            Condition::Exists => Check::Exists,
            Condition::RolloutComplete => Check::RolloutComplete,
            Condition::Condition(name) => Check::Condition(self.render.text(name)),
            Condition::Field(field) => {
                let path = self.render.text(&field.path);
                if !path.starts_with('/') {
                    self.problem(
                        field.path.location(),
                        format!("field path {path:?} must be a JSON pointer starting with `/`"),
                    );
                }
                Check::Field {
                    path,
                    equals: self.render.body(&field.equals),
                }
            }
        }
    }
}

/// A step kind's settings, as written in the playbook.
pub trait StepSpec {
    /// Fills in parameters and returns the effect, recording problems in
    /// `resolve` (validation uses placeholder values for parameters).
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect;
}

/// Parses `30s`, `2m`, `1h`, `500ms` or a plain number of seconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    (0.0..86_400.0 * 7.0)
        .contains(&seconds)
        .then(|| Duration::from_secs_f64(seconds))
}

/// A step kind's settings with the place they were written.
#[derive(Debug)]
pub struct Located<T>(pub Spanned<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<T>::deserialize(deserializer).map(Located)
    }
}

impl<T: JsonSchema> JsonSchema for Located<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<T>()
    }
}

macro_rules! step_kinds {
    ($( $(#[$doc:meta])* $field:ident : $key:literal => $variant:ident ( $ty:ty ) ),* $(,)?) => {
        /// A step as written: a name, failure handling, and exactly one kind.
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct StepDoc {
            /// Unique step name (shown in plans, records and the timeline).
            #[schemars(with = "String")]
            pub name: Spanned<String>,
            /// What the step is for.
            #[serde(default)]
            pub description: Option<String>,
            /// What happens when this step fails (default `undo`).
            #[serde(default)]
            pub on_failure: OnFailure,
            /// Run this step only if the named earlier step changed something
            /// in this run (e.g. restart only when the config changed).
            #[serde(default)]
            #[schemars(with = "Option<String>")]
            pub when_changed: Option<Spanned<String>>,
            $(
                $(#[$doc])*
                #[serde(rename = $key, default)]
                pub $field: Option<Located<$ty>>,
            )*
        }

        /// The kinds a step can be, in the file's spelling.
        pub const STEP_KINDS: &[&str] = &[$($key),*];

        impl StepDoc {
            /// The kinds set on this step, with their locations (valid steps
            /// have exactly one).
            pub fn kinds(&self) -> Vec<(&'static str, &dyn StepSpec, Location)> {
                let mut found: Vec<(&'static str, &dyn StepSpec, Location)> = Vec::new();
                $(
                    if let Some(spec) = &self.$field {
                        found.push(($key, &spec.0.value as &dyn StepSpec, spec.0.referenced));
                    }
                )*
                found
            }
        }
    };
}

step_kinds! {
    /// Scale a Deployment; the previous replicas are recorded on it.
    scale: "scale" => Scale(scale::Scale),
    /// Patch any object (merge or JSON patch), custom resources included.
    patch: "patch" => Patch(patch::Patch),
    /// Set one key of a ConfigMap.
    set_config: "set-config" => SetConfig(set_config::SetConfig),
    /// Restart a Deployment's pods (as `kubectl rollout restart`).
    rollout_restart: "rollout-restart" => RolloutRestart(rollout_restart::RolloutRestart),
    /// Put back the values recorded on an object by earlier runs.
    restore: "restore" => Restore(restore::Restore),
    /// Wait for a condition on an object, with a timeout.
    wait: "wait" => Wait(wait::Wait),
    /// A human gate; dangerous steps ask for a typed answer.
    confirm: "confirm" => Confirm(confirm::Confirm),
    /// A line for the incident timeline.
    note: "note" => Note(note::Note),
}
