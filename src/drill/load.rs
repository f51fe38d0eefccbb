//! PM-003's load curve: 420 orders/min at baseline, climbing to `spike` ×
//! baseline over 40 incident minutes (the "Summer Kickoff" campaign: 420 →
//! 4,100 orders/min), then holding at the peak.
//!
//! **Time.** `speed` compresses *incident time* only: after `w` seconds of
//! wall time the drill is `w × speed` seconds into the incident, so at speed
//! 20 the 40-minute ramp takes 2 minutes. **Rates are per wall-clock minute**
//! and are not multiplied by the speed: at the peak of `--spike 10` the
//! gateway offers 4,200 orders per real minute whatever the speed, which is
//! what a load test at 10× means (compressing time must not also multiply
//! the load, or a fast replay would test a spike it was not asked for).
//!
//! The ramp is a smoothstep with a small deterministic wobble (±6 % at most,
//! fixed by the seed, zero at both ends), so two drills with one seed offer
//! the same curve and the peak is exactly `spike` × baseline.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// PM-003's baseline order rate, orders per minute.
pub const BASELINE_PER_MIN: f64 = 420.0;
/// How long the ramp to the peak lasts, in incident time.
pub const RAMP: Duration = Duration::from_secs(40 * 60);
/// Largest wobble around the smooth ramp, as a fraction of the ramp's height.
const WOBBLE: f64 = 0.06;

/// The load curve of one drill.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadCurve {
    spike: f64,
    speed: f64,
    /// One wobble value in −1..1 per incident minute of the ramp (41 points).
    wobble: Vec<f64>,
}

impl LoadCurve {
    /// A curve peaking at `spike` × baseline, with incident time running
    /// `speed` times faster than wall time. `spike` below 1 is taken as 1,
    /// `speed` at or below 0 (or not finite) as 1.
    pub fn new(spike: f64, speed: f64, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1f0a_d003);
        let minutes = (RAMP.as_secs() / 60) as usize;
        let wobble = (0..=minutes).map(|_| rng.random_range(-1.0..1.0)).collect();
        Self {
            spike: if spike.is_finite() {
                spike.max(1.0)
            } else {
                1.0
            },
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
            wobble,
        }
    }

    /// The peak multiple of the baseline.
    pub fn spike(&self) -> f64 {
        self.spike
    }

    /// How much faster incident time runs than wall time.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Incident time after `wall` of wall-clock time.
    pub fn incident_time(&self, wall: Duration) -> Duration {
        Duration::from_secs_f64((wall.as_secs_f64() * self.speed).min(1e12))
    }

    /// Wall-clock time at which the incident reaches `incident`.
    pub fn wall_time(&self, incident: Duration) -> Duration {
        Duration::from_secs_f64(incident.as_secs_f64() / self.speed)
    }

    /// The multiple of the baseline rate at incident time `incident`: 1 at
    /// the start, `spike` from the end of the ramp on.
    pub fn factor_at(&self, incident: Duration) -> f64 {
        let x = (incident.as_secs_f64() / RAMP.as_secs_f64()).clamp(0.0, 1.0);
        let smooth = x * x * (3.0 - 2.0 * x);
        // Wobble: interpolated between the minute points, shaped to vanish
        // at both ends so the start is the baseline and the peak exact.
        let pos = x * (self.wobble.len() - 1) as f64;
        let i = (pos.floor() as usize).min(self.wobble.len() - 1);
        let j = (i + 1).min(self.wobble.len() - 1);
        let frac = pos - i as f64;
        let w = self.wobble[i] * (1.0 - frac) + self.wobble[j] * frac;
        let envelope = 4.0 * x * (1.0 - x);
        let shape = (smooth + WOBBLE * w * envelope).clamp(0.0, 1.0);
        1.0 + (self.spike - 1.0) * shape
    }

    /// Orders per wall-clock minute offered after `wall` of wall time.
    pub fn rate_per_min(&self, wall: Duration) -> f64 {
        BASELINE_PER_MIN * self.factor_at(self.incident_time(wall))
    }

    /// Orders per wall-clock second offered after `wall` of wall time.
    pub fn rate_per_sec(&self, wall: Duration) -> f64 {
        self.rate_per_min(wall) / 60.0
    }

    /// The peak rate, orders per wall-clock minute.
    pub fn peak_per_min(&self) -> f64 {
        BASELINE_PER_MIN * self.spike
    }

    /// Orders the curve offers in the first `wall` of wall time (the
    /// integral of the rate, in 10 ms steps).
    pub fn offered_by(&self, wall: Duration) -> f64 {
        let step = 0.01f64;
        let end = wall.as_secs_f64();
        let mut t = 0.0;
        let mut total = 0.0;
        while t < end {
            let dt = step.min(end - t);
            total += self.rate_per_sec(Duration::from_secs_f64(t + dt / 2.0)) * dt;
            t += dt;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_baseline_and_peaks_at_spike_in_wall_clock_rate() {
        let curve = LoadCurve::new(10.0, 20.0, 7);
        assert_eq!(curve.rate_per_min(Duration::ZERO), BASELINE_PER_MIN);
        // 40 incident minutes at speed 20 are 2 wall minutes.
        let peak = curve.rate_per_min(Duration::from_secs(120));
        assert_eq!(peak, 4_200.0);
        assert_eq!(curve.rate_per_min(Duration::from_secs(600)), 4_200.0);
        // Halfway up, between the two.
        let mid = curve.rate_per_min(Duration::from_secs(60));
        assert!(mid > 1_500.0 && mid < 3_200.0, "{mid}");
    }

    #[test]
    fn same_seed_same_curve_other_seed_other_wobble() {
        let a = LoadCurve::new(10.0, 10.0, 1);
        let b = LoadCurve::new(10.0, 10.0, 1);
        let c = LoadCurve::new(10.0, 10.0, 2);
        let at = |curve: &LoadCurve| -> Vec<f64> {
            (0..50)
                .map(|s| curve.rate_per_min(Duration::from_secs(s * 5)))
                .collect()
        };
        assert_eq!(at(&a), at(&b));
        assert_ne!(at(&a), at(&c));
    }

    #[test]
    fn speed_compresses_time_not_rates() {
        let slow = LoadCurve::new(5.0, 1.0, 3);
        let fast = LoadCurve::new(5.0, 60.0, 3);
        assert_eq!(
            slow.rate_per_min(Duration::from_secs(20 * 60)),
            fast.rate_per_min(Duration::from_secs(20))
        );
        assert_eq!(fast.peak_per_min(), 2_100.0);
    }

    #[test]
    fn offered_orders_are_the_integral_of_the_rate() {
        let flat = LoadCurve::new(1.0, 1.0, 0);
        let n = flat.offered_by(Duration::from_secs(60));
        assert!((n - 420.0).abs() < 1e-6, "{n}");
    }
}
