//! Failures as the Kubernetes API reports them: a `Status` object with a
//! reason, a message worded like the real API server's, details and the HTTP
//! code.
//!
//! This file knows the wording of API errors; it knows nothing about routes or
//! the object store.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// One field problem inside an `Invalid` (422) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    /// The field path, e.g. `spec.replicas`.
    pub field: String,
    /// What is wrong, e.g. `Invalid value: -1: must be greater than or equal to 0`.
    pub message: String,
}

impl FieldCause {
    /// A value that is present but not allowed.
    pub fn invalid(field: &str, value: impl std::fmt::Display, why: &str) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.to_string(),
            message: format!("Invalid value: {value}: {why}"),
        }
    }

    /// A value that must be present.
    pub fn required(field: &str) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.to_string(),
            message: "Required value".to_string(),
        }
    }
}

/// A failed API request: what the server answers instead of an object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (400, 403, 404, 409, 415, 422, …).
    pub code: u16,
    /// Machine-readable reason (`NotFound`, `Conflict`, `Invalid`, …); may be empty.
    pub reason: String,
    /// The message kubectl prints verbatim.
    pub message: String,
    /// `details` of the Status body, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// `deployments.apps` or `configmaps`: how the API server names a resource in messages.
pub fn qualified(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.plural.to_string()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    }
}

/// `Deployment.apps` or `ConfigMap`: how the API server names a kind in `Invalid` messages.
fn qualified_kind(rt: &ResourceType) -> String {
    if rt.group.is_empty() {
        rt.kind.to_string()
    } else {
        format!("{}.{}", rt.kind, rt.group)
    }
}

fn resource_details(rt: &ResourceType, name: &str) -> Value {
    let mut details = json!({ "name": name, "kind": rt.plural });
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    details
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details,
        }
    }

    /// 404: the named object does not exist.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(rt)),
            Some(resource_details(rt, name)),
        )
    }

    /// 404: the path names no resource this server serves.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    /// 409: the write carried a stale `metadata.resourceVersion`.
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(rt)
            ),
            Some(resource_details(rt, name)),
        )
    }

    /// 409: create of an object that already exists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(rt)),
            Some(resource_details(rt, name)),
        )
    }

    /// 422: the object breaks validation rules.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<FieldCause>) -> Self {
        let listed: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let message = if listed.len() == 1 {
            format!(
                "{} \"{name}\" is invalid: {}",
                qualified_kind(rt),
                listed[0]
            )
        } else {
            format!(
                "{} \"{name}\" is invalid: [{}]",
                qualified_kind(rt),
                listed.join(", ")
            )
        };
        let mut details = json!({
            "name": name,
            "kind": rt.kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason,
                "message": c.message,
                "field": c.field,
            })).collect::<Vec<_>>(),
        });
        if !rt.group.is_empty() {
            details["group"] = json!(rt.group);
        }
        Self::new(422, "Invalid", message, Some(details))
    }

    /// 422 without field causes (a JSON patch that cannot be applied).
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message, None)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    /// 405: the verb is not served on this path.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }

    /// 406: the client accepts no media type this server produces.
    pub fn not_acceptable(accept: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!(
                "only the following media types are accepted: application/json, \
                 application/yaml (not {accept})"
            ),
            None,
        )
    }

    /// 413: the body exceeds the server's limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
            None,
        )
    }

    /// 415: a body in a format this verb does not take.
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 410 in a watch: the requested resourceVersion is no longer in history.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
            None,
        )
    }

    /// An answer with an arbitrary code for fault injection, worded like the
    /// real server's answer with that code. `rt` and `name` come from the
    /// request path when it names a resource.
    pub fn injected(
        code: u16,
        method: &str,
        rt: Option<&ResourceType>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let name = name.unwrap_or("");
        match (code, rt) {
            (403, Some(rt)) => {
                let verb = verb_of(method, name.is_empty());
                let target = if name.is_empty() {
                    qualified(rt)
                } else {
                    format!("{} \"{name}\"", qualified(rt))
                };
                let scope = match namespace {
                    Some(ns) => format!(" in the namespace \"{ns}\""),
                    None => " at the cluster scope".to_string(),
                };
                Self::new(
                    403,
                    "Forbidden",
                    format!(
                        "{target} is forbidden: User \"warroom-operator\" cannot {verb} resource \
                         \"{}\" in API group \"{}\"{scope}",
                        rt.plural, rt.group
                    ),
                    Some(resource_details(rt, name)),
                )
            }
            (404, Some(rt)) => Self::not_found(rt, name),
            (409, Some(rt)) => Self::conflict(rt, name),
            (422, Some(rt)) => Self::invalid(
                rt,
                name,
                vec![FieldCause::invalid(
                    "metadata",
                    "injected",
                    "rejected by fault injection",
                )],
            ),
            (401, _) => Self::new(401, "Unauthorized", "Unauthorized", None),
            (403, None) => Self::new(403, "Forbidden", "forbidden: injected fault", None),
            (404, None) => Self::no_route(),
            (429, _) => Self::new(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
                Some(json!({ "retryAfterSeconds": 1 })),
            ),
            (500, _) => Self::new(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
                Some(json!({ "causes": [{ "message": "injected fault" }] })),
            ),
            (503, _) => Self::new(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
                None,
            ),
            (504, _) => Self::new(
                504,
                "Timeout",
                "the server was unable to return a response in the time allotted",
                None,
            ),
            _ => Self::new(code, "", format!("injected fault with status {code}"), None),
        }
    }

    /// The `Status` object sent as the response body.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(map) = status.as_object_mut()
        {
            map.remove("reason");
        }
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// The RBAC verb a request method stands for.
fn verb_of(method: &str, collection: bool) -> &'static str {
    match method.to_ascii_uppercase().as_str() {
        "GET" if collection => "list",
        "GET" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if collection => "deletecollection",
        "DELETE" => "delete",
        _ => "access",
    }
}
