//! Reading a journal back: every well-formed line becomes an [`Event`]; a torn
//! last line (a write cut short by a crash) and any other unreadable line are
//! reported and skipped, never fatal.

use std::path::Path;

use serde::Serialize;

use super::TimelineError;
use super::event::Event;

/// A line of the journal that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedLine {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// Length of the line in bytes (without its newline).
    pub len: usize,
    /// True for an unterminated last line: a write cut short by a crash.
    /// Such an event was never acknowledged.
    pub torn_tail: bool,
    /// Why it could not be read.
    pub reason: String,
}

/// The events of a journal, in file order, and the lines that were skipped.
#[derive(Debug, Clone, Default)]
pub struct JournalContents {
    /// Readable events in file order.
    pub events: Vec<Event>,
    /// Lines that were skipped, in file order.
    pub skipped: Vec<SkippedLine>,
}

impl JournalContents {
    /// The torn last line, if the journal ends with one.
    pub fn torn_tail(&self) -> Option<&SkippedLine> {
        self.skipped.last().filter(|s| s.torn_tail)
    }
}

/// Reads a journal file.
pub fn read_journal(path: &Path) -> Result<JournalContents, TimelineError> {
    let bytes = std::fs::read(path).map_err(|source| TimelineError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_journal(&bytes))
}

/// Parses journal bytes (JSON Lines).
pub fn parse_journal(bytes: &[u8]) -> JournalContents {
    let mut contents = JournalContents::default();
    scan(bytes, 0, 0, &mut |parsed| match parsed {
        Ok(event) => contents.events.push(event),
        Err(skipped) => contents.skipped.push(skipped),
    });
    contents
}

/// Calls `each` for every non-empty line of `bytes` (which starts at byte
/// `base` of the file, after `lines_before` lines). Returns the number of
/// lines seen.
pub(crate) fn scan(
    bytes: &[u8],
    base: u64,
    lines_before: usize,
    each: &mut dyn FnMut(Result<Event, SkippedLine>),
) -> usize {
    let mut line_no = lines_before;
    let mut start = 0usize;
    while start < bytes.len() {
        let (end, terminated) = match memchr_newline(&bytes[start..]) {
            Some(i) => (start + i, true),
            None => (bytes.len(), false),
        };
        line_no += 1;
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Event>(line) {
                Ok(event) => each(Ok(event)),
                Err(err) => each(Err(SkippedLine {
                    line: line_no,
                    offset: base + start as u64,
                    len: line.len(),
                    torn_tail: !terminated,
                    reason: if terminated {
                        format!("not a journal event: {err}")
                    } else {
                        format!("torn last line (no newline; the write was cut short): {err}")
                    },
                })),
            }
        }
        start = end + 1;
    }
    line_no
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}
