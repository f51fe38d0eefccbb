//! What one line of the journal says: the event envelope (sequence number,
//! UTC timestamp, actor) and the typed payload of each kind.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The incident milestones, in the only order they may be recorded
/// (incident.io / Rootly / FireHydrant style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    /// Impact began (the clock for Time to Detect and Time to Mitigate starts).
    Started,
    /// Someone or something noticed.
    Detected,
    /// The incident was declared and a war room opened.
    Declared,
    /// Impact stopped (the clock for Time to Mitigate stops).
    Mitigated,
    /// The incident is over.
    Resolved,
}

impl Milestone {
    /// Every milestone, in order.
    pub const ALL: [Milestone; 5] = [
        Milestone::Started,
        Milestone::Detected,
        Milestone::Declared,
        Milestone::Mitigated,
        Milestone::Resolved,
    ];

    /// The lowercase name used in the journal and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Milestone::Started => "started",
            Milestone::Detected => "detected",
            Milestone::Declared => "declared",
            Milestone::Mitigated => "mitigated",
            Milestone::Resolved => "resolved",
        }
    }
}

impl fmt::Display for Milestone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The incident's identity, recorded once when the journal is opened for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentOpened {
    /// Incident identifier, e.g. `PM-004`.
    pub id: String,
    /// One-line title, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A milestone reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MilestoneMark {
    /// Which milestone.
    pub milestone: Milestone,
}

/// The incident's severity was set or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeverityChange {
    /// The new severity, e.g. `SEV-1`.
    pub severity: String,
}

/// Free text written by a responder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// The text.
    pub text: String,
}

/// Whether an alert started or stopped firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The alert condition holds.
    Fired,
    /// The alert condition no longer holds.
    Resolved,
}

/// An alert fired or resolved (from the exporter's numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertChange {
    /// Alert name, e.g. `LockConcurrentHolders`.
    pub alert: String,
    /// Fired or resolved.
    pub state: AlertState,
    /// The value of the alert expression when it changed, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The alert's labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// Where a playbook step is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepPhase {
    /// The change was computed and shown; nothing was changed yet.
    Planned,
    /// The API server accepted the change in a dry run; nothing was changed.
    DryRun,
    /// The change was written to the cluster.
    Applied,
    /// The change was read back and holds.
    Verified,
    /// The change was already in place; nothing was written.
    Unchanged,
    /// The step did not run (its condition did not hold).
    Skipped,
    /// A human approved the step's gate.
    Confirmed,
    /// The step added a line to the timeline.
    Noted,
    /// The step failed.
    Failed,
    /// The change was reverted.
    Undone,
    /// A wait (or another long step) reports how far it got, e.g.
    /// "rollout 3/8 ready".
    Progress,
    /// The step's gate is asking a human.
    Gate,
    /// The run was cancelled here (Ctrl-C, SIGTERM, the console); what it
    /// applied is undone next.
    Cancelled,
}

impl StepPhase {
    /// The lowercase name used in the journal.
    pub fn name(self) -> &'static str {
        match self {
            StepPhase::Planned => "planned",
            StepPhase::DryRun => "dry-run",
            StepPhase::Applied => "applied",
            StepPhase::Verified => "verified",
            StepPhase::Unchanged => "unchanged",
            StepPhase::Skipped => "skipped",
            StepPhase::Confirmed => "confirmed",
            StepPhase::Noted => "noted",
            StepPhase::Failed => "failed",
            StepPhase::Undone => "undone",
            StepPhase::Progress => "progress",
            StepPhase::Gate => "gate",
            StepPhase::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for StepPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Kubernetes object a step acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StepTarget {
    /// API version, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace, if the object is namespaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl fmt::Display for StepTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// A playbook step changed phase; what the playbook engine records.
///
/// `before` and `after` are the parts of the object the step touches, as read
/// (before) and as written or intended (after); `null` when not applicable.
/// Secrets inside them are redacted before they reach the disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Playbook name.
    pub playbook: String,
    /// Identifier of this run of the playbook.
    pub run_id: String,
    /// Step name within the playbook.
    pub step: String,
    /// Step kind, e.g. `scale`, `annotate`, `patch-configmap`.
    pub kind: String,
    /// Where the step is in its life.
    pub phase: StepPhase,
    /// The object the step acts on.
    pub target: StepTarget,
    /// The object (or the touched part) before the step.
    #[serde(default)]
    pub before: serde_json::Value,
    /// The object (or the touched part) after the step.
    #[serde(default)]
    pub after: serde_json::Value,
    /// Human-readable outcome, e.g. the error for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A periodic snapshot of the series the console's panels show, so that an
/// export can draw them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MetricSnapshot {
    /// Lock collisions (more than one believed holder) per minute.
    pub collisions_per_min: f64,
    /// Application errors per minute.
    pub errors_per_min: f64,
    /// Highest number of concurrent believed holders of one lock key.
    #[serde(default)]
    pub concurrent_holders: u64,
    /// Writes refused by the fenced store (total).
    #[serde(default)]
    pub fencing_rejections: u64,
    /// Requests per minute at the gateway, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_min: Option<f64>,
    /// Ready replicas of the order service, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
}

/// What happened: the kind of an event and its payload.
///
/// On disk: `"kind": "<name>", "payload": { … }`.
// Entries are built once and moved into the journal; boxing the step report
// would only make the playbook engine's calls noisier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum Entry {
    /// The incident's identity (first line of a journal made by `timeline new`).
    Incident(IncidentOpened),
    /// A milestone was reached.
    Milestone(MilestoneMark),
    /// Severity set or changed.
    Severity(SeverityChange),
    /// Free text.
    Note(Note),
    /// An alert fired or resolved.
    Alert(AlertChange),
    /// A playbook step changed phase.
    Step(StepReport),
    /// A snapshot of the panel series.
    Metric(MetricSnapshot),
}

impl Entry {
    /// The kind's name as written in the journal.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::Incident(_) => "incident",
            Entry::Milestone(_) => "milestone",
            Entry::Severity(_) => "severity",
            Entry::Note(_) => "note",
            Entry::Alert(_) => "alert",
            Entry::Step(_) => "step",
            Entry::Metric(_) => "metric",
        }
    }

    /// A note with the given text.
    pub fn note(text: impl Into<String>) -> Self {
        Entry::Note(Note { text: text.into() })
    }

    /// A milestone mark.
    pub fn milestone(milestone: Milestone) -> Self {
        Entry::Milestone(MilestoneMark { milestone })
    }

    /// A severity change.
    pub fn severity(severity: impl Into<String>) -> Self {
        Entry::Severity(SeverityChange {
            severity: severity.into(),
        })
    }
}

/// Who recorded an event: a person (kubeconfig user or login name) or
/// warroom itself for automatic events.
pub const AUTOMATIC_ACTOR: &str = "warroom";

/// An event to append: the journal assigns the sequence number and, unless
/// `at` is given, the time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// When it happened; `None` means now (when the journal accepts it).
    pub at: Option<Timestamp>,
    /// Who recorded it.
    pub actor: String,
    /// What happened.
    pub entry: Entry,
}

impl NewEvent {
    /// An event happening now.
    pub fn now(actor: impl Into<String>, entry: Entry) -> Self {
        Self {
            at: None,
            actor: actor.into(),
            entry,
        }
    }

    /// An event that happened at a given time (e.g. a milestone recorded late).
    pub fn at(at: Timestamp, actor: impl Into<String>, entry: Entry) -> Self {
        Self {
            at: Some(at),
            actor: actor.into(),
            entry,
        }
    }

    /// An automatic event (actor `warroom`) happening now.
    pub fn automatic(entry: Entry) -> Self {
        Self::now(AUTOMATIC_ACTOR, entry)
    }
}

/// One event as stored in the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the journal, from 1, strictly increasing.
    pub seq: u64,
    /// When it happened (UTC, millisecond precision).
    #[serde(with = "millis")]
    pub at: Timestamp,
    /// When it was written, when that differs from `at` (milestones recorded late).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "millis::option"
    )]
    pub logged_at: Option<Timestamp>,
    /// Who recorded it.
    pub actor: String,
    /// What happened.
    #[serde(flatten)]
    pub entry: Entry,
}

/// What the journal acknowledges once an event is durable on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The event's sequence number.
    pub seq: u64,
    /// The event's time as stored.
    pub at: Timestamp,
}

/// Truncates a timestamp to whole milliseconds (what the journal stores).
pub fn to_millis(ts: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts)
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds:
/// `2026-11-26T09:41:00.000Z`.
pub fn rfc3339_millis(ts: Timestamp) -> String {
    let mut out = String::with_capacity(24);
    let printer = jiff::fmt::temporal::DateTimePrinter::new().precision(Some(3));
    // Printing a valid timestamp into a String cannot fail.
    let _ = printer.print_timestamp(&ts, &mut out);
    out
}

/// Serde for timestamps as RFC 3339 with milliseconds.
pub(crate) mod millis {
    use jiff::Timestamp;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339_millis(*ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        text.parse::<Timestamp>().map_err(serde::de::Error::custom)
    }

    pub mod option {
        use jiff::Timestamp;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ts: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match ts {
                Some(ts) => super::serialize(ts, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            let text = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
            text.map(|t| t.parse::<Timestamp>().map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}
