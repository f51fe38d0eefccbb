//! The Deployment controller's arithmetic, without processes or I/O: how
//! many pods to start and which to stop in one pass (scaling and
//! surge-first rollouts with the default 25% surge and 25% unavailable),
//! and the Deployment `status` that reports the pods' truth to
//! `kubectl rollout status` and playbook waits.
//!
//! This file is pure functions over plain values; the supervisor does the
//! starting, stopping and writing.

use serde_json::{Value, json};

/// How many pods a rolling update may add above `replicas` (25%, at least 1).
pub fn max_surge(replicas: i64) -> i64 {
    ((replicas + 3) / 4).max(1)
}

/// How many pods a rolling update may take away below `replicas` (25%, rounded down).
pub fn max_unavailable(replicas: i64) -> i64 {
    replicas / 4
}

/// Whether the Deployment's rollout is paused (`kubectl rollout pause`).
pub fn is_paused(deployment: &Value) -> bool {
    deployment.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)
}

/// What one pass decided for the pods.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New pods to start.
    pub start: usize,
    /// Pods to stop.
    pub stop: Vec<String>,
}

/// A pod as the rollout arithmetic sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Pod name.
    pub name: String,
    /// Whether it is ready.
    pub ready: bool,
    /// Creation order.
    pub serial: u64,
}

/// The Deployment controller's arithmetic for one pass: `current` are the
/// pods of the current template, `old` those of earlier ones (none
/// terminating). Scale-down stops not-ready pods first, then the newest;
/// a rollout surges new pods and stops old ones only while enough pods stay
/// ready.
pub fn plan(desired: usize, mut current: Vec<Candidate>, mut old: Vec<Candidate>) -> Plan {
    let surge = max_surge(desired as i64) as usize;
    let unavailable = max_unavailable(desired as i64) as usize;
    let by_stop_order =
        |a: &Candidate, b: &Candidate| a.ready.cmp(&b.ready).then(b.serial.cmp(&a.serial));
    let mut stop = Vec::new();
    current.sort_by(by_stop_order);
    let excess = current.len().saturating_sub(desired);
    stop.extend(current.drain(..excess).map(|c| c.name));
    let start = if old.is_empty() {
        desired - current.len()
    } else {
        (desired - current.len()).min((desired + surge).saturating_sub(current.len() + old.len()))
    };
    let mut ready = current.iter().chain(&old).filter(|c| c.ready).count();
    let min_available = desired.saturating_sub(unavailable);
    old.sort_by(by_stop_order);
    for candidate in old {
        if !candidate.ready {
            stop.push(candidate.name);
        } else if ready > min_available {
            ready -= 1;
            stop.push(candidate.name);
        }
    }
    Plan { start, stop }
}

/// The pods a Deployment has now (none terminating).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Pods of any template.
    pub total: i64,
    /// Pods of the current template.
    pub updated: i64,
    /// Ready pods of any template.
    pub ready: i64,
}

/// The `status` of `deployment` given its pods; `replica_set` names the
/// current template's ReplicaSet, `now` is an RFC 3339 time. Condition
/// times are kept from the previous status while a condition holds, so an
/// unchanged truth writes an unchanged status.
pub fn deployment_status(
    deployment: &Value,
    counts: Counts,
    replica_set: &str,
    now: &str,
) -> Value {
    let Counts {
        total,
        updated,
        ready,
    } = counts;
    let desired = deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0);
    let generation = deployment
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let paused = is_paused(deployment);
    let rs_name = replica_set;
    let available_ok = ready >= desired - max_unavailable(desired);
    let complete = updated == desired && total == desired && ready == desired;
    let previous = deployment.pointer("/status/conditions").cloned();
    let condition = |kind: &str, status: Option<bool>, reason: &str, message: String| {
        let status = match status {
            Some(true) => "True",
            Some(false) => "False",
            None => "Unknown",
        };
        let same = previous
            .as_ref()
            .and_then(Value::as_array)
            .and_then(|conds| {
                conds.iter().find(|c| {
                    c.get("type").and_then(Value::as_str) == Some(kind)
                        && c.get("status").and_then(Value::as_str) == Some(status)
                })
            });
        let transition = same
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now));
        let update = same
            .filter(|c| c.get("reason").and_then(Value::as_str) == Some(reason))
            .and_then(|c| c.get("lastUpdateTime").cloned())
            .unwrap_or_else(|| json!(now));
        json!({
            "type": kind,
            "status": status,
            "lastUpdateTime": update,
            "lastTransitionTime": transition,
            "reason": reason,
            "message": message,
        })
    };
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [
            condition(
                "Available",
                Some(available_ok),
                if available_ok { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                if available_ok {
                    "Deployment has minimum availability.".to_string()
                } else {
                    "Deployment does not have minimum availability.".to_string()
                },
            ),
            match (paused, complete) {
                (true, _) => condition(
                    "Progressing",
                    None,
                    "DeploymentPaused",
                    "Deployment is paused".to_string(),
                ),
                (false, true) => condition(
                    "Progressing",
                    Some(true),
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                ),
                (false, false) => condition(
                    "Progressing",
                    Some(true),
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                ),
            },
        ],
    });
    if desired > ready {
        status["unavailableReplicas"] = json!(desired - ready);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_update_bounds_follow_the_defaults() {
        assert_eq!((max_surge(0), max_unavailable(0)), (1, 0));
        assert_eq!((max_surge(3), max_unavailable(3)), (1, 0));
        assert_eq!((max_surge(8), max_unavailable(8)), (2, 2));
        assert_eq!((max_surge(10), max_unavailable(10)), (3, 2));
    }

    fn pods(spec: &[(&str, bool, u64)]) -> Vec<Candidate> {
        spec.iter()
            .map(|(name, ready, serial)| Candidate {
                name: (*name).to_string(),
                ready: *ready,
                serial: *serial,
            })
            .collect()
    }

    #[test]
    fn scaling_starts_and_stops_the_difference() {
        assert_eq!(plan(3, vec![], vec![]).start, 3);
        let down = plan(
            1,
            pods(&[("a", true, 1), ("b", false, 2), ("c", true, 3)]),
            vec![],
        );
        assert_eq!(down.start, 0);
        assert_eq!(down.stop, ["b", "c"], "not ready first, then newest");
        assert_eq!(plan(0, pods(&[("a", true, 1)]), vec![]).stop, ["a"]);
    }

    #[test]
    fn a_rollout_surges_then_stops_old_pods_while_enough_stay_ready() {
        let old = pods(&[("o1", true, 1), ("o2", true, 2), ("o3", true, 3)]);
        let first = plan(3, vec![], old.clone());
        assert_eq!(
            first,
            Plan {
                start: 1,
                stop: vec![]
            }
        );
        // The surged pod is not ready yet: nothing old may go.
        let waiting = plan(3, pods(&[("n1", false, 4)]), old.clone());
        assert_eq!(
            waiting,
            Plan {
                start: 0,
                stop: vec![]
            }
        );
        // Once it is ready, one old pod goes.
        let next = plan(3, pods(&[("n1", true, 4)]), old);
        assert_eq!(next.stop, ["o3"]);
        // Old pods that are not ready go at once.
        let broken = plan(3, vec![], pods(&[("o1", false, 1)]));
        assert_eq!(
            broken,
            Plan {
                start: 3,
                stop: vec!["o1".into()]
            }
        );
    }

    #[test]
    fn status_tells_rollout_status_the_truth() {
        let mut deployment = json!({
            "metadata": {"generation": 4},
            "spec": {"replicas": 3},
        });
        let counts = |total, updated, ready| Counts {
            total,
            updated,
            ready,
        };
        let rolling = deployment_status(
            &deployment,
            counts(4, 1, 3),
            "d-abc",
            "2026-12-02T17:00:00Z",
        );
        assert_eq!(rolling["observedGeneration"], 4);
        assert_eq!(rolling["updatedReplicas"], 1);
        assert_eq!(rolling["conditions"][1]["reason"], "ReplicaSetUpdated");
        let done = deployment_status(
            &deployment,
            counts(3, 3, 3),
            "d-abc",
            "2026-12-02T17:00:05Z",
        );
        assert_eq!(done["conditions"][1]["reason"], "NewReplicaSetAvailable");
        assert!(done.get("unavailableReplicas").is_none());
        // The same truth later: the same status, times kept.
        deployment["status"] = done.clone();
        let later = deployment_status(
            &deployment,
            counts(3, 3, 3),
            "d-abc",
            "2026-12-02T17:09:00Z",
        );
        assert_eq!(later, done);
        let short = deployment_status(
            &deployment,
            counts(1, 1, 1),
            "d-abc",
            "2026-12-02T17:10:00Z",
        );
        assert_eq!(short["conditions"][0]["status"], "False");
        assert_eq!(short["unavailableReplicas"], 2);
        deployment["spec"]["paused"] = json!(true);
        let paused = deployment_status(
            &deployment,
            counts(3, 3, 3),
            "d-abc",
            "2026-12-02T17:11:00Z",
        );
        assert_eq!(paused["conditions"][1]["reason"], "DeploymentPaused");
        assert_eq!(paused["conditions"][1]["status"], "Unknown");
    }
}
