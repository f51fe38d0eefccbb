//! HTML export: one self-contained page (inline CSS and SVG, no scripts, no
//! network fetches) that reads well on screen and on paper.

use std::io::{self, Write};

use super::{RowSource, Surveyed, chart, diff, time_cell, utc_date};
use crate::timeline::event::Entry;

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

/// Writes the HTML page.
pub(super) fn write(
    mut survey: Surveyed,
    source: &dyn RowSource,
    out: &mut dyn Write,
) -> io::Result<()> {
    let date = survey.figures.start().map(utc_date);
    let heading = survey.heading();
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Postmortem: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&heading)
    )?;
    writeln!(out, "<h1>Postmortem: {}</h1>", esc(&heading))?;
    out.write_all(b"<table class=\"fields\">\n")?;
    for (field, value) in survey.header_rows() {
        writeln!(out, "<tr><th>{field}</th><td>{}</td></tr>", esc(&value))?;
    }
    out.write_all(b"</table>\n")?;
    if let Some(notice) = survey.skipped_notice() {
        writeln!(out, "<p class=\"notice\">{}</p>", esc(&notice))?;
    }

    out.write_all(b"<h2>Lock collisions and errors per minute</h2>\n<figure>\n")?;
    let metric_count = survey.chart.metric_count();
    match chart::svg(&mut survey.chart, 1100, 440) {
        Ok(svg) => out.write_all(svg.as_bytes())?,
        Err(err) => write!(out, "<p>The chart could not be drawn: {}</p>", esc(&err))?,
    }
    writeln!(
        out,
        "\n<figcaption><span class=\"key\" style=\"border-color: {}\"></span>lock collisions / min (left axis) \
         <span class=\"key\" style=\"border-color: {}\"></span>errors / min (right axis). \
         From {metric_count} metric snapshot(s). Dashed lines: milestones. \
         Triangles: playbook steps applied (green) or failed/undone (orange), numbered as in Changes made.</figcaption>\n</figure>",
        chart::COLLISIONS_CSS,
        chart::ERRORS_CSS
    )?;

    match date {
        Some(d) => writeln!(out, "<h2>Timeline (all times UTC, {d} unless dated)</h2>")?,
        None => out.write_all(b"<h2>Timeline (all times UTC)</h2>\n")?,
    }
    out.write_all(b"<table class=\"timeline\">\n<tr><th>Time</th><th>Event</th></tr>\n")?;
    survey.each_row(source, &mut |event, text| {
        let class = match &event.entry {
            Entry::Milestone(_) | Entry::Severity(_) | Entry::Incident(_) => "milestone",
            Entry::Alert(_) => "alert",
            Entry::Step(_) => "step",
            _ => "note",
        };
        writeln!(
            out,
            "<tr class=\"{class}\"><td class=\"time\">{}</td><td>{} <span class=\"actor\">— {}</span></td></tr>",
            time_cell(event.at, date),
            esc(text),
            esc(&event.actor)
        )
    })?;
    out.write_all(b"</table>\n")?;

    out.write_all(b"<h2>Changes made</h2>\n")?;
    let mut changes = 0usize;
    for (n, step) in survey.changes() {
        changes += 1;
        let Some(s) = step.first() else { continue };
        writeln!(
            out,
            "<h3>{n}. {} — {} {} <span class=\"actor\">(playbook {}, run {})</span></h3>",
            esc(&s.step),
            esc(&s.kind),
            esc(&s.target.to_string()),
            esc(&s.playbook),
            esc(&s.run_id)
        )?;
        out.write_all(
            b"<table>\n<tr><th>Time</th><th>Phase</th><th>By</th><th>Message</th></tr>\n",
        )?;
        for (event, report) in step.reports() {
            writeln!(
                out,
                "<tr><td class=\"time\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                time_cell(event.at, date),
                report.phase,
                esc(&event.actor),
                esc(report.message.as_deref().unwrap_or(""))
            )?;
        }
        out.write_all(b"</table>\n")?;
        for (label, report) in [("Change", step.change()), ("Undo", step.undo())] {
            let Some(report) = report else { continue };
            let lines = diff(&report.before, &report.after);
            if lines.is_empty() {
                continue;
            }
            write!(
                out,
                "<p>{label} ({}):</p>\n<pre class=\"diff\">",
                report.phase
            )?;
            for line in lines {
                let class = if line.sign == '-' { "del" } else { "add" };
                writeln!(
                    out,
                    "<span class=\"{class}\">{} {}: {}</span>",
                    line.sign,
                    esc(&line.path),
                    esc(&line.value)
                )?;
            }
            out.write_all(b"</pre>\n")?;
        }
    }
    if changes == 0 {
        out.write_all(b"<p>No playbook step changed anything.</p>\n")?;
    }
    let not_run: Vec<String> = survey
        .not_run()
        .iter()
        .filter_map(|s| s.first().map(|f| format!("{} ({})", f.step, f.playbook)))
        .collect();
    if !not_run.is_empty() {
        writeln!(
            out,
            "<p>Planned but not applied (not changes): {}.</p>",
            esc(&not_run.join("; "))
        )?;
    }

    out.write_all(b"<h2>Action items</h2>\n<table>\n")?;
    out.write_all(
        b"<tr><th>ID</th><th>Action</th><th>Priority</th><th>Owner</th><th>Status</th><th>Due Date</th></tr>\n",
    )?;
    for _ in 0..3 {
        out.write_all(b"<tr><td>&nbsp;</td><td></td><td></td><td></td><td></td><td></td></tr>\n")?;
    }
    out.write_all(b"</table>\n</body>\n</html>\n")?;
    Ok(())
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
