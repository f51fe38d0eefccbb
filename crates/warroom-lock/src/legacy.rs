//! **The broken reference: the lock that caused PM-003. Do not use it to
//! protect anything.** It exists only so that drills, tests and benchmarks can
//! reproduce the incident next to the corrected clients.
//!
//! Exactly as the postmortem describes it:
//! 1. acquire is `GET key`, then — if the key was empty — `SET key <holder> NX`
//!    with a TTL: two round trips, a check and then an act;
//! 2. the value is the holder's name, never compared: release is an
//!    unconditional `DEL`, so a holder whose lease expired deletes its
//!    successor's lock;
//! 3. no fencing token: writers cannot be told apart by any store.
//!
//! PM-003's client used `EX` (whole seconds); this one uses `PX` so that a
//! drill can use the incident's 200 ms TTL. The unit is not the bug.
//!
//! What goes wrong: a holder paused longer than the TTL (a GC pause) still
//! believes it holds the lock when it wakes; meanwhile the key expired and a
//! second holder took it. Both write. When the first releases, it deletes the
//! second's key and a third can enter.

use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::event::{EventKind, LockEvent, LockMode};
use super::lease::acquire_with_retry;
use super::sink::EventSink;
use super::{LockError, LockOptions};

/// A lock held through the legacy client. It has no token and no validity:
/// the holder believes it holds the lock until it releases.
#[derive(Debug)]
pub struct LegacyLease {
    key: String,
    acquired_at: Instant,
}

impl LegacyLease {
    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// When the holder came to believe it held the lock.
    pub fn acquired_at(&self) -> Instant {
        self.acquired_at
    }
}

/// The PM-003 lock client. See the module documentation for why it is broken.
#[derive(Clone)]
pub struct LegacyLock {
    conn: ConnectionManager,
    options: LockOptions,
    sink: Option<EventSink>,
}

impl std::fmt::Debug for LegacyLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyLock")
            .field("holder", &self.options.holder)
            .finish()
    }
}

impl LegacyLock {
    /// Connects to one node. Events (without tokens) go to the same node.
    pub async fn connect(url: &str, options: LockOptions) -> Result<Self, LockError> {
        let conn = super::connect(url, None, false).await?;
        let sink = options
            .events
            .clone()
            .map(|stream| EventSink::spawn(conn.clone(), stream));
        Self::with_connection(conn, options, sink)
    }

    /// Uses an existing connection and event sink.
    pub fn with_connection(
        conn: ConnectionManager,
        options: LockOptions,
        sink: Option<EventSink>,
    ) -> Result<Self, LockError> {
        options.validate()?;
        Ok(Self {
            conn,
            options,
            sink,
        })
    }

    /// The options this lock was made with.
    pub fn options(&self) -> &LockOptions {
        &self.options
    }

    /// One attempt: `GET`, then `SET NX` if the key looked empty.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<LegacyLease>, LockError> {
        let mut conn = self.conn.clone();
        let current: Option<String> = conn.get(key).await?;
        if current.is_some() {
            return Ok(None);
        }
        // Time of check to time of use: the key was empty a round trip ago.
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(&self.options.holder)
            .arg("NX")
            .arg("PX")
            .arg(self.options.ttl.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if set.is_none() {
            return Ok(None);
        }
        if let Some(sink) = &self.sink {
            sink.publish(
                LockEvent::new(
                    EventKind::Acquired,
                    LockMode::Legacy,
                    key,
                    &self.options.holder,
                )
                .with_ttl_ms(self.options.ttl.as_millis() as u64),
            );
        }
        Ok(Some(LegacyLease {
            key: key.to_string(),
            acquired_at: Instant::now(),
        }))
    }

    /// Attempts until granted or until `wait` has passed.
    pub async fn acquire(&self, key: &str, wait: Duration) -> Result<LegacyLease, LockError> {
        acquire_with_retry(key, wait, self.options.backoff, || self.try_acquire(key)).await
    }

    /// Unconditional `DEL`: deletes the key whoever holds it now.
    pub async fn release(&self, lease: LegacyLease) -> Result<(), LockError> {
        if let Some(sink) = &self.sink {
            sink.publish(LockEvent::new(
                EventKind::Released,
                LockMode::Legacy,
                &lease.key,
                &self.options.holder,
            ));
            sink.flush(Duration::from_millis(500)).await;
        }
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(&lease.key).await?;
        Ok(())
    }
}
