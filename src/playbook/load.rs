//! Reading and validating a playbook file, and binding it to parameter
//! values for a run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read as _;
use std::path::Path;

use serde_json::Value;
use serde_saphyr::Location;

use super::check;
use super::model::{Playbook, Precondition};
use super::step::{Check, Effect, Resolve, STEP_KINDS};
use super::template::Render;
use super::validate::{InvalidPlaybook, Problem};
use crate::kube::{ObjectRef, names};
use crate::playbook::model::OnFailure;

/// A playbook read from a file and validated.
#[derive(Debug)]
pub struct LoadedPlaybook {
    /// The file name as given.
    pub file: String,
    /// The file's text.
    pub source: String,
    /// The typed model.
    pub doc: Playbook,
}

/// The largest playbook file [`load_file`] reads. A playbook is a few KiB
/// (the shipped ones are under 10 KiB); refusing anything above 1 MiB keeps
/// validation fast and its report short whatever a file holds.
pub const MAX_PLAYBOOK_BYTES: u64 = 1024 * 1024;

/// Why a playbook could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {file}: {message}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        message: String,
    },
    /// The file is larger than [`MAX_PLAYBOOK_BYTES`].
    #[error(
        "{file} is {size} long, more than the 1 MiB a playbook may be (playbooks are a few KiB): \
         check that this is the playbook you meant"
    )]
    TooLarge {
        /// The file.
        file: String,
        /// Its size in words ("5000000 bytes", "more than 1048576 bytes").
        size: String,
    },
    /// The file is not a valid playbook.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Box<InvalidPlaybook>),
}

/// Reads and validates a playbook file of at most [`MAX_PLAYBOOK_BYTES`]: a regular file
/// (a device such as `/dev/zero` never ends, a FIFO may never be written).
pub fn load_file(path: &Path) -> Result<LoadedPlaybook, LoadError> {
    let file = path.display().to_string();
    let read_error = |message: String| LoadError::Read {
        file: file.clone(),
        message,
    };
    let opened = std::fs::File::open(path).map_err(|err| read_error(err.to_string()))?;
    let metadata = opened
        .metadata()
        .map_err(|err| read_error(err.to_string()))?;
    if !metadata.is_file() {
        return Err(read_error(
            "not a regular file; give the path of a playbook (.yaml)".into(),
        ));
    }
    // At most one byte past the limit: a device or pipe that never ends
    // (`/dev/zero`) is refused as quickly as a huge file.
    let mut bytes = Vec::new();
    opened
        .take(MAX_PLAYBOOK_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| read_error(err.to_string()))?;
    if bytes.len() as u64 > MAX_PLAYBOOK_BYTES {
        let size = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => format!("{} bytes", meta.len()),
            _ => format!("more than {MAX_PLAYBOOK_BYTES} bytes"),
        };
        return Err(LoadError::TooLarge { file, size });
    }
    let source = String::from_utf8(bytes).map_err(|err| {
        read_error(format!(
            "it is not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        ))
    })?;
    parse(&file, &source).map_err(LoadError::Invalid)
}

/// Parses and validates playbook text; `file` names it in messages.
pub fn parse(file: &str, source: &str) -> Result<LoadedPlaybook, Box<InvalidPlaybook>> {
    let doc: Playbook = match serde_saphyr::from_str(source) {
        Ok(doc) => doc,
        Err(err) => {
            let problems = vec![yaml_problem(&err, source)];
            return Err(Box::new(InvalidPlaybook::new(file, source, problems)));
        }
    };
    let problems = check(&doc, source);
    if problems.is_empty() {
        Ok(LoadedPlaybook {
            file: file.to_owned(),
            source: source.to_owned(),
            doc,
        })
    } else {
        Err(Box::new(InvalidPlaybook::new(file, source, problems)))
    }
}

fn yaml_problem(err: &serde_saphyr::Error, source: &str) -> Problem {
    let options = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut message = err.render_with_options(options);
    // The plain rendering ends with its own location; ours is added uniformly.
    if let Some(cut) = message.rfind(" at line ") {
        message.truncate(cut);
    }
    let message = message
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .trim()
        .to_owned();
    match err.location() {
        Some(location) if location.line() > 0 => {
            let mut problem = Problem::at(location, message);
            if location.span().byte_offset().is_none() {
                // Compute the offset from line and column.
                let offset = offset_of(source, location.line(), location.column());
                problem.offset = offset;
            }
            problem
        }
        _ => Problem::span(source, 0, 0, message),
    }
}

fn offset_of(source: &str, line: u64, column: u64) -> usize {
    let mut offset = 0;
    for (index, text) in source.split_inclusive('\n').enumerate() {
        if index as u64 + 1 == line {
            let chars: usize = text
                .chars()
                .take(column.saturating_sub(1) as usize)
                .map(char::len_utf8)
                .sum();
            return offset + chars;
        }
        offset += text.len();
    }
    source.len()
}

/// Where each of `names` is first written as a mapping key (`name:`, block
/// or flow style, plain or quoted): byte offset, 1-based line and column.
/// One pass over `source`, however many names are asked for.
fn key_positions<'a>(
    source: &str,
    names: &HashSet<&'a str>,
) -> HashMap<&'a str, (usize, u64, u64)> {
    let mut found = HashMap::new();
    if names.is_empty() {
        return found;
    }
    let mut line_start = 0;
    for (index, line) in source.split_inclusive('\n').enumerate() {
        let mut key_start = 0;
        // `chars_before`: characters on the line before `at`.
        for (chars_before, (at, c)) in line.char_indices().enumerate() {
            if c == ':' {
                let key = &line[key_start..at];
                let trimmed = key.trim_matches([' ', '\t']);
                let (unquoted, quote) = match trimmed
                    .strip_prefix(['"', '\''])
                    .and_then(|k| k.strip_suffix(['"', '\'']))
                {
                    Some(inner) => (inner, 1),
                    None => (trimmed, 0),
                };
                if let Some(name) = names.get(unquoted)
                    && !found.contains_key(name)
                {
                    // Leading blanks are one byte and one character each.
                    let lead = key.len() - key.trim_start_matches([' ', '\t']).len() + quote;
                    let offset = line_start + at - key.len() + lead;
                    let column = (chars_before - key.chars().count() + lead + 1) as u64;
                    found.insert(*name, (offset, index as u64 + 1, column));
                }
            }
            if matches!(c, ':' | ',' | '{' | '[') {
                key_start = at + c.len_utf8();
            }
        }
        line_start += line.len();
    }
    found
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Every semantic problem of a parsed playbook.
fn check(doc: &Playbook, source: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    if doc.name.value.trim().is_empty() {
        problems.push(Problem::at(
            doc.name.referenced,
            "the playbook name must not be empty",
        ));
    }
    if doc.steps.is_empty() {
        problems.push(Problem::at(
            doc.name.referenced,
            "the playbook has no steps",
        ));
    }
    let mut values = BTreeMap::new();
    let misnamed: HashSet<&str> = doc
        .parameters
        .keys()
        .map(String::as_str)
        .filter(|name| !is_identifier(name))
        .collect();
    let written_at = key_positions(source, &misnamed);
    for (name, parameter) in &doc.parameters {
        if misnamed.contains(name.as_str()) {
            let message = format!("parameter name `{name}` must be letters, digits, `_` or `-`");
            problems.push(match written_at.get(name.as_str()) {
                Some(&(offset, line, column)) => Problem {
                    message,
                    offset,
                    len: name.len(),
                    line,
                    column,
                },
                None => Problem::span(source, 0, 0, message),
            });
        }
        let value = match &parameter.default {
            Some(default) => match parameter.kind.check(&default.0.value) {
                Some(value) => {
                    if let Some(problem) = default_problem(name, &value) {
                        problems.push(Problem::at(default.0.referenced, problem));
                    }
                    if let Some(problem) = parameter.out_of_range(&value) {
                        problems.push(Problem::at(
                            default.0.referenced,
                            format!("default of `{name}`: {problem}"),
                        ));
                    }
                    value
                }
                None => {
                    problems.push(Problem::at(
                        default.0.referenced,
                        format!(
                            "default of `{name}` must be a {}, got {}",
                            parameter.kind.name(),
                            default.0.value
                        ),
                    ));
                    parameter.kind.placeholder()
                }
            },
            None => parameter.kind.placeholder(),
        };
        values.insert(name.clone(), value);
        if parameter.kind != super::model::ParamType::Integer
            && (parameter.minimum.is_some() || parameter.maximum.is_some())
        {
            let at = parameter_at(source, name);
            problems.push(Problem::span(
                source,
                at,
                name.len(),
                format!("`minimum` and `maximum` apply to integer parameters; `{name}` is not one"),
            ));
        }
        if let (Some(min), Some(max)) = (parameter.minimum, parameter.maximum)
            && min > max
        {
            let at = parameter_at(source, name);
            problems.push(Problem::span(
                source,
                at,
                name.len(),
                format!("`{name}` has minimum {min} above maximum {max}"),
            ));
        }
    }
    let mut resolve = Resolve::new(Render::new(&values, source), "placeholder");
    for precondition in &doc.preconditions {
        resolve_precondition(&mut resolve, precondition);
    }
    let mut seen: HashMap<&str, (Location, bool)> = HashMap::new();
    for step in &doc.steps {
        let at = step.referenced;
        let step = &step.value;
        let name = step.name.value.as_str();
        if name.trim().is_empty() {
            resolve.problem(step.name.referenced, "the step name must not be empty");
        } else if let Some((first, _)) = seen.get(name) {
            resolve.problem(
                step.name.referenced,
                format!(
                    "duplicate step name `{name}` (first at line {})",
                    first.line()
                ),
            );
        }
        if let Some(earlier) = &step.when_changed {
            match seen.get(earlier.value.as_str()) {
                None => resolve.problem(
                    earlier.referenced,
                    format!(
                        "when-changed refers to `{}`, which is not an earlier step",
                        earlier.value
                    ),
                ),
                Some((_, false)) => resolve.problem(
                    earlier.referenced,
                    format!(
                        "when-changed refers to `{}`, which changes no object",
                        earlier.value
                    ),
                ),
                Some(_) => {}
            }
        }
        let kinds = step.kinds();
        let mut changes = false;
        match kinds.as_slice() {
            [] => resolve.problem(
                at,
                format!(
                    "step `{name}` has no kind; give one of: {}",
                    STEP_KINDS.join(", ")
                ),
            ),
            [(_, spec, _)] => {
                changes = matches!(spec.resolve(&mut resolve), Effect::Change(_));
            }
            [_, rest @ ..] => {
                let all: Vec<&str> = kinds.iter().map(|(kind, ..)| *kind).collect();
                for (_, _, location) in rest {
                    resolve.problem(
                        *location,
                        format!(
                            "step `{name}` has more than one kind ({}); give each its own step",
                            all.join(", ")
                        ),
                    );
                }
            }
        }
        seen.entry(name).or_insert((step.name.referenced, changes));
    }
    problems.extend(resolve.render.problems);
    problems
}

/// Where a parameter is declared (its key under `parameters:`), as far as
/// plain text can tell.
fn parameter_at(source: &str, name: &str) -> usize {
    let base = source.find("\nparameters:").unwrap_or(0);
    source[base..]
        .find(&format!("{name}:"))
        .map(|at| base + at)
        .unwrap_or(0)
}

/// What is wrong with a parameter's default value, if anything: a
/// `namespace` that is not an RFC 1123 label, a control character, or a
/// secret (a default is stored in every run record).
fn default_problem(name: &str, value: &Value) -> Option<String> {
    let text = value.as_str()?;
    if name == "namespace"
        && let Err(err) = names::namespace(text)
    {
        return Some(format!("default of `namespace`: {err}"));
    }
    parameter_value_problem(name, text)
}

/// What is wrong with a parameter value wherever it comes from: control
/// characters (they could rewrite what the terminal shows) or a secret (the
/// parameters are stored in the run record and printed with the plan). The
/// value itself is never part of the answer.
fn parameter_value_problem(name: &str, value: &str) -> Option<String> {
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Some(format!(
            "the value of `{name}` contains the control character {:?}; give plain text",
            c
        ));
    }
    if check::secret_named(name) || crate::redact::contains_secret(value) {
        return Some(format!(
            "`{name}` looks like a secret (a password, token or credential): parameters are \
             stored in the run record and shown with the plan, and {}",
            check::SECRET_ADVICE
        ));
    }
    None
}

fn resolve_precondition(
    resolve: &mut Resolve<'_>,
    precondition: &Precondition,
) -> (ObjectRef, Check) {
    let object = resolve.object(&precondition.object);
    let check = precondition
        .until
        .as_ref()
        .map(|until| resolve.condition(until))
        .unwrap_or(Check::Exists);
    (object, check)
}

/// A step with its parameters filled in.
#[derive(Debug, Clone)]
pub struct BoundStep {
    /// Step name.
    pub name: String,
    /// Kind, in the file's spelling.
    pub kind: &'static str,
    /// Failure handling.
    pub on_failure: OnFailure,
    /// Run only if this earlier step changed something.
    pub when_changed: Option<String>,
    /// What the step does.
    pub effect: Effect,
}

/// A precondition with its parameters filled in.
#[derive(Debug, Clone)]
pub struct BoundPrecondition {
    /// What is checked, in words.
    pub description: String,
    /// The object.
    pub object: ObjectRef,
    /// The condition.
    pub check: Check,
}

/// A playbook bound to parameter values: ready to plan.
#[derive(Debug, Clone)]
pub struct BoundPlaybook {
    /// Playbook name.
    pub name: String,
    /// The namespace the run acts in (and whose Lease guards it).
    pub namespace: String,
    /// The parameter values used.
    pub params: BTreeMap<String, Value>,
    /// Preconditions.
    pub preconditions: Vec<BoundPrecondition>,
    /// Steps.
    pub steps: Vec<BoundStep>,
}

/// Parameters given on the command line that do not fit the playbook.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// `--param` names a parameter the playbook does not declare.
    #[error("unknown parameter `{name}` (the playbook declares: {declared})")]
    Unknown {
        /// The name given.
        name: String,
        /// What the playbook declares.
        declared: String,
    },
    /// A value does not have the parameter's type.
    #[error("invalid --param {name}: the value must be {kind}, got {value}; nothing was changed")]
    Type {
        /// The parameter.
        name: String,
        /// Its type, in words (`an integer`).
        kind: &'static str,
        /// The value given, quoted and escaped.
        value: String,
    },
    /// A parameter without default was not given.
    #[error("parameter `{name}` is required (give --param {name}=VALUE)")]
    Missing {
        /// The parameter.
        name: String,
    },
    /// A value given on the command line (`--param`, `-n`) or taken from the
    /// kubeconfig cannot be used as it is.
    #[error("invalid {given}: {message}; nothing was changed")]
    Given {
        /// How the value was given (`--param deployment`, `-n/--namespace`).
        given: String,
        /// What is wrong, and where the playbook uses the value.
        message: String,
    },
    /// The values make a step invalid (e.g. a negative replica count).
    #[error("{0}")]
    Invalid(String),
}

impl LoadedPlaybook {
    /// Binds parameter values. The namespace is, in order: `namespace`
    /// (from `-n`), `--param namespace=…`, the playbook's default, then
    /// `fallback_namespace` (the kubeconfig context's).
    pub fn bind(
        &self,
        given: &[(String, String)],
        namespace: Option<&str>,
        fallback_namespace: &str,
    ) -> Result<BoundPlaybook, BindError> {
        let declared = || {
            self.doc
                .parameters
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut values = BTreeMap::new();
        let mut origins = BTreeMap::new();
        for (name, raw) in given {
            let Some(parameter) = self.doc.parameters.get(name) else {
                return Err(BindError::Unknown {
                    name: name.clone(),
                    declared: declared(),
                });
            };
            let origin = format!("--param {name}");
            if let Some(message) = parameter_value_problem(name, raw) {
                return Err(BindError::Given {
                    given: origin,
                    message,
                });
            }
            let value = parameter.kind.parse(raw).ok_or_else(|| BindError::Type {
                name: name.clone(),
                kind: match parameter.kind {
                    super::model::ParamType::String => "text",
                    super::model::ParamType::Integer => "a whole number (e.g. 2)",
                    super::model::ParamType::Boolean => "true or false",
                },
                value: names::shown(raw),
            })?;
            if let Some(problem) = parameter.out_of_range(&value) {
                return Err(BindError::Given {
                    given: format!("--param {name}"),
                    message: problem,
                });
            }
            values.insert(name.clone(), value);
            origins.insert(name.clone(), origin);
        }
        if let Some(ns) = namespace {
            if let Err(err) = names::namespace(ns) {
                return Err(BindError::Given {
                    given: "-n/--namespace".into(),
                    message: err,
                });
            }
            if self.doc.parameters.contains_key("namespace") {
                values.insert("namespace".into(), Value::String(ns.to_owned()));
                origins.insert("namespace".into(), "-n/--namespace".into());
            }
        }
        for (name, parameter) in &self.doc.parameters {
            if values.contains_key(name) {
                continue;
            }
            match parameter
                .default
                .as_ref()
                .and_then(|d| parameter.kind.check(&d.0.value))
            {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None if name == "namespace" => {
                    values.insert(name.clone(), Value::String(fallback_namespace.to_owned()));
                }
                None => return Err(BindError::Missing { name: name.clone() }),
            }
        }
        let (run_namespace, origin) = match (namespace, values.get("namespace")) {
            (Some(ns), _) => (ns.to_owned(), "-n/--namespace".to_owned()),
            (None, Some(Value::String(ns))) => (
                ns.clone(),
                origins
                    .get("namespace")
                    .cloned()
                    .unwrap_or_else(|| format!("default of `namespace` in {}", self.file)),
            ),
            _ => (
                fallback_namespace.to_owned(),
                "namespace of the kubeconfig context".to_owned(),
            ),
        };
        if let Err(err) = names::namespace(&run_namespace) {
            return Err(BindError::Given {
                given: origin,
                message: err,
            });
        }
        let mut resolve = Resolve::new(Render::new(&values, &self.source), run_namespace.clone());
        resolve.given = origins;
        let preconditions = self
            .doc
            .preconditions
            .iter()
            .map(|p| {
                let (object, check) = resolve_precondition(&mut resolve, p);
                BoundPrecondition {
                    description: p.description.clone(),
                    object,
                    check,
                }
            })
            .collect();
        let mut steps = Vec::new();
        for step in &self.doc.steps {
            let step = &step.value;
            let Some((kind, spec, _)) = step.kinds().into_iter().next() else {
                return Err(BindError::Invalid(format!(
                    "step `{}` has no kind",
                    step.name.value
                )));
            };
            steps.push(BoundStep {
                name: step.name.value.clone(),
                kind,
                on_failure: step.on_failure,
                when_changed: step.when_changed.as_ref().map(|s| s.value.clone()),
                effect: spec.resolve(&mut resolve),
            });
        }
        if let Some(problem) = resolve.given_problems.first() {
            return Err(BindError::Given {
                given: problem.given.clone(),
                message: format!(
                    "{} (used at {}:{}:{})",
                    problem.message,
                    self.file,
                    problem.at.line(),
                    problem.at.column()
                ),
            });
        }
        if let Some(problem) = resolve.render.problems.first() {
            return Err(BindError::Invalid(format!(
                "{}:{}:{}: {}",
                self.file, problem.line, problem.column, problem.message
            )));
        }
        Ok(BoundPlaybook {
            name: self.doc.name.value.clone(),
            namespace: run_namespace,
            params: values,
            preconditions,
            steps,
        })
    }
}
