//! `config/warroom.yaml`: where the console's data comes from, its
//! thresholds, the playbook and timeline paths, and per-context guardrails
//! (read-only contexts; typed confirmation for production contexts).
//!
//! Flags override `WARROOM_*` variables, which override the file, which
//! overrides the defaults here. [`check`] validates a file the way playbooks
//! are validated: every problem with its `file:line:col`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 256 * 1024;

/// Poll interval bounds in milliseconds.
pub const POLL_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// History bounds in minutes (1 minute to a day).
pub const HISTORY_MIN: std::ops::RangeInclusive<u64> = 1..=1_440;
/// Errors-per-minute threshold bounds.
pub const THRESHOLD: std::ops::RangeInclusive<f64> = 1.0..=1_000_000.0;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// Data sources.
    #[serde(default)]
    pub sources: Sources,
    /// Thresholds.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Minutes of samples the charts keep.
    #[serde(default)]
    pub history_minutes: Option<Spanned<u64>>,
    /// Playbook folder.
    #[serde(default)]
    pub playbooks: Option<PathBuf>,
    /// Incident journal the timeline follows and actions write.
    #[serde(default)]
    pub timeline: Option<PathBuf>,
    /// Where the console logs (never to the screen).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Per-context guardrails.
    #[serde(default)]
    pub contexts: Vec<ContextRule>,
}

/// Data sources.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sources {
    /// The exporter's base URL.
    #[serde(default)]
    pub exporter: Option<Spanned<String>>,
    /// A Prometheus server's base URL.
    #[serde(default)]
    pub prometheus: Option<Spanned<String>>,
    /// Poll interval in milliseconds.
    #[serde(default)]
    pub poll_interval_ms: Option<Spanned<u64>>,
}

/// Thresholds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Thresholds {
    /// The absolute errors-per-minute line (AI-004: 50).
    #[serde(default)]
    pub errors_per_minute: Option<Spanned<f64>>,
}

/// Guardrails for a kubeconfig context.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ContextRule {
    /// Context name (exact).
    pub name: Spanned<String>,
    /// Refuse every change in this context.
    #[serde(default)]
    pub read_only: bool,
    /// Runs need the playbook's name typed (production).
    #[serde(default)]
    pub typed_confirmation: bool,
}

/// The settings the console runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Exporter base URL.
    pub exporter: Option<String>,
    /// Prometheus base URL.
    pub prometheus: Option<String>,
    /// Poll interval in milliseconds.
    pub poll_ms: u64,
    /// Minutes of history.
    pub history_minutes: u64,
    /// Errors-per-minute line.
    pub error_threshold: f64,
    /// Playbook folder.
    pub playbooks: PathBuf,
    /// Journal.
    pub timeline: Option<PathBuf>,
    /// Log file.
    pub log_file: PathBuf,
    /// Read-only contexts.
    pub read_only_contexts: Vec<String>,
    /// Contexts needing typed confirmation.
    pub typed_contexts: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            exporter: Some(format!("http://{}", crate::exporter::DEFAULT_LISTEN)),
            prometheus: None,
            poll_ms: 1_000,
            history_minutes: 60,
            error_threshold: 50.0,
            playbooks: PathBuf::from("playbooks"),
            timeline: None,
            log_file: PathBuf::from("warroom-console.log"),
            read_only_contexts: Vec::new(),
            typed_contexts: Vec::new(),
        }
    }
}

/// A problem in a configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// What is wrong.
    pub message: String,
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.file, .problems))]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// Its problems.
    pub problems: Vec<ConfigProblem>,
}

fn render(file: &str, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("{file}:{}:{}: {}", p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn at<T>(spanned: &Spanned<T>, message: String) -> ConfigProblem {
    ConfigProblem {
        line: spanned.referenced.line(),
        column: spanned.referenced.column(),
        message,
    }
}

fn check_url(url: &Spanned<String>, what: &str, problems: &mut Vec<ConfigProblem>) {
    let value = &url.value;
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() > 8
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && reqwest::Url::parse(value).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
    if !ok {
        problems.push(at(
            url,
            format!(
                "{what} must be an http:// or https:// URL, got {:?}",
                crate::redact::redact_text(value)
            ),
        ));
    }
}

/// The most characters of an offending line repeated in a message.
const OFFENDING_CHARS: usize = 120;

/// The text of 1-based `line` in `source`, trimmed, shortened and with any
/// secret redacted, for a parse error to show what it is about.
fn offending_line(source: &str, line: u64) -> Option<String> {
    let index = usize::try_from(line).ok()?.checked_sub(1)?;
    let text = source.lines().nth(index)?.trim();
    if text.is_empty() {
        return None;
    }
    let text = crate::redact::redact_text(text);
    let mut short: String = text.chars().take(OFFENDING_CHARS).collect();
    if text.chars().count() > OFFENDING_CHARS {
        short.push('…');
    }
    Some(short)
}

/// Parses and validates configuration text; `file` names it in messages.
pub fn parse(file: &str, source: &str) -> Result<Settings, ConfigError> {
    let doc: ConfigFile = if source.trim().is_empty() {
        ConfigFile::default()
    } else {
        serde_saphyr::from_str(source).map_err(|err| {
            let options =
                serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
            let mut message = err.render_with_options(options);
            if let Some(cut) = message.rfind(" at line ") {
                message.truncate(cut);
            }
            let (line, column) = err
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((0, 0));
            let mut message = message.trim().to_owned();
            // The parser's advice is about its own API, not the file.
            if let Some(cut) = message.find(", set DuplicateKeyPolicy") {
                message.truncate(cut);
            }
            if let Some(text) = offending_line(source, line) {
                message.push_str(&format!(" in {text:?}"));
            }
            ConfigError {
                file: file.to_owned(),
                problems: vec![ConfigProblem {
                    line,
                    column,
                    message,
                }],
            }
        })?
    };
    let mut problems = Vec::new();
    let mut settings = Settings::default();
    if let Some(url) = &doc.sources.exporter {
        check_url(url, "sources.exporter", &mut problems);
        settings.exporter = Some(url.value.clone());
    }
    if let Some(url) = &doc.sources.prometheus {
        check_url(url, "sources.prometheus", &mut problems);
        settings.prometheus = Some(url.value.clone());
    }
    if let Some(poll) = &doc.sources.poll_interval_ms {
        if !POLL_MS.contains(&poll.value) {
            problems.push(at(
                poll,
                format!(
                    "sources.poll-interval-ms must be {} to {}, got {}",
                    POLL_MS.start(),
                    POLL_MS.end(),
                    poll.value
                ),
            ));
        }
        settings.poll_ms = poll.value;
    }
    if let Some(history) = &doc.history_minutes {
        if !HISTORY_MIN.contains(&history.value) {
            problems.push(at(
                history,
                format!(
                    "history-minutes must be {} to {}, got {}",
                    HISTORY_MIN.start(),
                    HISTORY_MIN.end(),
                    history.value
                ),
            ));
        }
        settings.history_minutes = history.value;
    }
    if let Some(threshold) = &doc.thresholds.errors_per_minute {
        if !THRESHOLD.contains(&threshold.value) {
            problems.push(at(
                threshold,
                format!(
                    "thresholds.errors-per-minute must be {} to {}, got {}",
                    THRESHOLD.start(),
                    THRESHOLD.end(),
                    threshold.value
                ),
            ));
        }
        settings.error_threshold = threshold.value;
    }
    if let Some(dir) = doc.playbooks {
        settings.playbooks = dir;
    }
    settings.timeline = doc.timeline;
    if let Some(log) = doc.log_file {
        settings.log_file = log;
    }
    let mut seen = std::collections::HashSet::new();
    for rule in &doc.contexts {
        let name = &rule.name.value;
        if name.is_empty() || name.chars().any(char::is_control) {
            problems.push(at(
                &rule.name,
                "a context name must be non-empty text".into(),
            ));
        } else if !seen.insert(name.clone()) {
            problems.push(at(&rule.name, format!("context {name:?} is listed twice")));
        }
        if rule.read_only {
            settings.read_only_contexts.push(name.clone());
        }
        if rule.typed_confirmation {
            settings.typed_contexts.push(name.clone());
        }
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError {
            file: file.to_owned(),
            problems,
        })
    }
}

/// Reads and validates a configuration file (bounded read; a missing
/// default file is the defaults).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let file = path.display().to_string();
    let fail = |message: String| ConfigError {
        file: file.clone(),
        problems: vec![ConfigProblem {
            line: 0,
            column: 0,
            message,
        }],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "larger than {MAX_CONFIG_BYTES} bytes: not a warroom configuration"
        )));
    }
    let source = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    parse(&file, &source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_is_valid() {
        let source = include_str!("../../config/warroom.yaml");
        let settings = parse("config/warroom.yaml", source).unwrap();
        assert_eq!(settings.error_threshold, 50.0);
        assert!(settings.typed_contexts.iter().any(|c| c.contains("prod")));
    }

    #[test]
    fn problems_name_file_line_and_column() {
        let source = "sources:\n  poll-interval-ms: 5\n  exporter: ftp://x\n";
        let err = parse("w.yaml", source).unwrap_err().to_string();
        assert!(
            err.contains("w.yaml:2:21: sources.poll-interval-ms must be 100"),
            "{err}"
        );
        assert!(
            err.contains("w.yaml:3:13: sources.exporter must be"),
            "{err}"
        );
        let err = parse("w.yaml", "sourcez: {}\n").unwrap_err().to_string();
        assert!(err.starts_with("w.yaml:1:1:"), "{err}");
    }

    #[test]
    fn a_syntax_error_shows_the_offending_text() {
        let source = "sources:\n  exporter: [http://a\n  poll: 3\n";
        let err = parse("w.yaml", source).unwrap_err().to_string();
        assert!(err.starts_with("w.yaml:2:"), "{err}");
        assert!(err.contains("exporter: [http://a"), "{err}");
        let source = "sources:\n  poll-interval-ms: 99999999999999999999999\n";
        let err = parse("w.yaml", source).unwrap_err().to_string();
        assert!(err.contains("99999999999999999999999"), "{err}");
        let source = "sources:\n  exporter: http://a:1\n  exporter: http://b:2\n";
        let err = parse("w.yaml", source).unwrap_err().to_string();
        assert!(
            err.starts_with("w.yaml:3:3: duplicate mapping key"),
            "{err}"
        );
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
        let source = "sources:\n  exporter: [http://u:hunter2@a\n";
        let err = parse("w.yaml", source).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_url_with_an_impossible_port_is_refused() {
        let err = parse("w.yaml", "sources:\n  exporter: http://127.0.0.1:99999\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w.yaml:2:13: sources.exporter must be"),
            "{err}"
        );
    }

    #[test]
    fn a_password_in_a_url_is_not_repeated() {
        let err = parse("w.yaml", "sources:\n  exporter: \"ftp://u:hunter2@x\"\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
