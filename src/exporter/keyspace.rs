//! Expired-key notifications: turning them on where the operator allowed it,
//! subscribing on a connection of their own, and re-subscribing after Redis
//! comes back (a restarted Redis forgets a `CONFIG SET`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{Connection, KeyspaceEvents, Shared, wall_clock_ms};

/// How often the subscriber checks that Redis still answers, and how often a
/// disabled configuration is looked at again.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Whether a `notify-keyspace-events` value includes keyevent notices for
/// expired keys.
pub(crate) fn has_expired_events(flags: &str) -> bool {
    flags.contains('E') && (flags.contains('x') || flags.contains('A'))
}

/// `flags` with `E` and `x` added.
pub(crate) fn with_expired_events(flags: &str) -> String {
    let mut out = flags.to_string();
    for flag in ['E', 'x'] {
        if !out.contains(flag) {
            out.push(flag);
        }
    }
    out
}

enum Outcome {
    /// Notifications are off and may not be turned on.
    Off(String),
    /// The connection failed.
    Failed(redis::RedisError),
}

/// Watches for expired keys until the task is dropped.
pub(crate) async fn watch(shared: Arc<Shared>) {
    let mut said_off = false;
    loop {
        let failing = match subscribe(&shared).await {
            Outcome::Off(flags) => {
                shared.redis_back();
                if !said_off {
                    tracing::warn!(
                        "keyspace notifications are OFF (notify-keyspace-events is {flags:?}, and \
                         --keyspace-events off forbids changing it): lease overruns are seen \
                         only from stream times and `lost` events, later than from expiry notices"
                    );
                    said_off = true;
                }
                false
            }
            Outcome::Failed(e) => {
                shared.redis_trouble("keyspace notifications", &e);
                true
            }
        };
        {
            let mut state = shared.state();
            state.set_connected(Connection::Keyspace, false);
            state.set_keyspace_enabled(false);
        }
        tokio::time::sleep(if failing {
            Duration::from_millis(250)
        } else {
            CHECK_EVERY
        })
        .await;
    }
}

async fn subscribe(shared: &Shared) -> Outcome {
    match subscribe_inner(shared).await {
        Ok(off) => off,
        Err(e) => Outcome::Failed(e),
    }
}

async fn subscribe_inner(shared: &Shared) -> Result<Outcome, redis::RedisError> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut control = shared
        .client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let current: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(&mut control)
        .await?;
    let flags = current.get(1).cloned().unwrap_or_default();
    if !has_expired_events(&flags) {
        match shared.config.keyspace_events {
            KeyspaceEvents::Off => return Ok(Outcome::Off(flags)),
            KeyspaceEvents::Allow => {
                let wanted = with_expired_events(&flags);
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("notify-keyspace-events")
                    .arg(&wanted)
                    .query_async::<()>(&mut control)
                    .await?;
                tracing::info!(
                    "turned on expired-key notifications: notify-keyspace-events {flags:?} -> {wanted:?}"
                );
            }
        }
    }
    let db = shared.client.get_connection_info().redis_settings().db();
    let channel = format!("__keyevent@{db}__:expired");
    let (mut sink, mut messages) = shared.client.get_async_pubsub().await?.split();
    tokio::time::timeout(Duration::from_secs(2), sink.subscribe(&channel))
        .await
        .map_err(timed_out)??;
    {
        let mut state = shared.state();
        state.set_connected(Connection::Keyspace, true);
        state.set_keyspace_enabled(true);
    }
    shared.redis_back();
    tracing::info!("subscribed to {channel}");
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(redis::RedisError::from(std::io::Error::other(
                        "keyspace subscription closed",
                    )));
                };
                let key = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                shared.state().expired(&key, wall_clock_ms());
            }
            _ = check.tick() => {
                tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>())
                    .await
                    .map_err(timed_out)??;
                // A restarted Redis forgets a CONFIG SET: look again.
                let current: Vec<String> = redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("notify-keyspace-events")
                    .query_async(&mut control)
                    .await?;
                let flags = current.get(1).cloned().unwrap_or_default();
                if !has_expired_events(&flags) {
                    return Err(redis::RedisError::from(std::io::Error::other(
                        "expired-key notifications were turned off on the server",
                    )));
                }
            }
        }
    }
}

fn timed_out(_: tokio::time::error::Elapsed) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "Redis did not answer in time",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_events_flags() {
        assert!(!has_expired_events(""));
        assert!(has_expired_events("Ex"));
        assert!(has_expired_events("AKE"));
        assert!(!has_expired_events("Kx"));
        assert_eq!(with_expired_events(""), "Ex");
        assert_eq!(with_expired_events("Kg"), "KgEx");
        assert_eq!(with_expired_events("AE"), "AEx");
    }
}
