//! What warroom writes for a person or a script: failure reports, warnings
//! and log lines on standard error, and the lines and JSON documents of
//! commands that print what they do on standard output. Each goes through
//! the redactor ([`warroom::redact`]) so that no password or token reaches
//! the terminal, a log file or a pipe in clear; the same warning is printed
//! once rather than once per retry; and colour codes are written only to a
//! terminal with `NO_COLOR` unset.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use warroom::redact::{contains_secret, redact_text};

/// Whether standard error gets ANSI colour codes: only on a terminal, and
/// not when `NO_COLOR` is set to anything non-empty (<https://no-color.org>).
pub fn use_color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `text` with its secrets redacted. Colour codes can split a secret from
/// its key (`password` and `=x` in different colours), so text with escape
/// sequences is also checked without them; when that finds a secret, the
/// plain text is returned, redacted.
pub fn redacted(text: &str) -> String {
    if text.contains('\x1b') {
        let plain = strip_ansi(text);
        if contains_secret(&plain) {
            return redact_text(&plain).into_owned();
        }
    }
    redact_text(text).into_owned()
}

/// `text` without ANSI escape sequences (CSI `ESC [ … final` and two-byte
/// `ESC x`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // `ESC [`: parameters and intermediates, then one final byte @..~;
        // any other escape is two characters.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// How long an identical line is held back after it was printed.
const REPEAT_WINDOW: Duration = Duration::from_secs(600);

/// Lines remembered for [`REPEAT_WINDOW`]; beyond this many, the oldest are
/// forgotten.
const REMEMBERED: usize = 1024;

/// Lines printed recently, keyed without their timestamp and colours.
static PRINTED: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// True the first time `line` is seen within [`REPEAT_WINDOW`] (compared
/// without a leading timestamp and without colour codes): a retry loop that
/// fails the same way every few seconds warns once, and again only after a
/// quiet spell.
fn first_time(line: &str) -> bool {
    let plain = strip_ansi(line);
    let key = without_timestamp(plain.trim_end()).to_string();
    let now = Instant::now();
    let mut printed = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(at) = printed.get(&key)
        && now.duration_since(*at) < REPEAT_WINDOW
    {
        return false;
    }
    if printed.len() >= REMEMBERED {
        printed.retain(|_, at| now.duration_since(*at) < REPEAT_WINDOW);
        if printed.len() >= REMEMBERED {
            printed.clear();
        }
    }
    printed.insert(key, now);
    true
}

/// Whether a log line is a warning or an error (its level follows the
/// timestamp).
fn is_warning(line: &str) -> bool {
    let plain = strip_ansi(line);
    let level = without_timestamp(plain.trim_start())
        .split_whitespace()
        .next()
        .unwrap_or("");
    matches!(level, "WARN" | "ERROR")
}

/// A log line without the RFC 3339 timestamp it starts with, if any.
fn without_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((first, rest))
            if first.len() >= 20 && first.as_bytes()[0].is_ascii_digit() && first.contains('T') =>
        {
            rest.trim_start()
        }
        _ => line,
    }
}

/// Prints a failure report: redacted, with a final newline.
pub fn report(report: &miette::Report) {
    write(&format!("{report:?}"), false);
}

/// Prints an informational line, redacted.
pub fn say(message: impl std::fmt::Display) {
    write(&message.to_string(), false);
}

/// Prints a line on standard output, redacted.
pub fn line(text: impl std::fmt::Display) {
    use std::io::Write as _;
    let mut text = redacted(&text.to_string());
    text.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints a JSON document on standard output, its strings redacted (and
/// the values of secret-named keys replaced) so that it stays valid JSON.
pub fn json(mut value: serde_json::Value) {
    use std::io::Write as _;
    warroom::redact::redact_value(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Writes `text` (redacted, newline-terminated) to standard error, or
/// nothing when `once` and the same text was printed recently.
fn write(text: &str, once: bool) {
    let mut text = redacted(text);
    if once && !first_time(&text) {
        return;
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    let _ = stderr.flush();
}

/// The log writer: each log line is collected whole, then written redacted;
/// a warning or error only the first time within [`REPEAT_WINDOW`] (debug
/// and info lines always, for whoever asked for them).
#[derive(Clone, Copy, Default)]
pub struct LogSink;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogSink {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log line being formatted; written to standard error when dropped.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = String::from_utf8_lossy(&self.0);
        write(&line, is_warning(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_cannot_hide_a_secret_from_the_redactor() {
        let coloured = "\x1b[3mpassword\x1b[0m\x1b[2m=\x1b[0mhunter2 and more";
        let out = redacted(coloured);
        assert!(!out.contains("hunter2"), "{out:?}");
        assert_eq!(out, "password=[REDACTED] and more");
        let harmless = "\x1b[33m WARN\x1b[0m nothing secret";
        assert_eq!(redacted(harmless), harmless);
    }

    #[test]
    fn a_repeated_line_is_printed_once_whatever_its_timestamp() {
        let a = "2026-12-02T09:39:53.668806Z  WARN exporter: Connection refused (unique-1)";
        let b = "2026-12-02T09:39:54.001000Z  WARN exporter: Connection refused (unique-1)";
        assert!(first_time(a));
        assert!(!first_time(b));
        assert!(first_time(
            "2026-12-02T09:39:54Z  WARN exporter: another (unique-1)"
        ));
        assert!(is_warning(a));
        assert!(is_warning(
            "\x1b[2m2026-12-02T09:39:53Z\x1b[0m \x1b[33m WARN\x1b[0m x"
        ));
        assert!(!is_warning(
            "2026-12-02T09:39:53.1Z DEBUG exporter: retrying"
        ));
    }
}
