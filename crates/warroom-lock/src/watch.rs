//! WATCH mode: optimistic updates with `WATCH` / read / `MULTI … EXEC`.
//!
//! No lock is taken: the update is retried when another client changed the
//! key between the read and `EXEC`. `WATCH` state belongs to a connection, so
//! a [`WatchSession`] owns a dedicated connection that nothing else shares;
//! `&mut self` on [`WatchSession::update`] keeps one update in flight at a time.

use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::LockError;
use super::backoff::Backoff;

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOutcome {
    /// Attempts made (1 when there was no conflict).
    pub attempts: u32,
    /// Whether a value was written (the change function may decline).
    pub written: bool,
    /// The value read on the attempt that committed.
    pub previous: Option<String>,
}

/// A dedicated connection for optimistic updates, with bounded retries.
pub struct WatchSession {
    conn: MultiplexedConnection,
    max_attempts: u32,
    backoff: Backoff,
}

impl std::fmt::Debug for WatchSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchSession")
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl WatchSession {
    /// Opens a new connection used only by this session.
    pub async fn connect(url: &str) -> Result<Self, LockError> {
        let client = redis::Client::open(url)?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(Self {
            conn,
            max_attempts: 16,
            backoff: Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(50),
            },
        })
    }

    /// Sets how many attempts an update makes before [`LockError::Conflict`].
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Reads `key`, asks `change` for the new value and commits it only if
    /// nobody wrote `key` in between; retries on conflict. `change` returning
    /// `None` leaves the key as it is. `change` is async so that callers (and
    /// drills) can do work, or stall, between the read and the commit.
    pub async fn update<F>(&mut self, key: &str, mut change: F) -> Result<WatchOutcome, LockError>
    where
        F: AsyncFnMut(Option<String>) -> Option<String>,
    {
        for attempt in 1..=self.max_attempts {
            redis::cmd("WATCH")
                .arg(key)
                .query_async::<()>(&mut self.conn)
                .await?;
            let previous: Option<String> = self.conn.get(key).await?;
            let Some(next) = change(previous.clone()).await else {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut self.conn)
                    .await?;
                return Ok(WatchOutcome {
                    attempts: attempt,
                    written: false,
                    previous,
                });
            };
            let committed: Option<()> = redis::pipe()
                .atomic()
                .set(key, next)
                .ignore()
                .query_async(&mut self.conn)
                .await?;
            if committed.is_some() {
                return Ok(WatchOutcome {
                    attempts: attempt,
                    written: true,
                    previous,
                });
            }
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
        Err(LockError::Conflict {
            key: key.to_string(),
            attempts: self.max_attempts,
        })
    }
}
