//! `labelSelector` and `fieldSelector` query parameters for list and watch.
//!
//! Label selectors support equality (`a=b`, `a==b`), inequality (`a!=b`),
//! existence (`a`) and non-existence (`!a`); set-based forms (`in`, `notin`)
//! are refused with 400. Field selectors support `metadata.name`,
//! `metadata.namespace` and a kind's own string fields (an Event's
//! `involvedObject.*`, …) with `=`, `==` and `!=`. This file knows nothing
//! about HTTP or the store.

use serde_json::Value;

use super::status::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed label or field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

fn split_terms(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty())
}

fn parse_comparison(term: &str) -> Option<Requirement> {
    if let Some((k, v)) = term.split_once("!=") {
        return Some(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once("==") {
        return Some(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = term.split_once('=') {
        return Some(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    None
}

/// Field labels a kind accepts beyond `metadata.name` and `metadata.namespace`.
fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        "Pod" => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        _ => &[],
    }
}

impl Selector {
    /// Parses a `labelSelector` value.
    pub fn labels(text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            if term.contains('(') || term.contains(" in ") || term.contains(" notin ") {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: set-based label selectors are not supported: \
                     {term:?}"
                )));
            }
            let requirement = match parse_comparison(term) {
                Some(r) => r,
                None => match term.strip_prefix('!') {
                    Some(key) => Requirement::Absent(key.trim().into()),
                    None => Requirement::Exists(term.into()),
                },
            };
            let key = match &requirement {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::Absent(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['!', '=']) {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label key {term:?}"
                )));
            }
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Parses a `fieldSelector` value for objects of `kind`: the metadata
    /// fields, plus the string fields the real API server accepts for that
    /// kind (an Event's `involvedObject.*`, `reason` and `type`, which
    /// `kubectl describe` uses; a Pod's `spec.nodeName`, `status.phase`, …).
    pub fn fields_of(kind: &str, text: &str) -> Result<Self, ApiError> {
        let mut requirements = Vec::new();
        for term in split_terms(text) {
            let requirement = parse_comparison(term).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                ))
            })?;
            let (Requirement::Equals(field, _) | Requirement::NotEquals(field, _)) = &requirement
            else {
                continue;
            };
            if field != "metadata.name"
                && field != "metadata.namespace"
                && !kind_fields(kind).contains(&field.as_str())
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether the label selector matches an object's labels.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::Absent(k) => label(k).is_none(),
        })
    }

    /// Whether the field selector matches an object.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        let field = |path: &str| {
            let pointer = format!("/{}", path.replace('.', "/"));
            obj.pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => field(k) == *v,
            Requirement::NotEquals(k, v) => field(k) != *v,
            Requirement::Exists(_) | Requirement::Absent(_) => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_filter_by_equality_and_existence() {
        let pod = json!({"metadata": {"labels": {"app": "order-service", "tier": "web"}}});
        assert!(
            Selector::labels("app=order-service")
                .expect("parses")
                .matches_labels(&pod)
        );
        assert!(
            Selector::labels("app==order-service,tier")
                .expect("parses")
                .matches_labels(&pod)
        );
        assert!(
            !Selector::labels("app!=order-service")
                .expect("parses")
                .matches_labels(&pod)
        );
        assert!(
            !Selector::labels("!tier")
                .expect("parses")
                .matches_labels(&pod)
        );
        assert!(Selector::labels("env in (prod)").is_err());
    }

    #[test]
    fn field_selectors_filter_by_name() {
        let d = json!({"metadata": {"name": "order-service", "namespace": "orders"}});
        assert!(
            Selector::fields_of("", "metadata.name=order-service")
                .expect("parses")
                .matches_fields(&d)
        );
        assert!(
            !Selector::fields_of("", "metadata.name=other")
                .expect("parses")
                .matches_fields(&d)
        );
        assert!(Selector::fields_of("", "spec.replicas=1").is_err());
        let by_object = Selector::fields_of(
            "Event",
            "involvedObject.kind=Deployment,involvedObject.name=order-service",
        )
        .expect("events accept involvedObject fields");
        let event =
            serde_json::json!({"involvedObject": {"kind": "Deployment", "name": "order-service"}});
        assert!(by_object.matches_fields(&event));
        assert!(Selector::fields_of("Deployment", "involvedObject.kind=Pod").is_err());
    }
}
