//! Markdown in the PM-003 postmortem shape: the header table, executive
//! summary, timeline of decisions and changes, impact, root cause,
//! detection, response (the changes made, each once) and action items.
//! What the journal knows is filled in; what a person must write is a
//! visible `_(to be written: …)_` placeholder.
//!
//! Every piece of journal text is escaped for Markdown and for HTML (a
//! `<script>` in a note stays text), as the HTML export escapes it.

use std::io::{self, Write};

use super::{RowSource, Surveyed, diff, time_cell, utc_date};
use crate::timeline::event::{Entry, Milestone};
use crate::timeline::figures::human_duration;

/// A placeholder for what a person must write.
fn todo(what: &str) -> String {
    format!("_(to be written: {what})_")
}

/// Writes the postmortem Markdown.
pub(super) fn write(
    mut survey: Surveyed,
    source: &dyn RowSource,
    out: &mut dyn Write,
) -> io::Result<()> {
    let figures = &survey.figures;
    let date = figures.start().map(utc_date);

    writeln!(out, "# Postmortem: {}\n", cell(&survey.heading()))?;
    out.write_all(b"| Field | Value |\n|---|---|\n")?;
    for (field, value) in survey.header_rows() {
        writeln!(out, "| {field} | {} |", cell(&value))?;
    }
    for field in ["Customer Impact", "Postmortem Author"] {
        writeln!(out, "| {field} | {} |", todo(&field.to_lowercase()))?;
    }

    out.write_all(b"\n## Executive Summary\n\n")?;
    writeln!(
        out,
        "{}\n",
        todo("what happened, to whom, for how long, and how it was stopped")
    )?;
    writeln!(out, "Recorded: {}", cell(&summary(&survey)))?;

    match date {
        Some(d) => writeln!(out, "\n## Timeline (All times UTC, {d} unless dated)\n")?,
        None => out.write_all(b"\n## Timeline (All times UTC)\n\n")?,
    }
    out.write_all(b"| Time | Event |\n|---|---|\n")?;
    let mut rows = 0usize;
    survey.each_row(source, &mut |event, text| {
        rows += 1;
        let text = match &event.entry {
            Entry::Milestone(_) | Entry::Severity(_) => format!("**{}**", cell(text)),
            _ => cell(text),
        };
        writeln!(
            out,
            "| {} | {} — {} |",
            time_cell(event.at, date),
            text,
            cell(&event.actor)
        )
    })?;
    if rows == 0 {
        out.write_all(b"| | No events were recorded. |\n")?;
    }

    out.write_all(b"\n## Impact\n\n### Customer Impact\n\n")?;
    writeln!(
        out,
        "{}\n",
        todo("who was affected, how many, and how visibly")
    )?;
    let p = &survey.peaks;
    if p.snapshots > 0 {
        out.write_all(b"### Measured\n\n")?;
        if let Some((v, at)) = p.collisions {
            writeln!(
                out,
                "- Lock collisions peaked at {} / min at {}.",
                super::trim_float(v),
                time_cell(at, date)
            )?;
        }
        if let Some((v, at)) = p.errors {
            writeln!(
                out,
                "- Errors peaked at {} / min at {}.",
                super::trim_float(v),
                time_cell(at, date)
            )?;
        }
        if let Some((v, at)) = p.holders {
            writeln!(
                out,
                "- At most {v} concurrent holder(s) of one lock key ({}).",
                time_cell(at, date)
            )?;
        }
        if let Some(n) = p.fencing_rejections.filter(|n| *n > 0) {
            writeln!(out, "- {n} write(s) refused by fencing.")?;
        }
        if let (Some(first), Some(last)) = (p.first, p.last) {
            writeln!(
                out,
                "- From {} metric snapshot(s), {} to {}.",
                p.snapshots,
                time_cell(first, date),
                time_cell(last, date)
            )?;
        }
        out.write_all(b"\n")?;
    }
    writeln!(out, "### Internal Impact\n\n{}\n", todo("people and hours"))?;
    writeln!(
        out,
        "### Data Impact\n\n{}",
        todo("what data was damaged and how it was repaired")
    )?;

    out.write_all(b"\n## Root Cause\n\n")?;
    writeln!(
        out,
        "### What Happened (Technical)\n\n{}\n",
        todo("the mechanism")
    )?;
    writeln!(
        out,
        "### Contributing Factors\n\n{}",
        todo("what made it possible or worse")
    )?;

    out.write_all(b"\n## Detection\n\n### How We Detected\n\n")?;
    for line in detection(&survey) {
        writeln!(out, "- {}", cell(&line))?;
    }
    writeln!(
        out,
        "\n### Why We Didn't Detect Sooner\n\n{}",
        todo("what would have caught it earlier")
    )?;

    out.write_all(b"\n## Response\n\n### Changes Made\n\n")?;
    let mut changes = 0usize;
    for (n, step) in survey.changes() {
        changes += 1;
        let Some(s) = step.first() else { continue };
        writeln!(
            out,
            "#### {n}. {} — {} {} (playbook {}, run {})\n",
            cell(&s.step),
            cell(&s.kind),
            cell(&s.target.to_string()),
            cell(&s.playbook),
            cell(&s.run_id)
        )?;
        out.write_all(b"| Time | Phase | By | Message |\n|---|---|---|---|\n")?;
        for (event, report) in step.reports() {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                time_cell(event.at, date),
                report.phase,
                cell(&event.actor),
                cell(report.message.as_deref().unwrap_or(""))
            )?;
        }
        for (label, report) in [("Change", step.change()), ("Undo", step.undo())] {
            let Some(report) = report else { continue };
            let lines = diff(&report.before, &report.after);
            if lines.is_empty() {
                continue;
            }
            writeln!(out, "\n{label} ({}):\n\n```diff", report.phase)?;
            for line in lines {
                writeln!(
                    out,
                    "{} {}: {}",
                    line.sign,
                    fenced(&line.path),
                    fenced(&line.value)
                )?;
            }
            out.write_all(b"```\n")?;
        }
        out.write_all(b"\n")?;
    }
    if changes == 0 {
        out.write_all(b"No playbook step changed anything.\n\n")?;
    }
    let not_run = survey.not_run();
    if !not_run.is_empty() {
        let names: Vec<String> = not_run
            .iter()
            .filter_map(|s| {
                let first = s.first()?;
                let last = s.reports().last().map(|(_, r)| r.phase)?;
                Some(format!("{} ({}, last {last})", first.step, first.playbook))
            })
            .collect();
        writeln!(
            out,
            "Planned but not applied (not changes): {}.\n",
            cell(&names.join("; "))
        )?;
    }
    writeln!(out, "### What Went Well\n\n{}\n", todo("what helped"))?;
    writeln!(out, "### What Went Poorly\n\n{}", todo("what hindered"))?;

    out.write_all(b"\n## Action Items\n\n")?;
    out.write_all(b"| ID | Action | Priority | Owner | Status | Due Date |\n")?;
    out.write_all(b"|---|---|---|---|---|---|\n")?;
    writeln!(out, "| AI-001 | {} | | | | |", todo("action"))?;

    if let Some(notice) = survey.skipped_notice() {
        writeln!(out, "\n> {}", cell(&notice))?;
    }
    survey.rows.clear();
    Ok(())
}

/// One sentence of what the journal recorded, for the summary.
fn summary(survey: &Surveyed) -> String {
    let f = &survey.figures;
    let mut parts = Vec::new();
    let mut what = String::new();
    if let Some(sev) = f.peak_severity.as_ref().or(f.severity.as_ref()) {
        what.push_str(sev);
        what.push(' ');
    }
    what.push_str("incident");
    if let Some(id) = &f.id {
        what.push(' ');
        what.push_str(id);
    }
    match f.milestones.get(&Milestone::Started) {
        Some(at) => what.push_str(&format!(
            ", started {} UTC",
            time_cell(*at, Some(utc_date(*at)))
        )),
        None => what.push_str(" (no started milestone)"),
    }
    parts.push(what);
    if let Some(i) = &f.time_to_detect {
        parts.push(format!("{} after {}", i.to, human_duration(i.millis)));
    }
    if let Some(i) = &f.time_to_mitigate {
        parts.push(format!("{} after {}", i.to, human_duration(i.millis)));
    }
    match &f.duration {
        Some(d) => parts.push(format!("resolved after {}", human_duration(d.millis))),
        None if f.ongoing => parts.push("not resolved yet".into()),
        None => {}
    }
    let changes = survey.changes().count();
    parts.push(format!("{changes} change(s) made by playbook steps"));
    format!("{}.", parts.join("; "))
}

/// What the journal says about detection: the first alert, and who marked
/// the incident detected when.
fn detection(survey: &Surveyed) -> Vec<String> {
    let f = &survey.figures;
    let date = f.start().map(utc_date);
    let started = f.milestones.get(&Milestone::Started).copied();
    let after = |at: jiff::Timestamp| match started {
        Some(s) => format!(
            " ({} after impact started)",
            human_duration(at.as_millisecond() - s.as_millisecond())
        ),
        None => String::new(),
    };
    let mut lines = Vec::new();
    if let Some((at, alert)) = &survey.first_alert {
        lines.push(format!(
            "First alert: {alert} fired at {}{}.",
            time_cell(*at, date),
            after(*at)
        ));
    }
    for m in [Milestone::Detected, Milestone::Declared] {
        if let Some(at) = f.milestones.get(&m) {
            lines.push(format!(
                "{} at {}{}.",
                if m == Milestone::Detected {
                    "Detected"
                } else {
                    "Declared"
                },
                time_cell(*at, date),
                after(*at)
            ));
        }
    }
    if lines.is_empty() {
        lines.push("No alert or detected milestone was recorded.".into());
    }
    lines.push(todo("how it was noticed, by whom, from which signal"));
    lines
}

/// Text safe inside a Markdown table cell or heading: one line, pipes
/// escaped, and HTML's special characters as entities, so nothing in a
/// note becomes markup.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("<br>"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Text inside a fenced code block: nothing there is markup, but a fence
/// must not end the block early.
fn fenced(text: &str) -> String {
    text.replace("```", "'''").replace(['\n', '\r'], " ")
}
