//! Recording a run in the incident timeline.
//!
//! [`TimelineRecorder`] is a [`StepObserver`] that appends every step event
//! to an incident journal ([`crate::timeline::Journal`]) as it happens, with
//! the operator as actor and the values before and after. `note` steps become
//! timeline notes. Appends are durable before the engine goes on, so a crash
//! mid-run leaves the journal saying how far the run got.
//!
//! The observer interface cannot fail, so a failed append is kept here and
//! reported by [`TimelineRecorder::failures`] once the run is over.

use std::sync::Mutex;

use super::event::{StepEvent, StepObserver, StepPhase};
use crate::timeline::{self, Entry, Journal, NewEvent, StepReport, StepTarget, TimelineError};

/// Appends step events to an incident journal.
pub struct TimelineRecorder {
    journal: Journal,
    failures: Mutex<Failures>,
}

#[derive(Default)]
struct Failures {
    count: u64,
    first: Option<TimelineError>,
}

impl TimelineRecorder {
    /// Records into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// The journal written to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// How many events could not be recorded, and the first error.
    pub fn failures(&self) -> (u64, Option<String>) {
        match self.failures.lock() {
            Ok(f) => (f.count, f.first.as_ref().map(ToString::to_string)),
            Err(_) => (0, None),
        }
    }
}

/// The timeline entry for a step event.
pub fn entry_of(event: &StepEvent) -> Entry {
    if event.phase == StepPhase::Noted {
        return Entry::note(event.message.clone());
    }
    let phase = match event.phase {
        StepPhase::Planned => timeline::StepPhase::Planned,
        StepPhase::DryRun => timeline::StepPhase::DryRun,
        StepPhase::Applied => timeline::StepPhase::Applied,
        StepPhase::Verified => timeline::StepPhase::Verified,
        StepPhase::Unchanged => timeline::StepPhase::Unchanged,
        StepPhase::Skipped => timeline::StepPhase::Skipped,
        StepPhase::Confirmed => timeline::StepPhase::Confirmed,
        StepPhase::Noted => timeline::StepPhase::Noted,
        StepPhase::Failed => timeline::StepPhase::Failed,
        StepPhase::Undone => timeline::StepPhase::Undone,
    };
    let target = event
        .target
        .as_ref()
        .map(|t| StepTarget {
            api_version: t.api_version.clone(),
            kind: t.kind.clone(),
            namespace: t.namespace.clone(),
            name: t.name.clone(),
        })
        .unwrap_or_default();
    Entry::Step(StepReport {
        playbook: event.playbook.clone(),
        run_id: event.run_id.clone(),
        step: event.step.clone(),
        kind: event.kind.clone(),
        phase,
        target,
        before: event.before.clone().unwrap_or_default(),
        after: event.after.clone().unwrap_or_default(),
        message: (!event.message.is_empty()).then(|| event.message.clone()),
    })
}

impl StepObserver for TimelineRecorder {
    fn on_event(&self, event: &StepEvent) {
        let recorded =
            self.journal
                .append(NewEvent::at(event.at, event.actor.clone(), entry_of(event)));
        if let Err(err) = recorded
            && let Ok(mut failures) = self.failures.lock()
        {
            failures.count += 1;
            if failures.first.is_none() {
                failures.first = Some(err);
            }
        }
    }
}
