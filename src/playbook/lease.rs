//! The run guard: a coordination.k8s.io/v1 `Lease` per namespace, so two
//! operators cannot run playbooks against the same namespace at once.
//!
//! Safety argument: a run takes the Lease by a conditional write (create, or
//! update at the resourceVersion it read), so of two concurrent takers one
//! gets 409 and is refused. The holder renews every third of the lease
//! duration; if it dies the lease expires after `leaseDurationSeconds` and
//! the next run takes it over. A run that loses its lease (taken by someone
//! else, or not renewed for a whole lease duration because the API server
//! refused or did not answer) stops before its next step. A lease with a
//! holder whose renewal time cannot be read counts as held. Clocks of the machines involved are assumed
//! to agree within a few seconds; the lease duration is far larger.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use serde_json::{Value, json};

use crate::kube::{KubeAccess, KubeError, ObjectRef};

/// Name of the Lease object guarding playbook runs in a namespace.
pub const LEASE_NAME: &str = "warroom-playbook";

/// Why a lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds the lease.
    #[error("another playbook run holds the lease {namespace}/{LEASE_NAME}: {holder} ({state})")]
    Held {
        /// Namespace.
        namespace: String,
        /// The holder's identity.
        holder: String,
        /// When it was renewed and when it expires, or why that is unknown.
        state: String,
    },
    /// The API server failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// A held run lease; renewed in the background until released.
pub struct RunLease {
    kube: Arc<KubeAccess>,
    object: ObjectRef,
    holder: String,
    lost: watch::Receiver<bool>,
    renewal: tokio::task::JoinHandle<()>,
}

fn micro_time(at: jiff::Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        at.strftime("%Y-%m-%dT%H:%M:%S"),
        at.subsec_microsecond()
    )
}

/// Whether a Lease object is held by someone other than `holder`, and if so
/// by whom and until when. A holder whose renewal time or expiry cannot be
/// read holds the lease: it may be live, written by another tool.
fn held_by_other(lease: &Value, holder: &str, now: jiff::Timestamp) -> Option<(String, String)> {
    let spec = lease.get("spec")?;
    let current = spec.get("holderIdentity").and_then(Value::as_str)?;
    if current.is_empty() || current == holder {
        return None;
    }
    let unknown = |why: &str| {
        Some((
            current.to_owned(),
            format!(
                "{why}, so the time it was renewed is unknown and it is treated as held; \
                 once its holder is gone, clear spec.holderIdentity"
            ),
        ))
    };
    let duration = match spec.get("leaseDurationSeconds") {
        None | Some(Value::Null) => 15,
        Some(value) => match value.as_i64() {
            Some(seconds) if seconds >= 0 => seconds,
            _ => return unknown(&format!("leaseDurationSeconds is {value}")),
        },
    };
    let Some(renewed_raw) = spec
        .get("renewTime")
        .or_else(|| spec.get("acquireTime"))
        .and_then(Value::as_str)
    else {
        return unknown("it has no renewTime or acquireTime");
    };
    let Ok(renewed) = renewed_raw.parse::<jiff::Timestamp>() else {
        return unknown(&format!("its renewTime {renewed_raw:?} cannot be read"));
    };
    let Ok(expires) = renewed.checked_add(jiff::SignedDuration::from_secs(duration)) else {
        return unknown(&format!(
            "renewed {renewed_raw} for {duration}s, past any date"
        ));
    };
    (expires > now).then(|| {
        (
            current.to_owned(),
            format!(
                "renewed {renewed_raw}, expires in {}s unless renewed",
                expires.duration_since(now).as_secs()
            ),
        )
    })
}

impl RunLease {
    /// Takes the namespace's lease for `holder`, or says who holds it.
    pub async fn acquire(
        kube: Arc<KubeAccess>,
        namespace: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<RunLease, LeaseError> {
        let object =
            ObjectRef::namespaced("coordination.k8s.io/v1", "Lease", namespace, LEASE_NAME);
        let seconds = duration.as_secs().max(1) as i64;
        for _ in 0..5 {
            let now = jiff::Timestamp::now();
            let existing = kube.get(&object).await?;
            let result = match &existing {
                None => {
                    let body = json!({
                        "apiVersion": "coordination.k8s.io/v1",
                        "kind": "Lease",
                        "metadata": {"name": LEASE_NAME, "namespace": namespace},
                        "spec": {
                            "holderIdentity": holder,
                            "leaseDurationSeconds": seconds,
                            "acquireTime": micro_time(now),
                            "renewTime": micro_time(now),
                            "leaseTransitions": 0
                        }
                    });
                    kube.create(&object, &body, false).await
                }
                Some(lease) => {
                    if let Some((current, state)) = held_by_other(lease, holder, now) {
                        // Written by anyone: shown with its control
                        // characters escaped.
                        return Err(LeaseError::Held {
                            namespace: namespace.to_owned(),
                            holder: super::check::printable(&current),
                            state,
                        });
                    }
                    let mut body = lease.clone();
                    let transitions = lease
                        .pointer("/spec/leaseTransitions")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    body["spec"] = json!({
                        "holderIdentity": holder,
                        "leaseDurationSeconds": seconds,
                        "acquireTime": micro_time(now),
                        "renewTime": micro_time(now),
                        "leaseTransitions": transitions.saturating_add(1)
                    });
                    kube.replace(&object, &body, false).await
                }
            };
            match result {
                Ok(_) => {
                    let taken = Instant::now();
                    let (lose, lost) = watch::channel(false);
                    let renewal = tokio::spawn(renew(
                        kube.clone(),
                        object.clone(),
                        holder.to_owned(),
                        duration,
                        taken,
                        lose,
                    ));
                    return Ok(RunLease {
                        kube,
                        object,
                        holder: holder.to_owned(),
                        lost,
                        renewal,
                    });
                }
                // Someone else wrote the lease between our read and write:
                // read again and decide from what they wrote.
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(LeaseError::Kube(KubeError::Conflict {
            object: object.to_string(),
            message: "the lease kept changing while it was being taken".into(),
        }))
    }

    /// True once a renewal found the lease taken by someone else.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost (never while it is held and renewed).
    pub async fn until_lost(&self) {
        let mut lost = self.lost.clone();
        if lost.wait_for(|lost| *lost).await.is_err() {
            // Renewal stopped without losing the lease (released).
            std::future::pending::<()>().await;
        }
    }

    /// The holder identity.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Stops renewing and clears the holder so the next run need not wait
    /// for expiry (no delete permission is needed).
    pub async fn release(self) -> Result<(), KubeError> {
        self.renewal.abort();
        for _ in 0..5 {
            let Some(lease) = self.kube.get(&self.object).await? else {
                return Ok(());
            };
            if lease
                .pointer("/spec/holderIdentity")
                .and_then(Value::as_str)
                != Some(&self.holder)
            {
                return Ok(());
            }
            let mut body = lease.clone();
            body["spec"]["holderIdentity"] = Value::Null;
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("holderIdentity");
            }
            match self.kube.replace(&self.object, &body, false).await {
                Ok(_) => return Ok(()),
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

impl Drop for RunLease {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Renews the lease every third of its duration. Sets `lost` when the lease
/// was taken by someone else or is gone, and when no renewal succeeded for a
/// whole lease duration (it has expired and may be taken at any moment).
async fn renew(
    kube: Arc<KubeAccess>,
    object: ObjectRef,
    holder: String,
    duration: Duration,
    taken: Instant,
    lost: watch::Sender<bool>,
) {
    let every = (duration / 3).max(Duration::from_millis(200));
    // When the last successful write of the lease was sent.
    let mut renewed = taken;
    let expired = |renewed: Instant| renewed.elapsed() >= duration;
    loop {
        tokio::time::sleep(every).await;
        if expired(renewed) {
            tracing::warn!("the run lease expired without being renewed");
            lost.send_replace(true);
            return;
        }
        let lease = match kube.get(&object).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                lost.send_replace(true);
                return;
            }
            Err(err) => {
                tracing::warn!("renewing the run lease: {err}");
                continue;
            }
        };
        if lease
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            != Some(&holder)
        {
            lost.send_replace(true);
            return;
        }
        let mut body = lease;
        let sent = Instant::now();
        body["spec"]["renewTime"] = Value::String(micro_time(jiff::Timestamp::now()));
        match kube.replace(&object, &body, false).await {
            Ok(_) => renewed = sent,
            Err(KubeError::Conflict { .. }) => {}
            Err(err) => tracing::warn!("renewing the run lease: {err}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_not_renewed_within_its_duration_is_free() {
        let now: jiff::Timestamp = "2026-11-26T23:00:30Z".parse().unwrap();
        let lease = json!({"spec": {"holderIdentity": "ana", "leaseDurationSeconds": 15,
            "renewTime": "2026-11-26T23:00:00.000000Z"}});
        assert_eq!(held_by_other(&lease, "bo", now), None);
        let fresh = json!({"spec": {"holderIdentity": "ana", "leaseDurationSeconds": 15,
            "renewTime": "2026-11-26T23:00:20.000000Z"}});
        assert_eq!(
            held_by_other(&fresh, "bo", now).map(|h| h.0),
            Some("ana".into())
        );
        assert_eq!(held_by_other(&fresh, "ana", now), None);
    }

    #[test]
    fn a_holder_whose_time_is_unknown_holds_the_lease() {
        let now: jiff::Timestamp = "2026-11-26T23:00:30Z".parse().unwrap();
        for spec in [
            json!({"holderIdentity": "ana"}),
            json!({"holderIdentity": "ana", "renewTime": "yesterday"}),
            json!({"holderIdentity": "ana", "renewTime": "2026-11-26T23:00:00Z",
                   "leaseDurationSeconds": i64::MAX}),
            json!({"holderIdentity": "ana", "renewTime": "2026-11-26T23:00:00Z",
                   "leaseDurationSeconds": "long"}),
        ] {
            let (holder, state) = held_by_other(&json!({ "spec": spec }), "bo", now).expect("held");
            assert_eq!(holder, "ana");
            assert!(state.contains("unknown"), "{state}");
        }
        assert_eq!(held_by_other(&json!({"spec": {}}), "bo", now), None);
    }
}
