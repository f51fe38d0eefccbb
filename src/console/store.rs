//! The console's store: everything the panels draw, and nothing else.
//!
//! Collectors feed it through [`super::collect::Update`]s; panels read it.
//! It is pure data: no I/O, no clock of its own (every call takes "now" in
//! Unix milliseconds), so it is tested without a terminal or a network.
//!
//! Time series follow bottom's shape: one column of sample times and one
//! column per metric. A missed sample inserts a break (a `NaN` row) that
//! charts never draw a line through; values are never interpolated. Samples
//! older than the retention are pruned as new ones arrive.

use std::collections::{BTreeMap, VecDeque};

/// A sample of several metrics taken at the same instants.
#[derive(Debug, Clone)]
pub struct TimeSeries {
    interval_ms: i64,
    retention_ms: i64,
    times: VecDeque<i64>,
    columns: Vec<VecDeque<f64>>,
    /// Changes with every row added or pruned: what a chart computed from
    /// the series is valid for.
    generation: u64,
}

impl TimeSeries {
    /// A series of `columns` metrics sampled every `interval_ms`, keeping
    /// `retention_ms` of history.
    pub fn new(columns: usize, interval_ms: i64, retention_ms: i64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            retention_ms: retention_ms.max(1),
            times: VecDeque::new(),
            columns: (0..columns).map(|_| VecDeque::new()).collect(),
            generation: 0,
        }
    }

    /// Adds a sample taken at `at_ms`. A sample not newer than the last one
    /// is ignored; one that comes more than 1.5 intervals after the last
    /// inserts a break first. Missing values (fewer than the columns) are
    /// stored as breaks in their column. Prunes what is past retention.
    pub fn push(&mut self, at_ms: i64, values: &[f64]) {
        if let Some(&last) = self.times.back() {
            if at_ms <= last {
                return;
            }
            let last_is_break = self
                .columns
                .first()
                .and_then(|c| c.back())
                .is_some_and(|v| v.is_nan());
            if at_ms - last > self.interval_ms * 3 / 2 && !last_is_break {
                self.times.push_back(last + self.interval_ms);
                for column in &mut self.columns {
                    column.push_back(f64::NAN);
                }
            }
        }
        self.generation += 1;
        self.times.push_back(at_ms);
        for (i, column) in self.columns.iter_mut().enumerate() {
            column.push_back(values.get(i).copied().unwrap_or(f64::NAN));
        }
        self.prune(at_ms);
    }

    /// Drops samples older than the retention before `now_ms`.
    pub fn prune(&mut self, now_ms: i64) {
        while self
            .times
            .front()
            .is_some_and(|&t| now_ms - t > self.retention_ms)
        {
            self.times.pop_front();
            self.generation += 1;
            for column in &mut self.columns {
                column.pop_front();
            }
        }
    }

    /// Changes whenever a row is added or pruned.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether any row falls in `from_ms..=to_ms` (binary search, no copy).
    pub fn any_in(&self, from_ms: i64, to_ms: i64) -> bool {
        let start = self.times.partition_point(|&t| t < from_ms);
        self.times.get(start).is_some_and(|&t| t <= to_ms)
    }

    /// Rows of `column` with `from_ms <= time <= to_ms`, breaks as `NaN`,
    /// without copying them.
    pub fn rows(
        &self,
        column: usize,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = (i64, f64)> + '_ {
        let values = self.columns.get(column);
        let start = self.times.partition_point(|&t| t < from_ms);
        let end = if values.is_some() {
            self.times.partition_point(|&t| t <= to_ms)
        } else {
            start
        };
        (start..end).filter_map(move |i| Some((self.times[i], *values?.get(i)?)))
    }

    /// Number of rows (samples and breaks).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when nothing was sampled (or all of it was pruned).
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The latest value of `column`, if the latest row is not a break.
    pub fn latest(&self, column: usize) -> Option<f64> {
        self.columns
            .get(column)?
            .back()
            .copied()
            .filter(|v| !v.is_nan())
    }

    /// Time of the latest row.
    pub fn latest_time(&self) -> Option<i64> {
        self.times.back().copied()
    }

    /// Rows of `column` with `from_ms <= time <= to_ms`, breaks as `NaN`.
    /// Found by binary search: the cost is the window, not the history.
    pub fn window(&self, column: usize, from_ms: i64, to_ms: i64) -> Vec<(i64, f64)> {
        let Some(values) = self.columns.get(column) else {
            return Vec::new();
        };
        let start = self.times.partition_point(|&t| t < from_ms);
        let end = self.times.partition_point(|&t| t <= to_ms);
        (start..end).map(|i| (self.times[i], values[i])).collect()
    }

    /// Largest finite value of `column` within the window (0 when none).
    pub fn max_in(&self, column: usize, from_ms: i64, to_ms: i64) -> f64 {
        let Some(values) = self.columns.get(column) else {
            return 0.0;
        };
        let start = self.times.partition_point(|&t| t < from_ms);
        let end = self.times.partition_point(|&t| t <= to_ms);
        (start..end)
            .map(|i| values[i])
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
    }
}

/// How a data source is doing, as shown in the header and its panels.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceState {
    /// Not configured: nothing to show.
    Off,
    /// Configured, nothing received yet.
    NoData,
    /// Answering; the age of the last good sample in milliseconds.
    Live(i64),
    /// No good sample for three poll intervals; its age in milliseconds.
    Stale(i64),
    /// The last attempt failed: the reason in one line, and the age of the
    /// last good sample, if any.
    Down(String, Option<i64>),
}

/// What the store knows of one data source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown name (`exporter`, `prometheus`, `cluster`, `timeline`).
    pub name: &'static str,
    /// Whether it is configured at all.
    pub configured: bool,
    /// Poll interval in milliseconds (three of them make a sample stale).
    pub poll_ms: i64,
    last_ok_ms: Option<i64>,
    last_error: Option<(i64, String)>,
}

impl Source {
    /// A source polled every `poll_ms`.
    pub fn new(name: &'static str, configured: bool, poll_ms: i64) -> Self {
        Self {
            name,
            configured,
            poll_ms: poll_ms.max(1),
            last_ok_ms: None,
            last_error: None,
        }
    }

    /// A good sample arrived at `at_ms`.
    pub fn ok(&mut self, at_ms: i64) {
        self.last_ok_ms = Some(at_ms);
        self.last_error = None;
    }

    /// An attempt failed at `at_ms`.
    pub fn failed(&mut self, at_ms: i64, reason: impl Into<String>) {
        let reason: String = reason.into();
        let line = reason.lines().next().unwrap_or_default().to_owned();
        self.last_error = Some((at_ms, crate::redact::redact_text(&line).into_owned()));
    }

    /// The state at `now_ms`.
    pub fn state(&self, now_ms: i64) -> SourceState {
        if !self.configured {
            return SourceState::Off;
        }
        let age = self.last_ok_ms.map(|t| (now_ms - t).max(0));
        if let Some((_, reason)) = &self.last_error {
            return SourceState::Down(reason.clone(), age);
        }
        match age {
            None => SourceState::NoData,
            Some(age) if age > 3 * self.poll_ms => SourceState::Stale(age),
            Some(age) => SourceState::Live(age),
        }
    }
}

/// Columns of the lock chart.
pub mod lock_columns {
    /// Collisions per minute.
    pub const COLLISIONS: usize = 0;
    /// Most concurrent believed holders of one key.
    pub const HOLDERS: usize = 1;
    /// Lease overruns per minute.
    pub const OVERRUNS: usize = 2;
    /// Fencing rejections per minute.
    pub const REJECTIONS: usize = 3;
    /// Number of columns.
    pub const COUNT: usize = 4;
}

/// One reading of the lock and error numbers (from the exporter, or from
/// Prometheus when configured).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Lock collisions per minute.
    pub collisions_per_min: f64,
    /// Most concurrent believed holders of one key.
    pub holders_max: f64,
    /// Lease overruns per minute.
    pub overruns_per_min: f64,
    /// Fencing rejections per minute.
    pub rejections_per_min: f64,
    /// Application errors in the last minute (absolute).
    pub errors_per_min: f64,
    /// Key with the most believed holders, when more than one.
    pub contended_key: Option<String>,
    /// Collisions counted so far (all modes).
    pub collisions_total: f64,
}

/// The Deployment the playbooks act on, as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeploymentView {
    /// `spec.replicas`.
    pub desired: i64,
    /// `status.readyReplicas`.
    pub ready: i64,
    /// `status.updatedReplicas`.
    pub updated: i64,
}

/// The cluster objects the console shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Deployment order-service (None: missing).
    pub deployment: Option<DeploymentView>,
    /// Whether the gateway Ingress exists.
    pub ingress_found: bool,
    /// The gateway's rate limit annotation, if set.
    pub gateway_limit: Option<String>,
    /// `LOCK_MODE` of the lock ConfigMap (None: missing).
    pub lock_mode: Option<String>,
    /// Holder of the playbook run Lease, if held.
    pub lease_holder: Option<String>,
}

/// Whether an alert holds yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// The condition holds but not yet for its `for` duration.
    Pending,
    /// The condition holds.
    Firing,
}

/// An alert the console shows, with the playbooks that answer it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Alert name (`LockConcurrentHolders`).
    pub name: String,
    /// Pending or firing.
    pub state: AlertState,
    /// When the condition started to hold (Unix ms).
    pub since_ms: i64,
    /// One-line detail (value, key).
    pub detail: String,
}

/// One line of the timeline as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineLine {
    /// Sequence number in the journal.
    pub seq: u64,
    /// `HH:MM:SS.mmm` (UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// What, in one line.
    pub text: String,
    /// `at` and `actor` as the timeline panel shows them, formatted once.
    pub head: String,
}

impl TimelineLine {
    /// Whether the line contains `lower` (lower case) in its text or
    /// actor, ignoring case.
    pub fn matches(&self, lower: &str) -> bool {
        super::app::contains_lower(&self.text, lower)
            || super::app::contains_lower(&self.actor, lower)
    }
}

/// Where a step of the shown playbook is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// Planned, not reached.
    Planned,
    /// Running now (a wait, a gate, a write in flight).
    Running,
    /// Done (applied and verified, confirmed, noted, unchanged).
    Done,
    /// Skipped.
    Skipped,
    /// Failed.
    Failed,
    /// Put back by an undo.
    Undone,
}

/// A step of the shown playbook.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLine {
    /// Step name.
    pub name: String,
    /// Step kind.
    pub kind: String,
    /// Target and change, in one line.
    pub what: String,
    /// Where it is.
    pub status: StepStatus,
    /// Latest progress or outcome message.
    pub message: String,
}

/// How the shown run is going.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    /// Only a plan: nothing runs.
    Plan,
    /// Dry run in progress or done.
    DryRun,
    /// Running.
    Running,
    /// Ended: the outcome in words, and whether it ended well.
    Ended {
        /// The outcome's name (`done`, `failed-undone`, `declined`, …).
        outcome: String,
        /// True for done and dry runs.
        ok: bool,
    },
}

/// The playbook plan or run on screen.
#[derive(Debug, Clone, PartialEq)]
pub struct RunView {
    /// Playbook name.
    pub playbook: String,
    /// Run id, once running.
    pub run_id: Option<String>,
    /// Steps in order.
    pub steps: Vec<StepLine>,
    /// Where the run is.
    pub state: RunState,
    /// Last message (the report's summary, an error).
    pub message: String,
}

/// A playbook the console can run.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookEntry {
    /// Name.
    pub name: String,
    /// One-line description.
    pub description: String,
    /// Alerts it answers.
    pub alerts: Vec<String>,
}

/// The incident as the header shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Incident {
    /// Incident id (`PM-003-drill`).
    pub id: String,
    /// Severity (`SEV-1`).
    pub severity: Option<String>,
    /// Started milestone (or first event), Unix ms.
    pub started_ms: Option<i64>,
    /// Detected milestone, Unix ms.
    pub detected_ms: Option<i64>,
    /// Mitigated milestone, Unix ms.
    pub mitigated_ms: Option<i64>,
}

/// Everything the panels draw.
#[derive(Debug, Clone)]
pub struct Store {
    /// Lock chart series ([`lock_columns`]).
    pub locks: TimeSeries,
    /// Errors per minute series (one column).
    pub errors: TimeSeries,
    /// Latest reading.
    pub reading: Option<Reading>,
    /// The exporter.
    pub exporter: Source,
    /// Prometheus.
    pub prometheus: Source,
    /// The cluster.
    pub cluster_source: Source,
    /// The journal.
    pub timeline_source: Source,
    /// Prometheus' alerts (`/api/v1/alerts`), when configured.
    pub alerts_source: Source,
    /// Alerts come from Prometheus, not from the console's own evaluation
    /// of the readings.
    pub alerts_from_prometheus: bool,
    /// The cluster objects.
    pub cluster: Option<ClusterView>,
    /// Alerts, firing first.
    pub alerts: Vec<Alert>,
    /// Timeline tail, oldest first, at most [`Store::TIMELINE_TAIL`].
    pub timeline: VecDeque<TimelineLine>,
    /// Events in the journal (including those no longer in the tail).
    pub timeline_total: u64,
    /// Playbooks found.
    pub playbooks: Vec<PlaybookEntry>,
    /// The plan or run on screen.
    pub run: Option<RunView>,
    /// The incident.
    pub incident: Incident,
    /// Kubeconfig context and namespace, as shown.
    pub context: String,
    /// The kubeconfig's contexts (`:ctx` lists them).
    pub contexts: Vec<String>,
    /// Read-only (flag or context guardrail).
    pub read_only: bool,
    /// The errors-per-minute line (AI-004).
    pub error_threshold: f64,
    /// Latest message for the status line (actions' answers).
    pub status: Option<String>,
}

impl Store {
    /// Timeline lines kept in memory (the journal keeps them all).
    pub const TIMELINE_TAIL: usize = 5_000;

    /// An empty store: samples every `poll_ms`, `retention_ms` of history.
    pub fn new(poll_ms: i64, retention_ms: i64) -> Self {
        Self {
            locks: TimeSeries::new(lock_columns::COUNT, poll_ms, retention_ms),
            errors: TimeSeries::new(1, poll_ms, retention_ms),
            reading: None,
            exporter: Source::new("exporter", true, poll_ms),
            prometheus: Source::new("prometheus", false, poll_ms),
            cluster_source: Source::new("cluster", true, poll_ms),
            timeline_source: Source::new("timeline", true, poll_ms),
            alerts_source: Source::new("alerts", false, poll_ms),
            alerts_from_prometheus: false,
            cluster: None,
            alerts: Vec::new(),
            timeline: VecDeque::new(),
            timeline_total: 0,
            playbooks: Vec::new(),
            run: None,
            incident: Incident::default(),
            context: String::new(),
            contexts: Vec::new(),
            read_only: false,
            error_threshold: 50.0,
            status: None,
        }
    }

    /// Records a reading taken at `at_ms`.
    pub fn record_reading(&mut self, at_ms: i64, reading: Reading) {
        self.locks.push(
            at_ms,
            &[
                reading.collisions_per_min,
                reading.holders_max,
                reading.overruns_per_min,
                reading.rejections_per_min,
            ],
        );
        self.errors.push(at_ms, &[reading.errors_per_min]);
        if !self.alerts_from_prometheus {
            self.update_alerts(at_ms, &reading);
        }
        self.reading = Some(reading);
    }

    /// Alerts from the reading, as `config/alerts.yaml` words them:
    /// more than one holder fires at once, collisions or overruns counted
    /// fire at once, errors above the line are pending for a minute first.
    fn update_alerts(&mut self, at_ms: i64, reading: &Reading) {
        let key = reading
            .contended_key
            .as_deref()
            .map(|k| format!("  key {k}"))
            .unwrap_or_default();
        // As `increase(...[5m]) > 0`: any of it in the last five minutes.
        let recent = |column| self.locks.max_in(column, at_ms - 300_000, at_ms) > 0.0;
        let wanted: [(&str, bool, i64, String); 4] = [
            (
                "LockConcurrentHolders",
                reading.holders_max > 1.0,
                0,
                format!("{} holders{key}", reading.holders_max),
            ),
            (
                "LockCollisionsIncreasing",
                reading.collisions_per_min > 0.0 || recent(lock_columns::COLLISIONS),
                0,
                format!("{:.0}/min now", reading.collisions_per_min),
            ),
            (
                "LockLeaseOverrunsIncreasing",
                reading.overruns_per_min > 0.0 || recent(lock_columns::OVERRUNS),
                0,
                format!("{:.0}/min now", reading.overruns_per_min),
            ),
            (
                "AppErrorsAbove50PerMinute",
                reading.errors_per_min > self.error_threshold,
                60_000,
                format!("{:.0}/min", reading.errors_per_min),
            ),
        ];
        for (name, holds, for_ms, detail) in wanted {
            let existing = self.alerts.iter().position(|a| a.name == name);
            match (holds, existing) {
                (true, Some(i)) => {
                    let alert = &mut self.alerts[i];
                    alert.detail = detail;
                    if at_ms - alert.since_ms >= for_ms {
                        alert.state = AlertState::Firing;
                    }
                }
                (true, None) => self.alerts.push(Alert {
                    name: name.to_owned(),
                    state: if for_ms == 0 {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    },
                    since_ms: at_ms,
                    detail,
                }),
                (false, Some(i)) => {
                    self.alerts.remove(i);
                }
                (false, None) => {}
            }
        }
        self.alerts
            .sort_by_key(|a| (a.state != AlertState::Firing, a.since_ms));
    }

    /// Takes Prometheus' alerts as they are (its rules decided them).
    pub fn record_prometheus_alerts(&mut self, at_ms: i64, result: Result<Vec<Alert>, String>) {
        match result {
            Ok(alerts) => {
                self.alerts_source.ok(at_ms);
                self.alerts = alerts;
            }
            Err(e) => self.alerts_source.failed(at_ms, e),
        }
    }

    /// Forgets what the journal said (it was truncated or replaced; its
    /// events follow again from its start).
    pub fn forget_timeline(&mut self) {
        self.timeline.clear();
        self.timeline_total = 0;
        // The id stays until the journal names one again.
        self.incident = Incident {
            id: std::mem::take(&mut self.incident.id),
            ..Incident::default()
        };
    }

    /// Appends timeline events (in journal order) and updates the incident.
    pub fn record_events(&mut self, events: &[crate::timeline::Event]) {
        use crate::timeline::{Entry, Milestone};
        for event in events {
            let at_ms = event.at.as_millisecond();
            if self.incident.started_ms.is_none() {
                self.incident.started_ms = Some(at_ms);
            }
            match &event.entry {
                Entry::Incident(opened) => self.incident.id = opened.id.clone(),
                Entry::Severity(change) => self.incident.severity = Some(change.severity.clone()),
                Entry::Milestone(mark) => match mark.milestone {
                    Milestone::Started => self.incident.started_ms = Some(at_ms),
                    Milestone::Detected => self.incident.detected_ms = Some(at_ms),
                    Milestone::Mitigated => self.incident.mitigated_ms = Some(at_ms),
                    _ => {}
                },
                _ => {}
            }
            if matches!(event.entry, Entry::Metric(_)) {
                self.timeline_total += 1;
                continue;
            }
            let at = event.at.strftime("%H:%M:%S%.3f").to_string();
            let actor: String = event
                .actor
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            let shown_actor = if actor.chars().count() > 10 {
                let mut cut: String = actor.chars().take(9).collect();
                cut.push('…');
                cut
            } else {
                actor.clone()
            };
            self.timeline.push_back(TimelineLine {
                seq: event.seq,
                head: format!("{at}  {shown_actor:<10} "),
                at,
                actor,
                text: describe(&event.entry),
            });
            self.timeline_total += 1;
        }
        while self.timeline.len() > Self::TIMELINE_TAIL {
            self.timeline.pop_front();
        }
    }

    /// The context's name without the namespace shown after it.
    pub fn context_name(&self) -> &str {
        self.context
            .rsplit_once('/')
            .map_or(self.context.as_str(), |(context, _)| context)
    }

    /// Playbooks answering `alert`, best first: those that name it first
    /// in their `alerts`, then those that answer more alerts (the broader
    /// mitigation).
    pub fn playbooks_for(&self, alert: &str) -> Vec<&PlaybookEntry> {
        let mut found: Vec<(usize, &PlaybookEntry)> = self
            .playbooks
            .iter()
            .filter_map(|p| p.alerts.iter().position(|a| a == alert).map(|i| (i, p)))
            .collect();
        found.sort_by_key(|(i, p)| (*i, std::cmp::Reverse(p.alerts.len())));
        found.into_iter().map(|(_, p)| p).collect()
    }
}

/// A timeline entry in one line.
pub fn describe(entry: &crate::timeline::Entry) -> String {
    use crate::timeline::{AlertState as Fired, Entry};
    let text = match entry {
        Entry::Incident(opened) => format!(
            "incident {} opened{}",
            opened.id,
            opened
                .title
                .as_deref()
                .map(|t| format!(": {t}"))
                .unwrap_or_default()
        ),
        Entry::Milestone(mark) => mark.milestone.name().to_owned(),
        Entry::Severity(change) => format!("severity {}", change.severity),
        Entry::Note(note) => format!("note: {}", note.text),
        Entry::Alert(alert) => format!(
            "alert {} {}",
            alert.alert,
            match alert.state {
                Fired::Fired => "fired",
                Fired::Resolved => "resolved",
            }
        ),
        Entry::Step(step) => {
            let mut line = format!("{} {}", step.step, step.phase.name());
            if !step.target.name.is_empty() {
                line.push_str(&format!(" {}/{}", step.target.kind, step.target.name));
            }
            if let Some(message) = &step.message
                && !message.is_empty()
            {
                line.push_str(": ");
                line.push_str(message);
            }
            line
        }
        Entry::Metric(_) => "metrics".to_owned(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    crate::redact::redact_text(&one_line).into_owned()
}

/// Labels of a sample, for matching.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_sample_inserts_a_break_never_a_line() {
        let mut series = TimeSeries::new(1, 1_000, 60_000);
        series.push(1_000, &[1.0]);
        series.push(2_000, &[2.0]);
        series.push(5_000, &[5.0]);
        let rows = series.window(0, 0, 10_000);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[2].0, 3_000);
        assert!(rows[2].1.is_nan(), "a break, not an interpolated value");
        assert_eq!(rows[3], (5_000, 5.0));
    }

    #[test]
    fn retention_prunes_old_samples() {
        let mut series = TimeSeries::new(2, 1_000, 10_000);
        for s in 0..30 {
            series.push(s * 1_000, &[s as f64, 0.0]);
        }
        assert_eq!(series.len(), 11);
        assert_eq!(series.window(0, 0, 100_000)[0], (19_000, 19.0));
        assert_eq!(series.latest(0), Some(29.0));
    }

    #[test]
    fn out_of_order_sample_is_ignored() {
        let mut series = TimeSeries::new(1, 1_000, 10_000);
        series.push(2_000, &[2.0]);
        series.push(1_000, &[1.0]);
        series.push(2_000, &[3.0]);
        assert_eq!(series.len(), 1);
        assert_eq!(series.latest(0), Some(2.0));
    }

    #[test]
    fn window_is_found_by_time() {
        let mut series = TimeSeries::new(1, 1_000, 3_600_000);
        for s in 0..3_600 {
            series.push(s * 1_000, &[s as f64]);
        }
        let rows = series.window(0, 3_000_000, 3_010_000);
        assert_eq!(rows.len(), 11);
        assert_eq!(series.max_in(0, 0, 9_000), 9.0);
    }

    #[test]
    fn source_goes_stale_after_three_polls_and_down_on_failure() {
        let mut source = Source::new("exporter", true, 1_000);
        assert_eq!(source.state(0), SourceState::NoData);
        source.ok(1_000);
        assert_eq!(source.state(1_200), SourceState::Live(200));
        assert_eq!(source.state(4_500), SourceState::Stale(3_500));
        source.failed(5_000, "connection refused\nmore");
        assert_eq!(
            source.state(5_100),
            SourceState::Down("connection refused".into(), Some(4_100))
        );
        source.ok(6_000);
        assert_eq!(source.state(6_000), SourceState::Live(0));
        assert_eq!(Source::new("p", false, 1).state(0), SourceState::Off);
    }

    #[test]
    fn source_failure_hides_the_password() {
        let mut source = Source::new("prometheus", true, 1_000);
        source.failed(1, "cannot reach redis://:hunter2@db:6379/");
        let SourceState::Down(reason, _) = source.state(2) else {
            panic!("down")
        };
        assert!(!reason.contains("hunter2"), "{reason}");
    }

    #[test]
    fn two_holders_fire_at_once_errors_wait_a_minute() {
        let mut store = Store::new(1_000, 60_000);
        let reading = Reading {
            holders_max: 2.0,
            errors_per_min: 80.0,
            contended_key: Some("lock:ord-9927431".into()),
            ..Reading::default()
        };
        store.record_reading(1_000, reading.clone());
        let state = |store: &Store, name: &str| {
            store
                .alerts
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.state)
        };
        assert_eq!(
            state(&store, "LockConcurrentHolders"),
            Some(AlertState::Firing)
        );
        assert_eq!(
            state(&store, "AppErrorsAbove50PerMinute"),
            Some(AlertState::Pending)
        );
        store.record_reading(61_000, reading);
        assert_eq!(
            state(&store, "AppErrorsAbove50PerMinute"),
            Some(AlertState::Firing)
        );
        store.record_reading(62_000, Reading::default());
        assert!(store.alerts.is_empty());
    }
}
