//! Records that live on the lock's own Redis node: lock and claim in one round
//! trip, write and release in another.
//!
//! When the protected records are hashes on the same node as a single-node
//! [`FencedLock`], the four steps of a read-modify-write under a lock
//! (acquire, claim, write, release) collapse into two scripts, each atomic:
//! [`lock_and_claim`] grants the lease, takes its token and raises the
//! record's fence to it; [`write_and_release`] writes if the fence still
//! allows and then gives the lease back. Events are written by the same
//! scripts, so they are exactly ordered with the changes. The guarantees are
//! those of the separate calls ([`crate::lock`], [`super::FencedStore`]).

use std::sync::LazyLock;
use std::time::Instant;

use redis::Script;

use super::{Claim, FenceError, WriteOutcome};
use crate::lock::event::LockMode;
use crate::lock::{
    FencedLock, FencingToken, Issuer, Lease, LeaseInner, Release, fence_counter_key, grant_value,
};

/// KEYS: lock, fence counter, stream, record.
/// ARGV: value, ttl ms, holder, maxlen, mode.
/// Returns nil when the lock is held, else {token, claimed, fence, value}.
static LOCK_AND_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
local token = redis.call('INCR', KEYS[2])
local publish = ARGV[4] ~= '0'
if publish then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
    'v', '1', 'kind', 'acquired', 'mode', ARGV[5], 'key', KEYS[1],
    'holder', ARGV[3], 'token', token, 'ttl_ms', ARGV[2])
end
local record = redis.call('HMGET', KEYS[4], 'fence', 'value')
local fence = tonumber(record[1] or '0')
if token < fence then
  if publish then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[5], 'key', KEYS[4],
      'holder', ARGV[3], 'token', token, 'fence', tostring(fence))
  end
  return {token, 0, fence, false}
end
if token > fence then
  redis.call('HSET', KEYS[4], 'fence', token)
end
return {token, 1, fence, record[2]}
",
    )
});

/// KEYS: record, lock, stream.
/// ARGV: token, value, grant value, holder, maxlen, mode.
/// Returns {accepted, fence before, released}.
static WRITE_AND_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local publish = ARGV[5] ~= '0'
local fence = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
local accepted = 0
if tonumber(ARGV[1]) < fence then
  if publish then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[6], 'key', KEYS[1],
      'holder', ARGV[4], 'token', ARGV[1], 'fence', tostring(fence))
  end
else
  redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', ARGV[1])
  accepted = 1
end
local kind = 'lost'
local released = 0
if redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
  kind = 'released'
  released = 1
end
if publish then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*',
    'v', '1', 'kind', kind, 'mode', ARGV[6], 'key', KEYS[2],
    'holder', ARGV[4], 'token', ARGV[1])
end
return {accepted, fence, released}
",
    )
});

/// Takes the lock on `key` and claims `record` (on the lock's node) for the
/// new lease's token, in one round trip. `None` when another holder has the
/// lock. The claim is refused only if the record has seen a higher token than
/// this lock's counter issued (records guarded by a different lock key).
pub async fn lock_and_claim(
    lock: &FencedLock,
    key: &str,
    record: &str,
) -> Result<Option<(Lease, Claim)>, FenceError> {
    let shared = lock.shared();
    let value = grant_value();
    let ttl = shared.options.ttl;
    let started = Instant::now();
    let mut conn = shared.conn.clone();
    let reply: Option<(u64, i64, u64, Option<String>)> = LOCK_AND_CLAIM
        .key(key)
        .key(fence_counter_key(key))
        .key(&shared.stream_key)
        .key(record)
        .arg(&value)
        .arg(ttl.as_millis() as u64)
        .arg(&shared.options.holder)
        .arg(&shared.maxlen)
        .arg(LockMode::Fenced.as_str())
        .invoke_async(&mut conn)
        .await?;
    Ok(reply.map(|(token, claimed, fence, current)| {
        let lease = Lease::new(LeaseInner::new(
            key.to_string(),
            value,
            FencingToken::new(token),
            ttl,
            shared.options.drift(),
            started,
            Issuer::Single(shared.clone()),
        ));
        let claim = if claimed == 1 {
            Claim::Claimed {
                value: current,
                previous_fence: fence,
            }
        } else {
            Claim::Rejected { fence }
        };
        (lease, claim)
    }))
}

/// Why [`write_and_release`] could not run.
#[derive(Debug, thiserror::Error)]
pub enum ColocatedError {
    /// The lease was not granted by a single-node [`FencedLock`], so its
    /// records are not known to share its node.
    #[error("write_and_release needs a lease from a single-node FencedLock")]
    NotSingleNode(Lease),
    /// Redis failed.
    #[error(transparent)]
    Fence(#[from] FenceError),
}

/// Writes `value` to `record` with the lease's token (refused if the record
/// has seen a higher one), then releases the lease — both on the lease's node,
/// in one round trip.
pub async fn write_and_release(
    lease: Lease,
    record: &str,
    value: &str,
) -> Result<(WriteOutcome, Release), ColocatedError> {
    let Some(shared) = lease.single_node().cloned() else {
        return Err(ColocatedError::NotSingleNode(lease));
    };
    let mut conn = shared.conn.clone();
    let reply: Result<(i64, u64, i64), redis::RedisError> = WRITE_AND_RELEASE
        .key(record)
        .key(lease.key())
        .key(&shared.stream_key)
        .arg(lease.token().get())
        .arg(value)
        .arg(lease.value())
        .arg(&shared.options.holder)
        .arg(&shared.maxlen)
        .arg(LockMode::Fenced.as_str())
        .invoke_async(&mut conn)
        .await;
    let (accepted, fence, released) = reply.map_err(FenceError::from)?;
    lease.mark_released();
    let write = if accepted == 1 {
        WriteOutcome::Accepted {
            previous_fence: fence,
        }
    } else {
        WriteOutcome::Rejected { fence }
    };
    let release = if released == 1 {
        Release::Released
    } else {
        Release::AlreadyLost
    };
    Ok((write, release))
}
