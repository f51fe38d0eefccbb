//! A granted lock: its fencing token, its validity deadline, and how to keep
//! it or give it back.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::redlock::RedlockShared;
use super::single::SingleShared;
use super::{FencingToken, LockError};

/// What [`Lease::release`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The lease was still held and is now released.
    Released,
    /// The lease had already expired or been taken over; nothing was deleted.
    AlreadyLost,
}

/// Which client granted a lease, so it can be extended and released the same way.
pub(crate) enum Issuer {
    Single(Arc<SingleShared>),
    Redlock(Arc<RedlockShared>),
}

pub(crate) struct LeaseInner {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) token: FencingToken,
    pub(crate) ttl: Duration,
    pub(crate) drift: Duration,
    deadline: Mutex<Instant>,
    lost: AtomicBool,
    /// Sequence number, in the issuer's [`crate::EventSink`], of the last
    /// event published about this lease (0: none): a release that appends
    /// its own event waits until this one is in the stream.
    pub(crate) event_seq: AtomicU64,
    issuer: Issuer,
}

impl LeaseInner {
    pub(crate) fn new(
        key: String,
        value: String,
        token: FencingToken,
        ttl: Duration,
        drift: Duration,
        started: Instant,
        issuer: Issuer,
    ) -> Self {
        Self {
            key,
            value,
            token,
            ttl,
            drift,
            deadline: Mutex::new(started + ttl - drift),
            lost: AtomicBool::new(false),
            event_seq: AtomicU64::new(0),
            issuer,
        }
    }

    fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_valid(&self) -> bool {
        !self.lost.load(Ordering::Acquire) && Instant::now() < self.deadline()
    }

    async fn extend(&self) -> Result<(), LockError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(self.lost_error());
        }
        let started = Instant::now();
        let held = match &self.issuer {
            Issuer::Single(shared) => shared.extend(self).await?,
            Issuer::Redlock(shared) => shared.extend(self, started).await?,
        };
        if held {
            *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
                started + self.ttl - self.drift;
            Ok(())
        } else {
            self.lost.store(true, Ordering::Release);
            Err(self.lost_error())
        }
    }

    fn lost_error(&self) -> LockError {
        LockError::LeaseLost {
            key: self.key.clone(),
            token: self.token,
        }
    }
}

/// A granted lock on one key.
///
/// The lease knows its validity deadline on this process's monotonic clock;
/// [`Lease::check`] says whether it is still safe to act, but a pause can
/// come right after the check, so every write must also carry
/// [`Lease::token`] to a fenced store. A lease dropped without
/// [`Lease::release`] stays in Redis until its TTL runs out.
pub struct Lease {
    inner: Arc<LeaseInner>,
    watchdog: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.inner.key)
            .field("token", &self.inner.token)
            .field("remaining", &self.remaining())
            .finish()
    }
}

impl Lease {
    pub(crate) fn new(inner: LeaseInner) -> Self {
        Self {
            inner: Arc::new(inner),
            watchdog: None,
        }
    }

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The grant's random value (what compare-and-delete compares).
    pub(crate) fn value(&self) -> &str {
        &self.inner.value
    }

    /// The single node that granted this lease, if it was a [`super::FencedLock`].
    pub(crate) fn single_node(&self) -> Option<&Arc<SingleShared>> {
        match &self.inner.issuer {
            Issuer::Single(shared) => Some(shared),
            Issuer::Redlock(_) => None,
        }
    }

    /// Marks the lease as given back (after a release done elsewhere).
    pub(crate) fn mark_released(mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        self.inner.lost.store(true, Ordering::Release);
    }

    /// The fencing token of this grant.
    pub fn token(&self) -> FencingToken {
        self.inner.token
    }

    /// The instant after which another holder may have been granted the key.
    pub fn valid_until(&self) -> Instant {
        self.inner.deadline()
    }

    /// Time left before [`Lease::valid_until`] (zero once passed or lost).
    pub fn remaining(&self) -> Duration {
        if self.inner.lost.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        self.inner
            .deadline()
            .saturating_duration_since(Instant::now())
    }

    /// Whether the lease is still valid: not known lost and before its deadline.
    pub fn is_valid(&self) -> bool {
        self.inner.is_valid()
    }

    /// The token if the lease is still valid, or [`LockError::LeaseLost`].
    pub fn check(&self) -> Result<FencingToken, LockError> {
        if self.is_valid() {
            Ok(self.inner.token)
        } else {
            Err(self.inner.lost_error())
        }
    }

    /// Prolongs the lease by its TTL from now, if it is still held.
    pub async fn extend(&self) -> Result<(), LockError> {
        self.inner.extend().await
    }

    /// Starts a watchdog that extends the lease every third of its TTL while
    /// work runs. It stops at release, at drop, or when the lease is lost
    /// (after which [`Lease::is_valid`] is false).
    pub fn keep_alive(&mut self) {
        if self.watchdog.is_some() {
            return;
        }
        let inner = self.inner.clone();
        let period = inner.ttl / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                match inner.extend().await {
                    Ok(()) => {}
                    Err(LockError::LeaseLost { .. }) => break,
                    Err(e) => {
                        tracing::warn!("watchdog could not extend {}: {e}", inner.key);
                        if !inner.is_valid() {
                            inner.lost.store(true, Ordering::Release);
                            break;
                        }
                    }
                }
            }
        });
        self.watchdog = Some(task.abort_handle());
    }

    /// Gives the lock back: deletes the key only if it still holds this
    /// grant's value.
    pub async fn release(mut self) -> Result<Release, LockError> {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
        let inner = &self.inner;
        let released = match &inner.issuer {
            Issuer::Single(shared) => shared.release(inner).await?,
            Issuer::Redlock(shared) => shared.release(inner, inner.is_valid()).await?,
        };
        inner.lost.store(true, Ordering::Release);
        Ok(if released {
            Release::Released
        } else {
            Release::AlreadyLost
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
    }
}

/// Repeats `attempt` with jittered backoff until it grants a lease or `wait`
/// has passed. Unreachable nodes are retried too; if the wait ends while they
/// are unreachable, that error is returned instead of a timeout.
pub(crate) async fn acquire_with_retry<F, Fut, L>(
    key: &str,
    wait: Duration,
    backoff: Backoff,
    mut attempt: F,
) -> Result<L, LockError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<L>, LockError>>,
{
    let started = Instant::now();
    let deadline = started + wait;
    let mut attempts = 0u32;
    loop {
        let unreachable = match attempt().await {
            Ok(Some(lease)) => return Ok(lease),
            Ok(None) => None,
            Err(e) if e.is_unreachable() => Some(e),
            Err(e) => return Err(e),
        };
        attempts += 1;
        let now = Instant::now();
        if now >= deadline {
            return Err(unreachable.unwrap_or_else(|| LockError::Timeout {
                key: key.to_string(),
                waited: now - started,
            }));
        }
        tokio::time::sleep(backoff.delay(attempts).min(deadline - now)).await;
    }
}
