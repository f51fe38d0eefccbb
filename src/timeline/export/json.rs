//! JSON export: the computed figures, the events and the skipped lines, for
//! other tools.

use serde::Serialize;

use crate::timeline::event::Event;
use crate::timeline::figures::Figures;
use crate::timeline::read::{JournalContents, SkippedLine};

#[derive(Serialize)]
struct Export<'a> {
    figures: Figures,
    events: &'a [Event],
    skipped: &'a [SkippedLine],
}

/// Renders the JSON export (one object: `figures`, `events`, `skipped`).
pub fn json(contents: &JournalContents) -> String {
    let export = Export {
        figures: Figures::from_events(&contents.events),
        events: &contents.events,
        skipped: &contents.skipped,
    };
    // Serializing plain data into a String cannot fail.
    let mut out = serde_json::to_string_pretty(&export).unwrap_or_default();
    out.push('\n');
    out
}
