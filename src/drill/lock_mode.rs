//! Keeps the workers' lock mode equal to the `order-service-lock`
//! ConfigMap's `LOCK_MODE`.
//!
//! Workers never talk to Kubernetes: this task, in the drill process,
//! follows the cluster store and writes the mode to one Redis key
//! ([`keys::LOCK_MODE`]) that every worker polls and applies between orders.
//! So `kubectl patch configmap order-service-lock -p
//! '{"data":{"LOCK_MODE":"fenced"}}'` switches a running drill, as the
//! lock-contention playbook does.
//!
//! A value that is not `legacy`, `fenced`, `redlock` or `watch` (or a missing
//! ConfigMap) leaves the current mode in place and is logged. The key is
//! written again every second, so a Redis hiccup does not leave it stale.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::orders::keys;
use super::worker::parse_mode;
use crate::cluster::Store;
use crate::cluster::seed::{DRILL_LOCK_CONFIGMAP, DRILL_NAMESPACE};
use crate::lock::LockMode;

/// The ConfigMap key holding the mode.
pub const LOCK_MODE_FIELD: &str = "LOCK_MODE";

/// The running mirror.
pub struct LockModeMirror {
    history: Arc<Mutex<Vec<LockMode>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for LockModeMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockModeMirror")
            .field("history", &self.history())
            .finish()
    }
}

/// The mode a ConfigMap asks for: `Ok(None)` without `LOCK_MODE`,
/// `Err(text)` for an unknown value.
pub fn mode_of(configmap: &serde_json::Value) -> Result<Option<LockMode>, String> {
    let Some(value) = configmap
        .pointer("/data")
        .and_then(|d| d.get(LOCK_MODE_FIELD))
        .and_then(|v| v.as_str())
    else {
        return Ok(None);
    };
    parse_mode(value)
        .map(Some)
        .ok_or_else(|| value.chars().take(40).collect())
}

impl LockModeMirror {
    /// Starts mirroring the drill's ConfigMap (namespace `orders`).
    pub fn start(store: Store, conn: ConnectionManager) -> Self {
        Self::start_for(store, conn, DRILL_NAMESPACE, DRILL_LOCK_CONFIGMAP)
    }

    /// Starts mirroring `namespace/name`.
    pub fn start_for(store: Store, conn: ConnectionManager, namespace: &str, name: &str) -> Self {
        let history = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(mirror(
            store,
            conn,
            namespace.to_string(),
            name.to_string(),
            history.clone(),
        ));
        Self { history, task }
    }

    /// The modes asked for so far, in order (consecutive repeats merged).
    pub fn history(&self) -> Vec<LockMode> {
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops mirroring.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn mirror(
    store: Store,
    mut conn: ConnectionManager,
    namespace: String,
    name: String,
    history: Arc<Mutex<Vec<LockMode>>>,
) {
    let mut events = store.subscribe();
    let mut current: Option<LockMode> = None;
    let mut refused: Option<String> = None;
    let mut reassert = tokio::time::interval(Duration::from_secs(1));
    loop {
        let wanted = match store
            .get("v1", "ConfigMap", Some(&namespace), &name)
            .as_ref()
            .map(mode_of)
        {
            Some(Ok(Some(mode))) => Some(mode),
            Some(Ok(None)) | None => current,
            Some(Err(text)) => {
                if refused.as_deref() != Some(&text) {
                    tracing::warn!(
                        "{LOCK_MODE_FIELD} {text:?} in ConfigMap {namespace}/{name} is not legacy, \
                         fenced, redlock or watch; the workers keep {}",
                        current.map_or("their mode", LockMode::as_str)
                    );
                    refused = Some(text);
                }
                current
            }
        };
        if let Some(mode) = wanted {
            let written: Result<(), _> =
                redis::AsyncCommands::set(&mut conn, keys::LOCK_MODE, mode.as_str()).await;
            match written {
                Ok(()) => {
                    if current != Some(mode) {
                        tracing::info!(mode = mode.as_str(), "lock mode for the workers");
                        let mut h = history.lock().unwrap_or_else(|e| e.into_inner());
                        if h.last() != Some(&mode) {
                            h.push(mode);
                        }
                        current = Some(mode);
                    }
                }
                Err(e) => tracing::warn!(
                    "cannot write the lock mode to Redis: {}",
                    crate::redact::redact_text(&e.to_string())
                ),
            }
        }
        // Wait for a change of the ConfigMap, or re-assert every second.
        loop {
            tokio::select! {
                _ = reassert.tick() => break,
                event = events.recv() => match event {
                    Ok(event) => {
                        let obj = &event.object;
                        if obj.get("kind").and_then(|k| k.as_str()) == Some("ConfigMap")
                            && obj.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(&name)
                            && obj.pointer("/metadata/namespace").and_then(|n| n.as_str())
                                == Some(&namespace)
                        {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_configmap_names_the_mode() {
        let cm = |v: &str| json!({ "data": { LOCK_MODE_FIELD: v } });
        assert_eq!(mode_of(&cm("fenced")), Ok(Some(LockMode::Fenced)));
        assert_eq!(mode_of(&cm("watch")), Ok(Some(LockMode::Watch)));
        assert_eq!(mode_of(&json!({ "data": {} })), Ok(None));
        assert_eq!(mode_of(&cm("zookeeper")), Err("zookeeper".to_string()));
    }
}
