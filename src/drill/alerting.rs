//! The drill's own alerting: the rules of `config/alerts.yaml` evaluated on
//! the exporter's counters every tick, in incident time, so that an alert
//! fires the moment its threshold is crossed rather than at the next scrape.
//!
//! - `LockConcurrentHolders` fires on the first collision the exporter
//!   counts (more than one holder believed it held a key), and resolves
//!   after [`QUIET_RESOLVE_S`] incident seconds without a new one, and at
//!   least [`QUIET_RESOLVE_WALL_S`] seconds of wall time (a compressed drill
//!   must not make it flap).
//! - `AppErrorsAbove50PerMinute` (AI-004) fires when more than
//!   [`ERRORS_PER_MINUTE`] application errors were reported in the last
//!   incident minute, continuously for [`ERRORS_FOR_S`] incident seconds; it
//!   resolves when the count falls back to the threshold or below.
//!
//! Pure bookkeeping: the caller feeds it the exporter's
//! [`Snapshot`](crate::exporter::Snapshot) counts and the incident time.

use std::collections::VecDeque;

/// Name of the collision alert (as in `config/alerts.yaml`).
pub const COLLISION_ALERT: &str = "LockConcurrentHolders";
/// Name of the AI-004 error alert (as in `config/alerts.yaml`).
pub const ERROR_ALERT: &str = "AppErrorsAbove50PerMinute";
/// `AppErrorsAbove50PerMinute`: errors in one minute above which it is pending.
pub const ERRORS_PER_MINUTE: u64 = 50;
/// `AppErrorsAbove50PerMinute`: its `for:`, in seconds.
pub const ERRORS_FOR_S: f64 = 60.0;
/// Incident seconds without a new collision after which the collision
/// alert resolves.
pub const QUIET_RESOLVE_S: f64 = 60.0;
/// Wall-clock seconds without a new collision, at least, before the
/// collision alert resolves.
pub const QUIET_RESOLVE_WALL_S: f64 = 10.0;

/// An alert that fired or resolved on this tick.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTransition {
    /// The alert's name.
    pub alert: &'static str,
    /// True when it fired, false when it resolved.
    pub fired: bool,
    /// The value of the alert's expression (collisions so far, or errors
    /// in the last incident minute).
    pub value: f64,
}

/// State of the drill's alert rules.
#[derive(Debug)]
pub struct Alerting {
    /// Incident seconds without a collision before the collision alert resolves.
    quiet_s: f64,
    collisions: u64,
    last_collision_s: Option<f64>,
    collision_firing: bool,
    /// `(incident second, errors total)`, the last minute and a bit.
    errors: VecDeque<(f64, u64)>,
    errors_above_since: Option<f64>,
    error_firing: bool,
}

impl Alerting {
    /// No alert firing, nothing seen; incident time runs `speed` times
    /// faster than wall time.
    pub fn new(speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Self {
            quiet_s: QUIET_RESOLVE_S.max(QUIET_RESOLVE_WALL_S * speed),
            collisions: 0,
            last_collision_s: None,
            collision_firing: false,
            errors: VecDeque::new(),
            errors_above_since: None,
            error_firing: false,
        }
    }

    /// Whether the collision alert is firing.
    pub fn collision_firing(&self) -> bool {
        self.collision_firing
    }

    /// Whether the error alert is firing.
    pub fn error_firing(&self) -> bool {
        self.error_firing
    }

    /// Errors reported in the incident minute before the last observation.
    pub fn errors_last_minute(&self) -> u64 {
        match (self.errors.front(), self.errors.back()) {
            (Some(first), Some(last)) => last.1.saturating_sub(first.1),
            _ => 0,
        }
    }

    /// Feeds the exporter's running totals at incident second `now_s`;
    /// returns the alerts that fired or resolved.
    pub fn observe(
        &mut self,
        now_s: f64,
        collisions: u64,
        app_errors: u64,
    ) -> Vec<AlertTransition> {
        let mut changes = Vec::new();
        if collisions > self.collisions {
            self.collisions = collisions;
            self.last_collision_s = Some(now_s);
            if !self.collision_firing {
                self.collision_firing = true;
                changes.push(AlertTransition {
                    alert: COLLISION_ALERT,
                    fired: true,
                    value: collisions as f64,
                });
            }
        } else if self.collision_firing
            && self
                .last_collision_s
                .is_some_and(|last| now_s - last >= self.quiet_s)
        {
            self.collision_firing = false;
            changes.push(AlertTransition {
                alert: COLLISION_ALERT,
                fired: false,
                value: 0.0,
            });
        }

        self.errors.push_back((now_s, app_errors));
        // Keep one sample at or before the window's start as its base.
        while self.errors.len() > 1 && self.errors[1].0 <= now_s - 60.0 {
            self.errors.pop_front();
        }
        let last_minute = self.errors_last_minute();
        if last_minute > ERRORS_PER_MINUTE {
            let since = *self.errors_above_since.get_or_insert(now_s);
            if !self.error_firing && now_s - since >= ERRORS_FOR_S {
                self.error_firing = true;
                changes.push(AlertTransition {
                    alert: ERROR_ALERT,
                    fired: true,
                    value: last_minute as f64,
                });
            }
        } else {
            self.errors_above_since = None;
            if self.error_firing {
                self.error_firing = false;
                changes.push(AlertTransition {
                    alert: ERROR_ALERT,
                    fired: false,
                    value: last_minute as f64,
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collision_alert_fires_on_the_first_collision_and_resolves_when_quiet() {
        let mut alerting = Alerting::new(1.0);
        assert!(alerting.observe(0.0, 0, 0).is_empty());
        let fired = alerting.observe(1.0, 1, 0);
        assert_eq!(fired.len(), 1);
        assert!(fired[0].fired && fired[0].alert == COLLISION_ALERT);
        assert!(alerting.observe(2.0, 3, 0).is_empty(), "fires once");
        assert!(alerting.observe(11.0, 3, 0).is_empty());
        assert!(alerting.observe(61.0, 3, 0).is_empty());
        let resolved = alerting.observe(62.0, 3, 0);
        assert_eq!(resolved.len(), 1);
        assert!(!resolved[0].fired);
    }

    #[test]
    fn a_compressed_drill_holds_the_collision_alert_ten_wall_seconds() {
        let mut alerting = Alerting::new(200.0);
        assert_eq!(alerting.observe(1.0, 1, 0).len(), 1);
        assert!(
            alerting.observe(1_900.0, 1, 0).is_empty(),
            "9.5 s of wall time"
        );
        assert_eq!(
            alerting.observe(2_002.0, 1, 0).len(),
            1,
            "resolved after 10 s"
        );
    }

    #[test]
    fn the_error_alert_needs_more_than_fifty_a_minute_for_a_minute() {
        let mut alerting = Alerting::new(1.0);
        // 50 errors a minute, exactly the threshold: never fires.
        for s in 0..200 {
            let total = (s as u64 * 50) / 60;
            assert!(alerting.observe(s as f64, 0, total).is_empty(), "at {s}");
        }
        // 120 a minute from now on: above after a minute of history,
        // fires a minute later.
        let base = (199 * 50) / 60;
        let mut fired_at = None;
        for s in 200..400 {
            let total = base + (s as u64 - 199) * 2;
            for change in alerting.observe(s as f64, 0, total) {
                assert!(change.fired && change.alert == ERROR_ALERT);
                fired_at.get_or_insert(s);
            }
        }
        let fired_at = fired_at.expect("fires");
        assert!((255..=320).contains(&fired_at), "fired at {fired_at}");
    }

    #[test]
    fn the_thresholds_are_those_of_the_shipped_rules() {
        let rules = include_str!("../../config/alerts.yaml");
        assert!(rules.contains("(warroom_lock_holders_max) > 1"));
        assert!(rules.contains(&format!(
            "(warroom_app_errors_last_minute) > {ERRORS_PER_MINUTE}"
        )));
        assert!(rules.contains(&format!("alert: {COLLISION_ALERT}")));
        assert!(rules.contains(&format!("alert: {ERROR_ALERT}")));
        assert!(rules.contains("for: 1m"));
    }
}
