//! Exports of a journal for the postmortem author and for other tools:
//! Markdown in the PM-003 postmortem shape, JSON (events and figures), and
//! one self-contained HTML page with a chart.
//!
//! Exports only read events; they never touch the journal file.
//!
//! Memory: an export of a file reads it as one stream. That pass ([`Survey`]) computes the figures and keeps only what the
//! export shows beyond one line each: the step events, the chart's points
//! (24 bytes per metric snapshot) and, for each timeline row, where its line
//! is in the file (24 bytes). The rows are then read back one at a time, in
//! time order, while they are written out; the JSON export writes each
//! event as the first pass reads it, and the figures at the end. Nothing
//! holds the whole journal.

mod chart;
mod html;
mod json;
mod markdown;

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

use super::TimelineError;
use super::event::{AlertState, Entry, Event, StepPhase, StepReport};
use super::figures::{Figures, FiguresBuilder};
use super::read::{JournalContents, LineSpan, SkippedLine, open_regular, parse_line, scan_reader};

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
    let mut out = Vec::with_capacity(4096 + contents.events.len() * 128);
    // Writing into memory cannot fail.
    let _ = render_to(contents, format, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Renders the Markdown postmortem of `contents`.
pub fn markdown(contents: &JournalContents) -> String {
    render(contents, Format::Markdown)
}

/// Renders the HTML page of `contents`.
pub fn html(contents: &JournalContents) -> String {
    render(contents, Format::Html)
}

/// Renders the JSON export of `contents` (one object: `figures`, `events`,
/// `skipped`).
pub fn json(contents: &JournalContents) -> String {
    render(contents, Format::Json)
}

fn render_to(
    contents: &JournalContents,
    format: Format,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut survey = Survey::default();
    let mut events = match format {
        Format::Json => Some(json::JsonEvents::begin(out)?),
        _ => None,
    };
    for (i, event) in contents.events.iter().enumerate() {
        survey.add(event, Locator::Index(i));
        if let Some(json) = &mut events {
            json.event(out, event)?;
        }
    }
    for skipped in &contents.skipped {
        survey.skip(skipped.clone());
    }
    let source = Memory(&contents.events);
    match events {
        Some(json) => json.end(survey.finish(), out),
        None if format == Format::Html => html::write(survey.finish(), &source, out),
        None => markdown::write(survey.finish(), &source, out),
    }
}

/// What an export of a file saw (lines skipped are also told to the caller).
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// Events exported.
    pub events: u64,
    /// Lines skipped as unreadable (the first of them are in `skipped`).
    pub skipped_count: u64,
    /// The first skipped lines.
    pub skipped: Vec<SkippedLine>,
}

/// Exports the journal at `path` to `out`, streaming (see the module
/// documentation for what is held in memory).
pub fn export_file(
    path: &Path,
    format: Format,
    out: &mut dyn Write,
) -> Result<Exported, ExportError> {
    let read_err = |source| {
        ExportError::Read(TimelineError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let file = open_regular(path).map_err(read_err)?;
    if !super::journal::starts_like_journal(&file) {
        return Err(ExportError::Read(TimelineError::NotAJournal {
            path: path.to_path_buf(),
            why: "its first line is not a journal event".into(),
        }));
    }
    let mut survey = Survey::default();
    // JSON writes each event as it is read; the others read the rows back.
    let mut events = match format {
        Format::Json => Some(json::JsonEvents::begin(out).map_err(ExportError::Write)?),
        _ => None,
    };
    let mut failure: Option<std::io::Error> = None;
    scan_reader(&file, 0, 0, &mut |parsed, span| match parsed {
        Ok(event) => {
            survey.add(&event, Locator::Span(span));
            if let Some(json) = &mut events
                && failure.is_none()
                && let Err(e) = json.event(out, &event)
            {
                failure = Some(e);
            }
        }
        Err(skipped) => survey.skip(skipped),
    })
    .map_err(read_err)?;
    if let Some(e) = failure {
        return Err(ExportError::Write(e));
    }
    let survey = survey.finish();
    let exported = Exported {
        events: survey.events,
        skipped_count: survey.skipped_count,
        skipped: survey.skipped.clone(),
    };
    let source = FileRows { file: &file };
    let written = match events {
        Some(json) => json.end(survey, out),
        None if format == Format::Html => html::write(survey, &source, out),
        None => markdown::write(survey, &source, out),
    };
    written.map_err(ExportError::Write)?;
    out.flush().map_err(ExportError::Write)?;
    Ok(exported)
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The journal could not be read.
    #[error(transparent)]
    Read(TimelineError),
    /// The export could not be written.
    #[error("cannot write the export: {0}")]
    Write(std::io::Error),
}

/// Where a timeline row's event is: its index in memory, or its line in
/// the file.
#[derive(Debug, Clone, Copy)]
enum Locator {
    Index(usize),
    Span(LineSpan),
}

/// A timeline row to write: its place in time order and where its event is.
#[derive(Debug, Clone, Copy)]
struct Row {
    at: Timestamp,
    seq: u64,
    at_locator: Locator,
}

/// Reads a row's event back.
trait RowSource {
    fn event(&self, row: &Row) -> std::io::Result<Option<Cow<'_, Event>>>;
}

struct Memory<'a>(&'a [Event]);

impl RowSource for Memory<'_> {
    fn event(&self, row: &Row) -> std::io::Result<Option<Cow<'_, Event>>> {
        Ok(match row.at_locator {
            Locator::Index(i) => self.0.get(i).map(Cow::Borrowed),
            Locator::Span(_) => None,
        })
    }
}

struct FileRows<'a> {
    file: &'a std::fs::File,
}

impl RowSource for FileRows<'_> {
    fn event(&self, row: &Row) -> std::io::Result<Option<Cow<'_, Event>>> {
        use std::os::unix::fs::FileExt;
        let Locator::Span(span) = row.at_locator else {
            return Ok(None);
        };
        let mut line = vec![0u8; span.len];
        self.file.read_exact_at(&mut line, span.offset)?;
        let text = line.strip_suffix(b"\r").unwrap_or(&line);
        // The line parsed in the first pass; a file changed since reads as
        // what it now holds, or as nothing.
        Ok(parse_line(text).ok().map(Cow::Owned))
    }
}

/// How many skipped lines are kept to be listed; the rest are counted.
const SKIPPED_KEPT: usize = 100;

/// Peaks of the recorded metric snapshots: the impact figures.
#[derive(Debug, Clone, Default)]
struct Peaks {
    snapshots: u64,
    collisions: Option<(f64, Timestamp)>,
    errors: Option<(f64, Timestamp)>,
    holders: Option<(u64, Timestamp)>,
    fencing_rejections: Option<u64>,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

impl Peaks {
    fn add(&mut self, at: Timestamp, m: &super::event::MetricSnapshot) {
        self.snapshots += 1;
        self.first = Some(self.first.map_or(at, |t| t.min(at)));
        self.last = Some(self.last.map_or(at, |t| t.max(at)));
        let higher = |slot: &mut Option<(f64, Timestamp)>, v: f64| {
            if v.is_finite() && slot.is_none_or(|(best, _)| v > best) {
                *slot = Some((v, at));
            }
        };
        higher(&mut self.collisions, m.collisions_per_min);
        higher(&mut self.errors, m.errors_per_min);
        if self
            .holders
            .is_none_or(|(best, _)| m.concurrent_holders > best)
        {
            self.holders = Some((m.concurrent_holders, at));
        }
        self.fencing_rejections = Some(
            self.fencing_rejections
                .map_or(m.fencing_rejections, |n| n.max(m.fencing_rejections)),
        );
    }
}

/// The first pass over a journal: everything an export needs before it
/// writes its first line.
#[derive(Default)]
struct Survey {
    figures: FiguresBuilder,
    rows: Vec<Row>,
    steps: Vec<(Event, usize)>,
    chart: chart::ChartData,
    peaks: Peaks,
    first_alert: Option<(Timestamp, String)>,
    events: u64,
    skipped: Vec<SkippedLine>,
    skipped_count: u64,
    torn_tail: bool,
}

impl Survey {
    fn add(&mut self, event: &Event, locator: Locator) {
        self.events += 1;
        self.figures.add(event);
        self.chart.add(event);
        match &event.entry {
            Entry::Metric(m) => self.peaks.add(event.at, m),
            Entry::Step(_) => self.steps.push((event.clone(), self.steps.len())),
            Entry::Alert(a)
                if a.state == AlertState::Fired
                    && self.first_alert.as_ref().is_none_or(|(t, _)| event.at < *t) =>
            {
                self.first_alert = Some((event.at, a.alert.clone()));
            }
            _ => {}
        }
        if listed(event) {
            self.rows.push(Row {
                at: event.at,
                seq: event.seq,
                at_locator: locator,
            });
        }
    }

    fn skip(&mut self, skipped: SkippedLine) {
        self.skipped_count += 1;
        self.torn_tail |= skipped.torn_tail;
        if self.skipped.len() < SKIPPED_KEPT {
            self.skipped.push(skipped);
        }
    }

    fn finish(mut self) -> Surveyed {
        self.rows.sort_by_key(|r| (r.at, r.seq));
        self.steps.sort_by_key(|(e, i)| (e.at, e.seq, *i));
        let steps = step_histories(self.steps.into_iter().map(|(e, _)| e).collect());
        for (n, step) in steps.iter().filter(|s| s.changed()).enumerate() {
            for event in &step.phases {
                if let Entry::Step(s) = &event.entry {
                    self.chart.step(event.at, n + 1, s);
                }
            }
        }
        Surveyed {
            figures: self.figures.finish(),
            rows: self.rows,
            steps,
            chart: self.chart,
            peaks: self.peaks,
            first_alert: self.first_alert,
            events: self.events,
            skipped: self.skipped,
            skipped_count: self.skipped_count,
            torn_tail: self.torn_tail,
        }
    }
}

/// The first pass's result, ready to write.
struct Surveyed {
    figures: Figures,
    rows: Vec<Row>,
    steps: Vec<StepHistory>,
    chart: chart::ChartData,
    peaks: Peaks,
    first_alert: Option<(Timestamp, String)>,
    events: u64,
    skipped: Vec<SkippedLine>,
    skipped_count: u64,
    torn_tail: bool,
}

impl Surveyed {
    /// The page's heading: the title, else `Incident <id>`.
    fn heading(&self) -> String {
        match (&self.figures.title, &self.figures.id) {
            (Some(title), _) => title.clone(),
            (None, Some(id)) => format!("Incident {id}"),
            (None, None) => "Incident".to_string(),
        }
    }

    /// The header table's rows: PM-003's fields, filled from the journal.
    fn header_rows(&self) -> Vec<(&'static str, String)> {
        let f = &self.figures;
        let date = f.start().map(utc_date);
        let severity = match (&f.peak_severity, &f.severity) {
            (Some(peak), Some(last)) if peak != last => format!("{peak} (peak; {last} at the end)"),
            (Some(peak), _) => peak.clone(),
            (None, _) => "—".into(),
        };
        let mut rows = vec![
            ("ID", f.id.clone().unwrap_or_else(|| "—".into())),
            (
                "Date",
                date.map(|d| d.to_string()).unwrap_or_else(|| "—".into()),
            ),
            ("Severity", severity),
            ("Duration", f.describe_duration()),
            (
                "Time to Detect",
                f.describe(f.time_to_detect.as_ref(), super::event::Milestone::Detected),
            ),
            (
                "Time to Mitigate",
                f.describe(
                    f.time_to_mitigate.as_ref(),
                    super::event::Milestone::Mitigated,
                ),
            ),
        ];
        let p = &self.peaks;
        if let Some((v, at)) = p.collisions {
            rows.push((
                "Peak Lock Collisions",
                format!("{} / min at {}", trim_float(v), time_cell(at, date)),
            ));
        }
        if let Some((v, at)) = p.errors {
            rows.push((
                "Peak Errors",
                format!("{} / min at {}", trim_float(v), time_cell(at, date)),
            ));
        }
        if let Some((v, at)) = p.holders.filter(|(v, _)| *v > 0) {
            rows.push((
                "Peak Concurrent Holders",
                format!("{v} of one lock key at {}", time_cell(at, date)),
            ));
        }
        rows
    }

    /// The steps that changed something (applied, failed or undone), each
    /// once, numbered as in the chart.
    fn changes(&self) -> impl Iterator<Item = (usize, &StepHistory)> {
        self.steps
            .iter()
            .filter(|s| s.changed())
            .enumerate()
            .map(|(i, s)| (i + 1, s))
    }

    /// Steps recorded that never changed anything (planned, dry runs,
    /// skipped, unchanged, declined).
    fn not_run(&self) -> Vec<&StepHistory> {
        self.steps.iter().filter(|s| !s.changed()).collect()
    }

    /// The notice about skipped lines, if any.
    fn skipped_notice(&self) -> Option<String> {
        if self.skipped_count == 0 {
            return None;
        }
        let other = self.skipped_count - u64::from(self.torn_tail);
        let mut parts = Vec::new();
        if self.torn_tail {
            parts.push(
                "a torn last line (a write cut short by a crash; never acknowledged)".to_string(),
            );
        }
        if other > 0 {
            let listed: Vec<String> = self
                .skipped
                .iter()
                .filter(|s| !s.torn_tail)
                .map(|s| s.line.to_string())
                .collect();
            let more = other.saturating_sub(listed.len() as u64);
            parts.push(format!(
                "{other} unreadable line(s) (lines {}{})",
                listed.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        Some(format!("The journal had {}; skipped.", parts.join(" and ")))
    }

    /// Writes the timeline rows in time order through `row`, which gets
    /// the event, its text and the severity before it.
    fn each_row(
        &self,
        source: &dyn RowSource,
        row: &mut dyn FnMut(&Event, &str) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let mut severity: Option<String> = None;
        for r in &self.rows {
            let Some(event) = source.event(r)? else {
                continue;
            };
            let Some(text) = describe(&event, severity.as_deref()) else {
                continue;
            };
            if let Entry::Severity(s) = &event.entry {
                severity = Some(s.severity.clone());
            }
            row(&event, &text)?;
        }
        Ok(())
    }
}

/// Whether an event is a row of the timeline table: decisions and changes
/// (metric snapshots are drawn, plans and read-backs are in the steps).
fn listed(event: &Event) -> bool {
    match &event.entry {
        Entry::Metric(_) => false,
        Entry::Step(s) => matches!(
            s.phase,
            StepPhase::Applied | StepPhase::Confirmed | StepPhase::Failed | StepPhase::Undone
        ),
        _ => true,
    }
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

/// A playbook step (playbook, run, step name) and its phases in time order.
struct StepHistory {
    phases: Vec<Event>,
}

impl StepHistory {
    fn reports(&self) -> impl Iterator<Item = (&Event, &StepReport)> {
        self.phases.iter().filter_map(|e| match &e.entry {
            Entry::Step(s) => Some((e, s)),
            _ => None,
        })
    }

    /// The step as first recorded.
    fn first(&self) -> Option<&StepReport> {
        self.reports().next().map(|(_, s)| s)
    }

    /// Whether the step changed the cluster (or tried to): applied, failed
    /// or undone. A plan, a dry run, a skip or an unchanged object did not.
    fn changed(&self) -> bool {
        self.reports().any(|(_, s)| {
            matches!(
                s.phase,
                StepPhase::Applied | StepPhase::Failed | StepPhase::Undone
            )
        })
    }

    /// The event whose before/after best shows the change: applied, else
    /// planned, else the first with any payload.
    fn change(&self) -> Option<&StepReport> {
        let with_payload = |p: StepPhase| {
            self.reports()
                .map(|(_, s)| s)
                .find(|s| s.phase == p && !(s.before.is_null() && s.after.is_null()))
        };
        with_payload(StepPhase::Applied)
            .or_else(|| with_payload(StepPhase::Planned))
            .or_else(|| {
                self.reports().map(|(_, s)| s).find(|s| {
                    s.phase != StepPhase::Undone && !(s.before.is_null() && s.after.is_null())
                })
            })
    }

    /// The undo's before/after, if the step was undone with a payload.
    fn undo(&self) -> Option<&StepReport> {
        self.reports()
            .map(|(_, s)| s)
            .find(|s| s.phase == StepPhase::Undone && !(s.before.is_null() && s.after.is_null()))
    }
}

/// Groups step events (in time order) by playbook, run and step, in the
/// order the steps were first seen.
fn step_histories(events: Vec<Event>) -> Vec<StepHistory> {
    let mut out: Vec<StepHistory> = Vec::new();
    let mut index: std::collections::HashMap<(String, String, String), usize> =
        std::collections::HashMap::new();
    for event in events {
        let Entry::Step(step) = &event.entry else {
            continue;
        };
        let key = (
            step.playbook.clone(),
            step.run_id.clone(),
            step.step.clone(),
        );
        let i = *index.entry(key).or_insert_with(|| {
            out.push(StepHistory { phases: Vec::new() });
            out.len() - 1
        });
        out[i].phases.push(event);
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
