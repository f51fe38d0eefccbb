//! Validation problems and how they are reported: every problem carries the
//! file, line and column, and the offending text, and the whole set renders
//! as one miette diagnostic with a label per problem. What a report echoes
//! is bounded ([`excerpt`]): the first [`SHOWN_PROBLEMS`] problems, each
//! message and offending text cut to a few hundred characters, long lines
//! cut around the problem; file:line:col are always the file's.

mod excerpt;

use std::fmt::Write as _;

use miette::{Diagnostic, LabeledSpan};
use serde_saphyr::Location;

use excerpt::{Excerpt, Mark, shorten};

/// Problems a report shows (listed and labelled); the rest are counted.
pub const SHOWN_PROBLEMS: usize = 20;
/// Characters of a problem's message a report shows.
const SHOWN_MESSAGE_CHARS: usize = 300;
/// Characters of a problem's offending text a report shows.
const SHOWN_TEXT_CHARS: usize = 80;

/// One thing wrong with a playbook, at a place in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub message: String,
    /// Byte offset of the offending text (0 when unknown).
    pub offset: usize,
    /// Byte length of the offending text (0 when unknown).
    pub len: usize,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
}

impl Problem {
    /// A problem at a node's location.
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        let span = location.span();
        Self {
            message: message.into(),
            offset: span.byte_offset().unwrap_or(0) as usize,
            len: span.byte_len().unwrap_or(0) as usize,
            line: location.line(),
            column: location.column(),
        }
    }

    /// A problem at a byte range of the source.
    pub fn span(source: &str, offset: usize, len: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(source.len());
        let before = source.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() as u64 + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before
            .get(line_start..)
            .map(|s| s.chars().count())
            .unwrap_or(0) as u64
            + 1;
        Self {
            message: message.into(),
            offset,
            len,
            line,
            column,
        }
    }

    /// The offending text, trimmed to one line.
    pub fn offending<'a>(&self, source: &'a str) -> &'a str {
        let end = if self.len == 0 {
            source[self.offset.min(source.len())..]
                .find('\n')
                .map(|i| self.offset + i)
                .unwrap_or(source.len())
        } else {
            self.offset + self.len
        };
        let text = source.get(self.offset..end.min(source.len())).unwrap_or("");
        text.lines().next().unwrap_or("").trim()
    }
}

/// A playbook that cannot be run, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct InvalidPlaybook {
    /// The file as given.
    pub file: String,
    /// Every problem, in source order.
    pub problems: Vec<Problem>,
    summary: String,
    source_code: Excerpt,
}

impl InvalidPlaybook {
    /// Builds the report from the problems found in `source`.
    pub fn new(file: &str, source: &str, mut problems: Vec<Problem>) -> Self {
        problems.sort_by_key(|p| (p.line, p.column));
        problems.dedup();
        let mut summary = format!(
            "{file}: invalid playbook ({} problem{})",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
        let shown = &problems[..problems.len().min(SHOWN_PROBLEMS)];
        for problem in shown {
            let _ = write!(
                summary,
                "\n  {file}:{}:{}: {}",
                problem.line,
                problem.column,
                shorten(&problem.message, SHOWN_MESSAGE_CHARS)
            );
            let text = problem.offending(source);
            if !text.is_empty() {
                let _ = write!(summary, "\n      | {}", shorten(text, SHOWN_TEXT_CHARS));
            }
        }
        if problems.len() > shown.len() {
            let _ = write!(
                summary,
                "\n  … and {} more (fix these and validate again)",
                problems.len() - shown.len()
            );
        }
        let marks: Vec<Mark> = shown
            .iter()
            .map(|p| Mark {
                offset: p.offset,
                len: p.len,
                column: p.column,
            })
            .collect();
        let source_code = Excerpt::new(file, source, &marks);
        Self {
            file: file.to_owned(),
            problems,
            summary,
            source_code,
        }
    }
}

impl Diagnostic for InvalidPlaybook {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        Some(Box::new("warroom::playbook::invalid"))
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source_code)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(
            self.problems
                .iter()
                .zip(self.source_code.spans())
                .map(|(p, span)| {
                    LabeledSpan::new_with_span(
                        Some(shorten(&p.message, SHOWN_MESSAGE_CHARS).into_owned()),
                        *span,
                    )
                }),
        ))
    }
}
