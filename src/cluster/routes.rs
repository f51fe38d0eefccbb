//! HTTP routes of the local cluster: parses Kubernetes REST paths
//! (`/api/v1/namespaces/{ns}/configmaps/{name}`,
//! `/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale`, …), applies fault
//! rules, and turns each verb into a store call, answering with objects,
//! lists, tables, watch streams or `Status` bodies.
//!
//! This file knows HTTP and the REST conventions; object rules live in
//! `kinds.rs` and storage in `store.rs`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::discovery;
use super::faults::Faults;
use super::kinds;
use super::logs;
use super::openapi;
use super::patch::{self, PatchType};
use super::requests::RequestLog;
use super::resources::{self, ResourceType};
use super::selector::Selector;
use super::status::ApiError;
use super::store::{Store, Target};
use super::table;
use super::watches::WatchRequest;

/// Largest request body accepted (the real API server's limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Longest a watch stays open when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Shared state of the routes.
#[derive(Clone)]
pub(crate) struct App {
    pub store: Store,
    pub faults: Faults,
    pub requests: RequestLog,
    /// `host:port` the server is reachable at.
    pub address: String,
    /// Becomes true when the server stops; open watches end.
    pub shutdown: watch::Receiver<bool>,
}

/// The router serving every path.
pub(crate) fn router(app: App) -> Router {
    Router::new().fallback(handle).with_state(app)
}

/// A subresource of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Status,
    Scale,
    /// A pod's log (`pods/{name}/log`).
    Log,
}

/// What a request path names.
#[derive(Debug)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    OpenApiRoot,
    OpenApiGroupVersion(String),
    Resource {
        rt: &'static ResourceType,
        namespace: Option<String>,
        name: Option<String>,
        sub: Option<Sub>,
    },
    Unknown,
}

impl Route {
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            ["version"] => Self::Version,
            ["healthz" | "readyz" | "livez"] => Self::Health,
            ["api"] => Self::CoreVersions,
            ["apis"] => Self::Groups,
            ["apis", group] => Self::Group((*group).to_string()),
            ["openapi", "v3"] => Self::OpenApiRoot,
            ["openapi", "v3", rest @ ..] => Self::OpenApiGroupVersion(rest.join("/")),
            ["api", version, rest @ ..] => Self::resource("", version, rest),
            ["apis", group, version, rest @ ..] => Self::resource(group, version, rest),
            _ => Self::Unknown,
        }
    }

    fn resource(group: &str, version: &str, rest: &[&str]) -> Self {
        if rest.is_empty() {
            return Self::ResourceList(group.to_string(), version.to_string());
        }
        let namespaced_path = rest[0] == "namespaces"
            && rest.len() >= 3
            && !(group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
        let (namespace, rest) = if namespaced_path {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        let Some(rt) = resources::by_path(group, version, rest[0]) else {
            return Self::Unknown;
        };
        let name = rest.get(1).map(|s| (*s).to_string());
        let sub = match rest.get(2) {
            None => None,
            Some(&"status") if rt.has_status => Some(Sub::Status),
            Some(&"scale") if rt.has_scale => Some(Sub::Scale),
            Some(&"log") if rt.kind == "Pod" => Some(Sub::Log),
            Some(_) => return Self::Unknown,
        };
        if rest.len() > 3
            || (rt.namespaced && namespace.is_none() && name.is_some())
            || (!rt.namespaced && namespace.is_some())
        {
            return Self::Unknown;
        }
        Self::Resource {
            rt,
            namespace,
            name,
            sub,
        }
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

fn ok(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// Every request lands here; each is logged with its answer's status.
async fn handle(State(app): State<App>, request: Request) -> Response {
    let method = request.method().clone();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let response = answer(&app, &method, &path_and_query, request).await;
    app.requests
        .record(method.as_str(), &path_and_query, response.status().as_u16());
    response
}

/// The request path with `%XX` escapes decoded, as the real API server
/// reads it before splitting it into segments (so `order%2Dservice` names
/// `order-service`, and an escaped `/` becomes a separator).
fn decoded_path(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "invalid URL escape in the request path at byte {i}"
                    )));
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request("the request path is not UTF-8 once decoded"))
}

async fn answer(app: &App, method: &Method, path_and_query: &str, request: Request) -> Response {
    let route = match decoded_path(request.uri().path()) {
        Ok(path) => Route::parse(&path),
        Err(error) => return error_response(&error),
    };
    tracing::debug!(%method, %path_and_query, "cluster request");
    if let Some(code) = app.faults.take(method.as_str(), path_and_query) {
        let error = match &route {
            Route::Resource {
                rt,
                namespace,
                name,
                ..
            } => ApiError::injected(
                code,
                method.as_str(),
                Some(rt),
                namespace.as_deref(),
                name.as_deref(),
            ),
            _ => ApiError::injected(code, method.as_str(), None, None, None),
        };
        return error_response(&error);
    }
    let accept_aggregated = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(discovery::wants_aggregated);
    let outcome = match route {
        Route::Version => read_only(method, discovery::version()),
        Route::Health => {
            return if method == Method::GET {
                "ok".into_response()
            } else {
                error_response(&ApiError::method_not_allowed())
            };
        }
        Route::CoreVersions | Route::Groups if accept_aggregated => {
            let core = matches!(route, Route::CoreVersions);
            read_only(method, discovery::aggregated(core)).map(|mut response| {
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE),
                );
                response
            })
        }
        Route::CoreVersions => read_only(method, discovery::core_versions(&app.address)),
        Route::Groups => read_only(method, discovery::group_list()),
        Route::Group(group) => match discovery::group(&group) {
            Some(doc) => read_only(method, doc),
            None => Err(ApiError::no_route()),
        },
        Route::ResourceList(group, version) => match discovery::resource_list(&group, &version) {
            Some(doc) => read_only(method, doc),
            None => Err(ApiError::no_route()),
        },
        Route::OpenApiRoot => read_only(method, openapi::root()),
        Route::OpenApiGroupVersion(path) => match openapi::group_version(&path) {
            Some(doc) => read_only(method, doc),
            None => Err(ApiError::no_route()),
        },
        Route::Unknown => Err(ApiError::no_route()),
        Route::Resource {
            rt,
            namespace,
            name,
            sub,
        } => {
            let call = Call {
                store: &app.store,
                rt,
                namespace: namespace.as_deref(),
                name: name.as_deref(),
                sub,
            };
            call.serve(app, request).await
        }
    };
    outcome.unwrap_or_else(|e| error_response(&e))
}

fn read_only(method: &Method, doc: Value) -> Result<Response, ApiError> {
    if method == Method::GET {
        Ok(ok(&doc))
    } else {
        Err(ApiError::method_not_allowed())
    }
}

/// What to do about fields a kind does not define (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldValidation {
    /// Refuse the write (400).
    Strict,
    /// Drop the fields, write, and name them in `Warning` headers (the default).
    Warn,
    /// Drop the fields silently.
    Ignore,
}

/// `text` in double quotes with `"` and `\` escaped and control characters
/// written as escapes (as Go's `%q` does), so that a field name can neither
/// end the quoted text nor break the header line.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_default().to_string()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Adds one `Warning: 299 - "unknown field …"` header per unknown field.
fn with_warnings(mut response: Response, unknown: &[String]) -> Response {
    for field in unknown {
        let warning = format!(
            "299 - {}",
            quoted(&format!("unknown field {}", quoted(field)))
        );
        if let Ok(value) = HeaderValue::from_str(&warning) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

/// Query parameters this server honours (others are accepted and ignored).
struct Params {
    dry_run: bool,
    field_validation: FieldValidation,
    watch: bool,
    /// Streaming list: current objects, then a bookmark, then changes.
    send_initial_events: bool,
    /// `allowWatchBookmarks=true`.
    bookmarks: bool,
    resource_version: Option<String>,
    labels: Selector,
    fields: Selector,
    timeout: Duration,
}

impl Params {
    fn parse(query: &HashMap<String, String>, kind: &str) -> Result<Self, ApiError> {
        let dry_run = match query.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
                )));
            }
        };
        let watch = matches!(
            query.get("watch").map(String::as_str),
            Some("true" | "1" | "True")
        );
        let timeout = match query.get("timeoutSeconds") {
            None => DEFAULT_WATCH_TIMEOUT,
            Some(secs) => Duration::from_secs(secs.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("timeoutSeconds: invalid value {secs:?}"))
            })?)
            .min(DEFAULT_WATCH_TIMEOUT),
        };
        let field_validation = match query.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation: Unsupported value: \"{other}\": supported values: \
                     \"Ignore\", \"Strict\", \"Warn\""
                )));
            }
        };
        Ok(Self {
            dry_run,
            field_validation,
            watch,
            send_initial_events: query.get("sendInitialEvents").map(String::as_str) == Some("true"),
            bookmarks: query.get("allowWatchBookmarks").map(String::as_str) == Some("true"),
            resource_version: query
                .get("resourceVersion")
                .filter(|rv| !rv.is_empty())
                .cloned(),
            labels: Selector::labels(query.get("labelSelector").map_or("", String::as_str))?,
            fields: Selector::fields_of(
                kind,
                query.get("fieldSelector").map_or("", String::as_str),
            )?,
            timeout,
        })
    }
}

/// One request on a resource path.
struct Call<'a> {
    store: &'a Store,
    rt: &'static ResourceType,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    sub: Option<Sub>,
}

async fn read_body(request: Request) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    axum::body::to_bytes(request.into_body(), MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY))
}

fn content_type(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("invalid").to_string())
}

/// Parses a PUT/POST body, which must be JSON (no Content-Type counts as JSON).
fn object_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    if let Some(ct) = content_type {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") && !media.is_empty() {
            return Err(ApiError::unsupported_media_type(&["application/json"]));
        }
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "couldn't get version/kind; json parse error: the body must be a JSON object",
        ));
    }
    Ok(value)
}

fn wants_table(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

impl Call<'_> {
    async fn serve(&self, app: &App, request: Request) -> Result<Response, ApiError> {
        let query: HashMap<String, String> =
            Query::try_from_uri(request.uri())
                .map(|Query(q)| q)
                .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))?;
        let params = Params::parse(&query, self.rt.kind)?;
        let method = request.method().clone();
        let table_rows = wants_table(&request)
            .then(|| table::Include::parse(query.get("includeObject").map(String::as_str)));
        match (method, self.name, self.sub) {
            (Method::GET, None, None) if params.watch => self.watch(app, &params, table_rows),
            (Method::GET, None, None) => self.list(&params, table_rows),
            (Method::POST, None, None) => {
                let ct = content_type(&request);
                let body = read_body(request).await?;
                let object = object_body(ct.as_deref(), &body)?;
                self.create(object, &params)
            }
            (Method::GET, Some(name), Some(Sub::Log)) => {
                let pod = self.store.get_object(self.rt, self.namespace, name)?;
                logs::serve(self.store, &pod, &query, app.shutdown.clone())
            }
            (_, Some(_), Some(Sub::Log)) => Err(ApiError::method_not_allowed()),
            (Method::GET, Some(name), sub) => {
                let object = self.store.get_object(self.rt, self.namespace, name)?;
                Ok(match sub {
                    Some(Sub::Scale) => ok(&kinds::scale_of(&object)),
                    _ => match table_rows {
                        Some(include) => ok(&table::table(
                            self.rt,
                            std::slice::from_ref(&object),
                            None,
                            include,
                        )),
                        None => ok(&object),
                    },
                })
            }
            (Method::PUT, Some(name), sub) => {
                let ct = content_type(&request);
                let body = read_body(request).await?;
                let submitted = object_body(ct.as_deref(), &body)?;
                self.write(name, sub, &params, |current| match sub {
                    Some(Sub::Scale) => with_replicas(current, &submitted, name),
                    _ => Ok(submitted.clone()),
                })
            }
            (Method::PATCH, Some(name), sub) => {
                let ct = content_type(&request).unwrap_or_default();
                let patch_type = match PatchType::from_content_type(&ct) {
                    Some(t) => t,
                    None => return Err(ApiError::unsupported_media_type(patch::ACCEPTED)),
                };
                if patch_type == PatchType::Apply
                    && query.get("fieldManager").is_none_or(String::is_empty)
                {
                    return Err(ApiError::unprocessable(
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: \
                         is required for apply patch",
                    ));
                }
                let body = read_body(request).await?;
                let written = self.write(name, sub, &params, |current| match sub {
                    Some(Sub::Scale) => {
                        let patched = patch::apply(&kinds::scale_of(current), patch_type, &body)?;
                        with_replicas(current, &patched, name)
                    }
                    _ => patch::apply(current, patch_type, &body),
                });
                match written {
                    // Server-side apply creates what does not exist yet.
                    Err(e) if e.code == 404 && patch_type == PatchType::Apply && sub.is_none() => {
                        let mut object = patch::applied_configuration(&body)?;
                        if kinds::name_of(&object).is_some_and(|n| n != name) {
                            return Err(ApiError::bad_request(format!(
                                "the name of the object ({}) does not match the name on the URL \
                                 ({name})",
                                kinds::name_of(&object).unwrap_or_default()
                            )));
                        }
                        kinds::set_field(&mut object, &["metadata", "name"], json!(name))?;
                        self.create(object, &params)
                    }
                    other => other,
                }
            }
            (Method::DELETE, Some(name), None) => {
                let deleted =
                    self.store
                        .delete_object(self.rt, self.namespace, name, params.dry_run)?;
                Ok(ok(&deleted))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    /// Drops the fields the kind does not define from an object about to
    /// be written and returns their paths (for warnings), or refuses the
    /// write under `fieldValidation=Strict`.
    fn check_fields(
        &self,
        object: &mut Value,
        mode: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let Some(map) = object.as_object_mut() else {
            return Ok(Vec::new());
        };
        // The typed decode needs these; the store fills them in anyway.
        map.entry("apiVersion")
            .or_insert_with(|| json!(self.rt.api_version()));
        map.entry("kind").or_insert_with(|| json!(self.rt.kind));
        let unknown = kinds::drop_unknown_fields(self.rt, object);
        if mode == FieldValidation::Strict && !unknown.is_empty() {
            let listed: Vec<String> = unknown
                .iter()
                .map(|field| format!("unknown field \"{field}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                listed.join(", ")
            )));
        }
        Ok(match mode {
            FieldValidation::Ignore => Vec::new(),
            _ => unknown,
        })
    }

    fn create(&self, mut object: Value, params: &Params) -> Result<Response, ApiError> {
        let unknown = self.check_fields(&mut object, params.field_validation)?;
        let created = self
            .store
            .create(self.rt, self.namespace, object, params.dry_run)?;
        Ok(with_warnings(
            json_response(StatusCode::CREATED, &created),
            &unknown,
        ))
    }

    fn write(
        &self,
        name: &str,
        sub: Option<Sub>,
        params: &Params,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Response, ApiError> {
        let target = match sub {
            Some(Sub::Status) => Target::Status,
            _ => Target::Main,
        };
        let mut unknown = Vec::new();
        let written = self.store.modify(
            self.rt,
            self.namespace,
            name,
            target,
            params.dry_run,
            |current| {
                let mut requested = change(current)?;
                if sub.is_none() {
                    unknown = self.check_fields(&mut requested, params.field_validation)?;
                }
                Ok(requested)
            },
        )?;
        Ok(match sub {
            Some(Sub::Scale) => ok(&kinds::scale_of(&written)),
            _ => with_warnings(ok(&written), &unknown),
        })
    }

    fn list(
        &self,
        params: &Params,
        table_rows: Option<table::Include>,
    ) -> Result<Response, ApiError> {
        let (items, revision) =
            self.store
                .list_objects(self.rt, self.namespace, &params.labels, &params.fields);
        if let Some(include) = table_rows {
            return Ok(ok(&table::table(self.rt, &items, Some(revision), include)));
        }
        Ok(ok(&json!({
            "kind": self.rt.list_kind(),
            "apiVersion": self.rt.api_version(),
            "metadata": { "resourceVersion": revision.to_string() },
            "items": items,
        })))
    }

    fn watch(
        &self,
        app: &App,
        params: &Params,
        table_rows: Option<table::Include>,
    ) -> Result<Response, ApiError> {
        // resourceVersion "0" means "any state": send the current objects;
        // so does a streaming list (sendInitialEvents=true).
        let since =
            match params.resource_version.as_deref() {
                _ if params.send_initial_events => None,
                None | Some("0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv:?}"))
                })?),
            };
        let request = WatchRequest {
            rt: self.rt,
            namespace: self.namespace.map(str::to_string),
            labels: params.labels.clone(),
            fields: params.fields.clone(),
            table: table_rows,
            since,
            send_initial_events: params.send_initial_events,
            bookmarks: params.bookmarks,
            timeout: params.timeout,
        };
        request.open(self.store, app.shutdown.clone())
    }
}

/// Sets a Deployment's replicas from a `Scale`, carrying its resourceVersion
/// precondition.
fn with_replicas(current: &Value, scale: &Value, name: &str) -> Result<Value, ApiError> {
    let replicas = kinds::replicas_of_scale(scale, name)?;
    let mut next = current.clone();
    kinds::set_field(&mut next, &["spec", "replicas"], json!(replicas))?;
    if let Some(rv) = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|rv| !rv.is_empty())
    {
        kinds::set_field(&mut next, &["metadata", "resourceVersion"], json!(rv))?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> (String, Option<String>, Option<String>, Option<Sub>) {
        match Route::parse(path) {
            Route::Resource {
                rt,
                namespace,
                name,
                sub,
            } => (rt.plural.to_string(), namespace, name, sub),
            other => panic!("{path} parsed as {other:?}"),
        }
    }

    #[test]
    fn paths_name_resources() {
        assert_eq!(
            resource("/apis/apps/v1/namespaces/orders/deployments/order-service/scale"),
            (
                "deployments".into(),
                Some("orders".into()),
                Some("order-service".into()),
                Some(Sub::Scale)
            )
        );
        assert_eq!(
            resource("/api/v1/namespaces/orders"),
            ("namespaces".into(), None, Some("orders".into()), None)
        );
        assert_eq!(
            resource("/api/v1/namespaces/orders/status"),
            (
                "namespaces".into(),
                None,
                Some("orders".into()),
                Some(Sub::Status)
            )
        );
        assert_eq!(
            resource("/api/v1/namespaces/orders/configmaps"),
            ("configmaps".into(), Some("orders".into()), None, None)
        );
        assert_eq!(
            resource("/apis/apps/v1/deployments"),
            ("deployments".into(), None, None, None)
        );
        assert!(matches!(
            Route::parse("/apis/apps/v1/deployments/x"),
            Route::Unknown
        ));
        assert!(matches!(
            Route::parse("/api/v1/namespaces/orders/configmaps/x/scale"),
            Route::Unknown
        ));
        assert!(matches!(
            Route::parse("/apis/apps/v1"),
            Route::ResourceList(..)
        ));
        assert!(matches!(Route::parse("/nonsense/../x"), Route::Unknown));
    }

    #[test]
    fn escaped_paths_are_read_as_the_api_server_reads_them() {
        let path = decoded_path("/apis/apps/v1/namespaces/orders/deployments/order%2Dservice")
            .expect("decodes");
        assert_eq!(
            resource(&path),
            (
                "deployments".into(),
                Some("orders".into()),
                Some("order-service".into()),
                None
            )
        );
        let path = decoded_path("/api/v1/namespaces/orders/configmaps/a%23b").expect("decodes");
        assert_eq!(resource(&path).2.as_deref(), Some("a#b"));
        // An escaped slash is a separator once decoded: no such route.
        let path = decoded_path("/api/v1/namespaces/orders/configmaps/a%2Fb%2Fc").unwrap();
        assert!(matches!(Route::parse(&path), Route::Unknown));
        assert!(decoded_path("/api/v1/%zz").is_err());
        assert!(decoded_path("/api/v1/%ff").is_err());
    }

    #[test]
    fn warnings_quote_field_names_as_the_api_server_does() {
        let response = with_warnings(
            ok(&json!({})),
            &[
                "spec.a\"b".into(),
                "spec.x\r\nX-Injected: 1".into(),
                "spec.c\\d".into(),
            ],
        );
        let warnings: Vec<&str> = response
            .headers()
            .get_all(header::WARNING)
            .iter()
            .map(|v| v.to_str().expect("visible ASCII"))
            .collect();
        assert_eq!(
            warnings,
            [
                r#"299 - "unknown field \"spec.a\\\"b\"""#,
                r#"299 - "unknown field \"spec.x\\r\\nX-Injected: 1\"""#,
                r#"299 - "unknown field \"spec.c\\\\d\"""#,
            ]
        );
    }
}
