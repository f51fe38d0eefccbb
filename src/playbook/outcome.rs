//! The words the engine uses for what happens, in one place: what a step
//! will do ([`PlannedAction`], in a plan), what happened to it
//! ([`StepOutcome`], in a report and a run record) and how a run ended
//! ([`Outcome`], the same word in the report, the run record, the JSON
//! output and the exit status).

use serde::{Deserialize, Serialize};

/// How a run (or an undo) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Still running (only in a run record; also a run whose process died,
    /// which `warroom undo` still puts back).
    Running,
    /// Every step done and verified.
    #[serde(alias = "applied")]
    Done,
    /// Dry run: planned and checked by the server, nothing changed.
    DryRun,
    /// The plan shows a step that cannot be done; nothing changed.
    PlanFailed,
    /// A step failed; the applied steps were undone.
    FailedUndone,
    /// A step failed; applied steps were left (`on-failure: stop|continue`)
    /// or could not all be undone.
    Failed,
    /// Refused before anything changed: lease held, precondition not met,
    /// a change that would record a secret, the plan or an undo declined,
    /// no confirmation possible, nothing to undo.
    Refused,
    /// The operator declined a gate (or nobody could be asked) after the
    /// run started: it stopped there and kept what was applied.
    Declined,
    /// The run stopped before finishing and kept what was applied: the
    /// incident journal could not be written.
    Stopped,
    /// The run was undone (`warroom undo`), or this undo finished.
    Undone,
    /// The run was cancelled (Ctrl-C, SIGTERM, the console): stopped before
    /// its next write, then what it applied was undone — all of it, unless
    /// the undo was declined or stopped, in which case its steps say what
    /// is left.
    Cancelled,
}

/// What happened to one step in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// Changed and verified.
    Applied,
    /// Already in place.
    Unchanged,
    /// Skipped by `when-changed`.
    Skipped,
    /// Gate passed, note written or wait satisfied.
    Done,
    /// The operator declined this gate; the run stopped here.
    Declined,
    /// Failed.
    Failed,
    /// Changed, then reverted.
    Undone,
    /// The write landed but the step failed afterwards (read-back did not
    /// match, or the answer to the write was lost): the change is in place
    /// and is undone like an applied one.
    AppliedUnverified,
    /// Cut short by a cancellation (a wait or a gate); nothing of it was
    /// written.
    Cancelled,
}

impl StepOutcome {
    /// True when the step left changes on the cluster that undo must revert.
    pub fn left_changes(self) -> bool {
        matches!(self, StepOutcome::Applied | StepOutcome::AppliedUnverified)
    }
}

/// What a step will do, as planned against the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlannedAction {
    /// Change the target.
    Change,
    /// Nothing to change: already in place.
    Unchanged,
    /// Skipped: its `when-changed` step changes nothing.
    Skip,
    /// Wait for a condition.
    Wait,
    /// Ask a human.
    Confirm,
    /// Write a note.
    Note,
    /// Cannot be done (object missing, patch does not apply).
    Fail,
    /// Refused: the change would record a secret (its field names one, or
    /// the value there now or after looks like one).
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::Outcome;

    #[test]
    fn records_written_with_applied_read_as_done() {
        let old: Outcome = serde_json::from_str("\"applied\"").unwrap();
        assert_eq!(old, Outcome::Done);
        assert_eq!(serde_json::to_string(&Outcome::Done).unwrap(), "\"done\"");
        let cancelled: Outcome = serde_json::from_str("\"cancelled\"").unwrap();
        assert_eq!(cancelled, Outcome::Cancelled);
    }
}
