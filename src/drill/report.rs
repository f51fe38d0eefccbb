//! What a drill measured, printed at its end (`--report json|text`) and
//! written to `report.json` in the drill directory.

use serde::Serialize;

/// Order latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The Deployment's replicas at one moment.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ReplicasAt {
    /// Milliseconds since the drill started (wall clock).
    pub at_ms: u64,
    /// Incident seconds at that moment (wall time × speed).
    pub incident_s: f64,
    /// `spec.replicas`.
    pub desired: i64,
    /// Worker processes running.
    pub running: u64,
}

/// An alert as the drill and, when it runs, Prometheus saw it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertSeen {
    /// Alert name.
    pub alert: String,
    /// When the drill's own alerting fired it, ms since the drill started.
    pub fired_at_ms: Option<u64>,
    /// When Prometheus made it active (`activeAt`), ms since the drill started.
    pub prometheus_at_ms: Option<u64>,
}

/// How an automatic mitigation ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MitigationSeen {
    /// The playbook file.
    pub playbook: String,
    /// When it started, ms since the drill started.
    pub started_at_ms: u64,
    /// When it ended, ms since the drill started.
    pub ended_at_ms: u64,
    /// The engine's outcome (`done`, `failed-undone`, …).
    pub outcome: String,
    /// Every step done and verified.
    pub verified: bool,
    /// The engine's summary.
    pub message: String,
}

/// The report of one drill. All times in milliseconds of wall-clock time
/// unless named `incident_*` (incident time = wall time × `speed`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrillReport {
    /// The drill directory.
    pub drill_dir: String,
    /// The lock mode the drill started with.
    pub lock: String,
    /// Peak load as a multiple of PM-003's baseline.
    pub spike: f64,
    /// Incident seconds per wall-clock second.
    pub speed: f64,
    /// Seed of the load curve and the pause schedule.
    pub seed: u64,
    /// Wall-clock milliseconds the drill ran.
    pub duration_ms: u64,
    /// Incident seconds the drill covered.
    pub incident_s: f64,
    /// How it ended: `completed` (duration reached), `interrupted`
    /// (SIGINT/SIGTERM) or `failed`.
    pub ended: String,
    /// Orders the load curve offered to the gateway.
    pub orders_offered: u64,
    /// Orders the gateway let through to the workers.
    pub orders_received: u64,
    /// Orders a worker finished (each delivery: an order redelivered after
    /// a pause and finished twice counts twice).
    pub orders_processed: u64,
    /// Orders the gateway rejected (over its rate limit).
    pub orders_rejected: u64,
    /// Order latency (gateway to processed).
    pub order_latency_ms: Latency,
    /// Grants of a lock another holder still believed it held (the
    /// exporter's collisions).
    pub double_grants: u64,
    /// Writes the fenced store refused (stale token).
    pub fencing_rejections: u64,
    /// Application errors reported.
    pub app_errors: u64,
    /// Orders whose records disagree, by the reconciliation scan at the end.
    pub corrupted_orders: u64,
    /// Of those, the ones the audit log cannot settle.
    pub ambiguous_orders: u64,
    /// Milliseconds the reconciliation scan took.
    pub reconcile_ms: u64,
    /// Collisions after the mitigation was verified (null without one).
    pub collisions_after_mitigation: Option<u64>,
    /// First collision (Redis time of the colliding grant) to the drill's
    /// collision alert.
    pub ttd_ms: Option<u64>,
    /// First collision to Prometheus' collision alert (null without
    /// Prometheus, or when it did not fire).
    pub ttd_prometheus_ms: Option<u64>,
    /// Collision alert to mitigation verified (null without one).
    pub ttm_ms: Option<u64>,
    /// Lock modes the workers used, in order.
    pub lock_modes: Vec<String>,
    /// The Deployment's replicas over time (each change, and the start).
    pub replicas: Vec<ReplicasAt>,
    /// The GC pauses made (SIGSTOP/SIGCONT of workers).
    pub gc_pauses: super::pauses::PauseStats,
    /// Alerts that fired.
    pub alerts: Vec<AlertSeen>,
    /// The automatic mitigation, when one ran.
    pub mitigation: Option<MitigationSeen>,
    /// Whether a Prometheus server ran beside the drill.
    pub prometheus: bool,
    /// The incident journal.
    pub timeline: String,
    /// Its Markdown export.
    pub timeline_export: String,
    /// Problems met along the way (the drill went on).
    pub warnings: Vec<String>,
}

fn opt_ms(value: Option<u64>) -> String {
    value.map_or_else(|| "-".into(), |ms| format!("{ms} ms"))
}

impl DrillReport {
    /// The report as lines for people.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<28} {value}\n"));
        };
        line("drill directory", self.drill_dir.clone());
        line(
            "drill",
            format!(
                "lock {}, spike {}x, speed {}x, seed {}, {} (ran {:.1} s, {:.0} incident s)",
                self.lock,
                self.spike,
                self.speed,
                self.seed,
                self.ended,
                self.duration_ms as f64 / 1000.0,
                self.incident_s
            ),
        );
        line(
            "orders",
            format!(
                "offered {}, received {}, processed {}, rejected {}",
                self.orders_offered,
                self.orders_received,
                self.orders_processed,
                self.orders_rejected
            ),
        );
        line(
            "order latency",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms",
                self.order_latency_ms.p50, self.order_latency_ms.p99
            ),
        );
        line("double grants", self.double_grants.to_string());
        line("fencing rejections", self.fencing_rejections.to_string());
        line("application errors", self.app_errors.to_string());
        line(
            "corrupted orders",
            format!(
                "{} ({} ambiguous; scan {} ms)",
                self.corrupted_orders, self.ambiguous_orders, self.reconcile_ms
            ),
        );
        line(
            "collisions after mitigation",
            self.collisions_after_mitigation
                .map_or_else(|| "-".into(), |n| n.to_string()),
        );
        line("time to detect", opt_ms(self.ttd_ms));
        line(
            "time to detect (prometheus)",
            if self.prometheus {
                opt_ms(self.ttd_prometheus_ms)
            } else {
                "- (no prometheus: not on PATH, or --no-prometheus)".into()
            },
        );
        line("time to mitigate", opt_ms(self.ttm_ms));
        line("lock modes", self.lock_modes.join(" -> "));
        line(
            "gc pauses",
            format!(
                "{} ({} skipped), {} ms frozen, longest {} ms",
                self.gc_pauses.paused,
                self.gc_pauses.skipped,
                self.gc_pauses.frozen_ms,
                self.gc_pauses.longest_ms
            ),
        );
        line(
            "replicas",
            self.replicas
                .iter()
                .map(|r| {
                    format!(
                        "{}/{}@{:.1}s",
                        r.running,
                        r.desired,
                        r.at_ms as f64 / 1000.0
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
        for alert in &self.alerts {
            line(
                &format!("alert {}", alert.alert),
                format!(
                    "drill {} / prometheus {}",
                    alert
                        .fired_at_ms
                        .map_or_else(|| "-".into(), |ms| format!("+{ms} ms")),
                    alert
                        .prometheus_at_ms
                        .map_or_else(|| "-".into(), |ms| format!("+{ms} ms")),
                ),
            );
        }
        if let Some(m) = &self.mitigation {
            line(
                "mitigation",
                format!("{} {}: {}", m.playbook, m.outcome, m.message),
            );
        }
        line("timeline", self.timeline.clone());
        line("timeline export", self.timeline_export.clone());
        for warning in &self.warnings {
            line("warning", warning.clone());
        }
        out
    }
}
