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
    let mut failing = false;
    loop {
        let Err(e) = read_connected(&shared).await;
        let was_up = {
            let mut state = shared.state();
            let was_up = state.connected(Connection::Stream);
            state.set_connected(Connection::Stream, false);
            was_up
        };
        if was_up {
            tracing::warn!(
                "lost the lock event stream {:?}: {e}; reconnecting",
                shared.config.stream
            );
            backoff = MIN_BACKOFF;
        } else if !failing {
            tracing::warn!(
                "cannot read the lock event stream {:?}: {e}; retrying until Redis answers",
                shared.config.stream
            );
        }
        failing = true;
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
    tracing::info!("reading lock events from {stream:?} after {last_id}");
    let block_ms = u64::try_from(shared.config.block.as_millis()).unwrap_or(u64::MAX);
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
        let entries = entries_of(reply);
        if entries.is_empty() {
            continue;
        }
        apply(&mut shared.state(), &mut last_id, entries);
    }
}

/// Applies one reply's entries to `state` and moves `cursor` past them.
fn apply(state: &mut State, cursor: &mut String, entries: Vec<Entry>) {
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
    Event {
        id: String,
        at_ms: u64,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Malformed {
        id: Option<String>,
        detail: String,
    },
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
        return Entry::Malformed {
            detail: format!("stream entry id {id:?} is not <ms>-<seq>"),
            id: Some(id),
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
