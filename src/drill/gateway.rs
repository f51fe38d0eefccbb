//! The orders gateway: a task in the drill process that offers orders at the
//! load curve's rate and hands the accepted ones to the workers (the orders
//! stream), limited live by the `nginx.ingress.kubernetes.io/limit-rps`
//! annotation of the `orders-gateway` Ingress, as ingress-nginx would.
//!
//! Every offered order is counted exactly once: `received` (appended to the
//! stream), `rejected` (over the rate limit: ingress-nginx answers 503) or
//! `failed` (Redis refused the append). None is dropped silently.
//!
//! Order IDs look like PM-003's (`ord-9927431`). A share of the offers are
//! follow-ups of a recent order (a hot set), so several entries name one
//! order and can reach two workers at once. The sequence of IDs is fixed by
//! the seed.
//!
//! The limit is a token bucket refilled at `limit-rps` per second with a
//! burst of `limit-rps` × 5 (ingress-nginx's default burst multiplier). The
//! annotation is read from the cluster store every 100 ms; absent or not a
//! positive whole number means no limit (an invalid value is logged once).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::load::LoadCurve;
use super::orders::{keys, now_us};
use crate::cluster::Store;
use crate::cluster::seed::{DRILL_INGRESS, DRILL_NAMESPACE};

/// The ingress-nginx annotation the gateway obeys.
pub const LIMIT_RPS_ANNOTATION: &str = "nginx.ingress.kubernetes.io/limit-rps";
/// ingress-nginx's default burst multiplier.
pub const BURST_MULTIPLIER: f64 = 5.0;

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The load curve.
    pub curve: LoadCurve,
    /// Seed of the order IDs and follow-ups.
    pub seed: u64,
    /// Share of offers that are a follow-up of a recent order, 0 to 1.
    pub follow_up: f64,
    /// How many recent orders follow-ups are drawn from.
    pub hot_set: usize,
    /// Namespace of the Ingress.
    pub namespace: String,
    /// Name of the Ingress whose annotation limits the rate.
    pub ingress: String,
    /// Offer interval.
    pub tick: Duration,
}

impl GatewayConfig {
    /// The drill's gateway for `curve` and `seed`.
    pub fn new(curve: LoadCurve, seed: u64) -> Self {
        Self {
            curve,
            seed,
            follow_up: 0.15,
            hot_set: 64,
            namespace: DRILL_NAMESPACE.to_string(),
            ingress: DRILL_INGRESS.to_string(),
            tick: Duration::from_millis(10),
        }
    }
}

/// What the gateway has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GatewayStats {
    /// Orders offered by the load curve.
    pub offered: u64,
    /// Orders accepted and handed to the workers.
    pub received: u64,
    /// Orders refused by the rate limit.
    pub rejected: u64,
    /// Orders accepted that Redis failed to take.
    pub failed: u64,
    /// The rate limit in force (requests per second), if any.
    pub limit_rps: Option<u64>,
}

#[derive(Default)]
struct Counters {
    offered: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// 0: no limit.
    limit_rps: AtomicU64,
}

/// The running gateway.
pub struct Gateway {
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    started: Instant,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The rate limit the Ingress asks for: `Ok(None)` without the annotation,
/// `Err(text)` when the annotation is not a positive whole number.
pub fn limit_of(ingress: &serde_json::Value) -> Result<Option<u64>, String> {
    let Some(value) = ingress
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LIMIT_RPS_ANNOTATION))
    else {
        return Ok(None);
    };
    let text = match value {
        serde_json::Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(text.chars().take(40).collect()),
    }
}

impl Gateway {
    /// Starts offering orders now. `cluster` is the store holding the
    /// Ingress (`None`: no limit).
    pub fn start(conn: ConnectionManager, cluster: Option<Store>, config: GatewayConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(offer_loop(
            conn,
            cluster,
            config,
            counters.clone(),
            stopped,
            started,
        ));
        Self {
            counters,
            stop,
            task,
            started,
        }
    }

    /// When the gateway started (wall time zero of the load curve).
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The counts so far.
    pub fn stats(&self) -> GatewayStats {
        let c = &self.counters;
        let limit = c.limit_rps.load(Ordering::Relaxed);
        GatewayStats {
            offered: c.offered.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            limit_rps: (limit > 0).then_some(limit),
        }
    }

    /// Stops offering (the batch in flight is finished) and returns the counts.
    pub async fn stop(mut self) -> GatewayStats {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
        self.stats()
    }
}

/// Order IDs in PM-003's shape, new ones and follow-ups, fixed by a seed.
#[derive(Debug)]
pub struct OrderIds {
    rng: StdRng,
    next: u64,
    recent: VecDeque<String>,
    hot_set: usize,
    follow_up: f64,
}

impl OrderIds {
    /// IDs for `seed`; `follow_up` of them repeat one of the last `hot_set`.
    pub fn new(seed: u64, follow_up: f64, hot_set: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x0bde_0001);
        let next = 9_900_000 + rng.random_range(0..50_000u64);
        Self {
            rng,
            next,
            recent: VecDeque::new(),
            hot_set: hot_set.max(1),
            follow_up: follow_up.clamp(0.0, 1.0),
        }
    }

    /// The next order ID.
    pub fn next_id(&mut self) -> String {
        if !self.recent.is_empty() && self.rng.random_bool(self.follow_up) {
            let i = self.rng.random_range(0..self.recent.len());
            return self.recent[i].clone();
        }
        let id = format!("ord-{}", self.next);
        self.next += 1 + self.rng.random_range(0..3u64);
        if self.recent.len() == self.hot_set {
            self.recent.pop_front();
        }
        self.recent.push_back(id.clone());
        id
    }
}

async fn offer_loop(
    mut conn: ConnectionManager,
    cluster: Option<Store>,
    config: GatewayConfig,
    counters: Arc<Counters>,
    mut stopped: watch::Receiver<bool>,
    started: Instant,
) {
    let mut ids = OrderIds::new(config.seed, config.follow_up, config.hot_set);
    let mut due = 0.0f64;
    let mut last = started;
    let mut limit: Option<u64> = None;
    let mut bad_limit_logged: Option<String> = None;
    let mut bucket = 0.0f64;
    let mut limit_read = started - Duration::from_secs(1);
    let mut interval = tokio::time::interval(config.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopped.changed() => break,
        }
        let now = Instant::now();
        if now.duration_since(limit_read) >= Duration::from_millis(100) {
            limit_read = now;
            let read = cluster.as_ref().and_then(|store| {
                store.get(
                    "networking.k8s.io/v1",
                    "Ingress",
                    Some(&config.namespace),
                    &config.ingress,
                )
            });
            let next = match read.as_ref().map(limit_of) {
                None | Some(Ok(None)) => None,
                Some(Ok(Some(n))) => Some(n),
                Some(Err(text)) => {
                    if bad_limit_logged.as_deref() != Some(&text) {
                        tracing::warn!(
                            "{LIMIT_RPS_ANNOTATION} {text:?} on Ingress {}/{} is not a positive \
                             whole number; the gateway does not limit",
                            config.namespace,
                            config.ingress
                        );
                        bad_limit_logged = Some(text);
                    }
                    None
                }
            };
            if next != limit {
                tracing::info!(?next, "gateway rate limit changed");
                if let Some(n) = next {
                    bucket = n as f64 * BURST_MULTIPLIER;
                }
                limit = next;
            }
            counters
                .limit_rps
                .store(limit.unwrap_or(0), Ordering::Relaxed);
        }
        let dt = now.duration_since(last).as_secs_f64();
        last = now;
        let wall = now.duration_since(started);
        due += config.curve.rate_per_sec(wall) * dt;
        if let Some(n) = limit {
            bucket = (bucket + n as f64 * dt).min(n as f64 * BURST_MULTIPLIER);
        }
        let count = due.floor() as u64;
        if count == 0 {
            continue;
        }
        due -= count as f64;
        let mut pipe = redis::pipe();
        let mut accepted = 0u64;
        let mut rejected = 0u64;
        let offered_us = now_us();
        for _ in 0..count {
            let id = ids.next_id();
            if limit.is_some() {
                if bucket < 1.0 {
                    rejected += 1;
                    continue;
                }
                bucket -= 1.0;
            }
            pipe.cmd("XADD")
                .arg(keys::ORDERS_STREAM)
                .arg("*")
                .arg("order")
                .arg(&id)
                .arg("offered_us")
                .arg(offered_us)
                .ignore();
            accepted += 1;
        }
        counters.offered.fetch_add(count, Ordering::Relaxed);
        counters.rejected.fetch_add(rejected, Ordering::Relaxed);
        if accepted > 0 {
            match pipe.query_async::<()>(&mut conn).await {
                Ok(()) => {
                    counters.received.fetch_add(accepted, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.failed.fetch_add(accepted, Ordering::Relaxed);
                    tracing::warn!(
                        "gateway: {accepted} order(s) not handed to the workers: {}",
                        crate::redact::redact_text(&e.to_string())
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limit_comes_from_the_annotation() {
        let with = |v: serde_json::Value| json!({ "metadata": { "annotations": { LIMIT_RPS_ANNOTATION: v } } });
        assert_eq!(limit_of(&json!({ "metadata": {} })), Ok(None));
        assert_eq!(limit_of(&with(json!("50"))), Ok(Some(50)));
        assert_eq!(limit_of(&with(json!(" 7 "))), Ok(Some(7)));
        assert!(limit_of(&with(json!("0"))).is_err());
        assert!(limit_of(&with(json!("-3"))).is_err());
        assert!(limit_of(&with(json!("lots"))).is_err());
    }

    #[test]
    fn order_ids_are_pm003_shaped_repeat_hot_orders_and_follow_the_seed() {
        let take = |seed| {
            let mut ids = OrderIds::new(seed, 0.2, 16);
            (0..500).map(|_| ids.next_id()).collect::<Vec<_>>()
        };
        let a = take(5);
        assert_eq!(a, take(5));
        assert_ne!(a, take(6));
        assert!(a.iter().all(|id| id.starts_with("ord-") && id.len() == 11));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() < 480 && distinct.len() > 300,
            "{}",
            distinct.len()
        );
    }
}
