//! JSON export: the events, the skipped lines and the computed figures, for
//! other tools. One object, `{"events": [ … ], "skipped": [ … ],
//! "skipped_count": n, "figures": { … }}`, with one event per line. It is
//! written in one pass: each event as it is read (never held), the figures
//! last, once every event has been seen.

use std::io::{self, Write};

use super::Surveyed;
use crate::timeline::event::Event;

/// Writes the events of the export one at a time, then its end.
pub(super) struct JsonEvents {
    first: bool,
    /// One event's text, written with one call.
    line: Vec<u8>,
}

impl JsonEvents {
    /// Starts the export object.
    pub(super) fn begin(out: &mut dyn Write) -> io::Result<JsonEvents> {
        out.write_all(b"{\n  \"events\": [")?;
        Ok(JsonEvents {
            first: true,
            line: Vec::with_capacity(512),
        })
    }

    /// Writes one event.
    pub(super) fn event(&mut self, out: &mut dyn Write, event: &Event) -> io::Result<()> {
        self.line.clear();
        self.line
            .extend_from_slice(if self.first { b"\n    " } else { b",\n    " });
        self.first = false;
        serde_json::to_writer(&mut self.line, event).map_err(io::Error::other)?;
        out.write_all(&self.line)
    }

    /// Ends the events and writes the skipped lines and the figures.
    pub(super) fn end(self, survey: Surveyed, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(if self.first { b"],\n" } else { b"\n  ],\n" })?;
        let skipped = serde_json::to_string(&survey.skipped).map_err(io::Error::other)?;
        writeln!(out, "  \"skipped\": {skipped},")?;
        writeln!(out, "  \"skipped_count\": {},", survey.skipped_count)?;
        let figures = serde_json::to_string_pretty(&survey.figures).map_err(io::Error::other)?;
        out.write_all(b"  \"figures\": ")?;
        out.write_all(figures.replace('\n', "\n  ").as_bytes())?;
        out.write_all(b"\n}\n")?;
        Ok(())
    }
}
