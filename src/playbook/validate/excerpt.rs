//! What a playbook report shows of the file it is about.
//!
//! miette prints every line it shows in full, and panics when a label starts
//! past column 65,535, so a report built on the raw file would echo a huge
//! scalar back to the terminal (or crash on a long line). An [`Excerpt`]
//! keeps every line of the file but cuts each line longer than
//! [`LINE_WINDOW`] characters to a window around the first problem on it,
//! with `…` where text was left out. The line and column it reports are the
//! original file's. Building it takes time proportional to the file; reading
//! a span from it, time proportional to the lines shown.
//!
//! It knows nothing about what the problems are: it gets byte ranges and
//! columns, and hands back where they are in the text it shows.

use std::borrow::Cow;

use miette::{MietteError, MietteSpanContents, SourceCode, SourceSpan, SpanContents};

/// Characters of one line a report shows at most (plus an ellipsis at
/// either end where the line was cut).
pub(super) const LINE_WINDOW: usize = 120;
/// Characters shown before a problem's column when its line is cut.
const LEAD: usize = 40;
/// Marks text left out.
const ELLIPSIS: &str = "…";

/// `text` cut to `max_chars` characters, with an ellipsis when cut.
pub(super) fn shorten(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}{ELLIPSIS}", &text[..cut])),
    }
}

/// Where one line of the file is in the text shown.
#[derive(Debug)]
struct ShownLine {
    /// Byte offset of the line in the file.
    source_start: usize,
    /// Byte offset in the file where the shown window starts.
    window_start: usize,
    /// Byte offset in the file where the shown window ends.
    window_end: usize,
    /// Byte offset in the file where the line's text ends (its line break
    /// follows).
    content_end: usize,
    /// Byte offset of the shown line in [`Excerpt::text`].
    shown_start: usize,
    /// Characters of the line before the window.
    skipped_chars: usize,
    /// An ellipsis precedes the window.
    head: bool,
    /// An ellipsis follows the window.
    tail: bool,
}

impl ShownLine {
    fn head_len(&self) -> usize {
        if self.head { ELLIPSIS.len() } else { 0 }
    }

    fn tail_len(&self) -> usize {
        if self.tail { ELLIPSIS.len() } else { 0 }
    }
}

/// The file as a report shows it: same lines, long ones cut.
#[derive(Debug)]
pub(super) struct Excerpt {
    name: String,
    text: String,
    lines: Vec<ShownLine>,
    /// Each problem's span in `text`, in the order given.
    spans: Vec<SourceSpan>,
    /// (offset in `text`, 0-based column in the file) of each problem start
    /// whose column is known, sorted by offset.
    columns: Vec<(usize, usize)>,
}

/// A problem to show: byte offset and length in the file, and its 1-based
/// column (0 when unknown).
pub(super) struct Mark {
    /// Byte offset in the file.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
    /// 1-based column in the file (0 when unknown).
    pub column: u64,
}

impl Excerpt {
    /// The excerpt of `source` (named `name`) that shows `marks`.
    pub(super) fn new(name: &str, source: &str, marks: &[Mark]) -> Self {
        let mut anchors: Vec<usize> = marks
            .iter()
            .map(|m| floor_boundary(source, m.offset))
            .collect();
        anchors.sort_unstable();
        let mut next_anchor = 0;
        let mut text = String::new();
        let mut lines = Vec::new();
        let mut start = 0;
        for raw in source.split_inclusive('\n') {
            let content = raw.strip_suffix('\n').unwrap_or(raw);
            let content = content.strip_suffix('\r').unwrap_or(content);
            let content_end = start + content.len();
            while anchors.get(next_anchor).is_some_and(|&a| a < start) {
                next_anchor += 1;
            }
            let anchor = anchors
                .get(next_anchor)
                .copied()
                .filter(|&a| a < start + raw.len())
                .map(|a| a.min(content_end));
            let line = cut(content, start, anchor, text.len());
            if line.head {
                text.push_str(ELLIPSIS);
            }
            text.push_str(&source[line.window_start..line.window_end]);
            if line.tail {
                text.push_str(ELLIPSIS);
            }
            text.push_str(&raw[content.len()..]);
            lines.push(line);
            start += raw.len();
        }
        if source.is_empty() || source.ends_with('\n') {
            // The empty last line, where a problem at the end of the file is.
            lines.push(cut("", source.len(), None, text.len()));
        }
        let mut excerpt = Self {
            name: name.to_owned(),
            text,
            lines,
            spans: Vec::with_capacity(marks.len()),
            columns: Vec::new(),
        };
        for mark in marks {
            let start = floor_boundary(source, mark.offset);
            let end = floor_boundary(source, mark.offset.saturating_add(mark.len)).max(start);
            let shown_start = excerpt.shown(start);
            let shown_end = excerpt.shown(end).max(shown_start);
            excerpt
                .spans
                .push(SourceSpan::new(shown_start.into(), shown_end - shown_start));
            if mark.column > 0 {
                let column = usize::try_from(mark.column - 1).unwrap_or(usize::MAX);
                excerpt.columns.push((shown_start, column));
            }
        }
        excerpt.columns.sort_by_key(|&(offset, _)| offset);
        excerpt.columns.dedup_by_key(|&mut (offset, _)| offset);
        excerpt
    }

    /// Each problem's span in the text shown, in the order given to [`Excerpt::new`].
    pub(super) fn spans(&self) -> &[SourceSpan] {
        &self.spans
    }

    /// The text shown, for tests.
    #[cfg(test)]
    fn text(&self) -> &str {
        &self.text
    }

    /// Index of the line holding file offset `offset`.
    fn line_of_source(&self, offset: usize) -> usize {
        self.lines
            .partition_point(|l| l.source_start <= offset)
            .saturating_sub(1)
    }

    /// Index of the line holding shown offset `offset`.
    fn line_of_shown(&self, offset: usize) -> usize {
        self.lines
            .partition_point(|l| l.shown_start <= offset)
            .saturating_sub(1)
    }

    /// Where file offset `offset` (a character boundary) is in the text shown:
    /// text left out maps to the ellipsis that replaces it.
    fn shown(&self, offset: usize) -> usize {
        let Some(line) = self.lines.get(self.line_of_source(offset)) else {
            return 0;
        };
        let window = line.window_end - line.window_start;
        let after_window = line.shown_start + line.head_len() + window + line.tail_len();
        if offset < line.window_start {
            line.shown_start
        } else if offset <= line.window_end {
            line.shown_start + line.head_len() + (offset - line.window_start)
        } else if offset <= line.content_end {
            after_window
        } else {
            (after_window + (offset - line.content_end)).min(self.text.len())
        }
    }

    /// 0-based column in the file of shown offset `offset` on line `index`.
    fn column_at(&self, offset: usize, index: usize) -> usize {
        if let Ok(found) = self.columns.binary_search_by_key(&offset, |&(o, _)| o) {
            return self.columns[found].1;
        }
        let Some(line) = self.lines.get(index) else {
            return 0;
        };
        let window_from = line.shown_start + line.head_len();
        let shown_chars = self
            .text
            .get(window_from.min(offset)..offset)
            .map_or(0, |s| s.chars().count());
        line.skipped_chars + shown_chars
    }
}

/// The shown form of one line (`content`, at file offset `start`) with the
/// window around `anchor` (a file offset on the line) if it must be cut.
fn cut(content: &str, start: usize, anchor: Option<usize>, shown_start: usize) -> ShownLine {
    let whole = ShownLine {
        source_start: start,
        window_start: start,
        window_end: start + content.len(),
        content_end: start + content.len(),
        shown_start,
        skipped_chars: 0,
        head: false,
        tail: false,
    };
    if content.len() <= LINE_WINDOW {
        return whole;
    }
    let total = content.chars().count();
    if total <= LINE_WINDOW {
        return whole;
    }
    let anchor_chars = anchor.map_or(0, |a| {
        content
            .get(..a - start)
            .map_or(0, |before| before.chars().count())
    });
    let first = anchor_chars.saturating_sub(LEAD).min(total - LINE_WINDOW);
    let last = first + LINE_WINDOW;
    let byte_at = |chars: usize| {
        content
            .char_indices()
            .nth(chars)
            .map_or(content.len(), |(i, _)| i)
    };
    ShownLine {
        window_start: start + byte_at(first),
        window_end: start + byte_at(last),
        skipped_chars: first,
        head: first > 0,
        tail: last < total,
        ..whole
    }
}

/// `offset` clamped to `source` and moved back to a character boundary.
fn floor_boundary(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

impl SourceCode for Excerpt {
    fn read_span<'a>(
        &'a self,
        span: &SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn SpanContents<'a> + 'a>, MietteError> {
        let start = span.offset();
        let end = start
            .checked_add(span.len())
            .filter(|&end| end <= self.text.len())
            .ok_or(MietteError::OutOfBounds)?;
        if self.lines.is_empty() {
            return Err(MietteError::OutOfBounds);
        }
        let first = self.line_of_shown(start);
        let last = self
            .line_of_shown(if span.is_empty() { start } else { end - 1 })
            .max(first);
        let from = first.saturating_sub(context_lines_before);
        let to = last
            .saturating_add(context_lines_after)
            .min(self.lines.len() - 1);
        let (data_start, column) = if context_lines_before == 0 {
            (start, self.column_at(start, first))
        } else {
            (self.lines[from].shown_start, 0)
        };
        let data_end = self
            .lines
            .get(to + 1)
            .map_or(self.text.len(), |l| l.shown_start);
        Ok(Box::new(MietteSpanContents::new_named(
            self.name.clone(),
            &self.text.as_bytes()[data_start..data_end],
            SourceSpan::new(data_start.into(), data_end - data_start),
            from,
            column,
            to - from + 1,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(source: &str, needle: &str) -> Mark {
        let offset = source.find(needle).expect("needle in source");
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Mark {
            offset,
            len: needle.len(),
            column: before[line_start..].chars().count() as u64 + 1,
        }
    }

    #[test]
    fn short_lines_are_shown_as_they_are() {
        let source = "name: m\ndescription: d\nsteps: []\n";
        let excerpt = Excerpt::new("p.yaml", source, &[mark(source, "steps")]);
        assert_eq!(excerpt.text(), source);
        assert_eq!(
            excerpt.spans()[0],
            SourceSpan::new(source.find("steps").unwrap().into(), 5)
        );
    }

    #[test]
    fn a_long_line_is_cut_around_the_problem_and_keeps_its_column() {
        let long = format!("name: {}XX{}", "a".repeat(70_000), "b".repeat(70_000));
        let source = format!("description: d\n{long}\nsteps: []\n");
        let problem = mark(&source, "XX");
        assert_eq!(problem.column, 70_007);
        let excerpt = Excerpt::new("p.yaml", &source, &[problem]);
        let shown_line = excerpt.text().lines().nth(1).unwrap();
        assert!(
            shown_line.chars().count() <= LINE_WINDOW + 2,
            "{shown_line}"
        );
        assert!(shown_line.starts_with('…') && shown_line.ends_with('…'));
        let span = excerpt.spans()[0];
        assert_eq!(
            &excerpt.text()[span.offset()..span.offset() + span.len()],
            "XX"
        );
        let at = excerpt.read_span(&span, 0, 0).unwrap();
        assert_eq!(
            (at.line(), at.column()),
            (1, 70_006),
            "0-based, as miette counts"
        );
        let context = excerpt.read_span(&span, 1, 1).unwrap();
        assert_eq!((context.line(), context.line_count()), (0, 3));
        assert!(
            std::str::from_utf8(context.data())
                .unwrap()
                .ends_with("steps: []\n")
        );
    }

    #[test]
    fn a_span_running_past_the_window_ends_at_the_ellipsis() {
        let source = format!("name: {}\n", "é".repeat(500));
        let problem = Mark {
            offset: 6,
            len: source.len() - 7,
            column: 7,
        };
        let excerpt = Excerpt::new("p.yaml", &source, &[problem]);
        let span = excerpt.spans()[0];
        let shown = &excerpt.text()[span.offset()..span.offset() + span.len()];
        assert!(
            shown.ends_with('…') && shown.chars().count() <= LINE_WINDOW,
            "{shown}"
        );
    }

    #[test]
    fn an_empty_file_has_one_empty_line() {
        let excerpt = Excerpt::new(
            "p.yaml",
            "",
            &[Mark {
                offset: 0,
                len: 0,
                column: 1,
            }],
        );
        let at = excerpt.read_span(&excerpt.spans()[0], 1, 1).unwrap();
        assert_eq!((at.line(), at.data()), (0, &b""[..]));
    }

    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("abc", 3), "abc");
        assert_eq!(shorten("ééé", 2), "éé…");
    }
}
