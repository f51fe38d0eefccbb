//! A local Kubernetes-API-compatible server for drills and tests.
//!
//! [`ClusterServer`] speaks the Kubernetes REST API over plain HTTP on a
//! loopback address, with objects kept in memory: discovery (`/version`,
//! `/api`, `/apis`, group versions, OpenAPI v3 path documents), Namespaces,
//! Pods, ConfigMaps, Deployments (with `scale` and `status` subresources),
//! Ingresses, Leases, and two gateway policy kinds (Kong `KongPlugin`, Envoy
//! Gateway `BackendTrafficPolicy`). Verbs: get, list (label and field
//! selectors, kubectl tables), watch (also streaming lists), create, update,
//! patch (merge, strategic merge, JSON patch, server-side apply), delete, all
//! with `dryRun=All`. resourceVersion is one global counter; a write with a
//! stale one gets 409 and a `Status` body worded like the real API server's.
//! kubectl and kube-rs both work against it.
//!
//! By default Deployment status converges at once (every replica ready);
//! [`StatusMode::External`] hands status to a reconcile loop. [`Faults`]
//! makes chosen requests fail and [`RequestLog`] records what clients sent,
//! for tests.
//!
//! Module map: `resources` (the served types), `discovery` and `openapi`
//! (documents), `routes` (paths and verbs), `watches` (event streams),
//! `store` (objects, resourceVersions, history), `kinds` (defaults,
//! validation, Deployment status and scale), `patch`, `selector`, `table`,
//! `status` (error bodies), `faults`, `requests`, `seed`.
//!
//! It is a drill and test target, never a replacement for a real cluster: no
//! authentication (any token is accepted), no admission, no controllers.
//!
//! This module knows nothing about playbooks, the console or locks.

mod discovery;
pub mod events;
mod faults;
mod kinds;
mod logs;
mod openapi;
mod patch;
mod requests;
mod resources;
mod routes;
pub mod seed;
mod selector;
mod status;
mod store;
mod table;
mod watches;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use events::{EventKind, EventRecorder};
pub use faults::Faults;
pub use kinds::template_hash;
pub use logs::{LogSpan, PodLogs};
pub use requests::{RequestLog, RequestRecord};
pub use status::ApiError;
pub use store::{EventType, StatusMode, Store, StoreEvent};

/// Cluster and context name in the kubeconfig the server writes.
pub const CONTEXT: &str = "warroom-local";
/// User name in that kubeconfig.
pub const USER: &str = "warroom-operator";
/// Bearer token in that kubeconfig (the server accepts any token, or none).
pub const TOKEN: &str = "warroom-local-token";
/// Default namespace of that kubeconfig's context.
pub const DEFAULT_NAMESPACE: &str = seed::DRILL_NAMESPACE;

/// How long [`ClusterServer::stop`] waits for open connections to finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the cluster server could not start, or an object could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The object's apiVersion and kind name no type this server serves.
    #[error("the local cluster does not serve kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind {
        /// The object's apiVersion.
        api_version: String,
        /// The object's kind.
        kind: String,
    },
    /// The store refused the object (invalid, conflicting, …).
    #[error("the local cluster refused the object: {0}")]
    Rejected(#[from] ApiError),
}

/// A running local cluster server. Dropping it stops serving (open watches end).
pub struct ClusterServer {
    addr: SocketAddr,
    store: Store,
    faults: Faults,
    requests: RequestLog,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ClusterServer {
    /// Empty cluster (namespaces default + kube-system only) on `listen` (use
    /// 127.0.0.1:0 for a free port).
    pub async fn start(listen: SocketAddr) -> Result<ClusterServer, ClusterError> {
        let store = Store::new();
        for ns in seed::system_namespaces() {
            store.put(ns)?;
        }
        Self::serve(listen, store).await
    }

    /// Cluster seeded with the PM-003 drill objects: namespace `orders`,
    /// Deployment `order-service` (8 replicas, status converged), Ingress
    /// `orders-gateway` (ingressClassName nginx), ConfigMap
    /// `order-service-lock` (data LOCK_MODE: legacy).
    pub async fn start_seeded(listen: SocketAddr) -> Result<ClusterServer, ClusterError> {
        let store = Store::new();
        for object in seed::system_namespaces()
            .into_iter()
            .chain(seed::drill_objects())
        {
            store.put(object)?;
        }
        Self::serve(listen, store).await
    }

    /// Serves an existing store (for example one prepared with
    /// [`StatusMode::External`] before the first request).
    pub async fn serve(listen: SocketAddr, store: Store) -> Result<ClusterServer, ClusterError> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| ClusterError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            addr: listen,
            source,
        })?;
        let faults = Faults::default();
        let requests = RequestLog::default();
        let (shutdown, stopped) = watch::channel(false);
        let app = routes::App {
            store: store.clone(),
            faults: faults.clone(),
            requests: requests.clone(),
            address: addr.to_string(),
            shutdown: stopped.clone(),
        };
        let router = routes::router(app);
        let mut signal = stopped;
        let task = tokio::spawn(async move {
            let until_stopped = async move {
                let _ = signal.wait_for(|stopped| *stopped).await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(until_stopped)
                .await
            {
                tracing::warn!("local cluster server failed: {e}");
            }
        });
        Ok(ClusterServer {
            addr,
            store,
            faults,
            requests,
            shutdown,
            task: Some(task),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:6443`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// kubeconfig YAML: cluster/context "warroom-local", user
    /// "warroom-operator" (token "warroom-local-token" sent as bearer; the
    /// server accepts any/none), namespace orders.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Writes [`Self::kubeconfig`] to `path` (mode 0600: it holds a token).
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path)?;
        file.write_all(self.kubeconfig().as_bytes())?;
        file.sync_all()
    }

    /// Direct access to the object store (for assertions and for a drill's
    /// reconcile loop).
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Fault injection for tests.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The log of recent requests (method, path and query, answer status).
    pub fn requests(&self) -> RequestLog {
        self.requests.clone()
    }

    /// Stops serving: open watches end, in-flight requests finish (for at
    /// most five seconds), then the listener closes.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_GRACE, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A kubeconfig pointing at a local cluster server at `url`.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: {CONTEXT}
    cluster:
      server: {url}
contexts:
  - name: {CONTEXT}
    context:
      cluster: {CONTEXT}
      user: {USER}
      namespace: {DEFAULT_NAMESPACE}
current-context: {CONTEXT}
users:
  - name: {USER}
    user:
      token: {TOKEN}
preferences: {{}}
"
    )
}
