//! Reading a journal back: every well-formed line becomes an [`Event`]; a torn
//! last line (a write cut short by a crash) and any other unreadable line are
//! reported and skipped, never fatal.
//!
//! Writer and reader accept the same documents: a line is read only if it is
//! at most [`MAX_LINE_BYTES`] long and nested at most [`MAX_DEPTH`] deep, and
//! the writer refuses (at write time) any event whose line would break
//! either limit. Reading streams: a line is held only while it is parsed, and
//! a line longer than the limit is skipped without being held.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Serialize;

use super::TimelineError;
use super::event::Event;

/// Longest line (one event, without its newline) a journal holds. The
/// writer refuses a longer event; readers skip a longer line and report it.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// Deepest nesting of JSON objects and arrays in one line, the line's own
/// object counting as 1 (so a step's `before` value may nest 61 deep). The
/// writer refuses a deeper event; readers skip a deeper line and report it.
pub const MAX_DEPTH: usize = 64;

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

/// Where a line sits in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSpan {
    /// 1-based line number.
    pub line: usize,
    /// Byte offset of the line's start.
    pub offset: u64,
    /// Length in bytes, without the newline.
    pub len: usize,
}

/// What a scan saw: how many lines and bytes, and whether the last line was
/// left unterminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// Line number of the last line seen (`lines_before` when none).
    pub lines: usize,
    /// Bytes read.
    pub bytes: u64,
    /// The bytes read end without a newline.
    pub unterminated: bool,
}

/// Reads a journal file (the whole of it, into memory; exports stream
/// instead, see [`crate::timeline::export`]).
pub fn read_journal(path: &Path) -> Result<JournalContents, TimelineError> {
    let read_err = |source| TimelineError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = open_regular(path).map_err(read_err)?;
    let mut contents = JournalContents::default();
    scan_reader(file, 0, 0, &mut |parsed, _| match parsed {
        Ok(event) => contents.events.push(event),
        Err(skipped) => contents.skipped.push(skipped),
    })
    .map_err(read_err)?;
    Ok(contents)
}

/// Opens `path` for reading, refusing anything but a regular file (a FIFO
/// would block forever, a device never ends) without blocking on it.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    ensure_regular(&file)?;
    Ok(file)
}

/// Fails unless `file` is a regular file.
pub(crate) fn ensure_regular(file: &File) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        Ok(())
    } else {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo_like() {
            "a FIFO or socket"
        } else {
            "a device or other special file"
        };
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ))
    }
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for std::fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo() || self.is_socket()
    }
}

/// Parses journal bytes (JSON Lines).
pub fn parse_journal(bytes: &[u8]) -> JournalContents {
    let mut contents = JournalContents::default();
    // Reading from a slice cannot fail.
    let _ = scan_reader(bytes, 0, 0, &mut |parsed, _| match parsed {
        Ok(event) => contents.events.push(event),
        Err(skipped) => contents.skipped.push(skipped),
    });
    contents
}

/// Parses one line (without its newline) as an event, within the limits
/// every reader and the writer share.
pub fn parse_line(line: &[u8]) -> Result<Event, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "the line is {} bytes long; a journal line holds at most {MAX_LINE_BYTES}",
            line.len()
        ));
    }
    let depth = nesting_depth(line);
    if depth > MAX_DEPTH {
        return Err(format!(
            "the line is nested {depth} deep; a journal line nests at most {MAX_DEPTH} deep"
        ));
    }
    serde_json::from_slice::<Event>(line).map_err(|e| e.to_string())
}

/// How deeply JSON objects and arrays nest in `bytes` (0 for a scalar),
/// counting brackets outside strings. Linear, no recursion.
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Calls `each` for every non-empty line read from `reader` (which starts at
/// byte `base` of the file, after `lines_before` lines), with the line's
/// place in the file. A line longer than [`MAX_LINE_BYTES`] is reported
/// without being held in memory.
pub(crate) fn scan_reader(
    reader: impl Read,
    base: u64,
    lines_before: usize,
    each: &mut dyn FnMut(Result<Event, SkippedLine>, LineSpan),
) -> std::io::Result<Scanned> {
    let mut reader = BufReader::with_capacity(1 << 16, reader);
    let mut line: Vec<u8> = Vec::new();
    let mut line_no = lines_before;
    let mut offset = base;
    // Length of the current line so far, including bytes not kept.
    let mut len = 0usize;
    let mut started = false;
    let mut last_byte = None;
    let mut bytes = 0u64;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        let mut start = 0;
        while start < n {
            if !started {
                started = true;
                line_no += 1;
                len = 0;
                line.clear();
            }
            match newline_in(&chunk[start..]) {
                Some(i) => {
                    keep(&mut line, &mut len, &chunk[start..start + i]);
                    finish(&line, len, line_no, offset, true, each);
                    offset += len as u64 + 1;
                    started = false;
                    start += i + 1;
                }
                None => {
                    keep(&mut line, &mut len, &chunk[start..]);
                    start = n;
                }
            }
        }
        last_byte = chunk.last().copied();
        bytes += n as u64;
        reader.consume(n);
    }
    if started {
        finish(&line, len, line_no, offset, false, each);
    }
    Ok(Scanned {
        lines: line_no,
        bytes,
        unterminated: last_byte.is_some_and(|b| b != b'\n'),
    })
}

/// The position of the first newline in `bytes` (through the standard
/// library's `memchr`).
fn newline_in(bytes: &[u8]) -> Option<usize> {
    let mut rest = bytes;
    // Reading from a slice cannot fail.
    let n = rest.skip_until(b'\n').unwrap_or(0);
    (n > 0 && bytes[n - 1] == b'\n').then(|| n - 1)
}

/// Adds `part` to the line being read, holding at most one byte past the
/// limit (enough to know the line is too long).
fn keep(line: &mut Vec<u8>, len: &mut usize, part: &[u8]) {
    *len += part.len();
    let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
    line.extend_from_slice(&part[..part.len().min(room)]);
}

fn finish(
    line: &[u8],
    len: usize,
    line_no: usize,
    offset: u64,
    terminated: bool,
    each: &mut dyn FnMut(Result<Event, SkippedLine>, LineSpan),
) {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let span = LineSpan {
        line: line_no,
        offset,
        len,
    };
    let parsed = if len > MAX_LINE_BYTES {
        Err(format!(
            "the line is {len} bytes long; a journal line holds at most {MAX_LINE_BYTES}"
        ))
    } else {
        parse_line(text)
    };
    match parsed {
        Ok(event) => each(Ok(event), span),
        Err(err) => each(
            Err(SkippedLine {
                line: line_no,
                offset,
                len,
                torn_tail: !terminated,
                reason: if terminated {
                    format!("not a journal event: {err}")
                } else {
                    format!("torn last line (no newline; the write was cut short): {err}")
                },
            }),
            span,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":"[[[{{"}]}"#), 3);
        assert_eq!(nesting_depth(br#""\"[""#), 0);
        assert_eq!(nesting_depth(b"[[[]]]"), 3);
    }

    #[test]
    fn a_line_longer_than_the_limit_is_skipped_and_the_next_one_read() {
        let event = br#"{"seq":1,"at":"2026-11-26T09:00:00.000Z","actor":"a","kind":"note","payload":{"text":"x"}}"#;
        let mut bytes = vec![b'x'; MAX_LINE_BYTES + 10];
        bytes.push(b'\n');
        bytes.extend_from_slice(event);
        bytes.push(b'\n');
        let contents = parse_journal(&bytes);
        assert_eq!(contents.events.len(), 1);
        assert_eq!(contents.skipped.len(), 1);
        assert_eq!(contents.skipped[0].len, MAX_LINE_BYTES + 10);
        assert!(contents.skipped[0].reason.contains("bytes long"));
    }
}
