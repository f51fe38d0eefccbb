//! The exporter's Prometheus metrics and their OpenMetrics rendering.
//!
//! Names follow Prometheus conventions: `warroom_` prefix, `_total` on
//! counters, no unbounded labels. Keys appear as labels only on
//! `warroom_lock_holders` (the top keys; the rest are summed into
//! `warroom_lock_holders_other`); services reporting errors are capped at
//! [`MAX_SERVICES`] label values, the rest count as `other`. Label values
//! that come from the stream (keys, services) go through the redactor
//! ([`crate::redact`]) first: a token someone put in a lock key or a
//! service name never reaches `/metrics` in clear.

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::ledger::HoldersSummary;
use crate::lock::event::LockMode;

/// Distinct `service` label values on `warroom_app_errors_total`.
pub const MAX_SERVICES: usize = 32;

/// Content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format, served to clients
/// that ask for `text/plain` and not for OpenMetrics.
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the classic Prometheus text format (0.0.4):
/// counter families are named with their `_total` suffix, and `# EOF` and
/// `# UNIT` lines are dropped. Tools that read only the classic format
/// (`promtool check metrics`) then see a help text and type for every sample.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|prefix| line.strip_prefix(prefix).map(|rest| (prefix, rest)));
        match comment {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabel {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    connection: &'static str,
}

/// A counter per lock mode, looked up without hashing.
#[derive(Clone)]
pub(crate) struct PerMode([Counter; LockMode::ALL.len()]);

impl PerMode {
    fn new(family: &Family<ModeLabel, Counter>) -> Self {
        Self(LockMode::ALL.map(|mode| {
            family.get_or_create_owned(&ModeLabel {
                mode: mode.as_str(),
            })
        }))
    }

    pub(crate) fn inc(&self, mode: LockMode) {
        let index = LockMode::ALL
            .iter()
            .position(|m| *m == mode)
            .unwrap_or_default();
        self.0[index].inc();
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

/// Which Redis connection a state gauge is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// The stream reader.
    Stream,
    /// The keyspace-notification subscriber.
    Keyspace,
}

/// Every metric the exporter serves.
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) grants: PerMode,
    pub(crate) releases: PerMode,
    pub(crate) collisions: PerMode,
    pub(crate) overruns: PerMode,
    pub(crate) rejections: PerMode,
    pub(crate) events: Counter,
    bad_events: Family<ReasonLabel, Counter>,
    app_errors: Family<ServiceLabel, Counter>,
    services: HashMap<String, Counter>,
    pub(crate) errors_last_minute: Gauge,
    pub(crate) expirations: Counter,
    connected_stream: Gauge,
    connected_keyspace: Gauge,
    pub(crate) keyspace_enabled: Gauge,
    holders: Family<KeyLabel, Gauge>,
    holders_other: Gauge,
    holders_max: Gauge,
    keys_held: Gauge,
    keys_contended: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("warroom");
        let per_mode = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ModeLabel, Counter>::default();
            registry.register(name, help, family.clone());
            PerMode::new(&family)
        };
        let grants = per_mode(
            &mut registry,
            "lock_grants",
            "Leases granted, by lock mode (acquired events)",
        );
        let releases = per_mode(
            &mut registry,
            "lock_releases",
            "Leases given back by their holders, by lock mode",
        );
        let collisions = per_mode(
            &mut registry,
            "lock_collisions",
            "Grants while another holder still believed it held the key, by the new holder's lock mode",
        );
        let overruns = per_mode(
            &mut registry,
            "lock_lease_overruns",
            "Leases that ran out while their holder had not released them, by lock mode",
        );
        let rejections = per_mode(
            &mut registry,
            "fencing_rejections",
            "Writes or claims the fenced store refused because a newer fencing token had been seen, by lock mode",
        );
        let events = Counter::default();
        registry.register(
            "events_processed",
            "Stream entries read, valid or not",
            events.clone(),
        );
        let bad_events = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "bad_events",
            "Stream entries that are not valid lock events, by cause",
            bad_events.clone(),
        );
        let app_errors = Family::<ServiceLabel, Counter>::default();
        registry.register(
            "app_errors",
            "Application errors services reported on the protected path, by service",
            app_errors.clone(),
        );
        let errors_last_minute = Gauge::default();
        registry.register(
            "app_errors_last_minute",
            "Application errors reported in the last 60 seconds of stream time",
            errors_last_minute.clone(),
        );
        let expirations = Counter::default();
        registry.register(
            "lock_key_expirations",
            "Expiry notices received for lock keys that had a believer",
            expirations.clone(),
        );
        let connected = Family::<ConnectionLabel, Gauge>::default();
        registry.register(
            "redis_connected",
            "Whether the exporter's Redis connection is up (1) or down (0), by connection",
            connected.clone(),
        );
        let connected_stream = connected.get_or_create_owned(&ConnectionLabel {
            connection: "stream",
        });
        let connected_keyspace = connected.get_or_create_owned(&ConnectionLabel {
            connection: "keyspace",
        });
        let keyspace_enabled = Gauge::default();
        registry.register(
            "keyspace_notifications_enabled",
            "Whether expired-key notifications are on and subscribed (1) or off (0)",
            keyspace_enabled.clone(),
        );
        let holders = Family::<KeyLabel, Gauge>::default();
        registry.register(
            "lock_holders",
            "Holders that believe they hold the key, for the keys with the most",
            holders.clone(),
        );
        let holders_other = Gauge::default();
        registry.register(
            "lock_holders_other",
            "Holders believing they hold a key not listed in warroom_lock_holders",
            holders_other.clone(),
        );
        let holders_max = Gauge::default();
        registry.register(
            "lock_holders_max",
            "The most holders believing they hold any one key",
            holders_max.clone(),
        );
        let keys_held = Gauge::default();
        registry.register(
            "lock_keys_held",
            "Lock keys with at least one believing holder",
            keys_held.clone(),
        );
        let keys_contended = Gauge::default();
        registry.register(
            "lock_keys_contended",
            "Lock keys with more than one believing holder",
            keys_contended.clone(),
        );
        Self {
            registry,
            grants,
            releases,
            collisions,
            overruns,
            rejections,
            events,
            bad_events,
            app_errors,
            services: HashMap::new(),
            errors_last_minute,
            expirations,
            connected_stream,
            connected_keyspace,
            keyspace_enabled,
            holders,
            holders_other,
            holders_max,
            keys_held,
            keys_contended,
        }
    }

    pub(crate) fn bad_event(&self, reason: &'static str) {
        self.bad_events.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(crate) fn bad_events_total(&self) -> u64 {
        let mut total = 0;
        for reason in BAD_EVENT_REASONS {
            if let Some(counter) = self.bad_events.get(&ReasonLabel { reason }) {
                total += counter.get();
            }
        }
        total
    }

    pub(crate) fn app_error(&mut self, service: &str) {
        let service = crate::redact::redact_text(service);
        let service = service.as_ref();
        if let Some(counter) = self.services.get(service) {
            counter.inc();
            return;
        }
        let label = if self.services.len() < MAX_SERVICES {
            service.to_string()
        } else {
            "other".to_string()
        };
        let counter = self.app_errors.get_or_create_owned(&ServiceLabel {
            service: label.clone(),
        });
        counter.inc();
        if label != "other" {
            self.services.insert(label, counter);
        }
    }

    pub(crate) fn app_errors_total(&self) -> u64 {
        let mut total: u64 = self.services.values().map(Counter::get).sum();
        if let Some(other) = self.app_errors.get(&ServiceLabel {
            service: "other".into(),
        }) {
            total += other.get();
        }
        total
    }

    pub(crate) fn set_connected(&self, connection: Connection, up: bool) {
        let gauge = match connection {
            Connection::Stream => &self.connected_stream,
            Connection::Keyspace => &self.connected_keyspace,
        };
        gauge.set(i64::from(up));
    }

    pub(crate) fn connected(&self, connection: Connection) -> bool {
        match connection {
            Connection::Stream => self.connected_stream.get() == 1,
            Connection::Keyspace => self.connected_keyspace.get() == 1,
        }
    }

    pub(crate) fn set_holders(&self, summary: &HoldersSummary) {
        self.holders.clear();
        for key in &summary.top {
            // Keys that differ only in a redacted secret share a label and
            // add up.
            self.holders
                .get_or_create(&KeyLabel {
                    key: crate::redact::redact_text(&key.key).into_owned(),
                })
                .inc_by(i64::try_from(key.holders).unwrap_or(i64::MAX));
        }
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.holders_other.set(gauge(summary.other_holders));
        self.holders_max.set(gauge(summary.max_holders));
        self.keys_held.set(gauge(summary.keys_held));
        self.keys_contended.set(gauge(summary.keys_contended));
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Every `reason` label `warroom_bad_events_total` can carry.
pub(crate) const BAD_EVENT_REASONS: [&str; 7] = [
    "version",
    "missing_field",
    "unknown_kind",
    "unknown_mode",
    "not_a_number",
    "bad_text",
    "malformed_entry",
];
