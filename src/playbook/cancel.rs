//! Stopping a run from outside: Ctrl-C or SIGTERM in `warroom run`, the
//! `c` key in the console.
//!
//! A [`Cancel`] has two levels. The first, [`Cancel::cancel`], asks a run to
//! stop before its next write (cutting a wait or a gate short) and to undo
//! what it applied, under the run's Lease. The second, [`Cancel::abandon`],
//! asks that undo to stop before its next write too: what is left is then
//! listed in the report, with the command that puts it back. A run that
//! stops either way ends `cancelled` in its record, never `running`.
//!
//! Clones share one state; the engine only reads it.

use std::sync::Arc;

use tokio::sync::watch;

/// How far a stop request has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    /// Nothing asked.
    Running,
    /// Stop before the next write and undo what was applied.
    Cancelled,
    /// Stop the undo too, before its next write.
    Abandoned,
}

#[derive(Debug, Clone)]
struct State {
    level: StopLevel,
    /// Who or what asked, in words ("Ctrl-C", "SIGTERM", "the console").
    reason: String,
}

/// A shared stop request for runs and undos.
#[derive(Debug, Clone)]
pub struct Cancel {
    state: Arc<watch::Sender<State>>,
}

impl Default for Cancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Cancel {
    /// A request nobody has made yet.
    pub fn new() -> Self {
        let (state, _) = watch::channel(State {
            level: StopLevel::Running,
            reason: String::new(),
        });
        Self {
            state: Arc::new(state),
        }
    }

    fn raise(&self, level: StopLevel, reason: &str) {
        self.state.send_if_modified(|state| {
            if state.level >= level {
                return false;
            }
            state.level = level;
            state.reason = reason.to_owned();
            true
        });
    }

    /// Asks the run to stop before its next write and undo what it applied;
    /// `reason` says who asked (`"Ctrl-C"`). Asking again changes nothing.
    pub fn cancel(&self, reason: &str) {
        self.raise(StopLevel::Cancelled, reason);
    }

    /// Asks the undo that follows a cancellation to stop before its next
    /// write, leaving the rest applied (implies [`Cancel::cancel`]).
    pub fn abandon(&self, reason: &str) {
        self.raise(StopLevel::Abandoned, reason);
    }

    /// How far the request has gone.
    pub fn level(&self) -> StopLevel {
        self.state.borrow().level
    }

    /// True once [`Cancel::cancel`] (or [`Cancel::abandon`]) was called.
    pub fn is_cancelled(&self) -> bool {
        self.level() >= StopLevel::Cancelled
    }

    /// True once [`Cancel::abandon`] was called.
    pub fn is_abandoned(&self) -> bool {
        self.level() >= StopLevel::Abandoned
    }

    /// Who asked last, in words (empty when nobody did).
    pub fn reason(&self) -> String {
        self.state.borrow().reason.clone()
    }

    /// Resolves once the request reaches `level`.
    pub async fn reached(&self, level: StopLevel) {
        let mut changes = self.state.subscribe();
        // The sender lives as long as `self`, so this never fails.
        let _ = changes.wait_for(|state| state.level >= level).await;
    }

    /// Resolves once the run is cancelled.
    pub async fn cancelled(&self) {
        self.reached(StopLevel::Cancelled).await;
    }

    /// Resolves once the undo is abandoned.
    pub async fn abandoned(&self) {
        self.reached(StopLevel::Abandoned).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_request_deepens_and_a_repeat_changes_nothing() {
        let cancel = Cancel::new();
        assert_eq!(cancel.level(), StopLevel::Running);
        let waiter = {
            let cancel = cancel.clone();
            tokio::spawn(async move { cancel.cancelled().await })
        };
        cancel.cancel("Ctrl-C");
        waiter.await.unwrap();
        cancel.cancel("SIGTERM");
        assert_eq!(cancel.reason(), "Ctrl-C");
        assert!(!cancel.is_abandoned());
        cancel.abandon("Ctrl-C");
        assert!(cancel.is_abandoned() && cancel.is_cancelled());
        cancel.cancel("SIGTERM");
        assert_eq!(cancel.level(), StopLevel::Abandoned);
    }
}
