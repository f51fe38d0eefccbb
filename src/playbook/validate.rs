//! Validation problems and how they are reported: every problem carries the
//! file, line and column, and the offending text, and the whole set renders
//! as one miette diagnostic with a label per problem. A secret written in
//! the file is masked in the report (same length, so every span still
//! points at the right place). What a report echoes
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
        let masked = mask_secrets(source);
        let source = masked.as_str();
        for problem in &mut problems {
            // A message can quote a value from the file.
            if let std::borrow::Cow::Owned(clean) = crate::redact::redact_text(&problem.message) {
                problem.message = clean;
            }
        }
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

/// `source` with every secret [`crate::redact`] finds replaced by `*` of the
/// same byte length, line by line; when a secret spans lines (a PEM block),
/// every visible character is masked.
fn mask_secrets(source: &str) -> String {
    use crate::redact::{contains_secret, redact_text};
    if !contains_secret(source) {
        return source.to_owned();
    }
    let mut found = false;
    let masked: String = source
        .split_inclusive('\n')
        .map(|line| {
            let redacted = redact_text(line);
            if redacted == line {
                return line.to_owned();
            }
            found = true;
            let (a, b) = (line.as_bytes(), redacted.as_bytes());
            let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
            let suffix = a[prefix..]
                .iter()
                .rev()
                .zip(b[prefix..].iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
            mask(line, prefix, line.len() - suffix)
        })
        .collect();
    // A secret over several lines (a PEM block) is not found line by line.
    if found && !source.contains("PRIVATE KEY-----") {
        masked
    } else {
        mask(source, 0, source.len())
    }
}

/// `text` with the visible characters in `start..end` replaced by `*`, one
/// per byte.
fn mask(text: &str, start: usize, end: usize) -> String {
    text.char_indices()
        .map(|(i, c)| {
            if i >= start && i < end && !c.is_whitespace() {
                "*".repeat(c.len_utf8())
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_mask_secrets_and_keep_spans() {
        let source = "name: m\nsteps:\n  - note: \"redis://:hunter2@redis:6379\"\n";
        let at = source.find("redis://").unwrap();
        let report = InvalidPlaybook::new(
            "p.yaml",
            source,
            vec![Problem::span(source, at, 27, "looks like a secret")],
        );
        let text = report.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redis://:*******@redis:6379"), "{text}");
        assert_eq!(report.problems[0].offset, at);
        let pem = "a: |\n  -----BEGIN PRIVATE KEY-----\n  MIIBVg\n  -----END PRIVATE KEY-----\n";
        let masked = mask_secrets(pem);
        assert_eq!(masked.len(), pem.len());
        assert!(!masked.contains("MIIBVg"), "{masked}");
    }
}
