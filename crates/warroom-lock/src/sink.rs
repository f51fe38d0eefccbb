//! Publishing lock events without putting a round trip on the lock's path.
//!
//! An [`EventSink`] hands events to a background task that appends them to the
//! stream in pipelined batches. [`EventSink::publish`] never waits and returns
//! the event's sequence number; [`EventSink::written`] waits until that event
//! has been sent (or dropped). Redlock and the legacy lock publish through a
//! sink and flush it before they release, so a holder's `acquired` is in the
//! stream before its `released`. The single-node [`super::FencedLock`] needs
//! no sink: its scripts append its events atomically with the grant and the
//! release.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

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
    Event(u64, LockEvent),
    Flush(oneshot::Sender<bool>),
}

/// Progress shared between the publishers and the task.
struct Progress {
    /// Sequence number of the last event published.
    published: AtomicU64,
    /// Every event with a sequence number up to this one has been handled
    /// (appended, or dropped and counted).
    handled: AtomicU64,
    changed: Notify,
    dropped: AtomicU64,
}

/// A non-blocking publisher of [`LockEvent`]s to one stream.
///
/// Cloning shares the queue and the background task; the task ends when the
/// last clone is dropped. If Redis is unreachable, events are dropped and
/// counted ([`EventSink::dropped`]) rather than queued without bound.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Message>,
    progress: Arc<Progress>,
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
        let progress = Arc::new(Progress {
            published: AtomicU64::new(0),
            handled: AtomicU64::new(0),
            changed: Notify::new(),
            dropped: AtomicU64::new(0),
        });
        tokio::spawn(publish_loop(conn, stream, rx, progress.clone()));
        Self { tx, progress }
    }

    /// Queues an event and returns its sequence number; never waits. Drops
    /// (and counts) it if the queue is full.
    pub fn publish(&self, event: LockEvent) -> u64 {
        let seq = self.progress.published.fetch_add(1, Ordering::AcqRel) + 1;
        if self.tx.try_send(Message::Event(seq, event)).is_err() {
            self.progress.dropped.fetch_add(1, Ordering::Relaxed);
            self.progress.handled.fetch_max(seq, Ordering::AcqRel);
        }
        seq
    }

    /// Waits, at most `timeout`, until event `seq` has been appended or
    /// dropped. Returns immediately (no I/O) when it already has, which is
    /// the common case.
    pub async fn written(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.progress.changed.notified();
            if self.progress.handled.load(Ordering::Acquire) >= seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
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
        self.progress.dropped.load(Ordering::Relaxed)
    }
}

async fn publish_loop(
    mut conn: redis::aio::ConnectionManager,
    stream: EventStream,
    mut rx: mpsc::Receiver<Message>,
    progress: Arc<Progress>,
) {
    let maxlen = stream.maxlen.max(1);
    let mut warned = false;
    while let Some(first) = rx.recv().await {
        let mut events = Vec::new();
        let mut waiters = Vec::new();
        let mut last_seq = 0;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Event(seq, event) => {
                    last_seq = seq;
                    events.push(event);
                }
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
                progress
                    .dropped
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                if !warned {
                    tracing::warn!("cannot publish lock events to {}: {e}", stream.key);
                    warned = true;
                }
            } else {
                warned = false;
            }
        }
        if last_seq > 0 {
            progress.handled.fetch_max(last_seq, Ordering::AcqRel);
            progress.changed.notify_waiters();
        }
        for done in waiters {
            let _ = done.send(ok);
        }
    }
}
