//! The fenced lock on one Redis node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::event::{EventKind, LockEvent, LockMode};
use super::lease::{Issuer, Lease, LeaseInner, acquire_with_retry};
use super::sink::EventSink;
use super::{FencingToken, LockError, LockOptions, fence_counter_key, grant_value, scripts};

pub(crate) struct SingleShared {
    pub(crate) conn: ConnectionManager,
    pub(crate) options: LockOptions,
    pub(crate) stream_key: String,
    pub(crate) maxlen: String,
    sink: Option<EventSink>,
}

/// How long a release waits for its grant's `acquired` event to be written.
const EVENT_WAIT: Duration = Duration::from_millis(250);

impl SingleShared {
    /// Waits until the grant's `acquired` event is in the stream, so that the
    /// lease's next event (written by a script) comes after it.
    pub(crate) async fn after_acquired_event(&self, lease: &LeaseInner) {
        if let (Some(sink), Some(seq)) = (&self.sink, lease.acquired_event()) {
            sink.written(seq, EVENT_WAIT).await;
        }
    }

    pub(crate) async fn extend(&self, lease: &LeaseInner) -> Result<bool, LockError> {
        self.after_acquired_event(lease).await;
        let mut conn = self.conn.clone();
        let held: i64 = scripts::EXTEND
            .key(&lease.key)
            .key(&self.stream_key)
            .arg(&lease.value)
            .arg(lease.ttl.as_millis() as u64)
            .arg(&self.options.holder)
            .arg(lease.token.get())
            .arg(&self.maxlen)
            .arg(LockMode::Fenced.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(held == 1)
    }

    pub(crate) async fn release(&self, lease: &LeaseInner) -> Result<bool, LockError> {
        self.after_acquired_event(lease).await;
        let mut conn = self.conn.clone();
        let released: i64 = scripts::RELEASE
            .key(&lease.key)
            .key(&self.stream_key)
            .arg(&lease.value)
            .arg(&self.options.holder)
            .arg(lease.token.get())
            .arg(&self.maxlen)
            .arg(LockMode::Fenced.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(released == 1)
    }
}

/// A fenced lock on a single Redis node.
///
/// Acquire is one round trip: a `MULTI` transaction of `SET key value NX PX
/// ttl` and `INCR` of the key's fence counter, so the token is taken
/// atomically with the grant (a refused attempt burns a number: tokens are
/// strictly increasing, not dense). No script runs on this path; the
/// `acquired` event goes through an [`EventSink`]. Release is
/// compare-and-delete and extend compare-and-`PEXPIRE`, scripts that write
/// their own event after the `acquired` one. Cloning shares the connection.
#[derive(Clone)]
pub struct FencedLock {
    shared: Arc<SingleShared>,
}

impl std::fmt::Debug for FencedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedLock")
            .field("holder", &self.shared.options.holder)
            .field("ttl", &self.shared.options.ttl)
            .finish()
    }
}

impl FencedLock {
    /// Connects to one node (`redis://`, `rediss://`, credentials in the URL).
    pub async fn connect(url: &str, options: LockOptions) -> Result<Self, LockError> {
        options.validate()?;
        let mut conn = super::connect(url, None, false).await?;
        scripts::preload(&mut conn, scripts::SINGLE_SCRIPTS).await?;
        Self::with_connection(conn, options)
    }

    /// Uses an existing auto-reconnecting connection. With events on, this
    /// starts a publishing task, so it must run inside a tokio runtime.
    pub fn with_connection(
        conn: ConnectionManager,
        options: LockOptions,
    ) -> Result<Self, LockError> {
        let sink = options
            .events
            .clone()
            .map(|stream| EventSink::spawn(conn.clone(), stream));
        Self::with_connection_and_sink(conn, options, sink)
    }

    /// Uses an existing connection and publishes `acquired` events through
    /// `sink` (several locks in one process can share both). The sink must
    /// write to the stream named in `options.events`, on the same node.
    pub fn with_connection_and_sink(
        conn: ConnectionManager,
        options: LockOptions,
        sink: Option<EventSink>,
    ) -> Result<Self, LockError> {
        options.validate()?;
        let (stream_key, maxlen, sink) = match &options.events {
            Some(stream) => (stream.key.clone(), stream.maxlen_arg(), sink),
            None => (
                super::event::DEFAULT_STREAM.to_string(),
                "0".to_string(),
                None,
            ),
        };
        Ok(Self {
            shared: Arc::new(SingleShared {
                conn,
                options,
                stream_key,
                maxlen,
                sink,
            }),
        })
    }

    /// The options this lock was made with.
    pub fn options(&self) -> &LockOptions {
        &self.shared.options
    }

    pub(crate) fn shared(&self) -> &Arc<SingleShared> {
        &self.shared
    }

    /// One attempt: a lease if the key was free, `None` if another holder has it.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<Lease>, LockError> {
        let shared = &self.shared;
        let value = grant_value();
        let ttl = shared.options.ttl;
        let started = Instant::now();
        let mut conn = shared.conn.clone();
        let ttl_ms = ttl.as_millis() as u64;
        let (granted, token): (Option<String>, u64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .cmd("INCR")
            .arg(fence_counter_key(key))
            .query_async(&mut conn)
            .await?;
        if granted.is_none() {
            return Ok(None);
        }
        let event = shared.sink.as_ref().map(|sink| {
            sink.publish(
                LockEvent::new(
                    EventKind::Acquired,
                    LockMode::Fenced,
                    key,
                    &shared.options.holder,
                )
                .with_token(token)
                .with_ttl_ms(ttl_ms),
            )
        });
        Ok(Some(Lease::new(
            LeaseInner::new(
                key.to_string(),
                value,
                FencingToken::new(token),
                ttl,
                shared.options.drift(),
                started,
                Issuer::Single(shared.clone()),
            )
            .with_acquired_event(event),
        )))
    }

    /// Attempts until granted or until `wait` has passed
    /// ([`LockError::Timeout`]), backing off with jitter between attempts.
    pub async fn acquire(&self, key: &str, wait: Duration) -> Result<Lease, LockError> {
        acquire_with_retry(key, wait, self.shared.options.backoff, || {
            self.try_acquire(key)
        })
        .await
    }
}
