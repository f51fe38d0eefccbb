//! Records that live on the lock's own Redis node: writes fenced at grant
//! time, and write-and-release in one round trip.
//!
//! A general fenced store only knows the tokens it has seen, so a new holder
//! must claim a record ([`super::FencedStore::read_for_update`]) before a
//! stale holder's writes are refused. When the records are hashes on the same
//! node as a single-node [`FencedLock`], the store can do better: a write is
//! refused when its token is below the record's fence **or below the lock's
//! fence counter**, which the grant of every newer lease raised. A stale
//! holder is then refused from the moment its successor is granted, with no
//! claim, and a plain read is enough for a read-modify-write.
//!
//! [`write_and_release`] also gives the lease back in the same script, so a
//! whole cycle is two round trips: the grant (`MULTI`) and this script.

use std::sync::LazyLock;

use redis::Script;

use super::{FenceError, WriteOutcome};
use crate::event::LockMode;
use crate::{FencedLock, Lease, Release, fence_counter_key};

/// KEYS: record, lock, fence counter, stream.
/// ARGV: token, value, grant value, holder, maxlen, mode, release ('1'/'0').
/// Returns {accepted, fence, released (-1 when not asked)}.
static GUARDED_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local publish = ARGV[5] ~= '0'
local token = tonumber(ARGV[1])
local fence = math.max(tonumber(redis.call('HGET', KEYS[1], 'fence') or '0'),
                       tonumber(redis.call('GET', KEYS[3]) or '0'))
local accepted = 0
if token < fence then
  if publish then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[6], 'key', KEYS[1],
      'holder', ARGV[4], 'token', ARGV[1], 'fence', tostring(fence))
  end
else
  redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', ARGV[1])
  accepted = 1
end
local released = -1
if ARGV[7] == '1' then
  local kind = 'lost'
  released = 0
  if redis.call('GET', KEYS[2]) == ARGV[3] then
    redis.call('DEL', KEYS[2])
    kind = 'released'
    released = 1
  end
  if publish then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', kind, 'mode', ARGV[6], 'key', KEYS[2],
      'holder', ARGV[4], 'token', ARGV[1])
  end
end
return {accepted, fence, released}
",
    )
});

/// Why a colocated write could not run.
#[derive(Debug, thiserror::Error)]
pub enum ColocatedError {
    /// The lease was not granted by a single-node [`FencedLock`], so its
    /// records are not known to share its node.
    #[error("colocated writes need a lease from a single-node FencedLock")]
    NotSingleNode,
    /// Redis failed.
    #[error(transparent)]
    Fence(#[from] FenceError),
}

async fn guarded_write(
    lease: &Lease,
    record: &str,
    value: &str,
    release: bool,
) -> Result<(WriteOutcome, i64), ColocatedError> {
    let Some(shared) = lease.single_node().cloned() else {
        return Err(ColocatedError::NotSingleNode);
    };
    let mut conn = shared.conn.clone();
    let reply: Result<(i64, u64, i64), redis::RedisError> = GUARDED_WRITE
        .key(record)
        .key(lease.key())
        .key(fence_counter_key(lease.key()))
        .key(&shared.stream_key)
        .arg(lease.token().get())
        .arg(value)
        .arg(lease.value())
        .arg(&shared.options.holder)
        .arg(&shared.maxlen)
        .arg(LockMode::Fenced.as_str())
        .arg(if release { "1" } else { "0" })
        .invoke_async(&mut conn)
        .await;
    let (accepted, fence, released) = reply.map_err(FenceError::from)?;
    let outcome = if accepted == 1 {
        WriteOutcome::Accepted {
            previous_fence: fence,
        }
    } else {
        WriteOutcome::Rejected { fence }
    };
    Ok((outcome, released))
}

/// Writes `value` to `record` (a hash on the lease's node) with the lease's
/// token; refused if the record has accepted a higher token or a newer lease
/// on the same lock has been granted.
pub async fn write(
    lease: &Lease,
    record: &str,
    value: &str,
) -> Result<WriteOutcome, ColocatedError> {
    Ok(guarded_write(lease, record, value, false).await?.0)
}

/// [`write()`], then release the lease, in one script.
pub async fn write_and_release(
    lease: Lease,
    record: &str,
    value: &str,
) -> Result<(WriteOutcome, Release), ColocatedError> {
    let (outcome, released) = guarded_write(&lease, record, value, true).await?;
    lease.mark_released();
    let release = if released == 1 {
        Release::Released
    } else {
        Release::AlreadyLost
    };
    Ok((outcome, release))
}

/// Loads the colocated script into the lock's node.
pub async fn prepare(lock: &FencedLock) -> Result<(), FenceError> {
    let mut conn = lock.shared().conn.clone();
    GUARDED_WRITE.prepare_invoke().load_async(&mut conn).await?;
    Ok(())
}
