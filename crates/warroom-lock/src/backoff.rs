//! Jittered exponential backoff between lock attempts.

use std::time::Duration;

/// Waiting between attempts: a random delay in `[0, cap]`, where the cap starts
/// at `initial` and doubles up to `max` ("full jitter"), so that contending
/// clients spread out instead of retrying in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Cap of the first delay.
    pub initial: Duration,
    /// Largest cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(100),
        }
    }
}

impl Backoff {
    /// The delay before attempt number `attempt` (1 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let shift = attempt.saturating_sub(1).min(20);
        let cap = self
            .initial
            .saturating_mul(1u32 << shift)
            .min(self.max)
            .max(Duration::from_micros(100));
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        Duration::from_nanos(rand::random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_the_growing_cap() {
        let b = Backoff {
            initial: Duration::from_millis(2),
            max: Duration::from_millis(50),
        };
        for attempt in 1..40 {
            let cap = (Duration::from_millis(2) * 2u32.pow(attempt.min(20) - 1))
                .min(Duration::from_millis(50));
            for _ in 0..50 {
                assert!(b.delay(attempt) <= cap, "attempt {attempt}");
            }
        }
    }
}
