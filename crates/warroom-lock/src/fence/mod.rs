//! The store side of fencing: records whose writes carry a fencing token and
//! are refused when the token is lower than the highest the record has seen.
//!
//! A lock cannot stop a paused holder from writing when it wakes (PM-003's
//! worker `pod-7f` wrote after its lease had passed to `pod-3c`); the store
//! can, if every write carries the lease's [`FencingToken`]. Each record is a
//! Redis hash `{value, fence}`; the check and the write are one Lua script, so
//! no write can slip between them.
//!
//! **Claim before read-modify-write.** A fence that only moves on writes has a
//! gap: between a new holder's grant and its first write, a stale holder's
//! write is still accepted, and the new holder then overwrites it based on
//! what it read before (a lost update). [`FencedStore::read_for_update`]
//! closes the gap: it raises the record's fence to the new token as it reads,
//! so from then on the stale holder's writes are refused.
//!
//! Equal tokens are accepted (one holder may write several times under one
//! lease); lower tokens are refused and reported as a `rejected` lock event.
//!
//! # The same pattern in PostgreSQL
//!
//! Keep a `fence bigint not null default 0` column next to the data and make
//! every guarded statement check and raise it in the same statement:
//!
//! ```sql
//! -- claim for update: raise the fence, read the row
//! UPDATE orders SET fence = $2 WHERE id = $1 AND fence <= $2 RETURNING status;
//! -- guarded write
//! UPDATE orders SET status = $3, fence = $2 WHERE id = $1 AND fence <= $2;
//! -- zero rows updated: a newer holder has written; the lease is stale, stop.
//! ```
//!
//! (`fence < $2` would refuse a holder's second write under the same lease.)
//! For a unit of work that writes several rows and tables in one
//! transaction, see `fence::postgres` (the `postgres` feature).
//!
//! This module knows lock tokens and the event schema; [`colocated`] also
//! knows how a single-node lease is stored, to combine calls. Nothing else.

pub mod colocated;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::sync::LazyLock;

use redis::Script;
use redis::aio::ConnectionManager;

use crate::event::{DEFAULT_STREAM, LockMode};
use crate::{EventStream, FencingToken};

/// Errors talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Redis failed or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What a fenced write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the record's fence is now the writer's token.
    Accepted {
        /// The fence before the write.
        previous_fence: u64,
    },
    /// Refused: the record had already seen a higher token.
    Rejected {
        /// The record's fence, which the writer's token is below.
        fence: u64,
    },
}

impl WriteOutcome {
    /// Whether the write was taken.
    pub fn is_accepted(self) -> bool {
        matches!(self, WriteOutcome::Accepted { .. })
    }
}

/// What a claim ([`FencedStore::read_for_update`]) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The record is claimed for the token; here is its current value.
    Claimed {
        /// The record's value (`None` if never written).
        value: Option<String>,
        /// The fence before the claim.
        previous_fence: u64,
    },
    /// Refused: a newer holder has already claimed or written the record.
    Rejected {
        /// The record's fence.
        fence: u64,
    },
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The value (`None` if never written).
    pub value: Option<String>,
    /// The highest token the record has accepted (0 if none).
    pub fence: u64,
}

/// Guarded write. KEYS: record, stream. ARGV: token, value, holder, maxlen, mode.
/// Returns `"<1 if accepted, else 0> <record fence before>"` ([`split_reply`];
/// a string, not a table: Redis converts a Lua table reply field by field,
/// about a microsecond of its time per call).
static WRITE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local fence = redis.call('HGET', KEYS[1], 'fence') or '0'
if tonumber(ARGV[1]) < tonumber(fence) then
  if ARGV[4] ~= '0' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[5], 'key', KEYS[1],
      'holder', ARGV[3], 'token', ARGV[1], 'fence', fence)
  end
  return '0 ' .. fence
end
redis.call('HSET', KEYS[1], 'value', ARGV[2], 'fence', ARGV[1])
return '1 ' .. fence
",
    )
});

/// Claim for update. KEYS: record, stream. ARGV: token, holder, maxlen, mode.
/// Returns `"<1 if claimed, else 0> <record fence before>"`, followed by
/// `" <value>"` when claimed and the record has a value ([`split_reply`]).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local record = redis.call('HMGET', KEYS[1], 'fence', 'value')
local fence = record[1] or '0'
if tonumber(ARGV[1]) < tonumber(fence) then
  if ARGV[3] ~= '0' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*',
      'v', '1', 'kind', 'rejected', 'mode', ARGV[4], 'key', KEYS[1],
      'holder', ARGV[2], 'token', ARGV[1], 'fence', fence)
  end
  return '0 ' .. fence
end
if tonumber(ARGV[1]) > tonumber(fence) then
  redis.call('HSET', KEYS[1], 'fence', ARGV[1])
end
if record[2] then
  return '1 ' .. fence .. ' ' .. record[2]
end
return '1 ' .. fence
",
    )
});

/// A script reply that is not what the fence scripts return: the script in
/// Redis's cache is not this version's, or a record was written by
/// something else. Shows the start of the reply, escaped.
pub(crate) fn unexpected_reply(what: &'static str, reply: &[u8]) -> redis::RedisError {
    let shown: String = String::from_utf8_lossy(reply).chars().take(80).collect();
    redis::RedisError::from((
        redis::ErrorKind::UnexpectedReturnType,
        what,
        format!("{shown:?}"),
    ))
}

/// Splits a fence script's reply `"<number> <number>[ <value>]"`: the
/// value is everything after the second space, spaces included; no third
/// part is no value (an empty value is `"<n> <n> "`).
pub(crate) fn split_reply(
    reply: &[u8],
    what: &'static str,
) -> Result<(u64, u64, Option<String>), redis::RedisError> {
    let mut parts = reply.splitn(3, |b| *b == b' ');
    let number = |part: Option<&[u8]>| {
        part.and_then(|p| std::str::from_utf8(p).ok())
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or_else(|| unexpected_reply(what, reply))
    };
    let first = number(parts.next())?;
    let second = number(parts.next())?;
    let value = match parts.next() {
        None => None,
        Some(v) => Some(String::from_utf8(v.to_vec()).map_err(|_| unexpected_reply(what, reply))?),
    };
    Ok((first, second, value))
}

/// A record store that refuses stale holders.
#[derive(Clone)]
pub struct FencedStore {
    conn: ConnectionManager,
    holder: String,
    mode: LockMode,
    stream_key: String,
    maxlen: String,
}

impl std::fmt::Debug for FencedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedStore")
            .field("holder", &self.holder)
            .finish()
    }
}

impl FencedStore {
    /// Connects to the node holding the records. `holder` names the writer in
    /// `rejected` events; `events: None` publishes none.
    pub async fn connect(
        url: &str,
        holder: impl Into<String>,
        events: Option<EventStream>,
    ) -> Result<Self, FenceError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self::with_connection(conn, holder, events))
    }

    /// Uses an existing connection.
    pub fn with_connection(
        conn: ConnectionManager,
        holder: impl Into<String>,
        events: Option<EventStream>,
    ) -> Self {
        let (stream_key, maxlen) = match events {
            Some(stream) => (stream.key.clone(), stream.maxlen_arg()),
            None => (DEFAULT_STREAM.to_string(), "0".to_string()),
        };
        Self {
            conn,
            holder: holder.into(),
            mode: LockMode::Fenced,
            stream_key,
            maxlen,
        }
    }

    /// Sets the lock mode named in `rejected` events (default `fenced`).
    pub fn with_mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// Writes `value` if `token` is not below the record's fence, and raises
    /// the fence to `token`.
    pub async fn write(
        &self,
        record: &str,
        token: FencingToken,
        value: &str,
    ) -> Result<WriteOutcome, FenceError> {
        let mut conn = self.conn.clone();
        let reply: Vec<u8> = WRITE
            .key(record)
            .key(&self.stream_key)
            .arg(token.get())
            .arg(value)
            .arg(&self.holder)
            .arg(&self.maxlen)
            .arg(self.mode.as_str())
            .invoke_async(&mut conn)
            .await?;
        let (accepted, fence, rest) = split_reply(&reply, "unexpected fenced write reply")?;
        if accepted > 1 || rest.is_some() {
            return Err(unexpected_reply("unexpected fenced write reply", &reply).into());
        }
        Ok(if accepted == 1 {
            WriteOutcome::Accepted {
                previous_fence: fence,
            }
        } else {
            WriteOutcome::Rejected { fence }
        })
    }

    /// Claims the record for `token` and reads it: refused if a newer token
    /// was seen; otherwise the fence is raised to `token`, so that writes
    /// with older tokens are refused from now on.
    pub async fn read_for_update(
        &self,
        record: &str,
        token: FencingToken,
    ) -> Result<Claim, FenceError> {
        let mut conn = self.conn.clone();
        let reply: Vec<u8> = CLAIM
            .key(record)
            .key(&self.stream_key)
            .arg(token.get())
            .arg(&self.holder)
            .arg(&self.maxlen)
            .arg(self.mode.as_str())
            .invoke_async(&mut conn)
            .await?;
        let (claimed, fence, value) = split_reply(&reply, "unexpected claim reply")?;
        if claimed > 1 || (claimed == 0 && value.is_some()) {
            return Err(unexpected_reply("unexpected claim reply", &reply).into());
        }
        Ok(if claimed == 1 {
            Claim::Claimed {
                value,
                previous_fence: fence,
            }
        } else {
            Claim::Rejected { fence }
        })
    }

    /// Reads a record without claiming it.
    pub async fn read(&self, record: &str) -> Result<Record, FenceError> {
        let mut conn = self.conn.clone();
        let (value, fence): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(record)
            .arg("value")
            .arg("fence")
            .query_async(&mut conn)
            .await?;
        Ok(Record {
            value,
            fence: fence.unwrap_or(0),
        })
    }

    /// PM-003's write path: no token, no check. For drills and benchmarks of
    /// the legacy lock only (the `legacy` feature).
    #[cfg(feature = "legacy")]
    pub async fn write_unfenced(&self, record: &str, value: &str) -> Result<(), FenceError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::AsyncCommands::hset(&mut conn, record, "value", value).await?;
        Ok(())
    }
}
