//! The fenced lock on one Redis node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use super::event::LockMode;
use super::lease::{Issuer, Lease, LeaseInner, acquire_with_retry};
use super::{FencingToken, LockError, LockOptions, fence_counter_key, grant_value, scripts};

pub(crate) struct SingleShared {
    pub(crate) conn: ConnectionManager,
    pub(crate) options: LockOptions,
    pub(crate) stream_key: String,
    pub(crate) maxlen: String,
}

impl SingleShared {
    /// Whether lifecycle events are published.
    fn publishes(&self) -> bool {
        self.maxlen != "0"
    }

    pub(crate) async fn extend(&self, lease: &LeaseInner) -> Result<bool, LockError> {
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
/// Acquire is one round trip. With events on, a script runs `SET key value
/// NX PX ttl`, `INCR` of the key's fence counter and appends the `acquired`
/// event with the token, atomically, so the stream shows every grant before
/// anything that follows it. With events off, it is a `MULTI` transaction of
/// the `SET` and the `INCR` (no script; a refused attempt burns a number,
/// which only makes tokens sparse). Release is compare-and-delete and extend compare-and-`PEXPIRE`,
/// scripts that append their own event. Cloning shares the connection.
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

    /// Uses an existing auto-reconnecting connection (several locks in one
    /// process can share it). Events go to the stream named in
    /// `options.events`, on the same node.
    pub fn with_connection(
        conn: ConnectionManager,
        options: LockOptions,
    ) -> Result<Self, LockError> {
        options.validate()?;
        let (stream_key, maxlen) = match &options.events {
            Some(stream) => (stream.key.clone(), stream.maxlen_arg()),
            None => (super::event::DEFAULT_STREAM.to_string(), "0".to_string()),
        };
        Ok(Self {
            shared: Arc::new(SingleShared {
                conn,
                options,
                stream_key,
                maxlen,
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
        let token: u64 = if shared.publishes() {
            scripts::ACQUIRE
                .key(key)
                .key(fence_counter_key(key))
                .key(&shared.stream_key)
                .arg(&value)
                .arg(ttl_ms)
                .arg(&shared.options.holder)
                .arg(&shared.maxlen)
                .arg(LockMode::Fenced.as_str())
                .invoke_async(&mut conn)
                .await?
        } else {
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
            if granted.is_some() { token } else { 0 }
        };
        if token == 0 {
            return Ok(None);
        }
        Ok(Some(Lease::new(LeaseInner::new(
            key.to_string(),
            value,
            FencingToken::new(token),
            ttl,
            shared.options.drift(),
            started,
            Issuer::Single(shared.clone()),
        ))))
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
