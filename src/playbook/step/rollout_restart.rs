//! `rollout-restart`: restart a Deployment's pods the way
//! `kubectl rollout restart` does (a new `restartedAt` template annotation).

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::template::Text;

/// `rollout-restart: {deployment, namespace?}`. Use `when-changed` on the
/// step to restart only when an earlier step changed something, so a
/// re-run changes nothing.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRestart {
    /// Deployment name.
    pub deployment: Text,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
}

/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str =
    "/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt";

/// The `restartedAt` value for a restart at `now`: UTC, whole seconds,
/// cut (never rounded up) so that it is never later than the restart.
pub fn restarted_at(now: jiff::Timestamp) -> String {
    let whole = jiff::TimestampRound::new()
        .smallest(jiff::Unit::Second)
        .mode(jiff::RoundMode::Floor);
    now.round(whole).unwrap_or(now).to_string()
}

impl StepSpec for RolloutRestart {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let target = resolve.named("apps/v1", "Deployment", &self.deployment, &self.namespace);
        Effect::Change(Change {
            target,
            // The time is taken when the change is written, not when the
            // playbook is read: a gate can hold the run for minutes.
            edit: Edit::Now(RESTARTED_AT.into()),
            // A restart is not state to go back to.
            record: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::restarted_at;

    #[test]
    fn the_restart_time_is_never_in_the_future() {
        let now: jiff::Timestamp = "2026-11-26T23:15:00.600Z".parse().unwrap();
        assert_eq!(restarted_at(now), "2026-11-26T23:15:00Z");
        let now: jiff::Timestamp = "2026-11-26T23:15:59.999999999Z".parse().unwrap();
        assert_eq!(restarted_at(now), "2026-11-26T23:15:59Z");
        let before_epoch: jiff::Timestamp = "1969-12-31T23:59:59.5Z".parse().unwrap();
        assert_eq!(restarted_at(before_epoch), "1969-12-31T23:59:59Z");
    }
}
