//! JSON export: the computed figures, the events and the skipped lines, for
//! other tools. One object, `{"figures": …, "events": [ … ], "skipped":
//! [ … ]}`, with one event per line; the events are written as they are
//! read, never held together.

use std::io::{self, Write};

use super::Surveyed;
use crate::timeline::event::Event;

/// Calls its argument once per event, in journal order.
pub(super) type EachEvent<'a> =
    dyn FnMut(&mut dyn FnMut(&Event) -> io::Result<()>) -> io::Result<()> + 'a;

/// Writes the JSON export; `events` replays the events in journal order.
pub(super) fn write(
    survey: Surveyed,
    events: &mut EachEvent<'_>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let figures = serde_json::to_string_pretty(&survey.figures).map_err(io::Error::other)?;
    out.write_all(b"{\n  \"figures\": ")?;
    out.write_all(figures.replace('\n', "\n  ").as_bytes())?;
    out.write_all(b",\n  \"events\": [")?;
    let mut first = true;
    events(&mut |event| {
        out.write_all(if first { b"\n    " } else { b",\n    " })?;
        first = false;
        serde_json::to_writer(&mut *out, event).map_err(io::Error::other)
    })?;
    out.write_all(if first { b"],\n" } else { b"\n  ],\n" })?;
    let skipped = serde_json::to_string(&survey.skipped).map_err(io::Error::other)?;
    writeln!(out, "  \"skipped\": {skipped},")?;
    writeln!(out, "  \"skipped_count\": {}\n}}", survey.skipped_count)?;
    Ok(())
}
