//! Exports of a journal for the postmortem author and for other tools:
//! Markdown in the PM-003 postmortem shape, JSON (events and figures), and
//! one self-contained HTML page with a chart.
//!
//! Exports only read events; they never touch the journal file.

mod chart;
mod html;
mod json;
mod markdown;

use jiff::Timestamp;
use serde_json::Value;

pub use html::html;
pub use json::json;
pub use markdown::markdown;

use super::event::{AlertState, Entry, Event, StepPhase, StepReport};
use super::read::JournalContents;

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Markdown, PM-003 postmortem shape.
    Markdown,
    /// JSON: events plus computed figures.
    Json,
    /// Self-contained HTML with a chart.
    Html,
}

/// Renders `contents` in the given format.
pub fn render(contents: &JournalContents, format: Format) -> String {
    match format {
        Format::Markdown => markdown(contents),
        Format::Json => json(contents),
        Format::Html => html(contents),
    }
}

/// Events in time order (ties in journal order).
fn chronological(events: &[Event]) -> Vec<&Event> {
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| (e.at, e.seq));
    sorted
}

/// `09:41:00`, or `2026-11-27 01:02:03` when not on the incident's date.
fn time_cell(at: Timestamp, incident_date: Option<jiff::civil::Date>) -> String {
    let dt = at.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    if incident_date == Some(dt.date()) {
        format!("{:02}:{:02}:{:02}", dt.hour(), dt.minute(), dt.second())
    } else {
        format!(
            "{} {:02}:{:02}:{:02}",
            dt.date(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )
    }
}

fn utc_date(at: Timestamp) -> jiff::civil::Date {
    at.to_zoned(jiff::tz::TimeZone::UTC).date()
}

/// One line of plain text describing an event for the timeline table
/// (escaping and emphasis are left to each format). Metric snapshots have no
/// line: they are drawn, not listed.
fn describe(event: &Event, previous_severity: Option<&str>) -> Option<String> {
    Some(match &event.entry {
        Entry::Incident(inc) => match &inc.title {
            Some(title) => format!("Incident {} opened: {}", inc.id, title),
            None => format!("Incident {} opened", inc.id),
        },
        Entry::Milestone(m) => {
            let mut name = m.milestone.name().to_string();
            if let Some(first) = name.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!("{name}.")
        }
        Entry::Severity(s) => match previous_severity {
            Some(prev) if prev != s.severity => {
                format!("Severity changed to {} (was {}).", s.severity, prev)
            }
            _ => format!("Severity {}.", s.severity),
        },
        Entry::Note(n) => n.text.clone(),
        Entry::Alert(a) => {
            let state = match a.state {
                AlertState::Fired => "fired",
                AlertState::Resolved => "resolved",
            };
            let mut text = format!("Alert {} {}", a.alert, state);
            let mut extra = Vec::new();
            if let Some(v) = a.value {
                extra.push(format!("value {}", trim_float(v)));
            }
            for (k, v) in &a.labels {
                extra.push(format!("{k}={v}"));
            }
            if !extra.is_empty() {
                text.push_str(&format!(" ({})", extra.join(", ")));
            }
            text.push('.');
            text
        }
        Entry::Step(s) => {
            // The timeline lists what was decided and what changed; the
            // plan, dry runs and read-backs are in the steps section.
            if !matches!(
                s.phase,
                StepPhase::Applied
                    | StepPhase::Confirmed
                    | StepPhase::Failed
                    | StepPhase::Undone
                    | StepPhase::Cancelled
            ) {
                return None;
            }
            let mut text = format!(
                "Step {} ({}, playbook {}) {}: {}",
                s.step, s.kind, s.playbook, s.phase, s.target
            );
            let change = change_summary(&s.before, &s.after);
            if !change.is_empty() {
                text.push_str(&format!(" — {change}"));
            } else if let Some(msg) = &s.message {
                text.push_str(&format!(" — {msg}"));
            }
            text
        }
        Entry::Metric(_) => return None,
    })
}

/// `/spec/replicas: 8 → 1; /data/LOCK_MODE: "legacy" → "watch"` (at most
/// three fields, then how many more).
fn change_summary(before: &Value, after: &Value) -> String {
    let mut fields: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for line in diff(before, after) {
        let slot = match fields.iter_mut().find(|(p, _, _)| *p == line.path) {
            Some(slot) => slot,
            None => {
                fields.push((line.path.clone(), None, None));
                fields.last_mut().expect("just pushed")
            }
        };
        if line.sign == '-' {
            slot.1 = Some(line.value);
        } else {
            slot.2 = Some(line.value);
        }
    }
    let shown: Vec<String> = fields
        .iter()
        .take(3)
        .map(|(path, old, new)| {
            format!(
                "{path}: {} → {}",
                old.as_deref().unwrap_or("(absent)"),
                new.as_deref().unwrap_or("(absent)")
            )
        })
        .collect();
    let mut text = shown.join("; ");
    if fields.len() > 3 {
        text.push_str(&format!("; {} more", fields.len() - 3));
    }
    text
}

/// `3`, `2.5`, `0.125`.
fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A playbook step and its phases, in the order the steps were first seen.
struct StepHistory<'a> {
    first: &'a StepReport,
    phases: Vec<(&'a Event, &'a StepReport)>,
}

impl<'a> StepHistory<'a> {
    /// The event whose before/after best shows the change: applied, else
    /// planned, else the first with any payload.
    fn change(&self) -> Option<&'a StepReport> {
        let with_payload = |p: StepPhase| {
            self.phases
                .iter()
                .map(|(_, s)| *s)
                .find(|s| s.phase == p && !(s.before.is_null() && s.after.is_null()))
        };
        with_payload(StepPhase::Applied)
            .or_else(|| with_payload(StepPhase::Planned))
            .or_else(|| {
                self.phases.iter().map(|(_, s)| *s).find(|s| {
                    s.phase != StepPhase::Undone && !(s.before.is_null() && s.after.is_null())
                })
            })
    }

    /// The undo's before/after, if the step was undone with a payload.
    fn undo(&self) -> Option<&'a StepReport> {
        self.phases
            .iter()
            .map(|(_, s)| *s)
            .find(|s| s.phase == StepPhase::Undone && !(s.before.is_null() && s.after.is_null()))
    }
}

fn step_histories<'a>(events: &[&'a Event]) -> Vec<StepHistory<'a>> {
    let mut out: Vec<StepHistory<'a>> = Vec::new();
    let mut index: std::collections::HashMap<(&str, &str, &str), usize> =
        std::collections::HashMap::new();
    for event in events {
        if let Entry::Step(step) = &event.entry {
            let key = (
                step.playbook.as_str(),
                step.run_id.as_str(),
                step.step.as_str(),
            );
            let i = *index.entry(key).or_insert_with(|| {
                out.push(StepHistory {
                    first: step,
                    phases: Vec::new(),
                });
                out.len() - 1
            });
            out[i].phases.push((event, step));
        }
    }
    out
}

/// A line of a diff: `-` removed/old, `+` added/new.
#[derive(Debug, PartialEq)]
struct DiffLine {
    sign: char,
    path: String,
    value: String,
}

/// Leaf-level diff of two JSON values, paths as JSON Pointers.
fn diff(before: &Value, after: &Value) -> Vec<DiffLine> {
    let mut left = Vec::new();
    let mut right = Vec::new();
    flatten(before, &mut String::new(), &mut left);
    flatten(after, &mut String::new(), &mut right);
    let right_map: std::collections::BTreeMap<&str, &Value> =
        right.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    let left_map: std::collections::BTreeMap<&str, &Value> =
        left.iter().map(|(p, v)| (p.as_str(), *v)).collect();
    let mut paths: Vec<&str> = left_map.keys().chain(right_map.keys()).copied().collect();
    paths.sort_unstable();
    paths.dedup();
    let mut out = Vec::new();
    for path in paths {
        let (l, r) = (left_map.get(path), right_map.get(path));
        if l == r {
            continue;
        }
        let shown = if path.is_empty() { "/" } else { path };
        if let Some(l) = l {
            out.push(DiffLine {
                sign: '-',
                path: shown.to_string(),
                value: l.to_string(),
            });
        }
        if let Some(r) = r {
            out.push(DiffLine {
                sign: '+',
                path: shown.to_string(),
                value: r.to_string(),
            });
        }
    }
    out
}

fn flatten<'a>(value: &'a Value, path: &mut String, out: &mut Vec<(String, &'a Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&k.replace('~', "~0").replace('/', "~1"));
                flatten(v, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                flatten(v, path, out);
                path.truncate(len);
            }
        }
        Value::Null => {}
        other => out.push((path.clone(), other)),
    }
}

/// The text of the skipped-lines notice, if any lines were skipped.
fn skipped_notice(contents: &JournalContents) -> Option<String> {
    if contents.skipped.is_empty() {
        return None;
    }
    let torn = contents.skipped.iter().filter(|s| s.torn_tail).count();
    let other = contents.skipped.len() - torn;
    let mut parts = Vec::new();
    if torn > 0 {
        parts.push(
            "a torn last line (a write cut short by a crash; never acknowledged)".to_string(),
        );
    }
    if other > 0 {
        parts.push(format!(
            "{other} unreadable line(s) (lines {})",
            contents
                .skipped
                .iter()
                .filter(|s| !s.torn_tail)
                .map(|s| s.line.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Some(format!("The journal had {}; skipped.", parts.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_added_and_removed_leaves() {
        let before =
            serde_json::json!({"spec": {"replicas": 8}, "metadata": {"annotations": {"a": "1"}}});
        let after =
            serde_json::json!({"spec": {"replicas": 1}, "metadata": {"annotations": {"b": "2"}}});
        let lines: Vec<String> = diff(&before, &after)
            .into_iter()
            .map(|l| format!("{} {}: {}", l.sign, l.path, l.value))
            .collect();
        assert_eq!(
            lines,
            [
                "- /metadata/annotations/a: \"1\"",
                "+ /metadata/annotations/b: \"2\"",
                "- /spec/replicas: 8",
                "+ /spec/replicas: 1",
            ]
        );
    }
}
