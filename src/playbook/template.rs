//! Parameter references in playbook text: `${name}` is replaced by the
//! parameter's value; `$$` is a literal `$`.
//!
//! Templated values keep where they were written (line and column) so that a
//! reference to an unknown parameter is reported at the exact place.

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::validate::Problem;

/// A string from the playbook that may contain `${parameter}` references.
#[derive(Debug, Clone)]
pub struct Text(pub Spanned<String>);

impl Text {
    /// The text as written.
    pub fn raw(&self) -> &str {
        &self.0.value
    }

    /// Where the text starts in the file.
    pub fn location(&self) -> Location {
        self.0.referenced
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<String>::deserialize(deserializer).map(Text)
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "description": "text; ${name} is replaced by a parameter"})
    }
}

/// An integer written literally or as a `${parameter}` reference.
#[derive(Debug, Clone)]
pub enum IntOrRef {
    /// A literal integer.
    Int(i64),
    /// A templated string that must render to an integer.
    Text(String),
}

/// [`IntOrRef`] with the place it was written.
#[derive(Debug, Clone)]
pub struct Int(pub Spanned<IntOrRef>);

impl<'de> Deserialize<'de> for IntOrRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = IntOrRef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a ${parameter} reference")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrRef, E> {
                Ok(IntOrRef::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrRef, E> {
                i64::try_from(v)
                    .map(IntOrRef::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrRef, E> {
                if v.contains("${") {
                    Ok(IntOrRef::Text(v.to_owned()))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
                }
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<IntOrRef>::deserialize(deserializer).map(Int)
    }
}

impl JsonSchema for Int {
    fn schema_name() -> Cow<'static, str> {
        "Int".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": "\\$\\{[A-Za-z_][A-Za-z0-9_-]*\\}"}
            ]
        })
    }
}

/// A free-form YAML/JSON value (patch bodies) whose strings may contain
/// `${parameter}` references.
#[derive(Debug, Clone)]
pub struct Body(pub Spanned<Value>);

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Spanned::<Value>::deserialize(deserializer).map(Body)
    }
}

impl JsonSchema for Body {
    fn schema_name() -> Cow<'static, str> {
        "Body".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"description": "any value; strings may contain ${name} references"})
    }
}

/// Renders templated values with the run's parameter values, collecting a
/// [`Problem`] for every reference to an unknown parameter or value of the
/// wrong type instead of stopping at the first.
pub struct Render<'a> {
    params: &'a BTreeMap<String, Value>,
    source: &'a str,
    /// Problems found so far.
    pub problems: Vec<Problem>,
}

impl<'a> Render<'a> {
    /// A renderer over the given parameter values and the playbook source
    /// (used to point at the exact reference).
    pub fn new(params: &'a BTreeMap<String, Value>, source: &'a str) -> Self {
        Self {
            params,
            source,
            problems: Vec::new(),
        }
    }

    /// The value of a parameter, if declared.
    pub fn param(&self, name: &str) -> Option<&Value> {
        self.params.get(name)
    }

    /// Renders a string without recording problems (references to unknown
    /// parameters stay as written): for looking at text already rendered
    /// once, such as the keys of a patch body.
    pub fn quiet(&self, raw: &str) -> String {
        let mut quiet = Render::new(self.params, self.source);
        quiet.render_str(raw, Location::UNKNOWN)
    }

    /// Renders a string.
    pub fn text(&mut self, text: &Text) -> String {
        self.render_str(&text.0.value, text.0.referenced)
    }

    /// Renders an optional string.
    pub fn opt_text(&mut self, text: &Option<Text>) -> Option<String> {
        text.as_ref().map(|text| self.text(text))
    }

    /// Renders an integer.
    pub fn int(&mut self, int: &Int) -> i64 {
        match &int.0.value {
            IntOrRef::Int(v) => *v,
            IntOrRef::Text(raw) => {
                let rendered = self.render_str(raw, int.0.referenced);
                match rendered.trim().parse::<i64>() {
                    Ok(v) => v,
                    Err(_) => {
                        if self.problems.is_empty() {
                            self.problems.push(Problem::at(
                                int.0.referenced,
                                format!("`{raw}` must be an integer, it renders to {rendered:?}"),
                            ));
                        }
                        0
                    }
                }
            }
        }
    }

    /// Renders every string inside a body. A string that is exactly one
    /// reference takes the parameter's value with its type (so `${replicas}`
    /// becomes a number) — except for annotation, label and ConfigMap data
    /// values, which Kubernetes keeps as strings.
    pub fn body(&mut self, body: &Body) -> Value {
        let at = body.0.referenced;
        self.render_value(&body.0.value, at, false)
    }

    fn render_value(&mut self, value: &Value, at: Location, text_only: bool) -> Value {
        match value {
            Value::String(s) => {
                if !text_only
                    && let Some(name) = whole_reference(s)
                    && let Some(v) = self.params.get(name)
                {
                    return v.clone();
                }
                Value::String(self.render_str(s, at))
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render_value(v, at, text_only))
                    .collect(),
            ),
            Value::Object(map) => {
                // A JSON patch operation on a string-valued field.
                let op_on_text = map
                    .get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| STRING_MAPS.iter().any(|m| p.contains(&format!("/{m}/"))));
                Value::Object(
                    map.iter()
                        .map(|(k, v)| {
                            let text = text_only
                                || STRING_MAPS.contains(&k.as_str())
                                || (op_on_text && k == "value");
                            (self.render_str(k, at), self.render_value(v, at, text))
                        })
                        .collect(),
                )
            }
            other => other.clone(),
        }
    }

    fn render_str(&mut self, raw: &str, at: Location) -> String {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(inner) = after.strip_prefix('{') {
                match inner.find('}') {
                    Some(end) => {
                        let name = inner[..end].trim();
                        match self.params.get(name) {
                            Some(value) => out.push_str(&plain(value)),
                            None => {
                                // Keep the reference as written so that
                                // later checks do not report an empty value.
                                let reference = format!("${{{}}}", &inner[..end]);
                                out.push_str(&reference);
                                self.problems.push(self.unknown(name, &reference, at));
                            }
                        }
                        rest = &inner[end + 1..];
                    }
                    None => {
                        self.problems.push(Problem::at(
                            at,
                            format!("unterminated reference in {raw:?} (missing `}}`)"),
                        ));
                        out.push_str(&rest[pos..]);
                        rest = "";
                    }
                }
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out
    }

    fn unknown(&self, name: &str, reference: &str, at: Location) -> Problem {
        // A few names at most, and the exact place for the first problems
        // only (finding it reads the file): a hostile file with thousands of
        // references costs time and memory in proportion to its size.
        const LISTED: usize = 10;
        const LOCATED: usize = 100;
        let mut known: Vec<&str> = self
            .params
            .keys()
            .take(LISTED)
            .map(String::as_str)
            .collect();
        if self.params.len() > LISTED {
            known.push("…");
        }
        let message = if known.is_empty() {
            format!("unknown parameter `{name}` (the playbook declares no parameters)")
        } else {
            format!(
                "unknown parameter `{name}` (declared: {})",
                known.join(", ")
            )
        };
        if self.problems.len() >= LOCATED {
            return Problem::at(at, message);
        }
        // Point at the reference itself when it can be found after the node.
        let start = at.span().byte_offset().unwrap_or(0) as usize;
        match self
            .source
            .get(start..)
            .and_then(|tail| tail.find(reference))
        {
            Some(found) => Problem::span(self.source, start + found, reference.len(), message),
            None => Problem::at(at, message),
        }
    }
}

/// The parameter names `raw` refers to with `${name}`, in order.
pub fn references(raw: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => {
                    found.push(inner[..end].trim().to_owned());
                    rest = &inner[end + 1..];
                }
                None => break,
            }
        } else {
            rest = after;
        }
    }
    found
}

/// Maps whose values Kubernetes keeps as strings.
const STRING_MAPS: &[&str] = &["annotations", "labels", "data", "stringData"];

/// The parameter name when `s` is exactly one `${name}` reference.
fn whole_reference(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.contains('}') && !inner.contains('$')).then_some(inner.trim())
}

/// A parameter value as it appears inside text.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params() -> BTreeMap<String, Value> {
        [
            ("replicas".to_string(), json!(1)),
            ("name".to_string(), json!("order-service")),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn text_references_are_replaced_and_dollars_escaped() {
        let params = params();
        let mut render = Render::new(&params, "");
        let at = Location::UNKNOWN;
        assert_eq!(
            render.render_str("scale ${name} to ${replicas}", at),
            "scale order-service to 1"
        );
        assert_eq!(render.render_str("costs $$5 and $x", at), "costs $5 and $x");
        assert!(render.problems.is_empty());
        assert_eq!(render.render_str("${nope}", at), "${nope}");
        assert_eq!(render.problems.len(), 1);
    }

    #[test]
    fn references_are_found_and_dollars_skipped() {
        assert_eq!(
            references("scale ${ name } to ${replicas} for $$5 ${x"),
            vec!["name".to_string(), "replicas".to_string()]
        );
        assert!(references("$${name}").is_empty());
    }

    #[test]
    fn whole_references_keep_their_type_except_in_string_maps() {
        let params = params();
        let mut render = Render::new(&params, "");
        let body = json!({
            "spec": {"replicas": "${replicas}"},
            "metadata": {"annotations": {"a": "${replicas}"}, "labels": {"l": "${replicas}"}},
            "data": {"K": "${replicas}"}
        });
        let out = render.render_value(&body, Location::UNKNOWN, false);
        assert_eq!(out["spec"]["replicas"], json!(1));
        assert_eq!(out["metadata"]["annotations"]["a"], json!("1"));
        assert_eq!(out["metadata"]["labels"]["l"], json!("1"));
        assert_eq!(out["data"]["K"], json!("1"));
        let ops = json!([{"op": "add", "path": "/metadata/annotations/x", "value": "${replicas}"},
                         {"op": "replace", "path": "/spec/replicas", "value": "${replicas}"}]);
        let out = render.render_value(&ops, Location::UNKNOWN, false);
        assert_eq!(out[0]["value"], json!("1"));
        assert_eq!(out[1]["value"], json!(1));
    }
}
