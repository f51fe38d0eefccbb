//! What the workers report about the orders they processed, kept in Redis
//! so that the drill (or anyone with `redis-cli`) can read it back: counters,
//! an order latency histogram (gateway offer → worker done) and the lock
//! modes used.
//!
//! Cheap on the hot path: a worker adds one `INCR` and one `HINCRBY` to the
//! pipeline that acknowledges the order. The histogram buckets keep two
//! significant digits of the latency in microseconds (≤ 10 % error), so a
//! bucket count is all that is stored, whatever the number of orders.

use redis::aio::ConnectionManager;
use serde::Serialize;

/// Stream entries acknowledged (fulfilled, or found already fulfilled).
pub const PROCESSED: &str = "drill:stats:processed";
/// Orders a worker took from new to `FULFILLED`.
pub const FULFILLED: &str = "drill:stats:fulfilled";
/// Entries for orders already fulfilled (follow-ups and redeliveries).
pub const SKIPPED: &str = "drill:stats:skipped";
/// Writes refused by the fence, as the workers saw them.
pub const FENCE_REJECTIONS: &str = "drill:stats:fence-rejections";
/// Pipeline errors (failed writes, lock timeouts, optimistic conflicts).
pub const ERRORS: &str = "drill:stats:errors";
/// Hash: latency bucket (lower bound, µs) → orders.
pub const LATENCY: &str = "drill:stats:latency";
/// Hash: lock mode → when a worker first used it (µs since the epoch).
pub const MODES: &str = "drill:stats:modes";

/// The histogram bucket of a latency: its lower bound, keeping two
/// significant digits (`12_345` → `12_000`).
pub fn latency_bucket(us: u64) -> u64 {
    let mut step = 1;
    while us / step >= 100 {
        step *= 10;
    }
    us / step * step
}

/// The largest value that falls into the bucket starting at `bucket`.
pub fn bucket_upper(bucket: u64) -> u64 {
    let mut step = 1;
    while bucket / step >= 100 {
        step *= 10;
    }
    bucket + step - 1
}

/// Order latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Orders measured.
    pub count: u64,
}

/// The workers' numbers, read back from Redis.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OrderStats {
    /// Stream entries acknowledged.
    pub processed: u64,
    /// Orders fulfilled.
    pub fulfilled: u64,
    /// Entries found already fulfilled.
    pub skipped: u64,
    /// Writes refused by the fence.
    pub fencing_rejections: u64,
    /// Pipeline errors.
    pub errors: u64,
    /// Order latency, gateway offer to worker done.
    pub latency_ms: Latency,
    /// Lock modes the workers used, in the order they were first used.
    pub lock_modes: Vec<String>,
}

/// Percentiles from `(bucket lower bound µs, count)` pairs; each percentile
/// is the upper bound of the bucket it falls in.
pub fn percentiles(mut buckets: Vec<(u64, u64)>) -> Latency {
    buckets.sort_unstable();
    let count: u64 = buckets.iter().map(|(_, n)| n).sum();
    if count == 0 {
        return Latency::default();
    }
    let at = |q: f64| {
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (bucket, n) in &buckets {
            seen += n;
            if seen >= rank {
                return bucket_upper(*bucket) as f64 / 1000.0;
            }
        }
        0.0
    };
    Latency {
        p50: at(0.50),
        p99: at(0.99),
        count,
    }
}

/// Reads the workers' numbers.
pub async fn read(conn: &mut ConnectionManager) -> Result<OrderStats, redis::RedisError> {
    #[allow(clippy::type_complexity)]
    let (processed, fulfilled, skipped, rejections, errors, latency, modes): (
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Vec<(u64, u64)>,
        Vec<(String, u64)>,
    ) = redis::pipe()
        .get(PROCESSED)
        .get(FULFILLED)
        .get(SKIPPED)
        .get(FENCE_REJECTIONS)
        .get(ERRORS)
        .hgetall(LATENCY)
        .hgetall(MODES)
        .query_async(conn)
        .await?;
    let mut modes = modes;
    modes.sort_by_key(|(_, at)| *at);
    Ok(OrderStats {
        processed: processed.unwrap_or(0),
        fulfilled: fulfilled.unwrap_or(0),
        skipped: skipped.unwrap_or(0),
        fencing_rejections: rejections.unwrap_or(0),
        errors: errors.unwrap_or(0),
        latency_ms: percentiles(latency),
        lock_modes: modes.into_iter().map(|(m, _)| m).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_keep_two_significant_digits() {
        assert_eq!(latency_bucket(7), 7);
        assert_eq!(latency_bucket(99), 99);
        assert_eq!(latency_bucket(100), 100);
        assert_eq!(latency_bucket(12_345), 12_000);
        assert_eq!(bucket_upper(12_000), 12_999);
        assert_eq!(bucket_upper(99), 99);
        for us in [0, 1, 55, 101, 999, 1_234, 98_765, 1_000_000_007] {
            let b = latency_bucket(us);
            assert!(
                b <= us && us <= bucket_upper(b),
                "{us} in [{b}, {}]",
                bucket_upper(b)
            );
        }
    }

    #[test]
    fn percentiles_pick_the_bucket_holding_the_rank() {
        // 98 fast orders (1.0–1.099 ms), one at 50 ms, one at 900 ms.
        let lat = percentiles(vec![(1_000, 98), (50_000, 1), (900_000, 1)]);
        assert_eq!(lat.count, 100);
        assert_eq!(lat.p50, 1.099);
        assert_eq!(lat.p99, 50.999);
        assert_eq!(percentiles(Vec::new()), Latency::default());
    }
}
