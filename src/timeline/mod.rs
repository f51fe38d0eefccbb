//! The incident timeline: an append-only, crash-safe JSON Lines journal per
//! incident, and the postmortem exports made from it (Markdown in the PM-003
//! shape, JSON, self-contained HTML with a chart).
//!
//! Owns: the event schema ([`event`]), durable appends with group commit and
//! milestone order checks ([`journal`]), reading back with torn-tail
//! reporting ([`read`]), redaction of secrets before disk
//! (through [`crate::redact`]), the
//! figures a postmortem needs (Time to Detect, Time to Mitigate, duration;
//! [`figures`]) and the exports ([`export`]).
//!
//! Must not know about: Kubernetes, Redis, the playbook engine or the
//! console. They record through [`Journal`] with the payload types here
//! ([`StepReport`], [`AlertChange`], [`MetricSnapshot`]); who the actor is
//! (kubeconfig user, login name) is decided by the caller.
//!
//! On disk, one event per line:
//! `{"seq":7,"at":"2026-11-26T09:41:00.000Z","actor":"bastian","kind":"milestone","payload":{"milestone":"detected"}}`.
//! The file is only ever appended to; a line cut short by a crash stays and
//! is skipped (and reported) by readers.

pub mod event;
pub mod export;
pub mod figures;
pub mod journal;
pub mod read;

use std::path::PathBuf;

pub use event::{
    AUTOMATIC_ACTOR, AlertChange, AlertState, Entry, Event, IncidentOpened, MetricSnapshot,
    Milestone, MilestoneMark, NewEvent, Note, Recorded, SeverityChange, StepPhase, StepReport,
    StepTarget,
};
pub use figures::{Figures, Interval};
pub use journal::{
    DEFAULT_LOCK_TIMEOUT, IncidentStart, Journal, LockHeld, LockWait, Opened, Started,
};
pub use read::{
    JournalContents, MAX_DEPTH, MAX_LINE_BYTES, SkippedLine, parse_journal, read_journal,
};

/// The default journal path for an incident: `incidents/<incident-id>.jsonl`.
pub fn default_path(incident_id: &str) -> PathBuf {
    PathBuf::from("incidents").join(format!("{incident_id}.jsonl"))
}

/// Errors from the journal and its readers.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    /// The journal file could not be opened or created.
    #[error("cannot open the journal {}: {source}", path.display())]
    Open {
        /// The journal path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The journal could not be read.
    #[error("cannot read the journal {}: {source}", path.display())]
    Read {
        /// The journal path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing or syncing failed; the events were not acknowledged.
    #[error("cannot write to the journal {}: {source}", path.display())]
    Write {
        /// The journal path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is shorter than what was already written to it.
    #[error(
        "the journal {} shrank from {expected} to {actual} bytes; a journal is append-only and must not be edited",
        path.display()
    )]
    Shrunk {
        /// The journal path.
        path: PathBuf,
        /// Bytes known to be in the file.
        expected: u64,
        /// Bytes found.
        actual: u64,
    },
    /// A milestone that comes before one already recorded.
    #[error(
        "milestone `{milestone}` refused: `{previous}` was already recorded at {previous_at}, and `{milestone}` comes before `{previous}` (started < detected < declared < mitigated < resolved)"
    )]
    MilestoneOutOfOrder {
        /// The refused milestone.
        milestone: Milestone,
        /// The latest milestone recorded.
        previous: Milestone,
        /// When it was recorded.
        previous_at: String,
    },
    /// A milestone timed earlier than the milestone before it.
    #[error(
        "milestone `{milestone}` at {at} refused: it is earlier than `{previous}` at {previous_at}"
    )]
    MilestoneEarlier {
        /// The refused milestone.
        milestone: Milestone,
        /// Its requested time.
        at: String,
        /// The latest milestone recorded.
        previous: Milestone,
        /// When it was recorded.
        previous_at: String,
    },
    /// A milestone recorded twice.
    #[error("milestone `{milestone}` refused: `{milestone}` was already recorded at {at}")]
    MilestoneRepeated {
        /// The milestone.
        milestone: Milestone,
        /// When it was recorded.
        at: String,
    },
    /// An event could not be encoded as JSON.
    #[error("cannot encode the event: {0}")]
    Encode(serde_json::Error),
    /// The journal's writer thread is gone (the process is shutting down).
    #[error("the journal writer has stopped")]
    WriterGone,
    /// No sequence number is left after the largest one in the journal: a
    /// line carries a sequence number no real journal reaches, so the file
    /// is corrupt or was edited. Nothing is appended to it.
    #[error(
        "the journal {} holds sequence number {last}, and none is left after it; the journal is corrupt or was edited (export it, then record into a new journal)",
        path.display()
    )]
    SequenceExhausted {
        /// The journal path.
        path: PathBuf,
        /// The largest sequence number found.
        last: u64,
    },
    /// The file is not a journal (not a regular file, or its first line is
    /// not a journal event); nothing was written to it.
    #[error("{} is not an incident journal: {why}; nothing was written to it", path.display())]
    NotAJournal {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        why: String,
    },
    /// The file has no incident header: empty, or events recorded before the
    /// incident was started. Nothing was written to it.
    #[error(
        "{} {}; nothing was written to it (start the incident in it with `warroom timeline new {} --id ID --severity SEV`)",
        path.display(),
        if *empty { "is an empty file, not an incident journal" } else { "holds journal events but no incident header" },
        path.display()
    )]
    NoIncident {
        /// The path.
        path: PathBuf,
        /// The file is empty.
        empty: bool,
    },
    /// `timeline new` on a journal that already holds an incident.
    #[error(
        "{} already holds incident {id}; a journal is never rewritten (record into it with `timeline note`/`mark`)",
        path.display()
    )]
    AlreadyStarted {
        /// The path.
        path: PathBuf,
        /// The incident recorded in it.
        id: String,
    },
    /// Another process held the journal's lock for longer than allowed.
    #[error(
        "gave up after {waited:?} waiting for the lock on the journal {}, held by {}; nothing was written (try again, or raise --lock-timeout)",
        path.display(),
        match holder { Some(pid) => format!("process {pid}"), None => "another process".to_string() }
    )]
    LockTimeout {
        /// The journal path.
        path: PathBuf,
        /// How long was waited.
        waited: std::time::Duration,
        /// The holder's process id, when known.
        holder: Option<u32>,
    },
    /// The event cannot be stored so that every reader reads it back (too
    /// large or nested too deep); refused before anything was written.
    #[error("the event was refused: {0}; nothing was written")]
    EventRefused(String),
}

impl TimelineError {
    /// Whether the error is a refused milestone (the journal is fine).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TimelineError::MilestoneOutOfOrder { .. }
                | TimelineError::MilestoneEarlier { .. }
                | TimelineError::MilestoneRepeated { .. }
                | TimelineError::NotAJournal { .. }
                | TimelineError::NoIncident { .. }
                | TimelineError::AlreadyStarted { .. }
        )
    }

    /// Whether the error is an event refused for its content (bad input).
    pub fn is_bad_event(&self) -> bool {
        matches!(self, TimelineError::EventRefused(_))
    }

    /// A copy for answering every request of a failed batch.
    pub(crate) fn clone_shallow(&self) -> TimelineError {
        let io = |e: &std::io::Error| std::io::Error::new(e.kind(), e.to_string());
        match self {
            TimelineError::Open { path, source } => TimelineError::Open {
                path: path.clone(),
                source: io(source),
            },
            TimelineError::Read { path, source } => TimelineError::Read {
                path: path.clone(),
                source: io(source),
            },
            TimelineError::Write { path, source } => TimelineError::Write {
                path: path.clone(),
                source: io(source),
            },
            TimelineError::Shrunk {
                path,
                expected,
                actual,
            } => TimelineError::Shrunk {
                path: path.clone(),
                expected: *expected,
                actual: *actual,
            },
            TimelineError::MilestoneOutOfOrder {
                milestone,
                previous,
                previous_at,
            } => TimelineError::MilestoneOutOfOrder {
                milestone: *milestone,
                previous: *previous,
                previous_at: previous_at.clone(),
            },
            TimelineError::MilestoneEarlier {
                milestone,
                at,
                previous,
                previous_at,
            } => TimelineError::MilestoneEarlier {
                milestone: *milestone,
                at: at.clone(),
                previous: *previous,
                previous_at: previous_at.clone(),
            },
            TimelineError::MilestoneRepeated { milestone, at } => {
                TimelineError::MilestoneRepeated {
                    milestone: *milestone,
                    at: at.clone(),
                }
            }
            TimelineError::Encode(e) => {
                TimelineError::Encode(serde_json::Error::io(std::io::Error::other(e.to_string())))
            }
            TimelineError::WriterGone => TimelineError::WriterGone,
            TimelineError::SequenceExhausted { path, last } => TimelineError::SequenceExhausted {
                path: path.clone(),
                last: *last,
            },
            TimelineError::NotAJournal { path, why } => TimelineError::NotAJournal {
                path: path.clone(),
                why: why.clone(),
            },
            TimelineError::NoIncident { path, empty } => TimelineError::NoIncident {
                path: path.clone(),
                empty: *empty,
            },
            TimelineError::AlreadyStarted { path, id } => TimelineError::AlreadyStarted {
                path: path.clone(),
                id: id.clone(),
            },
            TimelineError::LockTimeout {
                path,
                waited,
                holder,
            } => TimelineError::LockTimeout {
                path: path.clone(),
                waited: *waited,
                holder: *holder,
            },
            TimelineError::EventRefused(why) => TimelineError::EventRefused(why.clone()),
        }
    }
}
