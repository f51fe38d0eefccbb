//! Kubernetes access: the only module that talks to an API server.
//!
//! It owns how a connection is chosen, exactly as `kubectl` users expect:
//! `--kubeconfig FILE`, else `KUBECONFIG` (several files merged), else
//! `~/.kube/config`, else the in-cluster service account; `--context` picks a
//! context; `-n/--namespace` beats the context's namespace, which beats
//! `default`. It exposes the kubeconfig user name (who acts, for the timeline)
//! and a small JSON object API (get, create, replace) over any kind, CRDs
//! included, found through discovery.
//!
//! It knows nothing about playbooks, steps or the local cluster server: objects
//! go in and out as `serde_json::Value`, errors come back classified so callers
//! can tell "retry with a fresh read" (409) from "not there" (404) from
//! "could not reach the API server".
//!
//! No request is sent for an object whose apiVersion, kind, namespace or name
//! could change the request line: kube-rs puts names into the URL as they
//! are, so a name with `#`, `?`, `/` or `%` would cut off `?dryRun=All` or
//! address another object. Such references are refused with
//! [`KubeError::InvalidReference`] ([`names`] has the rules), whatever
//! validated them before.

pub mod names;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use ::kube::api::{Api, DynamicObject, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long to wait for a TCP/TLS connection to the API server.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long to wait for an answer to one request.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where to connect: the kubectl-style flags.
#[derive(Debug, Clone, Default)]
pub struct KubeTarget {
    /// `--kubeconfig FILE`; when absent `KUBECONFIG`, then `~/.kube/config`,
    /// then the in-cluster configuration are tried.
    pub kubeconfig: Option<PathBuf>,
    /// `--context NAME`; when absent the kubeconfig's current context.
    pub context: Option<String>,
    /// `-n/--namespace`; when absent the context's namespace, else `default`.
    pub namespace: Option<String>,
}

/// A reference to one object by apiVersion, kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `apps/v1`, `v1`, `networking.k8s.io/v1`, …
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `Deployment`, `ConfigMap`, …
    pub kind: String,
    /// Namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectRef {
    /// A namespaced object reference.
    pub fn namespaced(api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(group, _)| group)
            .unwrap_or("")
    }

    /// The API version without the group.
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map(|(_, version)| version)
            .unwrap_or(&self.api_version)
    }

    /// The group/version/kind.
    pub fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(self.group(), self.version(), &self.kind)
    }

    /// The lower-case plural resource name guessed from the kind (what RBAC
    /// rules name when discovery is not at hand).
    pub fn guessed_resource(&self) -> String {
        ApiResource::from_gvk(&self.gvk()).plural
    }

    /// Whether a request for this object can be sent as it is: apiVersion
    /// and kind as the API server spells them, an RFC 1123 namespace, and a
    /// name that is one path segment unchanged by percent-encoding.
    pub fn check(&self) -> Result<(), KubeError> {
        let refused = |message: String| KubeError::InvalidReference {
            object: format!(
                "{} {} {}{}",
                names::shown(&self.api_version),
                names::shown(&self.kind),
                self.namespace
                    .as_deref()
                    .map(|ns| format!("{}/", names::shown(ns)))
                    .unwrap_or_default(),
                names::shown(&self.name)
            ),
            message,
        };
        names::api_version(&self.api_version).map_err(refused)?;
        names::kind(&self.kind).map_err(refused)?;
        if let Some(namespace) = &self.namespace {
            names::namespace(namespace).map_err(refused)?;
        }
        names::path_segment("name", &self.name).map_err(refused)?;
        Ok(())
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {}/{}", self.api_version, self.kind, ns, self.name),
            None => write!(f, "{} {} {}", self.api_version, self.kind, self.name),
        }
    }
}

/// What went wrong talking to the API server.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// No usable configuration (kubeconfig missing or invalid, unknown context).
    #[error("Kubernetes configuration: {0}")]
    Config(String),
    /// The API server could not be reached (connection refused, TLS, timeout).
    #[error("could not reach the Kubernetes API server {server}: {message}")]
    Unreachable {
        /// The server URL.
        server: String,
        /// The transport error.
        message: String,
    },
    /// The object does not exist (404).
    #[error("{object} not found")]
    NotFound {
        /// The missing object.
        object: String,
    },
    /// The write was based on a stale resourceVersion or the object already
    /// exists (409): read again and retry.
    #[error("conflict on {object}: {message}")]
    Conflict {
        /// The object written.
        object: String,
        /// The API server's message.
        message: String,
    },
    /// Any other answer from the API server (403, 422, 500, …).
    #[error("API server refused {verb} {object}: {code} {reason}: {message}")]
    Api {
        /// What was attempted (get, create, update).
        verb: &'static str,
        /// The object.
        object: String,
        /// HTTP status code.
        code: u16,
        /// The Status reason (`Forbidden`, `Invalid`, …).
        reason: String,
        /// The Status message.
        message: String,
    },
    /// The reference cannot be sent: its apiVersion, kind, namespace or name
    /// would not be one path segment of the request as it is.
    #[error("refusing to send a request for {object}: {message}")]
    InvalidReference {
        /// The object, as far as it can be shown.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// An object could not be converted to or from JSON.
    #[error("malformed object {object}: {message}")]
    Malformed {
        /// The object.
        object: String,
        /// What was wrong.
        message: String,
    },
}

impl KubeError {
    /// True when the API server could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, KubeError::Unreachable { .. })
    }
}

/// Where a connection's settings came from, so that a command printed for
/// the operator reaches the same API server as this one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The kubeconfig files read, as absolute paths (several when
    /// `KUBECONFIG` lists several; none for the in-cluster configuration).
    pub kubeconfigs: Vec<PathBuf>,
    /// The context used (`--context`, else the kubeconfig's current context).
    pub context: Option<String>,
}

/// A connection to one API server, with the namespace and user it acts as.
pub struct KubeAccess {
    client: ::kube::Client,
    namespace: String,
    user: String,
    server: String,
    origin: Origin,
    resources: Mutex<HashMap<GroupVersionKind, ApiResource>>,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("user", &self.user)
            .finish()
    }
}

impl KubeAccess {
    /// Builds a client from the kubectl-style target. Does not contact the
    /// server yet.
    pub async fn connect(target: &KubeTarget) -> Result<Self, KubeError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            cluster: None,
            user: None,
        };
        // kube-rs reads kubeconfig files whole: a device or a huge file
        // would never finish.
        for path in kubeconfig_files(target.kubeconfig.as_deref()) {
            check_kubeconfig_file(&path, target.kubeconfig.is_some())?;
        }
        let kubeconfig =
            match &target.kubeconfig {
                Some(path) => Some(Kubeconfig::read_from(path).map_err(|err| {
                    KubeError::Config(format!("reading {}: {err}", path.display()))
                })?),
                None => match Kubeconfig::read() {
                    Ok(config) => Some(config),
                    Err(err) => {
                        if std::env::var_os("KUBECONFIG").is_some() || default_kubeconfig_exists() {
                            return Err(KubeError::Config(err.to_string()));
                        }
                        None
                    }
                },
            };
        let mut origin = Origin::default();
        let (config, user) = match kubeconfig {
            Some(kubeconfig) => {
                origin = Origin {
                    kubeconfigs: kubeconfig_files(target.kubeconfig.as_deref()),
                    context: target
                        .context
                        .clone()
                        .or_else(|| kubeconfig.current_context.clone()),
                };
                let user = kubeconfig_user(&kubeconfig, target.context.as_deref())?;
                let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                    .await
                    .map_err(|err| KubeError::Config(err.to_string()))?;
                (config, user)
            }
            None => {
                if target.context.is_some() {
                    return Err(KubeError::Config(
                        "--context given but no kubeconfig found (KUBECONFIG, ~/.kube/config)"
                            .into(),
                    ));
                }
                let config = ::kube::Config::incluster().map_err(|err| {
                    KubeError::Config(format!(
                        "no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a cluster: {err}"
                    ))
                })?;
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "pod".into());
                (config, format!("serviceaccount@{host}"))
            }
        };
        let mut config = config;
        // A hung API server must not hang a war room: fail and say so.
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let namespace = target
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config.cluster_url.to_string();
        let client = ::kube::Client::try_from(config)
            .map_err(|err| KubeError::Config(format!("building the client: {err}")))?;
        Ok(Self {
            client,
            namespace,
            user,
            server,
            origin,
            resources: Mutex::new(HashMap::new()),
        })
    }

    /// Where the connection's settings came from (kubeconfig files, context).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The namespace commands act in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The kubeconfig user name (the actor recorded on the timeline).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kube-rs client, for watches (`kube::runtime::watcher`).
    pub fn client(&self) -> ::kube::Client {
        self.client.clone()
    }

    /// Checks that the API server answers (`/version`).
    pub async fn ping(&self) -> Result<(), KubeError> {
        self.client
            .apiserver_version()
            .await
            .map(|_| ())
            .map_err(|err| self.classify(err, "get", "/version"))
    }

    /// Reads an object; `Ok(None)` when it does not exist.
    pub async fn get(&self, object: &ObjectRef) -> Result<Option<Value>, KubeError> {
        let api = self.api(object).await?;
        match api.get(&object.name).await {
            Ok(found) => to_value(object, &found).map(Some),
            Err(::kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(err) => Err(self.classify(err, "get", &object.to_string())),
        }
    }

    /// Creates an object (a server-side dry run when `dry_run`).
    pub async fn create(
        &self,
        object: &ObjectRef,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, KubeError> {
        let api = self.api(object).await?;
        let data = from_value(object, body)?;
        let params = post_params(dry_run);
        match api.create(&params, &data).await {
            Ok(created) => to_value(object, &created),
            Err(err) => Err(self.classify(err, "create", &object.to_string())),
        }
    }

    /// Replaces an object (PUT). The body's `metadata.resourceVersion` makes
    /// the write conditional: a stale one gives [`KubeError::Conflict`].
    pub async fn replace(
        &self,
        object: &ObjectRef,
        body: &Value,
        dry_run: bool,
    ) -> Result<Value, KubeError> {
        let api = self.api(object).await?;
        let data = from_value(object, body)?;
        let params = post_params(dry_run);
        match api.replace(&object.name, &params, &data).await {
            Ok(replaced) => to_value(object, &replaced),
            Err(err) => Err(self.classify(err, "update", &object.to_string())),
        }
    }

    async fn api(&self, object: &ObjectRef) -> Result<Api<DynamicObject>, KubeError> {
        object.check()?;
        let resource = self.resource(object).await?;
        Ok(match &object.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The API resource of a kind: discovery first (CRDs with irregular
    /// plurals), the guessed plural when discovery has no answer.
    async fn resource(&self, object: &ObjectRef) -> Result<ApiResource, KubeError> {
        let gvk = object.gvk();
        if let Ok(cache) = self.resources.lock()
            && let Some(found) = cache.get(&gvk)
        {
            return Ok(found.clone());
        }
        let resource = match ::kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, _)) => resource,
            Err(err @ (::kube::Error::HyperError(_) | ::kube::Error::Service(_))) => {
                return Err(self.classify(err, "discover", &object.api_version));
            }
            Err(_) => ApiResource::from_gvk(&gvk),
        };
        if let Ok(mut cache) = self.resources.lock() {
            cache.insert(gvk, resource.clone());
        }
        Ok(resource)
    }

    fn classify(&self, err: ::kube::Error, verb: &'static str, object: &str) -> KubeError {
        match err {
            ::kube::Error::Api(status) => match status.code {
                404 => KubeError::NotFound {
                    object: object.to_owned(),
                },
                409 => KubeError::Conflict {
                    object: object.to_owned(),
                    message: status.message.clone(),
                },
                code => KubeError::Api {
                    verb,
                    object: object.to_owned(),
                    code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
            },
            ::kube::Error::SerdeError(err) => KubeError::Malformed {
                object: object.to_owned(),
                message: err.to_string(),
            },
            other => KubeError::Unreachable {
                server: self.server.clone(),
                message: error_chain(&other),
            },
        }
    }
}

fn post_params(dry_run: bool) -> PostParams {
    PostParams {
        dry_run,
        field_manager: Some("warroom".into()),
    }
}

fn to_value(object: &ObjectRef, found: &DynamicObject) -> Result<Value, KubeError> {
    serde_json::to_value(found).map_err(|err| KubeError::Malformed {
        object: object.to_string(),
        message: err.to_string(),
    })
}

fn from_value(object: &ObjectRef, body: &Value) -> Result<DynamicObject, KubeError> {
    serde_json::from_value(body.clone()).map_err(|err| KubeError::Malformed {
        object: object.to_string(),
        message: err.to_string(),
    })
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The largest kubeconfig file read.
const MAX_KUBECONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// A kubeconfig that can be read: a regular file of a sane size. A missing
/// file is left to kube-rs to report, except one named with `--kubeconfig`.
fn check_kubeconfig_file(path: &std::path::Path, named: bool) -> Result<(), KubeError> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if named => {
            return Err(KubeError::Config(format!(
                "reading {}: {err}",
                path.display()
            )));
        }
        Err(_) => return Ok(()),
    };
    if !metadata.is_file() {
        return Err(KubeError::Config(format!(
            "kubeconfig {} is not a regular file",
            path.display()
        )));
    }
    if metadata.len() > MAX_KUBECONFIG_BYTES {
        return Err(KubeError::Config(format!(
            "kubeconfig {} is larger than {} MiB",
            path.display(),
            MAX_KUBECONFIG_BYTES / (1024 * 1024)
        )));
    }
    Ok(())
}

/// The kubeconfig files read, as kubectl picks them, made absolute.
fn kubeconfig_files(given: Option<&std::path::Path>) -> Vec<PathBuf> {
    let absolute = |path: &std::path::Path| std::path::absolute(path).unwrap_or(path.to_owned());
    if let Some(path) = given {
        return vec![absolute(path)];
    }
    if let Some(list) = std::env::var_os("KUBECONFIG") {
        let files: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .map(|p| absolute(&p))
            .collect();
        if !files.is_empty() {
            return files;
        }
    }
    std::env::var_os("HOME")
        .map(|home| vec![absolute(&PathBuf::from(home).join(".kube").join("config"))])
        .unwrap_or_default()
}

fn default_kubeconfig_exists() -> bool {
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".kube").join("config").exists())
        .unwrap_or(false)
}

/// The user name of the chosen context, as `kubectl config view` shows it.
fn kubeconfig_user(kubeconfig: &Kubeconfig, context: Option<&str>) -> Result<String, KubeError> {
    let name = match context.or(kubeconfig.current_context.as_deref()) {
        Some(name) => name,
        None => {
            return Err(KubeError::Config(
                "kubeconfig has no current context".into(),
            ));
        }
    };
    let found = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == name)
        .ok_or_else(|| KubeError::Config(format!("context {name:?} not found in kubeconfig")))?;
    Ok(found
        .context
        .as_ref()
        .and_then(|ctx| ctx.user.clone())
        .unwrap_or_else(|| name.to_owned()))
}
