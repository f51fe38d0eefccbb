//! warroom-lock: the lock client that order services embed — fenced leases on
//! one Redis node or on several (Redlock), optimistic WATCH updates — and the
//! store side that makes a lease safe to write under ([`fence`]).
//!
//! The crate owns lock keys, fence counters and the lock event stream. It
//! depends on Redis and tokio only: nothing of Kubernetes, HTTP servers,
//! terminals or plotting. PM-003's own lock is kept behind the `legacy`
//! feature, for drills that reproduce the incident; a service never needs it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use warroom_lock::{FencedLock, LockOptions, fence::FencedStore};
//!
//! let url = "redis://127.0.0.1:6379";
//! let lock = FencedLock::connect(url, LockOptions::new(Duration::from_millis(500), "pod-7f")).await?;
//! let store = FencedStore::connect(url, "pod-7f", None).await?;
//! let lease = lock.acquire("lock:ord-9927431", Duration::from_secs(2)).await?;
//! // The write carries the lease's fencing token: a stale holder is refused.
//! let outcome = store.write("order:ord-9927431", lease.token(), "FULFILLED").await?;
//! lease.release().await?;
//! assert!(outcome.is_accepted());
//! # Ok(()) }
//! ```
//!
//! # Safety argument
//!
//! **What a lease guarantees.** A [`Lease`] is granted with a *fencing token*
//! that is strictly greater than the token of every lease granted before it on
//! the same key, and with a *validity deadline* measured on the client's
//! monotonic clock: `acquire start + TTL − drift`, where
//! `drift = 0.01·TTL + 2 ms`. While [`Lease::is_valid`] is true, no other
//! holder can have been granted the key (for Redlock: unless a node lost its
//! keys, see below). Past the deadline, the holder must assume that another
//! holder exists. A holder can be paused at any instant (PM-003: a 280–400 ms
//! GC pause), including between checking validity and writing, so a lease
//! alone never makes a write safe: writes must carry the token to a store that
//! refuses tokens lower than the highest it has seen ([`crate::fence`]).
//!
//! **Single node.** Acquire is one atomic round trip: `SET key value NX PX
//! ttl` with a random per-grant value, and `INCR` of the key's fence counter
//! (a script that also appends the `acquired` event when events are on; a
//! `MULTI` transaction otherwise, where a refused attempt burns a number,
//! which only makes tokens sparse); the grant and its token happen together.
//! Release is compare-and-delete and extend is compare-and-`PEXPIRE`, so a
//! holder whose lease expired can never remove or prolong a successor's.
//!
//! **Redlock.** Acquire runs two rounds against N independent nodes, in
//! parallel, each request bounded by a per-node timeout much smaller than the
//! TTL. Round one sets the key (`SET NX PX`) and then reads the node's fence
//! counter (no other grant can commit a counter on a node whose key this
//! grant owns, so nothing slips between the two). With a quorum (N/2+1) of grants the token is `max(counters) + 1`;
//! round two writes it back to each granting node, only if that node's key
//! still holds this grant's value, and only raising the counter. The grant
//! counts when a quorum of those writes succeeded and the validity
//! (`TTL − elapsed − drift`) is still positive; otherwise every node is
//! released. Two valid grants G1 before G2 have written quorums that intersect
//! in a node Z; on Z their key ownerships do not overlap, G1 wrote its token
//! while it owned Z, and G2 read Z's counter when it took Z afterwards, so
//! G2's token exceeds G1's. Taking the maximum of independent `INCR`s would
//! not be monotonic: two quorums can share only a node whose counter is low.
//! The write-back cannot share a round trip with anything that uses the
//! token: until a quorum holds it, a later grant may compute the same or a
//! lower one. Release is one round of compare-and-deletes on every node;
//! when the event stream is on the first node, that node's script also
//! appends the `released` event (see [`Redlock`]).
//!
//! **Assumptions.** Clock rates on clients and Redis nodes differ by less than
//! the drift allowance (1 % of the TTL plus 2 ms); Redis expires keys on time.
//! Fence counters must survive restarts: run nodes with `appendonly yes`
//! (`appendfsync always`, or `everysec` with a restart delayed by more than
//! one second plus the TTL). A node that restarts without its data can grant
//! a key that a live lease still holds on it and can hand out a token that is
//! not fresh; with AOF the counters come back and tokens stay monotonic (the
//! tests kill and restart nodes to check this). Lua numbers are doubles:
//! tokens are exact up to 2^53.
//!
//! **Not guaranteed.** Mutual exclusion across a paused holder (no lock can
//! stop a frozen process from writing when it wakes; the fence does), and
//! anything on Redis Cluster (the lock key, its fence counter and the event
//! stream are separate keys and need not share a slot).
//!
//! # Event stream
//!
//! Each lifecycle change is appended to a Redis Stream (default
//! [`event::DEFAULT_STREAM`], trimmed with `MAXLEN ~`) for the exporter; the
//! schema is documented in [`event`].

#![warn(missing_docs)]

mod backoff;
pub mod event;
pub mod fence;
mod lease;
#[cfg(feature = "legacy")]
pub mod legacy;
mod redlock;
mod scripts;
mod single;
mod sink;
mod token;
mod watch;

use std::time::Duration;

pub use backoff::Backoff;
pub use event::{EventKind, LockEvent, LockMode};

pub use lease::{Lease, Release};
pub use redlock::Redlock;
pub use single::FencedLock;
pub use sink::{EventSink, EventStream};
pub use token::FencingToken;
pub use watch::{WatchOutcome, WatchSession};

/// Everything that can go wrong while taking, keeping or giving back a lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No lease could be taken before the caller's deadline.
    #[error("timed out after {waited:?} waiting for lock {key:?}")]
    Timeout {
        /// The lock key.
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// Too few Redlock nodes answered to reach a quorum.
    #[error("only {answered} of {nodes} lock nodes answered; {quorum} are needed for lock {key:?}")]
    NoQuorum {
        /// The lock key.
        key: String,
        /// Nodes that answered (granting or not).
        answered: usize,
        /// Configured nodes.
        nodes: usize,
        /// Nodes needed.
        quorum: usize,
    },
    /// The lease expired or was taken over before the operation.
    #[error("the lease on {key:?} (token {token}) is no longer held")]
    LeaseLost {
        /// The lock key.
        key: String,
        /// The lost lease's token.
        token: FencingToken,
    },
    /// An optimistic update kept conflicting and gave up.
    #[error("update of {key:?} conflicted {attempts} times; giving up")]
    Conflict {
        /// The watched key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The options make no sense (for example a zero TTL).
    #[error("invalid lock options: {0}")]
    Options(String),
}

impl LockError {
    /// Whether the error means a Redis node could not be reached (as opposed
    /// to an answer the caller must act on).
    pub fn is_unreachable(&self) -> bool {
        match self {
            LockError::Redis(e) => {
                e.is_io_error()
                    || e.is_connection_refusal()
                    || e.is_connection_dropped()
                    || e.is_timeout()
            }
            LockError::NoQuorum { .. } => true,
            _ => false,
        }
    }
}

/// How leases are taken and kept; shared by [`FencedLock`] and [`Redlock`].
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// Time to live of the key in Redis; the lease's validity is shorter by
    /// the elapsed acquire time and the drift allowance.
    pub ttl: Duration,
    /// Who is asking (pod or worker name); appears in events.
    pub holder: String,
    /// Waiting between attempts in [`FencedLock::acquire`] and friends.
    pub backoff: Backoff,
    /// Redlock only: how long to wait for each node per request. `None`
    /// picks `TTL / 10`, clamped to 5–250 ms.
    pub node_timeout: Option<Duration>,
    /// Where lifecycle events go; `None` publishes nothing.
    pub events: Option<EventStream>,
}

impl LockOptions {
    /// Options with the given TTL and holder name, default backoff, and events
    /// published to the default stream.
    pub fn new(ttl: Duration, holder: impl Into<String>) -> Self {
        Self {
            ttl,
            holder: holder.into(),
            backoff: Backoff::default(),
            node_timeout: None,
            events: Some(EventStream::default()),
        }
    }

    /// The same options without event publishing.
    pub fn without_events(mut self) -> Self {
        self.events = None;
        self
    }

    /// Drift allowance: 1 % of the TTL plus 2 ms.
    pub fn drift(&self) -> Duration {
        self.ttl / 100 + Duration::from_millis(2)
    }

    /// Per-node request timeout for Redlock.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout.unwrap_or_else(|| {
            (self.ttl / 10).clamp(Duration::from_millis(5), Duration::from_millis(250))
        })
    }

    fn validate(&self) -> Result<(), LockError> {
        if self.ttl <= self.drift() {
            return Err(LockError::Options(format!(
                "ttl {:?} must exceed the drift allowance {:?}",
                self.ttl,
                self.drift()
            )));
        }
        if self.ttl.as_millis() > u128::from(u32::MAX) {
            return Err(LockError::Options(format!(
                "ttl {:?} is too long",
                self.ttl
            )));
        }
        if self.holder.is_empty() {
            return Err(LockError::Options("holder must not be empty".into()));
        }
        Ok(())
    }
}

/// A holder name for this process: `$HOSTNAME` (the pod name in Kubernetes)
/// or `host`, then the process id.
pub fn default_holder() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".to_string());
    format!("{host}:{}", std::process::id())
}

/// A fresh random value identifying one grant.
pub(crate) fn grant_value() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Opens an auto-reconnecting connection to one node. `redis://`,
/// `rediss://` (TLS; `#insecure` accepts self-signed certificates) and
/// credentials in the URL all work.
///
/// With `lazy`, nothing is sent until the first request, so a node that is
/// down at start-up does not prevent the others from being used.
pub async fn connect(
    url: &str,
    response_timeout: Option<Duration>,
    lazy: bool,
) -> Result<redis::aio::ConnectionManager, LockError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(response_timeout)
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    if lazy {
        Ok(redis::aio::ConnectionManager::new_lazy_with_config(
            client, config,
        )?)
    } else {
        Ok(client.get_connection_manager_with_config(config).await?)
    }
}

/// The key holding the fence counter of a lock key.
pub fn fence_counter_key(lock_key: &str) -> String {
    format!("{lock_key}:fence")
}
