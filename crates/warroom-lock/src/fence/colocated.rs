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
//! [`write_and_release`] also gives the lease back in the same script, and
//! [`acquire_and_read`] reads the record in the script that grants the lease,
//! so a whole read-modify-write cycle is two round trips and two requests:
//! grant-and-read, then write-and-release.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::Script;

use super::{FenceError, Record, WriteOutcome, split_reply, unexpected_reply};
use crate::event::LockMode;
use crate::lease::{Issuer, LeaseInner, acquire_with_retry};
use crate::{FencedLock, FencingToken, Lease, LockError, Release, fence_counter_key, grant_value};

/// The single-node grant (`SET NX PX`, `INCR` of the fence counter, the
/// `acquired` event when publishing) followed by a read of the record, in
/// one script: the value is read under the new lease, in the same round trip.
/// KEYS: lock, fence counter, stream, record.
/// ARGV: grant value, ttl ms, holder, maxlen ('0': no event), mode.
/// Returns 0 if another holder has the key, else the string
/// `"<token> <record fence>"`, followed by `" <value>"` when the record has
/// a value ([`parse_grant`]). A string, not a table: Redis converts a Lua
/// table reply field by field, about a microsecond of its time per call.
static ACQUIRE_AND_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
local token = redis.call('INCR', KEYS[2])
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
    'v', '1', 'kind', 'acquired', 'mode', ARGV[5], 'key', KEYS[1],
    'holder', ARGV[3], 'token', token, 'ttl_ms', ARGV[2])
end
local record = redis.call('HMGET', KEYS[4], 'value', 'fence')
local head = string.format('%d', token) .. ' ' .. (record[2] or '0')
if record[1] then
  return head .. ' ' .. record[1]
end
return head
",
    )
});

/// KEYS: record, lock, fence counter, stream.
/// ARGV: token, value, grant value, holder, maxlen, mode, release ('1'/'0').
/// Returns the string `"<accepted> <fence> <released>"` ([`parse_write`]):
/// accepted 1 or 0; the fence the token was checked against, as Redis
/// stored it; released 1, 0, or -1 when not asked.
///
/// While the lock key still holds this grant's value, no newer lease can
/// have been granted (a grant needs the key free), so the fence counter
/// holds nothing newer than the token and is not read: the record's fence
/// alone decides, and the same `GET` serves the release. Once the key is
/// gone or another grant's, the counter is read as well.
static GUARDED_WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local publish = ARGV[5] ~= '0'
local token = tonumber(ARGV[1])
local held = redis.call('GET', KEYS[2]) == ARGV[3]
local fence_text = redis.call('HGET', KEYS[1], 'fence') or '0'
local fence = tonumber(fence_text)
if not held then
  local counter_text = redis.call('GET', KEYS[3]) or '0'
  if tonumber(counter_text) > fence then
    fence_text = counter_text
    fence = tonumber(counter_text)
  end
end
local accepted = 0
if token < fence then
  if publish then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[6], 'key', KEYS[1],
      'holder', ARGV[4], 'token', ARGV[1], 'fence', fence_text)
  end
else
  redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', ARGV[1])
  accepted = 1
end
local released = '-1'
if ARGV[7] == '1' then
  local kind = 'lost'
  released = '0'
  if held then
    redis.call('DEL', KEYS[2])
    kind = 'released'
    released = '1'
  end
  if publish then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', kind, 'mode', ARGV[6], 'key', KEYS[2],
      'holder', ARGV[4], 'token', ARGV[1])
  end
end
return accepted .. ' ' .. fence_text .. ' ' .. released
",
    )
});

/// Decodes [`ACQUIRE_AND_READ`]'s reply: `None` when the key was taken,
/// else the token, the record's fence and its value.
fn parse_grant(
    reply: redis::Value,
) -> Result<Option<(u64, u64, Option<String>)>, redis::RedisError> {
    const WHAT: &str = "unexpected grant-and-read reply";
    let bytes = match reply {
        redis::Value::Int(0) => return Ok(None),
        redis::Value::BulkString(bytes) => bytes,
        other => return Err(unexpected_reply(WHAT, format!("{other:?}").as_bytes())),
    };
    let (token, fence, value) = split_reply(&bytes, WHAT)?;
    if token == 0 {
        return Err(unexpected_reply(WHAT, &bytes));
    }
    Ok(Some((token, fence, value)))
}

/// Decodes [`GUARDED_WRITE`]'s reply: accepted, released (-1 when not
/// asked), and the fence the token was checked against.
fn parse_write(reply: &[u8]) -> Result<(bool, i64, u64), redis::RedisError> {
    const WHAT: &str = "unexpected fenced write reply";
    let (accepted, fence, released) = split_reply(reply, WHAT)?;
    let released = match released.as_deref() {
        Some("1") => 1,
        Some("0") => 0,
        Some("-1") => -1,
        _ => return Err(unexpected_reply(WHAT, reply)),
    };
    match accepted {
        0 | 1 => Ok((accepted == 1, released, fence)),
        _ => Err(unexpected_reply(WHAT, reply)),
    }
}

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
    let reply: Result<Vec<u8>, redis::RedisError> = GUARDED_WRITE
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
    let (accepted, released, fence) =
        parse_write(&reply.map_err(FenceError::from)?).map_err(FenceError::from)?;
    let outcome = if accepted {
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

/// One attempt of [`acquire_and_read`]: the lease and the record if the key
/// was free, `None` if another holder has it.
pub async fn try_acquire_and_read(
    lock: &FencedLock,
    key: &str,
    record: &str,
) -> Result<Option<(Lease, Record)>, LockError> {
    let shared = lock.shared();
    let value = grant_value();
    let ttl = shared.options.ttl;
    let started = Instant::now();
    let mut conn = shared.conn.clone();
    let reply: redis::Value = ACQUIRE_AND_READ
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
    let Some((token, fence, current)) = parse_grant(reply)? else {
        return Ok(None);
    };
    let lease = Lease::new(LeaseInner::new(
        key.to_string(),
        value,
        FencingToken::new(token),
        ttl,
        shared.options.drift(),
        started,
        Issuer::Single(shared.clone()),
    ));
    Ok(Some((
        lease,
        Record {
            value: current,
            fence,
        },
    )))
}

/// Takes the lock `key` of a single-node [`FencedLock`] and reads `record`
/// (a hash on the same node) in one round trip, retrying with the lock's
/// backoff until granted or until `wait` has passed
/// ([`LockError::Timeout`]). The grant is the same as
/// [`FencedLock::acquire`]'s (token, `acquired` event); the value is the
/// record as it stood right after the grant. Pair it with
/// [`write_and_release`] for a two-request read-modify-write.
pub async fn acquire_and_read(
    lock: &FencedLock,
    key: &str,
    record: &str,
    wait: Duration,
) -> Result<(Lease, Record), LockError> {
    acquire_with_retry(key, wait, lock.options().backoff, || {
        try_acquire_and_read(lock, key, record)
    })
    .await
}

/// Loads the colocated scripts into the lock's node.
pub async fn prepare(lock: &FencedLock) -> Result<(), FenceError> {
    let mut conn = lock.shared().conn.clone();
    GUARDED_WRITE.prepare_invoke().load_async(&mut conn).await?;
    ACQUIRE_AND_READ
        .prepare_invoke()
        .load_async(&mut conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_grant_reply_gives_token_fence_and_value_with_its_spaces() {
        assert_eq!(parse_grant(Value::Int(0)).unwrap(), None);
        assert_eq!(parse_grant(bulk("7 3")).unwrap(), Some((7, 3, None)));
        assert_eq!(
            parse_grant(bulk("7 3 ")).unwrap(),
            Some((7, 3, Some(String::new()))),
            "an empty value is a value"
        );
        assert_eq!(
            parse_grant(bulk("12 0 a b  c")).unwrap(),
            Some((12, 0, Some("a b  c".to_string())))
        );
    }

    #[test]
    fn a_grant_reply_that_is_not_ours_is_an_error_not_a_grant() {
        for bad in [
            "",
            "7",
            "x 3",
            "7 -1",
            "0 3",
            "7 3.5 v",
            "18446744073709551616 1",
        ] {
            let err = parse_grant(bulk(bad)).unwrap_err();
            assert_eq!(
                err.kind(),
                redis::ErrorKind::UnexpectedReturnType,
                "{bad:?}"
            );
        }
        assert!(parse_grant(Value::Int(5)).is_err());
        assert!(parse_grant(Value::Nil).is_err());
        assert!(parse_grant(Value::BulkString(vec![b'7', b' ', b'1', b' ', 0xff])).is_err());
    }

    #[test]
    fn a_write_reply_gives_accepted_released_and_fence() {
        assert_eq!(parse_write(b"1 0 -1").unwrap(), (true, -1, 0));
        assert_eq!(parse_write(b"0 42 1").unwrap(), (false, 1, 42));
        assert_eq!(
            parse_write(b"1 18446744073709551615 0").unwrap(),
            (true, 0, u64::MAX)
        );
        for bad in [
            "", "1", "1 1", "2 3 1", "1 3 2", "1 3 1 4", "1 -3 1", "1 +3 1", "1  3 1",
        ] {
            assert!(parse_write(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }
}
