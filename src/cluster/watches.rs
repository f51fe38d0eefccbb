//! Watches: a chunked response of newline-delimited JSON events
//! (`{"type":"MODIFIED","object":{…}}`), starting with the current objects
//! or with the changes after a resourceVersion, then following the store
//! until the client leaves, the timeout passes or the server stops.
//!
//! This file knows the watch wire format; routing lives in `routes.rs` and
//! history in `store.rs`.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use super::resources::{self, ResourceType};
use super::selector::Selector;
use super::status::ApiError;
use super::store::{Store, StoreEvent, WatchStart};
use super::table;

/// What a client asked to watch.
pub(crate) struct WatchRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
    /// Send each object as a one-row `Table` (what `kubectl get -w` asks for).
    pub table: Option<table::Include>,
    /// Changes after this resourceVersion; None: current objects first.
    pub since: Option<u64>,
    /// Streaming list: after the current objects, a bookmark marks their end.
    pub send_initial_events: bool,
    /// `allowWatchBookmarks=true`: a `BOOKMARK` carrying the latest
    /// resourceVersion every [`BOOKMARK_EVERY`] and when the watch times out,
    /// so the client resumes from there instead of listing again.
    pub bookmarks: bool,
    pub timeout: Duration,
}

/// How often a watch that allows bookmarks gets one (the real API server
/// sends one about every minute).
pub(crate) const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

fn json_lines(body: Body) -> Response {
    let mut response = Response::new(body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn line(event_type: &str, object: &Value) -> String {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    line
}

impl WatchRequest {
    /// Opens the watch: the response streams events from a task of its own.
    pub fn open(
        self,
        store: &Store,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Response, ApiError> {
        let start = match store.watch_from(self.rt, self.namespace.as_deref(), self.since) {
            Ok(start) => start,
            // As the real server does: the watch opens, says why it cannot
            // continue (410 Expired) and ends; the client lists again.
            Err(expired) if expired.code == 410 => {
                let body = line("ERROR", &expired.to_status());
                return Ok((StatusCode::OK, json_lines(Body::from(body))).into_response());
            }
            Err(other) => return Err(other),
        };
        let (sender, body) = mpsc::channel::<Bytes>(64);
        let initial_events_end = self
            .send_initial_events
            .then(|| initial_events_end(self.rt, start.revision));
        let stream = WatchStream {
            resource: resources::index_of(self.rt),
            namespace: self.namespace,
            labels: self.labels,
            fields: self.fields,
            table: self.table.map(|include| (self.rt, include)),
            bookmarks: self.bookmarks.then(|| (self.rt, store.clone())),
            sender,
        };
        tokio::spawn(stream.run(start, initial_events_end, shutdown, self.timeout));
        let body = Body::from_stream(futures::stream::unfold(body, |mut body| async move {
            body.recv()
                .await
                .map(|chunk| (Ok::<_, Infallible>(chunk), body))
        }));
        Ok(json_lines(body))
    }
}

/// The bookmark that ends the initial events of a streaming list.
fn initial_events_end(rt: &ResourceType, revision: u64) -> Value {
    json!({
        "kind": rt.kind,
        "apiVersion": rt.api_version(),
        "metadata": {
            "resourceVersion": revision.to_string(),
            "annotations": { "k8s.io/initial-events-end": "true" },
        },
    })
}

/// One open watch: forwards matching store events to the response body.
struct WatchStream {
    resource: usize,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
    /// Send each object as a one-row `Table` (what `kubectl get -w` asks for).
    table: Option<(&'static ResourceType, table::Include)>,
    /// Bookmarks asked for: the kind they name and where the revision is.
    bookmarks: Option<(&'static ResourceType, Store)>,
    sender: mpsc::Sender<Bytes>,
}

impl WatchStream {
    fn matches(&self, event: &StoreEvent) -> bool {
        event.resource == self.resource
            && self.namespace.as_deref().is_none_or(|ns| {
                event
                    .object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            })
            && self.labels.matches_labels(&event.object)
            && self.fields.matches_fields(&event.object)
    }

    async fn send(&self, event_type: &str, object: &Value) -> bool {
        let object = match self.table {
            Some((rt, include)) if !matches!(event_type, "ERROR" | "BOOKMARK") => {
                table::table(rt, std::slice::from_ref(object), None, include)
            }
            _ => object.clone(),
        };
        self.sender
            .send(Bytes::from(line(event_type, &object)))
            .await
            .is_ok()
    }

    /// Sends a bookmark at the store's latest revision, if asked for.
    async fn bookmark(&self) -> bool {
        let Some((rt, store)) = &self.bookmarks else {
            return true;
        };
        let object = json!({
            "kind": rt.kind,
            "apiVersion": rt.api_version(),
            "metadata": { "resourceVersion": store.revision().to_string() },
        });
        self.send("BOOKMARK", &object).await
    }

    async fn run(
        self,
        start: WatchStart,
        initial_events_end: Option<Value>,
        mut shutdown: watch::Receiver<bool>,
        timeout: Duration,
    ) {
        let WatchStart {
            initial,
            mut receiver,
            ..
        } = start;
        for event in initial.iter().filter(|e| self.matches(e)) {
            if !self.send(event.event_type.as_str(), &event.object).await {
                return;
            }
        }
        if let Some(bookmark) = initial_events_end
            && !self.send("BOOKMARK", &bookmark).await
        {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmarks =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    // As the real server does: a last bookmark before the
                    // watch ends, to resume from.
                    self.bookmark().await;
                    return;
                }
                _ = bookmarks.tick() => {
                    if !self.bookmark().await {
                        return;
                    }
                }
                _ = shutdown.changed() => return,
                _ = self.sender.closed() => return,
                received = receiver.recv() => match received {
                    Ok(event) => {
                        if self.matches(&event) && !self.send(event.event_type.as_str(), &event.object).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let status = ApiError::expired(0, 0).to_status();
                        let _ = self.send("ERROR", &status).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
