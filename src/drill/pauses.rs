//! GC pauses: workers frozen (SIGSTOP, then SIGCONT) at random, longer and
//! more often as the load rises, as PM-003's JVM did — 40–80 ms at the
//! baseline, 280–400 ms at 10×, which outlasts the 200 ms lock TTL.
//!
//! **Time.** The schedule follows the load curve's incident time (pauses
//! become frequent as the spike builds), but a pause's *length* is wall time
//! and is not divided by the speed: it is compared with the lock TTL, which
//! the drill does not compress either. Between the baseline and 10× the
//! length range is interpolated on the load factor; above 10× it stays at
//! 280–400 ms. Each worker is paused as a Poisson process of
//! [`PAUSES_PER_WORKER_SEC_AT_BASELINE`] × load factor (capped at 10) per
//! wall second — a JVM collects on its own — so at the 10× peak a worker is
//! frozen about 17 % of the time, whether there are eight or one (PM-003's
//! single-replica mitigation keeps its GC). Above [`MAX_PAUSED_PODS`] pods
//! the total rate stops growing.
//!
//! The schedule (when, how long, which worker by index) is fixed by the
//! seed; which pod an index names depends on the pods alive at that moment.
//! A pod already paused is not paused again (the pause is skipped and
//! counted).
//!
//! This module knows nothing of processes: the drill implements
//! [`PauseTarget`] with its supervisor.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::load::LoadCurve;

/// Pauses per wall-clock second of one worker at the baseline load.
pub const PAUSES_PER_WORKER_SEC_AT_BASELINE: f64 = 0.05;
/// Pods the schedule is drawn for; beyond it the total rate stops growing.
pub const MAX_PAUSED_PODS: usize = 32;
/// Load factor beyond which pauses come no more often.
const RATE_FACTOR_CAP: f64 = 10.0;

/// What can be paused: the drill's worker processes.
pub trait PauseTarget: Send + Sync + 'static {
    /// The pods that can be paused now.
    fn pods(&self) -> Vec<String>;
    /// Freezes `pod` for `length`, then resumes it; completes when resumed.
    fn pause(&self, pod: &str, length: Duration) -> impl Future<Output = ()> + Send;
}

/// One scheduled pause.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pause {
    /// Wall time since the drill started.
    pub at: Duration,
    /// How long the worker stays frozen.
    pub length: Duration,
    /// Which worker: an index into the pods alive then (modulo their number).
    pub pick: u32,
    /// The pause is made only if `slot` < the number of pods alive then:
    /// the schedule is drawn for [`MAX_PAUSED_PODS`] workers.
    pub slot: u32,
}

/// The length range of a pause at a load factor, milliseconds.
pub fn length_range_ms(factor: f64) -> (f64, f64) {
    let k = ((factor - 1.0) / 9.0).clamp(0.0, 1.0);
    (40.0 + 240.0 * k, 80.0 + 320.0 * k)
}

/// The pause schedule of one drill.
#[derive(Debug, Clone)]
pub struct PauseSchedule {
    curve: LoadCurve,
    rng: StdRng,
    next_at: f64,
    rate_at_baseline: f64,
}

impl PauseSchedule {
    /// The schedule for `curve` and `seed`.
    pub fn new(curve: LoadCurve, seed: u64) -> Self {
        Self::with_rate(curve, seed, PAUSES_PER_WORKER_SEC_AT_BASELINE)
    }

    /// The schedule with `rate_at_baseline` pauses per second of each worker
    /// at the baseline (scaled by the load factor, capped at 10×).
    pub fn with_rate(curve: LoadCurve, seed: u64, rate_at_baseline: f64) -> Self {
        Self {
            curve,
            rng: StdRng::seed_from_u64(seed ^ 0x6c_9a05e),
            next_at: 0.0,
            rate_at_baseline: rate_at_baseline.max(1e-6),
        }
    }

    /// The next pause.
    pub fn next_pause(&mut self) -> Pause {
        // A Poisson process whose rate follows the load: candidates at the
        // peak rate, each kept with probability rate(t) / peak rate.
        let top = self.curve.spike().min(RATE_FACTOR_CAP);
        let peak = self.rate_at_baseline * top * MAX_PAUSED_PODS as f64;
        let (at, factor) = loop {
            let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
            self.next_at += -u.ln() / peak;
            let at = Duration::from_secs_f64(self.next_at);
            let factor = self.curve.factor_at(self.curve.incident_time(at));
            if self.rng.random_range(0.0..1.0) < factor.min(RATE_FACTOR_CAP) / top {
                break (at, factor);
            }
        };
        let (lo, hi) = length_range_ms(factor);
        let length = Duration::from_secs_f64(self.rng.random_range(lo..=hi) / 1000.0);
        Pause {
            at,
            length,
            pick: self.rng.random(),
            slot: self.rng.random_range(0..MAX_PAUSED_PODS as u32),
        }
    }
}

/// What the pauser has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PauseStats {
    /// Pauses made.
    pub paused: u64,
    /// Pauses skipped (the pod was already paused).
    pub skipped: u64,
    /// Total frozen time, milliseconds.
    pub frozen_ms: u64,
    /// Longest pause, milliseconds.
    pub longest_ms: u64,
}

#[derive(Default)]
struct Counters {
    paused: AtomicU64,
    skipped: AtomicU64,
    frozen_ms: AtomicU64,
    longest_ms: AtomicU64,
}

/// The running pause schedule.
pub struct Pauser {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Pauser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pauser")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pauser {
    /// Starts pausing `target`'s pods on `schedule`, with wall time zero now.
    pub fn start<T: PauseTarget>(target: Arc<T>, schedule: PauseSchedule) -> Self {
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(pause_loop(target, schedule, counters.clone(), stopped));
        Self {
            counters,
            stop,
            task,
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> PauseStats {
        let c = &self.counters;
        PauseStats {
            paused: c.paused.load(Ordering::Relaxed),
            skipped: c.skipped.load(Ordering::Relaxed),
            frozen_ms: c.frozen_ms.load(Ordering::Relaxed),
            longest_ms: c.longest_ms.load(Ordering::Relaxed),
        }
    }

    /// Stops scheduling; pauses in progress run to their end (every frozen
    /// worker is resumed) before this returns.
    pub async fn stop(mut self) -> PauseStats {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
        self.stats()
    }
}

async fn pause_loop<T: PauseTarget>(
    target: Arc<T>,
    mut schedule: PauseSchedule,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
) {
    let started = Instant::now();
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut running = tokio::task::JoinSet::new();
    loop {
        let pause = schedule.next_pause();
        let when = tokio::time::Instant::from_std(started + pause.at);
        tokio::select! {
            _ = tokio::time::sleep_until(when) => {}
            _ = stopped.changed() => break,
        }
        while running.try_join_next().is_some() {}
        let pods = target.pods();
        if pause.slot as usize >= pods.len() {
            // Drawn for a worker that does not exist now.
            continue;
        }
        let pod = pods[pause.pick as usize % pods.len()].clone();
        if !busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod.clone())
        {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let ms = pause.length.as_millis() as u64;
        counters.paused.fetch_add(1, Ordering::Relaxed);
        counters.frozen_ms.fetch_add(ms, Ordering::Relaxed);
        counters.longest_ms.fetch_max(ms, Ordering::Relaxed);
        let target = target.clone();
        let busy = busy.clone();
        running.spawn(async move {
            target.pause(&pod, pause.length).await;
            busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&pod);
        });
    }
    while running.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(seed: u64, n: usize) -> Vec<Pause> {
        let mut s = PauseSchedule::new(LoadCurve::new(10.0, 40.0, seed), seed);
        (0..n).map(|_| s.next_pause()).collect()
    }

    #[test]
    fn schedule_is_fixed_by_the_seed() {
        assert_eq!(take(3, 200), take(3, 200));
        assert_ne!(take(3, 200), take(4, 200));
    }

    #[test]
    fn pauses_grow_longer_and_denser_with_the_load() {
        let pauses = take(9, 2_000);
        // Speed 40: the 40-minute ramp lasts 60 wall seconds.
        let early: Vec<_> = pauses
            .iter()
            .filter(|p| p.at.as_secs_f64() < 10.0)
            .collect();
        let peak: Vec<_> = pauses
            .iter()
            .filter(|p| (60.0..120.0).contains(&p.at.as_secs_f64()))
            .collect();
        assert!(!early.is_empty() && !peak.is_empty());
        for p in &early {
            let ms = p.length.as_secs_f64() * 1000.0;
            assert!((40.0..=110.0).contains(&ms), "{ms}");
        }
        for p in &peak {
            let ms = p.length.as_secs_f64() * 1000.0;
            assert!((280.0..=400.0).contains(&ms), "{ms}");
        }
        // Drawn for 32 workers: about 2/s in the first ten seconds against
        // 16/s at the peak.
        let early_rate = early.len() as f64 / 10.0;
        let peak_rate = peak.len() as f64 / 60.0;
        assert!(
            peak_rate > 3.0 * early_rate.max(0.4),
            "{early_rate} {peak_rate}"
        );
        // One worker alone at the peak: about 0.5 pauses per second.
        let alone = peak.iter().filter(|p| p.slot < 1).count();
        assert!((10..=60).contains(&alone), "{alone} in 60 s");
        assert_eq!(length_range_ms(1.0), (40.0, 80.0));
        assert_eq!(length_range_ms(10.0), (280.0, 400.0));
        assert_eq!(length_range_ms(100.0), (280.0, 400.0));
    }
}
