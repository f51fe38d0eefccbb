//! Publishing lock events without putting a round trip on the lock's path.
//!
//! An [`EventSink`] hands events to a background task that appends them to the
//! stream in pipelined batches. [`EventSink::publish`] never waits;
//! [`EventSink::flush`] waits until everything published before it is in
//! Redis, which is how `released` is made to precede the key's deletion.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::LockError;
use super::event::{DEFAULT_MAXLEN, DEFAULT_STREAM, LockEvent};

/// Where events go: a stream key and its approximate length bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStream {
    /// Stream key.
    pub key: String,
    /// `MAXLEN ~` bound; 0 is treated as 1.
    pub maxlen: usize,
}

impl Default for EventStream {
    fn default() -> Self {
        Self {
            key: DEFAULT_STREAM.to_string(),
            maxlen: DEFAULT_MAXLEN,
        }
    }
}

impl EventStream {
    /// The `MAXLEN` argument as scripts take it (never `"0"`, which they read
    /// as "publishing off").
    pub(crate) fn maxlen_arg(&self) -> String {
        self.maxlen.max(1).to_string()
    }
}

/// Events waiting in memory before the sink starts dropping them.
const QUEUE: usize = 65_536;
/// Events appended per pipelined batch.
const BATCH: usize = 512;

enum Message {
    Event(LockEvent),
    Flush(oneshot::Sender<bool>),
}

/// A non-blocking publisher of [`LockEvent`]s to one stream.
///
/// Cloning shares the queue and the background task; the task ends when the
/// last clone is dropped. If Redis is unreachable, events are dropped and
/// counted ([`EventSink::dropped`]) rather than queued without bound.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSink")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventSink {
    /// Connects to `url` and starts the publishing task on the current tokio
    /// runtime.
    pub async fn connect(url: &str, stream: EventStream) -> Result<Self, LockError> {
        let conn = super::connect(url, Some(Duration::from_secs(2)), true).await?;
        Ok(Self::spawn(conn, stream))
    }

    /// Starts the publishing task over an existing connection.
    pub fn spawn(conn: redis::aio::ConnectionManager, stream: EventStream) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(publish_loop(conn, stream, rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Queues an event; never waits. Drops (and counts) it if the queue is full.
    pub fn publish(&self, event: LockEvent) {
        if self.tx.try_send(Message::Event(event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits, at most `timeout`, until every event published before this call
    /// has been appended. Returns whether they all were.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(true)))
    }

    /// Events that could not be published (queue full or Redis failing).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    stream: EventStream,
    mut rx: mpsc::Receiver<Message>,
    dropped: Arc<AtomicU64>,
) {
    let maxlen = stream.maxlen.max(1);
    let mut warned = false;
    while let Some(first) = rx.recv().await {
        let mut events = Vec::new();
        let mut waiters = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(event) => events.push(event),
                Message::Flush(done) => waiters.push(done),
            }
            if events.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        let mut ok = true;
        if !events.is_empty() {
            let mut pipe = redis::pipe();
            for event in &events {
                pipe.xadd_maxlen(
                    &stream.key,
                    redis::streams::StreamMaxlen::Approx(maxlen),
                    "*",
                    &event.to_fields(),
                )
                .ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                ok = false;
                dropped.fetch_add(events.len() as u64, Ordering::Relaxed);
                if !warned {
                    tracing::warn!("cannot publish lock events to {}: {e}", stream.key);
                    warned = true;
                }
            } else {
                warned = false;
            }
        }
        for done in waiters {
            let _ = done.send(ok);
        }
    }
}
