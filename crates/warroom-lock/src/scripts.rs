//! The Lua scripts that make each lock operation one atomic round trip.
//!
//! Conventions: `KEYS` are declared for every key touched (lock key, fence
//! counter, event stream); an event `MAXLEN` of `"0"` means "publish nothing".

use std::sync::LazyLock;

use redis::Script;

/// Single node acquire with its event: `SET NX PX`, `INCR` of the fence
/// counter and the `acquired` event carrying the token, atomically.
/// KEYS: lock, fence counter, stream. ARGV: value, ttl ms, holder, maxlen,
/// mode. Returns the fencing token, or 0 if another holder has the key.
pub(crate) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
local token = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
  'v', '1', 'kind', 'acquired', 'mode', ARGV[5], 'key', KEYS[1],
  'holder', ARGV[3], 'token', token, 'ttl_ms', ARGV[2])
return token
",
    )
});

/// Single node release (compare-and-delete). KEYS: lock, stream.
/// ARGV: value, holder, token, maxlen, mode. Returns 1 if released, 0 if the
/// lease was already gone (then a `lost` event is published).
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local kind = 'lost'
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  kind = 'released'
  released = 1
end
if ARGV[4] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
    'v', '1', 'kind', kind, 'mode', ARGV[5], 'key', KEYS[1],
    'holder', ARGV[2], 'token', ARGV[3])
end
return released
",
    )
});

/// Single node extend (compare-and-`PEXPIRE`). KEYS: lock, stream.
/// ARGV: value, ttl ms, holder, token, maxlen, mode. Returns 1 or 0.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if ARGV[5] ~= '0' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
      'v', '1', 'kind', 'extended', 'mode', ARGV[6], 'key', KEYS[1],
      'holder', ARGV[3], 'token', ARGV[4], 'ttl_ms', ARGV[2])
  end
  return 1
end
if ARGV[5] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
    'v', '1', 'kind', 'lost', 'mode', ARGV[6], 'key', KEYS[1],
    'holder', ARGV[3], 'token', ARGV[4], 'reason', 'extend found the lease gone')
end
return 0
",
    )
});

/// Redlock round two on one node: set the fence counter to the token, only
/// while this grant still owns the node's key. KEYS: lock, fence counter.
/// ARGV: value, token. Returns 1 if the node still owned the key.
///
/// This only ever raises the counter, without reading it again: round one
/// read it after taking the key, only a grant owning the key writes it,
/// and the token exceeds every counter round one read.
pub(crate) static REDLOCK_COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
",
    )
});

/// Compare-and-delete without events (Redlock nodes). KEYS: lock. ARGV: value.
pub(crate) static COMPARE_DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// Redlock release on the node that holds the event stream: compare-and-
/// delete, and the `released` or `lost` event (the client decides which,
/// from the lease's validity), in one script. KEYS: lock, stream.
/// ARGV: value, holder, token, maxlen, mode, kind. Returns 1 if deleted.
pub(crate) static COMPARE_DELETE_EVENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local deleted = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  deleted = redis.call('DEL', KEYS[1])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
  'v', '1', 'kind', ARGV[6], 'mode', ARGV[5], 'key', KEYS[1],
  'holder', ARGV[2], 'token', ARGV[3])
return deleted
",
    )
});

/// Compare-and-`PEXPIRE` without events (Redlock nodes). KEYS: lock.
/// ARGV: value, ttl ms.
pub(crate) static COMPARE_PEXPIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Scripts a Redlock node runs.
pub(crate) static REDLOCK_SCRIPTS: &[&LazyLock<Script>] = &[
    &REDLOCK_COMMIT,
    &COMPARE_DELETE,
    &COMPARE_DELETE_EVENT,
    &COMPARE_PEXPIRE,
];

/// Scripts a single fenced node runs.
pub(crate) static SINGLE_SCRIPTS: &[&LazyLock<Script>] = &[&ACQUIRE, &RELEASE, &EXTEND];

/// Loads scripts into a node's script cache, so that their first use is one
/// round trip (`EVALSHA`) rather than three (`EVALSHA`, `SCRIPT LOAD`, retry).
pub(crate) async fn preload(
    conn: &mut redis::aio::ConnectionManager,
    scripts: &[&LazyLock<Script>],
) -> Result<(), redis::RedisError> {
    for script in scripts {
        script.prepare_invoke().load_async(conn).await?;
    }
    Ok(())
}
