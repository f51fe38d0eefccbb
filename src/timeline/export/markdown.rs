//! Markdown in the PM-003 postmortem shape: header table, timeline table,
//! steps taken with their diffs, an empty Action Items table.

use std::fmt::Write;

use super::{chronological, describe, diff, skipped_notice, step_histories, time_cell, utc_date};
use crate::timeline::event::{Entry, Milestone};
use crate::timeline::figures::Figures;
use crate::timeline::read::JournalContents;

/// Renders the postmortem Markdown.
pub fn markdown(contents: &JournalContents) -> String {
    let figures = Figures::from_events(&contents.events);
    let events = chronological(&contents.events);
    let date = figures.start().map(utc_date);
    let mut out = String::with_capacity(256 + contents.events.len() * 96);

    let heading = match (&figures.title, &figures.id) {
        (Some(title), _) => title.clone(),
        (None, Some(id)) => format!("Incident {id}"),
        (None, None) => "Incident".to_string(),
    };
    let _ = writeln!(out, "# Postmortem: {}\n", cell(&heading));
    out.push_str("| Field | Value |\n|---|---|\n");
    let rows = [
        ("ID", figures.id.clone().unwrap_or_else(|| "—".into())),
        (
            "Date",
            date.map(|d| d.to_string()).unwrap_or_else(|| "—".into()),
        ),
        (
            "Severity",
            figures.severity.clone().unwrap_or_else(|| "—".into()),
        ),
        ("Duration", figures.describe_duration()),
        (
            "Time to Detect",
            figures.describe(figures.time_to_detect.as_ref(), Milestone::Detected),
        ),
        (
            "Time to Mitigate",
            figures.describe(figures.time_to_mitigate.as_ref(), Milestone::Mitigated),
        ),
    ];
    for (field, value) in rows {
        let _ = writeln!(out, "| {field} | {} |", cell(&value));
    }

    match date {
        Some(d) => {
            let _ = writeln!(out, "\n## Timeline (All times UTC, {d} unless dated)\n");
        }
        None => out.push_str("\n## Timeline (All times UTC)\n\n"),
    }
    out.push_str("| Time | Event |\n|---|---|\n");
    let mut severity: Option<&str> = None;
    for event in &events {
        let Some(text) = describe(event, severity) else {
            continue;
        };
        if let Entry::Severity(s) = &event.entry {
            severity = Some(&s.severity);
        }
        let text = match &event.entry {
            Entry::Milestone(_) | Entry::Severity(_) => format!("**{}**", cell(&text)),
            _ => cell(&text),
        };
        let _ = writeln!(
            out,
            "| {} | {} — {} |",
            time_cell(event.at, date),
            text,
            cell(&event.actor)
        );
    }

    out.push_str("\n## Steps Taken\n\n");
    let steps = step_histories(&events);
    if steps.is_empty() {
        out.push_str("No playbook steps were recorded.\n");
    }
    for (n, step) in steps.iter().enumerate() {
        let s = step.first;
        let _ = writeln!(
            out,
            "### {}. {} — {} {} (playbook {}, run {})\n",
            n + 1,
            cell(&s.step),
            cell(&s.kind),
            cell(&s.target.to_string()),
            cell(&s.playbook),
            cell(&s.run_id)
        );
        out.push_str("| Time | Phase | By | Message |\n|---|---|---|---|\n");
        for (event, report) in &step.phases {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                time_cell(event.at, date),
                report.phase,
                cell(&event.actor),
                cell(report.message.as_deref().unwrap_or(""))
            );
        }
        for (label, report) in [("Change", step.change()), ("Undo", step.undo())] {
            let Some(report) = report else { continue };
            let lines = diff(&report.before, &report.after);
            if lines.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{label} ({}):\n\n```diff", report.phase);
            for line in lines {
                let _ = writeln!(
                    out,
                    "{} {}: {}",
                    line.sign,
                    line.path.replace("```", "'''"),
                    line.value.replace("```", "'''")
                );
            }
            out.push_str("```\n");
        }
        out.push('\n');
    }

    while out.ends_with("\n\n") {
        out.pop();
    }
    out.push_str("\n## Action Items\n\n");
    out.push_str("| ID | Action | Priority | Owner | Status | Due Date |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    out.push_str("| | | | | | |\n");

    if let Some(notice) = skipped_notice(contents) {
        let _ = writeln!(out, "\n> {notice}");
    }
    out
}

/// Text safe inside a Markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
