//! Reading the lock event stream: blocking `XREAD` from the last processed
//! ID, reconnecting for as long as it takes.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::MultiplexedConnection;

use super::{Connection, Shared, StartFrom, State};
use crate::lock::event::LockEvent;

/// The millisecond part of a stream entry ID (`<ms>-<seq>`).
pub(crate) fn id_millis(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    seq.parse::<u64>().ok()?;
    ms.parse().ok()
}

/// Reads until the task is dropped.
pub(crate) async fn read(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let Err(e) = read_connected(&shared).await;
        let was_up = {
            let mut state = shared.state();
            let was_up = state.connected(Connection::Stream);
            state.set_connected(Connection::Stream, false);
            was_up
        };
        let stream = &shared.config.stream;
        if was_up {
            shared.redis_trouble(&format!("lost the lock event stream {stream:?}"), &e);
            backoff = MIN_BACKOFF;
        } else {
            shared.redis_trouble(&format!("cannot read the lock event stream {stream:?}"), &e);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

async fn connect(shared: &Shared) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(shared.config.block + Duration::from_secs(3)));
    shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// One connection's life: resolve the start, then read until an error.
async fn read_connected(shared: &Shared) -> Result<std::convert::Infallible, redis::RedisError> {
    let mut conn = connect(shared).await?;
    let stream = shared.config.stream.as_str();
    let resume = shared.state().last_id().map(str::to_string);
    let mut last_id = match resume {
        Some(id) => id,
        None => {
            let start = match shared.config.start {
                StartFrom::Beginning => "0-0".to_string(),
                StartFrom::Latest => newest_id(&mut conn, stream).await?,
            };
            // Resolved once: a reconnect before the first entry is read
            // continues from here, not from whatever is newest by then.
            shared.state().start_at(&start);
            start
        }
    };
    // A frozen Redis accepts connections but answers nothing: only a
    // reply counts as connected.
    redis::cmd("PING").query_async::<()>(&mut conn).await?;
    shared.state().set_connected(Connection::Stream, true);
    shared.redis_back();
    tracing::info!("reading lock events from {stream:?} after {last_id}");
    let block_ms = u64::try_from(shared.config.block.as_millis()).unwrap_or(u64::MAX);
    let mut stuck_backoff = MIN_BACKOFF;
    loop {
        let reply: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(shared.config.batch)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(stream)
            .arg(&last_id)
            .query_async(&mut conn)
            .await?;
        // `Nil`: the block timed out with nothing new.
        let timed_out = matches!(reply, Value::Nil);
        let entries = entries_of(reply);
        let progress = if entries.is_empty() {
            if timed_out {
                Progress::Moved
            } else {
                Progress::Stuck { counted: false }
            }
        } else {
            apply(&mut shared.state(), &mut last_id, entries)
        };
        match progress {
            Progress::Moved => stuck_backoff = MIN_BACKOFF,
            Progress::Stuck { counted } => {
                if counted {
                    tracing::warn!(
                        "the reply after {last_id} in {stream:?} has no usable entry ID; \
                         counted its entries as malformed and retrying the same position"
                    );
                }
                // The same reply would come straight back: wait before
                // asking again.
                tokio::time::sleep(stuck_backoff).await;
                stuck_backoff = (stuck_backoff * 2).min(MAX_STUCK_BACKOFF);
            }
        }
    }
}

/// Longest wait between reads while the server keeps sending a reply with
/// no usable entry ID.
const MAX_STUCK_BACKOFF: Duration = Duration::from_secs(5);

/// What one reply did to the reading position.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// The cursor moved (or the read timed out with nothing new).
    Moved,
    /// The reply had entries but no usable ID: the cursor cannot move and
    /// the next read returns the same. `counted`: this was the first such
    /// reply at this position, and its entries were counted.
    Stuck { counted: bool },
}

/// Applies one reply's entries to `state` and moves `cursor` to the last
/// usable entry ID in it.
///
/// Entries after the last usable ID are left for the next read, which
/// starts at the same place and returns them again. A reply with no usable
/// ID at all cannot move the cursor: its entries are counted (as malformed)
/// the first time it comes at a position, and not again until the cursor
/// has moved.
fn apply(state: &mut State, cursor: &mut String, mut entries: Vec<Entry>) -> Progress {
    let last_usable = entries.iter().rposition(|entry| match entry {
        Entry::Event { .. } => true,
        Entry::Malformed { id, .. } => id.is_some(),
    });
    let Some(last_usable) = last_usable else {
        if state.stuck_at.as_deref() == Some(cursor.as_str()) {
            return Progress::Stuck { counted: false };
        }
        for entry in entries {
            if let Entry::Malformed { detail, .. } = entry {
                state.malformed(None, &detail);
            }
        }
        state.stuck_at = Some(cursor.clone());
        return Progress::Stuck { counted: true };
    };
    entries.truncate(last_usable + 1);
    state.stuck_at = None;
    for entry in entries {
        match entry {
            Entry::Event { id, at_ms, fields } => {
                let parsed = LockEvent::from_fields(
                    fields.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
                );
                state.entry(&id, at_ms, parsed);
                *cursor = id;
            }
            Entry::Malformed { id, detail } => {
                state.malformed(id.as_deref(), &detail);
                if let Some(id) = id {
                    *cursor = id;
                }
            }
        }
    }
    Progress::Moved
}

/// The newest entry's ID, or `0-0` for an empty or missing stream.
async fn newest_id(conn: &mut MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    if let Value::Array(entries) = reply
        && let Some(Value::Array(entry)) = entries.into_iter().next()
        && let Some(id) = entry.into_iter().next().and_then(text)
    {
        return Ok(id);
    }
    Ok("0-0".to_string())
}

enum Entry {
    /// An entry with a usable ID and string fields (a valid event or not).
    Event {
        id: String,
        at_ms: u64,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// An entry not shaped like a stream entry; `id` only if it is a
    /// usable `<ms>-<seq>` ID.
    Malformed { id: Option<String>, detail: String },
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}

/// The entries of an `XREAD` reply for one stream (RESP2 arrays or RESP3
/// maps); `Nil` (the block timed out) gives none.
fn entries_of(reply: Value) -> Vec<Entry> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for entries in streams {
        let Value::Array(entries) = entries else {
            continue;
        };
        for entry in entries {
            out.push(parse_entry(entry));
        }
    }
    out
}

fn parse_entry(entry: Value) -> Entry {
    let Value::Array(parts) = entry else {
        return Entry::Malformed {
            id: None,
            detail: "stream entry is not an array".into(),
        };
    };
    let mut parts = parts.into_iter();
    let Some(id) = parts.next().and_then(text) else {
        return Entry::Malformed {
            id: None,
            detail: "stream entry has no id".into(),
        };
    };
    let Some(at_ms) = id_millis(&id) else {
        // Not an ID `XREAD` would take back: never a resume point.
        return Entry::Malformed {
            detail: format!("stream entry id {id:?} is not <ms>-<seq>"),
            id: None,
        };
    };
    let flat: Vec<Value> = match parts.next() {
        Some(Value::Array(flat)) => flat,
        Some(Value::Map(pairs)) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => {
            return Entry::Malformed {
                detail: format!("stream entry {id} has no fields"),
                id: Some(id),
            };
        }
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
        match (bytes(k), bytes(v)) {
            (Some(k), Some(v)) => fields.push((k, v)),
            _ => {
                return Entry::Malformed {
                    detail: format!("stream entry {id} has a field that is not a string"),
                    id: Some(id),
                };
            }
        }
    }
    Entry::Event { id, at_ms, fields }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exporter::{Exporter, ExporterConfig};

    fn exporter() -> Exporter {
        Exporter::new(ExporterConfig::new("redis://127.0.0.1:1")).unwrap()
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| {
                        [
                            Value::BulkString(k.as_bytes().to_vec()),
                            Value::BulkString(v.as_bytes().to_vec()),
                        ]
                    })
                    .collect(),
            ),
        ])
    }

    fn reply(entries: Vec<Value>) -> Value {
        Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(entries),
        ])])
    }

    #[test]
    fn a_malformed_entry_with_an_id_moves_the_resume_point_past_it() {
        let exporter = exporter();
        let mut state = exporter.shared.state();
        let mut cursor = "0-0".to_string();
        let entries = entries_of(reply(vec![
            entry("1-1", &[("v", "2")]),
            // Shaped wrong (a field that is not a string), but its ID is fine.
            Value::Array(vec![
                Value::BulkString(b"2-1".to_vec()),
                Value::Array(vec![Value::BulkString(b"v".to_vec()), Value::Nil]),
            ]),
        ]));
        apply(&mut state, &mut cursor, entries);
        assert_eq!(cursor, "2-1");
        assert_eq!(
            state.last_id(),
            Some("2-1"),
            "a reconnect resumes after the malformed entry, not before it"
        );
        assert_eq!(state.metrics.bad_events_total(), 2);
    }

    /// Entries with no usable ID: not arrays, no ID, an ID not `<ms>-<seq>`.
    fn id_less() -> Vec<Value> {
        vec![
            Value::Int(7),
            Value::Array(vec![]),
            entry("bogus", &[("v", "1")]),
        ]
    }

    #[test]
    fn a_reply_without_usable_ids_is_counted_once_however_often_it_comes() {
        let exporter = exporter();
        let mut state = exporter.shared.state();
        let mut cursor = "5-0".to_string();
        for _ in 0..3 {
            apply(&mut state, &mut cursor, entries_of(reply(id_less())));
            assert_eq!(cursor, "5-0", "no ID to move to");
        }
        assert_eq!(state.metrics.events.get(), 3);
        assert_eq!(state.metrics.bad_events_total(), 3);
    }

    #[test]
    fn the_cursor_moves_to_the_last_usable_id_and_never_to_an_unusable_one() {
        let exporter = exporter();
        let mut state = exporter.shared.state();
        let mut cursor = "0-0".to_string();
        let mut first = vec![entry("1-1", &[("v", "2")])];
        first.extend(id_less());
        first.push(entry("2-1", &[("v", "2")]));
        // After the last usable ID: read again with the next reply.
        first.push(entry("bogus", &[("v", "1")]));
        apply(&mut state, &mut cursor, entries_of(reply(first)));
        assert_eq!(cursor, "2-1");
        assert_eq!(state.last_id(), Some("2-1"));
        assert_eq!(state.metrics.events.get(), 5);

        // The server sends the trailing entry again, alone, twice.
        for _ in 0..2 {
            apply(
                &mut state,
                &mut cursor,
                entries_of(reply(vec![entry("bogus", &[("v", "1")])])),
            );
        }
        assert_eq!(cursor, "2-1");
        assert_eq!(state.metrics.events.get(), 6, "every entry counted once");
        assert_eq!(state.metrics.bad_events_total(), 6);

        // Progress again, then a new unreadable reply: counted once more.
        apply(
            &mut state,
            &mut cursor,
            entries_of(reply(vec![entry("3-1", &[("v", "2")])])),
        );
        apply(&mut state, &mut cursor, entries_of(reply(id_less())));
        apply(&mut state, &mut cursor, entries_of(reply(id_less())));
        assert_eq!(cursor, "3-1");
        assert_eq!(state.metrics.events.get(), 10);
    }

    #[test]
    fn ids_give_their_milliseconds() {
        assert_eq!(id_millis("1732660000000-3"), Some(1_732_660_000_000));
        assert_eq!(id_millis("12"), None);
        assert_eq!(id_millis("x-1"), None);
        assert_eq!(id_millis("1-x"), None);
    }

    #[test]
    fn odd_replies_are_malformed_entries_not_panics() {
        let reply = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![
                Value::Int(3),
                Value::Array(vec![Value::BulkString(b"1-1".to_vec()), Value::Nil]),
                Value::Array(vec![
                    Value::BulkString(b"2-1".to_vec()),
                    Value::Array(vec![Value::BulkString(b"v".to_vec()), Value::Nil]),
                ]),
            ]),
        ])]);
        let entries = entries_of(reply);
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| matches!(e, Entry::Malformed { .. })));
    }
}
