//! HTML export: one self-contained page (inline CSS and SVG, no scripts, no
//! network fetches) that reads well on screen and on paper.

use std::fmt::Write;

use super::{
    chart, chronological, describe, diff, skipped_notice, step_histories, time_cell, utc_date,
};
use crate::timeline::event::{Entry, Milestone};
use crate::timeline::figures::Figures;
use crate::timeline::read::JournalContents;

const STYLE: &str = r#"
:root { color-scheme: light; }
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
       margin: 2rem auto; max-width: 1140px; padding: 0 1rem; color: #1d1d1f; line-height: 1.4; }
h1 { font-size: 1.7rem; margin-bottom: .6rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 1rem; }
th, td { border: 1px solid #d0d0d0; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
table.fields { width: auto; min-width: 28rem; }
table.fields th { width: 11rem; }
td.time { white-space: nowrap; font-variant-numeric: tabular-nums; width: 1%; }
tr.milestone td { font-weight: 600; background: #f7f7fb; }
tr.alert td { color: #8a1020; }
tr.step td { color: #145c2e; }
.actor { color: #666; }
figure { margin: .5rem 0 1rem; }
figure svg { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: .85rem; color: #555; }
.key { display: inline-block; width: 1.6rem; border-top: 3px solid; vertical-align: middle; margin: 0 .3rem 0 .6rem; }
pre.diff { background: #f8f8f8; border: 1px solid #e0e0e0; padding: .5rem; overflow-x: auto;
           white-space: pre-wrap; word-break: break-all; font-size: .85rem; }
.del { color: #a0101c; } .add { color: #0b6b2a; }
.notice { border-left: 4px solid #d08000; padding: .4rem .8rem; background: #fff7e6; }
@media print {
  body { margin: 0; max-width: none; font-size: 10.5pt; }
  h2 { break-after: avoid; }
  figure, tr, pre.diff, h3 { break-inside: avoid; }
  figure svg { border: none; }
  a { color: inherit; text-decoration: none; }
}
"#;

/// Renders the HTML page.
pub fn html(contents: &JournalContents) -> String {
    let figures = Figures::from_events(&contents.events);
    let events = chronological(&contents.events);
    let date = figures.start().map(utc_date);
    let mut out = String::with_capacity(64 * 1024 + contents.events.len() * 160);
    let heading = match (&figures.title, &figures.id) {
        (Some(title), _) => title.clone(),
        (None, Some(id)) => format!("Incident {id}"),
        (None, None) => "Incident".to_string(),
    };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Postmortem: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&heading)
    );
    let _ = writeln!(out, "<h1>Postmortem: {}</h1>", esc(&heading));
    out.push_str("<table class=\"fields\">\n");
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
        let _ = writeln!(out, "<tr><th>{field}</th><td>{}</td></tr>", esc(&value));
    }
    out.push_str("</table>\n");
    if let Some(notice) = skipped_notice(contents) {
        let _ = writeln!(out, "<p class=\"notice\">{}</p>", esc(&notice));
    }

    out.push_str("<h2>Lock collisions and errors per minute</h2>\n<figure>\n");
    match chart::svg(&events, 1100, 440) {
        Ok(svg) => out.push_str(&svg),
        Err(err) => {
            let _ = write!(out, "<p>The chart could not be drawn: {}</p>", esc(&err));
        }
    }
    let metric_count = events
        .iter()
        .filter(|e| matches!(e.entry, Entry::Metric(_)))
        .count();
    let _ = writeln!(
        out,
        "\n<figcaption><span class=\"key\" style=\"border-color: {}\"></span>lock collisions / min (left axis) \
         <span class=\"key\" style=\"border-color: {}\"></span>errors / min (right axis). \
         From {metric_count} metric snapshot(s). Dashed lines: milestones. \
         Triangles: playbook steps applied (green) or failed/undone (orange), numbered as in Steps taken.</figcaption>\n</figure>",
        chart::COLLISIONS_CSS,
        chart::ERRORS_CSS
    );

    match date {
        Some(d) => {
            let _ = writeln!(out, "<h2>Timeline (all times UTC, {d} unless dated)</h2>");
        }
        None => out.push_str("<h2>Timeline (all times UTC)</h2>\n"),
    }
    out.push_str("<table class=\"timeline\">\n<tr><th>Time</th><th>Event</th></tr>\n");
    let mut severity: Option<&str> = None;
    for event in &events {
        let Some(text) = describe(event, severity) else {
            continue;
        };
        if let Entry::Severity(s) = &event.entry {
            severity = Some(&s.severity);
        }
        let class = match &event.entry {
            Entry::Milestone(_) | Entry::Severity(_) | Entry::Incident(_) => "milestone",
            Entry::Alert(_) => "alert",
            Entry::Step(_) => "step",
            _ => "note",
        };
        let _ = writeln!(
            out,
            "<tr class=\"{class}\"><td class=\"time\">{}</td><td>{} <span class=\"actor\">— {}</span></td></tr>",
            time_cell(event.at, date),
            esc(&text),
            esc(&event.actor)
        );
    }
    out.push_str("</table>\n");

    out.push_str("<h2>Steps taken</h2>\n");
    let steps = step_histories(&events);
    if steps.is_empty() {
        out.push_str("<p>No playbook steps were recorded.</p>\n");
    }
    for (n, step) in steps.iter().enumerate() {
        let s = step.first;
        let _ = writeln!(
            out,
            "<h3>{}. {} — {} {} <span class=\"actor\">(playbook {}, run {})</span></h3>",
            n + 1,
            esc(&s.step),
            esc(&s.kind),
            esc(&s.target.to_string()),
            esc(&s.playbook),
            esc(&s.run_id)
        );
        out.push_str("<table>\n<tr><th>Time</th><th>Phase</th><th>By</th><th>Message</th></tr>\n");
        for (event, report) in &step.phases {
            let _ = writeln!(
                out,
                "<tr><td class=\"time\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time_cell(event.at, date),
                report.phase,
                esc(&event.actor),
                esc(report.message.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</table>\n");
        for (label, report) in [("Change", step.change()), ("Undo", step.undo())] {
            let Some(report) = report else { continue };
            let lines = diff(&report.before, &report.after);
            if lines.is_empty() {
                continue;
            }
            let _ = write!(
                out,
                "<p>{label} ({}):</p>\n<pre class=\"diff\">",
                report.phase
            );
            for line in lines {
                let class = if line.sign == '-' { "del" } else { "add" };
                let _ = writeln!(
                    out,
                    "<span class=\"{class}\">{} {}: {}</span>",
                    line.sign,
                    esc(&line.path),
                    esc(&line.value)
                );
            }
            out.push_str("</pre>\n");
        }
    }

    out.push_str("<h2>Action items</h2>\n<table>\n");
    out.push_str(
        "<tr><th>ID</th><th>Action</th><th>Priority</th><th>Owner</th><th>Status</th><th>Due Date</th></tr>\n",
    );
    for _ in 0..3 {
        out.push_str("<tr><td>&nbsp;</td><td></td><td></td><td></td><td></td><td></td></tr>\n");
    }
    out.push_str("</table>\n</body>\n</html>\n");
    out
}

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
