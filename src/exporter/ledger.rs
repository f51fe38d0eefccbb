//! Who believes they hold each lock key, and what that implies: collisions
//! (a second believer) and lease overruns (a lease that ran out while its
//! holder had not released).
//!
//! Pure bookkeeping over [`LockEvent`]s and key-expiry notices; no I/O and no
//! metrics library, so the rules can be tested on their own.
//!
//! # When a belief ends
//!
//! - A holder that releases (`released`) or learns its lease is gone (`lost`)
//!   stops believing.
//! - A fenced, Redlock or WATCH holder knows its lease's deadline, so its
//!   belief ends when the lease runs out: when the key's `expired` notice
//!   arrives, when a later event's stream time is past `acquired + ttl`, or
//!   when a newer grant with a higher fencing token shows up on the key
//!   (the lock only grants after the previous lease is gone).
//! - A legacy (PM-003) holder has no deadline: it believes until it releases,
//!   however long it stalls. That is why a second legacy grant after an
//!   expiry is a collision.
//!
//! A belief that ends by running out rather than by release is a lease
//! overrun, counted once. Beliefs older than the configured horizon are
//! forgotten (a holder that crashed never releases), and a key with no
//! believer is forgotten, so memory follows the number of keys held now,
//! not the number ever seen.

use std::collections::HashMap;

use crate::lock::event::{EventKind, LockEvent, LockMode};

/// One holder's belief that it holds a key.
#[derive(Debug, Clone)]
struct Belief {
    holder: String,
    mode: LockMode,
    token: Option<u64>,
    /// Stream time (ms) of the grant or last extension.
    since_ms: u64,
    /// Requested TTL; 0 when unknown.
    ttl_ms: u64,
    /// The lease ran out while the holder had not released (counted).
    overrun: bool,
}

impl Belief {
    /// Whether the holder knows its own deadline (everything but legacy).
    fn has_deadline(&self) -> bool {
        self.mode != LockMode::Legacy
    }

    fn runs_out_at(&self) -> Option<u64> {
        (self.ttl_ms > 0).then(|| self.since_ms.saturating_add(self.ttl_ms))
    }
}

/// Whether `event` is about the lease `belief` stands for: the same holder
/// and, when the event carries a fencing token, the same token (tasks of one
/// process share a holder name; their fenced leases differ by token).
fn same_lease(belief: &Belief, event: &LockEvent) -> bool {
    belief.holder == event.holder && (event.token.is_none() || belief.token == event.token)
}

/// What applying one event or notice found, by lock mode of the holders
/// concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// New collisions, by the mode of the new believer.
    pub collisions: Vec<LockMode>,
    /// New lease overruns, by the overrunning holder's mode.
    pub overruns: Vec<LockMode>,
}

impl Findings {
    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.collisions.is_empty() && self.overruns.is_empty()
    }
}

/// Believers per lock key.
#[derive(Debug)]
pub struct Ledger {
    keys: HashMap<String, Vec<Belief>>,
    /// Beliefs older than this (ms of stream time) are forgotten.
    horizon_ms: u64,
    /// Latest stream time seen.
    now_ms: u64,
    /// Stream time of the last sweep.
    swept_ms: u64,
}

/// Believers on one key, for the holders panel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolders {
    /// The lock key.
    pub key: String,
    /// How many holders believe they hold it.
    pub holders: usize,
}

/// A summary of the ledger for gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldersSummary {
    /// The keys with the most believers (at most the number asked for),
    /// most first.
    pub top: Vec<KeyHolders>,
    /// Believers on keys not in `top`.
    pub other_holders: u64,
    /// Keys with at least one believer.
    pub keys_held: u64,
    /// Keys with more than one believer.
    pub keys_contended: u64,
    /// The largest number of believers on any key.
    pub max_holders: u64,
}

impl Ledger {
    /// An empty ledger forgetting beliefs older than `horizon_ms`.
    pub fn new(horizon_ms: u64) -> Self {
        Self {
            keys: HashMap::new(),
            horizon_ms: horizon_ms.max(1),
            now_ms: 0,
            swept_ms: 0,
        }
    }

    /// Keys currently tracked (each has at least one believer).
    pub fn keys_tracked(&self) -> usize {
        self.keys.len()
    }

    /// Believers on `key` right now.
    pub fn holders(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, Vec::len)
    }

    /// Applies one lock event whose stream entry was written at `at_ms`
    /// (Redis server time).
    pub fn apply(&mut self, at_ms: u64, event: &LockEvent) -> Findings {
        self.now_ms = self.now_ms.max(at_ms);
        let mut findings = Findings::default();
        match event.kind {
            EventKind::Acquired | EventKind::Extended => {
                self.believe(at_ms, event, &mut findings);
            }
            EventKind::Released => self.forget(event, None),
            EventKind::Lost => self.forget(event, Some(&mut findings)),
            EventKind::Rejected | EventKind::Error => {}
        }
        if self.now_ms.saturating_sub(self.swept_ms) >= 1_000 {
            self.sweep(&mut findings);
        }
        findings
    }

    /// Redis reported, at about `at_ms` (the exporter's clock), that `key`
    /// expired: every holder of it that had not released overran its lease.
    ///
    /// The notice and the stream travel separately, so a successor's grant
    /// can be read before the notice about its predecessor's key. A belief
    /// only takes the notice if at least half of its TTL had passed by then;
    /// a grant that recent cannot be what expired.
    pub fn expired(&mut self, key: &str, at_ms: u64) -> Findings {
        let mut findings = Findings::default();
        let Some(beliefs) = self.keys.get_mut(key) else {
            return findings;
        };
        for belief in beliefs.iter_mut() {
            let old_enough = belief.since_ms.saturating_add(belief.ttl_ms / 2) <= at_ms;
            if old_enough && !belief.overrun {
                belief.overrun = true;
                findings.overruns.push(belief.mode);
            }
        }
        beliefs.retain(|b| !(b.overrun && b.has_deadline()));
        if beliefs.is_empty() {
            self.keys.remove(key);
        }
        findings
    }

    fn believe(&mut self, at_ms: u64, event: &LockEvent, findings: &mut Findings) {
        let beliefs = self.keys.entry(event.key.clone()).or_default();
        // Beliefs that have run out by this event's time.
        for belief in beliefs.iter_mut() {
            let run_out = belief.runs_out_at().is_some_and(|end| end <= at_ms);
            // A newer fenced grant proves the older lease is gone.
            let superseded = event.kind == EventKind::Acquired
                && belief.has_deadline()
                && matches!((belief.token, event.token), (Some(old), Some(new)) if old < new);
            if (run_out || superseded) && !belief.overrun {
                belief.overrun = true;
                findings.overruns.push(belief.mode);
            }
        }
        beliefs.retain(|b| !(b.overrun && b.has_deadline()));
        let ttl_ms = event.ttl_ms.unwrap_or(0);
        if let Some(own) = beliefs.iter_mut().find(|b| same_lease(b, event)) {
            own.since_ms = at_ms;
            own.ttl_ms = ttl_ms;
            own.mode = event.mode;
            if event.token.is_some() {
                own.token = event.token;
            }
            if event.kind == EventKind::Acquired {
                own.overrun = false;
            }
            return;
        }
        if !beliefs.is_empty() {
            findings.collisions.push(event.mode);
        }
        beliefs.push(Belief {
            holder: event.holder.clone(),
            mode: event.mode,
            token: event.token,
            since_ms: at_ms,
            ttl_ms,
            overrun: false,
        });
    }

    fn forget(&mut self, event: &LockEvent, lost: Option<&mut Findings>) {
        let key = event.key.as_str();
        let Some(beliefs) = self.keys.get_mut(key) else {
            return;
        };
        if let Some(pos) = beliefs.iter().position(|b| same_lease(b, event)) {
            let belief = beliefs.swap_remove(pos);
            // `lost`: the holder found its lease gone before giving it back.
            if let Some(findings) = lost
                && !belief.overrun
            {
                findings.overruns.push(belief.mode);
            }
        }
        if beliefs.is_empty() {
            self.keys.remove(key);
        }
    }

    /// Ends beliefs that ran out by stream time and forgets those older than
    /// the horizon.
    fn sweep(&mut self, findings: &mut Findings) {
        let now = self.now_ms;
        let horizon = self.horizon_ms;
        self.swept_ms = now;
        self.keys.retain(|_, beliefs| {
            for belief in beliefs.iter_mut() {
                if !belief.overrun && belief.runs_out_at().is_some_and(|end| end <= now) {
                    belief.overrun = true;
                    findings.overruns.push(belief.mode);
                }
            }
            beliefs.retain(|b| {
                !(b.overrun && b.has_deadline()) && now.saturating_sub(b.since_ms) < horizon
            });
            !beliefs.is_empty()
        });
    }

    /// Believer counts for the gauges: the `top` keys with the most
    /// believers and an aggregate of the rest.
    pub fn summary(&self, top: usize) -> HoldersSummary {
        let mut counts: Vec<(&str, usize)> = self
            .keys
            .iter()
            .map(|(key, beliefs)| (key.as_str(), beliefs.len()))
            .collect();
        let total: u64 = counts.iter().map(|&(_, n)| n as u64).sum();
        let keys_contended = counts.iter().filter(|&&(_, n)| n > 1).count() as u64;
        let max_holders = counts.iter().map(|&(_, n)| n as u64).max().unwrap_or(0);
        let by_most = |a: &(&str, usize), b: &(&str, usize)| b.1.cmp(&a.1).then(a.0.cmp(b.0));
        if counts.len() > top && top > 0 {
            counts.select_nth_unstable_by(top - 1, by_most);
        }
        counts.truncate(top);
        counts.sort_unstable_by(by_most);
        let top_total: u64 = counts.iter().map(|&(_, n)| n as u64).sum();
        HoldersSummary {
            top: counts
                .into_iter()
                .map(|(key, holders)| KeyHolders {
                    key: key.to_string(),
                    holders,
                })
                .collect(),
            other_holders: total - top_total,
            keys_held: self.keys.len() as u64,
            keys_contended,
            max_holders,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(kind: EventKind, holder: &str) -> LockEvent {
        let event = LockEvent::new(kind, LockMode::Legacy, "lock:ord-9927431", holder);
        if kind == EventKind::Acquired {
            event.with_ttl_ms(200)
        } else {
            event
        }
    }

    fn fenced(kind: EventKind, holder: &str, token: u64) -> LockEvent {
        let event =
            LockEvent::new(kind, LockMode::Fenced, "lock:ord-9927431", holder).with_token(token);
        if kind == EventKind::Acquired {
            event.with_ttl_ms(200)
        } else {
            event
        }
    }

    #[test]
    fn legacy_holder_paused_past_its_ttl_collides_with_the_next() {
        let mut ledger = Ledger::new(60_000);
        assert!(
            ledger
                .apply(1_000, &legacy(EventKind::Acquired, "pod-7f"))
                .is_empty()
        );
        // pod-7f stalls 300 ms; the key expires at 1 200.
        let expired = ledger.expired("lock:ord-9927431", 1_200);
        assert_eq!(expired.overruns, vec![LockMode::Legacy]);
        let second = ledger.apply(1_300, &legacy(EventKind::Acquired, "pod-3c"));
        assert_eq!(second.collisions, vec![LockMode::Legacy]);
        assert_eq!(ledger.holders("lock:ord-9927431"), 2);
        ledger.apply(1_310, &legacy(EventKind::Released, "pod-7f"));
        ledger.apply(1_320, &legacy(EventKind::Released, "pod-3c"));
        assert_eq!(
            ledger.keys_tracked(),
            0,
            "keys with no believer are forgotten"
        );
    }

    #[test]
    fn legacy_overrun_is_seen_from_stream_time_without_notifications() {
        let mut ledger = Ledger::new(60_000);
        ledger.apply(1_000, &legacy(EventKind::Acquired, "pod-7f"));
        let second = ledger.apply(1_300, &legacy(EventKind::Acquired, "pod-3c"));
        assert_eq!(second.overruns, vec![LockMode::Legacy]);
        assert_eq!(second.collisions, vec![LockMode::Legacy]);
        // The notice arriving late counts neither pod-7f again nor pod-3c,
        // whose grant is too recent to be what expired.
        assert!(
            ledger
                .expired("lock:ord-9927431", 1_310)
                .overruns
                .is_empty()
        );
    }

    #[test]
    fn fenced_successor_is_no_collision_but_the_overrun_counts_once() {
        let mut ledger = Ledger::new(60_000);
        ledger.apply(1_000, &fenced(EventKind::Acquired, "pod-7f", 41));
        // The successor's grant may be read before the expiry notice.
        let second = ledger.apply(1_250, &fenced(EventKind::Acquired, "pod-3c", 42));
        assert!(second.collisions.is_empty());
        assert_eq!(second.overruns, vec![LockMode::Fenced]);
        // The notice about pod-7f's key arrives late: pod-3c is not blamed.
        assert!(
            ledger
                .expired("lock:ord-9927431", 1_260)
                .overruns
                .is_empty()
        );
        assert_eq!(ledger.holders("lock:ord-9927431"), 1);
        let lost = ledger.apply(1_500, &fenced(EventKind::Lost, "pod-7f", 41));
        assert!(lost.overruns.is_empty(), "already counted");
    }

    #[test]
    fn fenced_lease_lost_at_release_is_an_overrun() {
        let mut ledger = Ledger::new(60_000);
        ledger.apply(1_000, &fenced(EventKind::Acquired, "pod-7f", 7));
        let lost = ledger.apply(1_100, &fenced(EventKind::Lost, "pod-7f", 7));
        assert_eq!(lost.overruns, vec![LockMode::Fenced]);
        assert_eq!(ledger.keys_tracked(), 0);
    }

    #[test]
    fn two_leases_of_one_process_are_told_apart_by_token() {
        let mut ledger = Ledger::new(60_000);
        ledger.apply(1_000, &fenced(EventKind::Acquired, "host:42", 7));
        ledger.apply(1_100, &fenced(EventKind::Released, "host:42", 7));
        ledger.apply(1_110, &fenced(EventKind::Acquired, "host:42", 8));
        // A late `lost` of an older lease does not end the newer one.
        ledger.apply(1_120, &fenced(EventKind::Lost, "host:42", 6));
        assert_eq!(ledger.holders("lock:ord-9927431"), 1);
        let other = LockEvent::new(EventKind::Acquired, LockMode::Fenced, "lock:b", "host:42")
            .with_token(3)
            .with_ttl_ms(200);
        ledger.apply(1_130, &other);
        assert_eq!(ledger.holders("lock:b"), 1);
    }

    #[test]
    fn extension_moves_the_deadline() {
        let mut ledger = Ledger::new(60_000);
        ledger.apply(1_000, &fenced(EventKind::Acquired, "pod-7f", 7));
        ledger.apply(
            1_150,
            &fenced(EventKind::Extended, "pod-7f", 7).with_ttl_ms(200),
        );
        let later = ledger.apply(1_300, &fenced(EventKind::Released, "pod-7f", 7));
        assert!(later.overruns.is_empty());
    }

    #[test]
    fn forgotten_after_the_horizon() {
        let mut ledger = Ledger::new(5_000);
        ledger.apply(1_000, &legacy(EventKind::Acquired, "crashed-pod"));
        let other = LockEvent::new(EventKind::Acquired, LockMode::Legacy, "lock:other", "pod-1")
            .with_ttl_ms(200);
        ledger.apply(7_000, &other);
        assert_eq!(ledger.holders("lock:ord-9927431"), 0);
    }

    #[test]
    fn summary_keeps_the_top_keys_and_aggregates_the_rest() {
        let mut ledger = Ledger::new(60_000);
        for k in 0..10 {
            for h in 0..=k % 3 {
                let event = LockEvent::new(
                    EventKind::Acquired,
                    LockMode::Legacy,
                    format!("lock:{k}"),
                    format!("pod-{h}"),
                );
                ledger.apply(1_000, &event);
            }
        }
        let summary = ledger.summary(2);
        assert_eq!(summary.top.len(), 2);
        assert!(summary.top.iter().all(|k| k.holders == 3));
        assert_eq!(summary.max_holders, 3);
        assert_eq!(summary.keys_held, 10);
        // 10 keys with 1,2,3,1,2,3,1,2,3,1 holders = 19; top two hold 6.
        assert_eq!(summary.other_holders, 13);
        assert_eq!(summary.keys_contended, 6);
    }
}
