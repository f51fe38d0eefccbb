//! Panels: pure functions of [`App`] that draw into a ratatui frame.
//!
//! Observe → orient → decide → act → record, top to bottom, left to
//! right: the lock chart and the errors chart, the cluster, the alerts
//! with the playbooks that answer them, the plan or run, the timeline.
//! Each panel says what state its source is in (live with the sample's
//! age, stale, down with the reason, no data yet); a chart never draws a
//! line through a gap; a panel too small for its content says so in one
//! line. Without colour (`NO_COLOR`) the symbols carry the meaning:
//! `●` firing/live, `○` pending, `✓` done, `✕` failed, `▶` running, `⚠`
//! warning.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Clear, Dataset, GraphType, Paragraph, Wrap};

use super::app::{App, Focus, Pending, View};
use super::store::{AlertState, RunState, SourceState, StepStatus, TimeSeries, lock_columns};

/// The smallest screen the console draws on.
pub const MIN_WIDTH: u16 = 40;
/// The smallest screen height the console draws on.
pub const MIN_HEIGHT: u16 = 10;

/// Draws the whole console.
pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        frame.render_widget(
            Paragraph::new(format!(
                "terminal too small: {}×{}, the console needs {MIN_WIDTH}×{MIN_HEIGHT}",
                area.width, area.height
            ))
            .wrap(Wrap { trim: true }),
            area,
        );
        return;
    }
    let large = area.width >= 120 && area.height >= 36;
    let [header, body, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, app, header, large);
    match app.view {
        View::Timeline => draw_timeline(frame, app, body),
        View::Playbooks => {
            let [list, plan] =
                Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)])
                    .areas(body);
            draw_playbooks(frame, app, list);
            draw_run(frame, app, plan);
        }
        View::Main if large => draw_large(frame, app, body),
        View::Main => draw_small(frame, app, body),
    }
    draw_status(frame, app, status);
    draw_keys(frame, app, keys, large);
    if app.help {
        draw_help(frame, app, area);
    }
    if app.popup.is_some() {
        draw_popup(frame, app, area);
    }
    if app.quitting.as_ref().is_some_and(|q| q.waiting) {
        draw_quitting(frame, app, area);
    }
}

/// The title of a list panel: its name, then the filter on it as k9s
/// shows it (`</text>`) with how many rows match.
fn list_title(app: &App, name: String, focus: Focus, shown: usize, total: usize) -> String {
    if app.filter_on(focus).is_none() {
        return name;
    }
    format!("{name} </{}> {shown}/{total}", truncate(&app.filter, 24))
}

fn draw_quitting(frame: &mut Frame, app: &App, area: Rect) {
    let Some(quitting) = &app.quitting else {
        return;
    };
    let left_s =
        ((super::app::QUIT_WAIT_MS - (app.now_ms - quitting.since_ms)).max(0) + 999) / 1_000;
    let mut lines = vec![
        Line::raw("The run was cancelled; waiting for its undo before leaving."),
        Line::raw(""),
    ];
    let applied = app.applied_steps();
    if applied.is_empty() {
        lines.push(Line::raw(
            "Waiting for the run to stop (nothing applied yet).",
        ));
    } else {
        lines.push(Line::raw("Waiting to put back:"));
        for step in applied {
            lines.push(Line::raw(format!(
                "  {} {}  {}",
                step_symbol(step.status).0,
                step.name,
                step.what
            )));
        }
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        format!(
            "leaving in at most {left_s} s; what is left then is printed with its undo command"
        ),
        dim(app),
    ));
    let width = (area.width.saturating_sub(4)).min(90);
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(" Quitting ")
                .border_style(fg(app, Color::Yellow)),
        ),
        rect,
    );
}

fn draw_large(frame: &mut Frame, app: &App, body: Rect) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
    let [locks, errors, cluster] = Layout::horizontal([
        Constraint::Percentage(38),
        Constraint::Percentage(32),
        Constraint::Percentage(30),
    ])
    .areas(top);
    draw_lock_chart(frame, app, locks);
    draw_error_chart(frame, app, errors);
    draw_cluster(frame, app, cluster);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(bottom);
    let [alerts, timeline] =
        Layout::vertical([Constraint::Percentage(35), Constraint::Percentage(65)]).areas(left);
    draw_alerts(frame, app, alerts);
    draw_timeline(frame, app, timeline);
    draw_run(frame, app, right);
}

fn draw_small(frame: &mut Frame, app: &App, body: Rect) {
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(body);
    let [chart, cluster] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
    if app.chart == 0 {
        draw_lock_chart(frame, app, chart);
    } else {
        draw_error_chart(frame, app, chart);
    }
    draw_cluster(frame, app, cluster);
    let [alerts, run] =
        Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    draw_alerts(frame, app, alerts);
    draw_run(frame, app, run);
}

/// A style with `color` unless colour is off.
fn fg(app: &App, color: Color) -> Style {
    if app.color {
        Style::default().fg(color)
    } else {
        Style::default()
    }
}

fn dim(app: &App) -> Style {
    if app.color {
        Style::default().add_modifier(Modifier::DIM)
    } else {
        Style::default()
    }
}

/// `1.2s`, `14s`, `3m`, `2h`.
pub fn age(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1_000.0)
    } else if ms < 120_000 {
        format!("{}s", ms / 1_000)
    } else if ms < 7_200_000 {
        format!("{}m", ms / 60_000)
    } else {
        format!("{}h", ms / 3_600_000)
    }
}

/// `HH:MM:SS`.
pub fn clock(ms: i64) -> String {
    let s = ms.max(0) / 1_000;
    format!("{:02}:{:02}:{:02}", s / 3_600, s / 60 % 60, s % 60)
}

fn source_span<'a>(app: &App, state: &SourceState, compact: bool) -> Span<'a> {
    match state {
        SourceState::Off => Span::styled("off", dim(app)),
        SourceState::NoData => Span::styled(
            if compact { "○" } else { "○ no data" },
            fg(app, Color::Yellow),
        ),
        SourceState::Live(ms) => Span::styled(
            if compact {
                "●".to_owned()
            } else {
                format!("● {}", age(*ms))
            },
            fg(app, Color::Green),
        ),
        SourceState::Stale(ms) => Span::styled(
            if compact {
                format!("◐{}", age(*ms))
            } else {
                format!("◐ stale {}", age(*ms))
            },
            fg(app, Color::Yellow).add_modifier(Modifier::DIM),
        ),
        SourceState::Down(reason, _) => Span::styled(
            if compact {
                "✕".to_owned()
            } else {
                format!("✕ down: {}", truncate(reason, 40))
            },
            fg(app, Color::Red),
        ),
    }
}

/// `text` as a span of at most `max` characters, borrowed when it fits.
fn fitted(text: &str, max: usize) -> Span<'_> {
    if text.len() <= max || text.chars().count() <= max {
        Span::raw(text)
    } else {
        Span::raw(truncate(text, max))
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect, large: bool) {
    let store = &app.store;
    let incident = &store.incident;
    let since = |at: Option<i64>| match (incident.started_ms, at) {
        (Some(start), Some(at)) => clock(at - start),
        _ => "—".into(),
    };
    let mut spans = vec![
        Span::styled(
            if large { " warroom " } else { " " },
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(if incident.id.is_empty() {
            "no incident".to_owned()
        } else {
            incident.id.clone()
        }),
        Span::raw(" "),
        Span::styled(
            incident.severity.clone().unwrap_or_else(|| "SEV-?".into()),
            fg(app, Color::Red).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            " ⏱ {}",
            incident
                .started_ms
                .map(|s| clock(app.now_ms - s))
                .unwrap_or_else(|| "—".into())
        )),
    ];
    if large {
        spans.push(Span::raw(format!(
            "  TTD {}  TTM {}",
            since(incident.detected_ms),
            since(incident.mitigated_ms)
        )));
    }
    spans.push(Span::raw(if large { "  ctx " } else { " " }));
    spans.push(Span::styled(
        store.context.clone(),
        Style::default().add_modifier(Modifier::BOLD),
    ));
    if app.guard.read_only {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            "[READ-ONLY]",
            fg(app, Color::Yellow).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    } else if app.guard.typed_confirmation {
        spans.push(Span::raw(" "));
        spans.push(Span::styled(
            "[PRODUCTION]",
            fg(app, Color::Red).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    for source in [
        &store.exporter,
        &store.prometheus,
        &store.cluster_source,
        &store.timeline_source,
    ] {
        let state = app.source_state(source);
        if state == SourceState::Off && !large {
            continue;
        }
        let name = if large {
            source.name
        } else {
            match source.name {
                "exporter" => "exp",
                "prometheus" => "prom",
                "cluster" => "k8s",
                _ => "tl",
            }
        };
        spans.push(Span::raw(if large {
            format!("  {name} ")
        } else {
            format!(" {name}")
        }));
        spans.push(source_span(app, &state, !large));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A panel's block: its title and its source's state.
fn block<'a>(app: &App, title: String, state: Option<&SourceState>, focused: bool) -> Block<'a> {
    let mut title_spans = vec![Span::raw(format!(" {title} "))];
    if let Some(state) = state {
        title_spans.push(source_span(app, state, title.chars().count() > 30));
        title_spans.push(Span::raw(" "));
    }
    let border = if focused {
        fg(app, Color::Cyan)
    } else {
        Style::default()
    };
    Block::bordered()
        .title(Line::from(title_spans))
        .border_style(border)
}

/// Says a panel is too small, in one line, if it is.
fn too_small(frame: &mut Frame, inner: Rect, width: u16, height: u16) -> bool {
    if inner.width >= width && inner.height >= height {
        return false;
    }
    if inner.width > 0 && inner.height > 0 {
        frame.render_widget(
            Paragraph::new(truncate("panel too small", inner.width as usize)),
            Rect { height: 1, ..inner },
        );
    }
    true
}

/// Points of one unbroken stretch of a chart line.
pub type Segment = Vec<(f64, f64)>;

/// One column of a series over a window, bucketed to the panel's width.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartLine {
    /// The latest row's time: x is in seconds from it (negative: older).
    pub anchor_ms: i64,
    /// Unbroken stretches, split at gaps.
    pub segments: Vec<Segment>,
    /// The largest value (0 when none).
    pub max: f64,
}

/// Points of one column over the last `window_s` before its latest row,
/// bucketed to `buckets` (the largest value in each; buckets on a fixed
/// time grid, so a new sample moves nothing already drawn), split at gaps.
/// x is in seconds from the latest row, never after it.
pub fn segments(
    series: &TimeSeries,
    column: usize,
    window_s: i64,
    buckets: usize,
    interval_ms: i64,
) -> ChartLine {
    let anchor = series.latest_time().unwrap_or(0);
    let window_ms = window_s.max(1) * 1_000;
    let buckets = buckets
        .min((window_ms / interval_ms.max(1)) as usize)
        .max(1);
    let width_ms = window_ms as f64 / buckets as f64;
    // One bucket more than the window: the left edge moves with the clock.
    let from = anchor - window_ms - width_ms.ceil() as i64;
    let mut out = Vec::new();
    let mut current: Segment = Vec::new();
    let mut current_bucket = i64::MIN;
    let mut max: f64 = 0.0;
    for (t, v) in series.rows(column, from, anchor) {
        if v.is_nan() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            current_bucket = i64::MIN;
            continue;
        }
        if v.is_finite() {
            max = max.max(v);
        }
        let bucket = (t as f64 / width_ms).floor() as i64;
        if bucket == current_bucket
            && let Some(last) = current.last_mut()
        {
            last.1 = last.1.max(v);
            continue;
        }
        let center = (bucket as f64 + 0.5) * width_ms;
        let x = (center.min(anchor as f64) - anchor as f64) / 1_000.0;
        current.push((x, v));
        current_bucket = bucket;
    }
    if !current.is_empty() {
        out.push(current);
    }
    ChartLine {
        anchor_ms: anchor,
        segments: out,
        max,
    }
}

/// Which chart line a cache entry is, and what it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ChartKey {
    chart: &'static str,
    column: usize,
    window_s: i64,
    buckets: usize,
    generation: u64,
}

/// Chart lines downsampled to their panel's width: computed once per new
/// sample (or new window or width), not once per frame.
#[derive(Debug, Default)]
pub struct ChartCache {
    entries: Vec<(ChartKey, ChartLine)>,
    computed: u64,
}

impl ChartCache {
    /// How many lines were computed so far (the rest were reused).
    pub fn computed(&self) -> u64 {
        self.computed
    }

    fn refresh(&mut self, key: ChartKey, compute: impl FnOnce() -> ChartLine) {
        let same = |k: &ChartKey| {
            k.chart == key.chart
                && k.column == key.column
                && k.window_s == key.window_s
                && k.buckets == key.buckets
        };
        match self.entries.iter_mut().find(|(k, _)| same(k)) {
            Some((k, _)) if *k == key => {}
            Some(entry) => {
                *entry = (key, compute());
                self.computed += 1;
            }
            None => {
                self.entries.push((key, compute()));
                self.computed += 1;
            }
        }
    }

    fn get(&self, key: &ChartKey) -> Option<&ChartLine> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, l)| l)
    }
}

fn window_label(s: i64) -> String {
    if s >= 60 {
        format!("-{}m", s / 60)
    } else {
        format!("-{s}s")
    }
}

struct Line4<'a> {
    name: &'a str,
    column: usize,
    color: Color,
    marker: Marker,
}

#[allow(clippy::too_many_arguments)]
fn draw_chart(
    frame: &mut Frame,
    app: &App,
    area: Rect,
    chart: &'static str,
    title: String,
    series: &TimeSeries,
    lines: &[Line4],
    threshold: Option<f64>,
) {
    let state = app.source_state(&app.store.exporter);
    let block = block(app, title, Some(&state), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 20, 5) {
        return;
    }
    let window_ms = app.window_s * 1_000;
    let from = app.now_ms - window_ms;
    if !series.any_in(from, app.now_ms) {
        let text = match &state {
            SourceState::Down(reason, _) => format!("no samples: {}", truncate(reason, 60)),
            _ => format!(
                "no data in the last {}",
                window_label(app.window_s).trim_start_matches('-')
            ),
        };
        frame.render_widget(
            Paragraph::new(text)
                .alignment(Alignment::Center)
                .style(dim(app)),
            Rect {
                y: inner.y + inner.height / 2,
                height: 1,
                ..inner
            },
        );
        return;
    }
    let [inner, legend] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(inner);
    let mut fitting = Vec::with_capacity(lines.len() * 2 + 3);
    let mut used = 0;
    let threshold_label = threshold.map(|t| format!("line {t:.0}"));
    let entries = lines.iter().map(|l| (fg(app, l.color), l.name)).chain(
        threshold_label
            .as_deref()
            .map(|label| (fg(app, Color::Yellow), label)),
    );
    for (i, (style, name)) in entries.enumerate() {
        let (mark, gap) = if i == lines.len() {
            ("┄ ", "")
        } else {
            ("━ ", "  ")
        };
        let len = 2 + name.chars().count() + gap.len();
        if used + len > legend.width as usize {
            fitting.push(Span::raw("…"));
            break;
        }
        used += len;
        fitting.push(Span::styled(mark, style));
        fitting.push(Span::raw(name));
        if !gap.is_empty() {
            fitting.push(Span::raw(gap));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(fitting)), legend);
    let buckets = (inner.width as usize).saturating_sub(6) * 2;
    let interval = app.store.exporter.poll_ms;
    let key = |column| ChartKey {
        chart,
        column,
        window_s: app.window_s,
        buckets,
        generation: series.generation(),
    };
    {
        let mut cache = app.chart_cache.borrow_mut();
        for line in lines {
            cache.refresh(key(line.column), || {
                segments(series, line.column, app.window_s, buckets, interval)
            });
        }
    }
    let cache = app.chart_cache.borrow();
    let mut max = threshold.map_or(1.0, |t| t * 1.2);
    let mut anchor = app.now_ms;
    let mut datasets = Vec::new();
    for line in lines {
        let Some(computed) = cache.get(&key(line.column)) else {
            continue;
        };
        anchor = computed.anchor_ms;
        max = max.max(computed.max * 1.1);
        for seg in &computed.segments {
            datasets.push(
                Dataset::default()
                    .marker(line.marker)
                    .graph_type(GraphType::Line)
                    .style(fg(app, line.color))
                    .data(seg),
            );
        }
    }
    // x is in seconds from the latest sample: the window ends now.
    let left = (from - anchor) as f64 / 1_000.0;
    let right = (app.now_ms - anchor) as f64 / 1_000.0;
    let threshold_points = threshold.map(|t| [(left, t), (right, t)]);
    if let Some(points) = &threshold_points {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(fg(app, Color::Yellow))
                .data(points),
        );
    }
    let short = inner.height < 6;
    let x_labels: Vec<Line> = if short {
        Vec::new()
    } else {
        vec![Line::from(window_label(app.window_s)), Line::from("now")]
    };
    let chart = Chart::new(datasets)
        .x_axis(Axis::default().bounds([left, right]).labels(x_labels))
        .y_axis(
            Axis::default()
                .bounds([0.0, max])
                .labels(vec![Line::from("0"), Line::from(format!("{max:.0}"))]),
        )
        .legend_position(None);
    frame.render_widget(chart, inner);
}

fn draw_lock_chart(frame: &mut Frame, app: &App, area: Rect) {
    let now = app
        .store
        .reading
        .as_ref()
        .map(|r| {
            format!(
                " · {:.0}/min, {} holders",
                r.collisions_per_min, r.holders_max
            )
        })
        .unwrap_or_default();
    draw_chart(
        frame,
        app,
        area,
        "locks",
        format!(
            "Lock collisions {}{now}",
            window_label(app.window_s).trim_start_matches('-')
        ),
        &app.store.locks,
        &[
            Line4 {
                name: "collisions",
                column: lock_columns::COLLISIONS,
                color: Color::Red,
                marker: Marker::Braille,
            },
            Line4 {
                name: "holders",
                column: lock_columns::HOLDERS,
                color: Color::Magenta,
                marker: Marker::Braille,
            },
            Line4 {
                name: "overruns",
                column: lock_columns::OVERRUNS,
                color: Color::Yellow,
                marker: Marker::Braille,
            },
            Line4 {
                name: "rejections",
                column: lock_columns::REJECTIONS,
                color: Color::Cyan,
                marker: Marker::Braille,
            },
        ],
        None,
    );
}

fn draw_error_chart(frame: &mut Frame, app: &App, area: Rect) {
    let now = app
        .store
        .reading
        .as_ref()
        .map(|r| format!(" · {:.0}/min", r.errors_per_min))
        .unwrap_or_default();
    draw_chart(
        frame,
        app,
        area,
        "errors",
        format!(
            "Errors / min · AI-004 ≥ {:.0}{now}",
            app.store.error_threshold
        ),
        &app.store.errors,
        &[Line4 {
            name: "errors/min",
            column: 0,
            color: Color::Red,
            marker: Marker::Braille,
        }],
        Some(app.store.error_threshold),
    );
}

fn draw_cluster(frame: &mut Frame, app: &App, area: Rect) {
    let state = app.source_state(&app.store.cluster_source);
    let block = block(app, "Cluster".into(), Some(&state), false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 16, 1) {
        return;
    }
    let Some(view) = &app.store.cluster else {
        let text = match &state {
            SourceState::Down(reason, _) => format!("cannot read: {reason}"),
            _ => "no data yet".into(),
        };
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .style(dim(app)),
            inner,
        );
        return;
    };
    let stale = matches!(state, SourceState::Stale(_) | SourceState::Down(..));
    let base = if stale { dim(app) } else { Style::default() };
    let mut lines = Vec::new();
    lines.push(match &view.deployment {
        Some(d) => {
            let ok = d.ready == d.desired;
            Line::from(vec![
                Span::raw("order-service  "),
                Span::styled(
                    format!("{}/{} ready", d.ready, d.desired),
                    fg(app, if ok { Color::Green } else { Color::Yellow }),
                ),
                Span::raw(if ok { "" } else { " ▶" }),
            ])
        }
        None => Line::from(Span::styled(
            "order-service  ⚠ missing",
            fg(app, Color::Red),
        )),
    });
    lines.push(Line::from(format!(
        "gateway limit  {}",
        match (&view.gateway_limit, view.ingress_found) {
            (Some(limit), _) => format!("{limit} rps"),
            (None, true) => "— (none)".into(),
            (None, false) => "⚠ ingress missing".into(),
        }
    )));
    lines.push(match view.lock_mode.as_deref() {
        Some("legacy") => Line::from(vec![
            Span::raw("lock mode      "),
            Span::styled("legacy ⚠", fg(app, Color::Yellow)),
        ]),
        Some(mode) => Line::from(format!("lock mode      {mode}")),
        None => Line::from("lock mode      ⚠ configmap missing"),
    });
    lines.push(Line::from(format!(
        "run lease      {}",
        truncate(
            view.lease_holder.as_deref().unwrap_or("free"),
            (inner.width as usize).saturating_sub(15)
        )
    )));
    frame.render_widget(Paragraph::new(lines).style(base), inner);
}

fn draw_alerts(frame: &mut Frame, app: &App, area: Rect) {
    let focused = app.focus == Focus::Alerts;
    let store = &app.store;
    let visible = app.visible_alerts();
    let name = if store.alerts_from_prometheus {
        "Alerts · prometheus".to_owned()
    } else {
        "Alerts".to_owned()
    };
    let title = list_title(app, name, Focus::Alerts, visible.len(), store.alerts.len());
    let state = store
        .alerts_from_prometheus
        .then(|| app.source_state(&store.alerts_source));
    let block = block(app, title, state.as_ref(), focused);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 16, 1) {
        return;
    }
    let mut lines = Vec::new();
    match &state {
        Some(SourceState::NoData) => {
            lines.push(Line::styled("no answer from Prometheus yet", dim(app)))
        }
        Some(SourceState::Down(reason, _)) if store.alerts.is_empty() => lines.push(Line::styled(
            format!("Prometheus alerts unavailable: {reason}"),
            dim(app),
        )),
        None if store.reading.is_none() => {
            lines.push(Line::styled("no readings yet", dim(app)));
        }
        _ if store.alerts.is_empty() => {
            lines.push(Line::styled("✓ nothing firing", fg(app, Color::Green)));
        }
        _ if visible.is_empty() => {
            lines.push(Line::styled(
                "no alert matches the filter (esc clears it)",
                dim(app),
            ));
        }
        _ => {}
    }
    for i in visible {
        let alert = &store.alerts[i];
        let (symbol, color, word) = match alert.state {
            AlertState::Firing => ("●", Color::Red, "firing"),
            AlertState::Pending => ("○", Color::Yellow, "pending"),
        };
        let selected = focused && i == app.alert_selected;
        let mut style = fg(app, color);
        if selected {
            style = style.add_modifier(Modifier::REVERSED);
        }
        let head = format!("{symbol} {}", alert.name);
        let room = (inner.width as usize).saturating_sub(head.chars().count());
        lines.push(Line::from(vec![
            Span::styled(head, style),
            Span::raw(truncate(
                &format!(
                    "  {word} {}  {}",
                    // Prometheus gave no readable activeAt: no age rather
                    // than the time since 1970.
                    if alert.since_ms > 0 {
                        clock(app.now_ms - alert.since_ms)
                    } else {
                        "—".to_owned()
                    },
                    alert.detail
                ),
                room,
            )),
        ]));
        let answers = store.playbooks_for(&alert.name);
        lines.push(Line::styled(
            match answers.first() {
                Some(p) => format!("  → {} (enter plan, r run, d dry-run)", p.name),
                None => "  → no playbook answers it".to_owned(),
            },
            dim(app),
        ));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn step_symbol(status: StepStatus) -> (&'static str, Color) {
    match status {
        StepStatus::Planned => (" ", Color::Reset),
        StepStatus::Running => ("▶", Color::Yellow),
        StepStatus::Done => ("✓", Color::Green),
        StepStatus::Skipped => ("-", Color::Reset),
        StepStatus::Failed => ("✕", Color::Red),
        StepStatus::Undone => ("↶", Color::Yellow),
    }
}

fn draw_run(frame: &mut Frame, app: &App, area: Rect) {
    let store = &app.store;
    let title = match &store.run {
        None => "Playbook".to_owned(),
        Some(run) => {
            let answers: Vec<&str> = store
                .playbooks
                .iter()
                .find(|p| p.name == run.playbook)
                .map(|p| p.alerts.iter().map(String::as_str).take(1).collect())
                .unwrap_or_default();
            let state = match &run.state {
                RunState::Plan => "plan".to_owned(),
                RunState::DryRun => "dry run".to_owned(),
                RunState::Running => "▶ running".to_owned(),
                RunState::Ended { outcome, ok: true } => format!("✓ {outcome}"),
                RunState::Ended { outcome, ok: false } => format!("✕ {outcome}"),
            };
            format!(
                "Playbook · {}{} · {state}",
                run.playbook,
                answers
                    .first()
                    .map(|a| format!(" (answers {a})"))
                    .unwrap_or_default()
            )
        }
    };
    let block = block(app, title, None, false);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 20, 1) {
        return;
    }
    let Some(run) = &store.run else {
        let hint = match app.target_playbook() {
            Some(name) => format!("{name}: enter shows its plan, r runs it, d dry-runs it"),
            None => "no playbook: :playbooks lists them".into(),
        };
        frame.render_widget(Paragraph::new(hint).style(dim(app)), inner);
        return;
    };
    let mut lines = Vec::new();
    if let Some(id) = &run.run_id {
        lines.push(Line::styled(format!("run {id}"), dim(app)));
    }
    let width = inner.width as usize;
    for (i, step) in run.steps.iter().enumerate() {
        let (symbol, color) = step_symbol(step.status);
        let detail = if step.message.is_empty() || step.status == StepStatus::Planned {
            step.what.clone()
        } else {
            step.message.clone()
        };
        let head = format!("{symbol} {:>2} {:<8} ", i + 1, truncate(&step.kind, 8));
        let room = width.saturating_sub(head.chars().count());
        lines.push(Line::from(vec![
            Span::styled(head, fg(app, color)),
            Span::raw(truncate(&detail, room)),
        ]));
    }
    if !run.message.is_empty() {
        let ok = matches!(run.state, RunState::Ended { ok: true, .. });
        lines.push(Line::raw(""));
        lines.push(Line::styled(
            run.message.clone(),
            fg(app, if ok { Color::Green } else { Color::Red }),
        ));
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), inner);
}

fn draw_playbooks(frame: &mut Frame, app: &App, area: Rect) {
    let visible = app.visible_playbooks();
    let title = list_title(
        app,
        "Playbooks".into(),
        Focus::Playbooks,
        visible.len(),
        app.store.playbooks.len(),
    );
    let block = block(app, title, None, app.focus == Focus::Playbooks);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 16, 1) {
        return;
    }
    let mut lines = Vec::new();
    for &i in &visible {
        let playbook = &app.store.playbooks[i];
        let style = if i == app.selected {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        lines.push(Line::styled(playbook.name.clone(), style));
        if !playbook.alerts.is_empty() {
            lines.push(Line::styled(
                format!("  answers {}", playbook.alerts.join(", ")),
                dim(app),
            ));
        }
    }
    if lines.is_empty() {
        lines.push(Line::styled(
            if app.store.playbooks.is_empty() {
                "no playbooks found"
            } else {
                "no playbook matches the filter (esc clears it)"
            },
            dim(app),
        ));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn draw_timeline(frame: &mut Frame, app: &App, area: Rect) {
    let store = &app.store;
    let state = app.source_state(&store.timeline_source);
    let filter = app.filter_on(Focus::Timeline);
    let title = match filter {
        None => format!("Timeline · {} events", store.timeline_total),
        Some(f) => {
            let shown = store.timeline.iter().filter(|l| l.matches(f)).count();
            list_title(
                app,
                "Timeline".into(),
                Focus::Timeline,
                shown,
                store.timeline.len(),
            )
        }
    };
    let block = block(app, title, Some(&state), app.focus == Focus::Timeline);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if too_small(frame, inner, 20, 1) {
        return;
    }
    let rows = inner.height as usize;
    let width = inner.width as usize;
    let mut shown: Vec<Line> = store
        .timeline
        .iter()
        .rev()
        .filter(|l| filter.is_none_or(|f| l.matches(f)))
        .skip(app.scroll)
        .take(rows)
        .map(|l| {
            let room = width.saturating_sub(l.head.chars().count());
            Line::from(vec![
                Span::styled(l.head.as_str(), dim(app)),
                fitted(&l.text, room),
            ])
        })
        .collect();
    shown.reverse();
    if shown.is_empty() {
        shown.push(Line::styled(
            match &state {
                SourceState::Off => "no journal (give --timeline FILE)".to_owned(),
                SourceState::Down(reason, _) => format!("cannot read: {reason}"),
                _ if filter.is_some() && !store.timeline.is_empty() => {
                    "no event matches the filter (esc clears it)".to_owned()
                }
                _ => "no events yet".to_owned(),
            },
            dim(app),
        ));
    }
    frame.render_widget(Paragraph::new(shown), inner);
}

fn draw_status(frame: &mut Frame, app: &App, area: Rect) {
    let line = match (&app.input, &app.store.status) {
        (Some(input), _) => Line::from(vec![
            Span::styled(
                input.prompt.label(),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(input.text.clone()),
            Span::raw("▏"),
        ]),
        (None, Some(status)) => Line::from(Span::styled(status.clone(), fg(app, Color::Yellow))),
        (None, None) => Line::raw(""),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The key bar's entries: key and what it does.
pub const KEYS: [(&str, &str); 14] = [
    ("?", "help"),
    ("r", "run"),
    ("d", "dry-run"),
    ("c", "cancel"),
    ("u", "undo"),
    ("n", "note"),
    ("m", "milestone"),
    ("s", "severity"),
    ("e", "export"),
    (":", "command"),
    ("/", "filter"),
    ("tab", "focus"),
    ("+-", "zoom"),
    ("q", "quit"),
];

fn draw_keys(frame: &mut Frame, app: &App, area: Rect, large: bool) {
    let mut spans = Vec::new();
    if app.guard.read_only {
        spans.push(Span::styled(
            "READ-ONLY ",
            fg(app, Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    if large {
        for (key, what) in KEYS {
            spans.push(Span::styled(
                format!(" {key}"),
                Style::default().add_modifier(Modifier::BOLD),
            ));
            spans.push(Span::raw(format!(" {what} ")));
        }
    } else {
        spans.push(Span::styled(
            " ?",
            Style::default().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(" help "));
        spans.push(Span::styled(
            " q",
            Style::default().add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(" quit"));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// Splits `text` into lines of at most `width` characters, at spaces
/// where it can.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(8);
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            out.push(head);
        }
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_help(frame: &mut Frame, app: &App, area: Rect) {
    let mut lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, w)| Line::from(format!("{k:>5}  {w}")))
        .collect();
    lines.extend([
        Line::from("↑↓ jk  move in the focused list"),
        Line::from("enter  show the plan of the selected playbook"),
        Line::from("/  filter the focused list, esc clears it"),
        Line::from(":playbooks :timeline :main :ctx [NAME] :export md|html"),
        Line::styled("any key closes this help", dim(app)),
    ]);
    let rect = centered(area, 56, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help ")),
        rect,
    );
}

fn draw_popup(frame: &mut Frame, app: &App, area: Rect) {
    let Some(popup) = &app.popup else { return };
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![
            Span::raw("in "),
            Span::styled(popup.target.clone(), bold),
        ]),
        Line::raw(""),
    ];
    let room = (area.width.saturating_sub(6)).min(88) as usize;
    let wrapped: Vec<String> = popup.lines.iter().flat_map(|l| wrap(l, room)).collect();
    // Keep the buttons on screen: the plan is cut (and says so) first.
    let spare = (area.height as usize).saturating_sub(10);
    if wrapped.len() > spare {
        let cut = wrapped.len() - spare.saturating_sub(1);
        lines.extend(
            wrapped
                .iter()
                .take(spare.saturating_sub(1))
                .map(|l| Line::raw(l.clone())),
        );
        lines.push(Line::styled(
            format!("… {cut} more lines (the plan panel shows them all)"),
            dim(app),
        ));
    } else {
        lines.extend(wrapped.iter().map(|l| Line::raw(l.clone())));
    }
    lines.push(Line::raw(""));
    match &popup.typed {
        Some(word) => {
            lines.push(Line::from(vec![
                Span::raw("type "),
                Span::styled(word.clone(), bold),
                Span::raw(" and press enter, esc declines"),
            ]));
            lines.push(Line::from(vec![
                Span::raw("> "),
                Span::styled(popup.answer.clone(), bold),
                Span::raw("▏"),
            ]));
        }
        None => lines.push(Line::from(vec![
            Span::styled(
                "[ Cancel: esc/n ]",
                fg(app, Color::Green).add_modifier(Modifier::BOLD),
            ),
            Span::raw("   [ Confirm: y/enter ]"),
        ])),
    }
    if let Some(hint) = &popup.hint {
        lines.push(Line::styled(hint.clone(), fg(app, Color::Red)));
    }
    if matches!(popup.pending, Pending::Gate(_)) {
        lines.push(Line::styled(
            "declining stops the run and keeps what it applied",
            dim(app),
        ));
    }
    let width = (area.width.saturating_sub(4)).min(90);
    let rect = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::bordered()
                .title(format!(" {} ", popup.title))
                .border_style(fg(app, Color::Yellow)),
        ),
        rect,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gap_splits_the_line() {
        let mut series = TimeSeries::new(1, 1_000, 3_600_000);
        for s in [1, 2, 3, 7, 8] {
            series.push(s * 1_000, &[s as f64]);
        }
        let line = segments(&series, 0, 10, 10, 1_000);
        let segs = &line.segments;
        assert_eq!(segs.len(), 2, "{segs:?}");
        assert_eq!(segs[0].len(), 3);
        assert_eq!(segs[1].len(), 2);
        assert_eq!(line.anchor_ms, 8_000);
        assert_eq!(line.max, 8.0);
        // Nothing is drawn after the latest sample.
        assert!(segs[1].iter().all(|&(x, _)| x <= 0.0), "{segs:?}");
    }

    #[test]
    fn chart_lines_are_computed_once_per_new_sample_not_per_frame() {
        let mut store = crate::console::store::Store::new(1_000, 3_600_000);
        for s in 1..=600 {
            store.record_reading(s * 1_000, crate::console::store::Reading::default());
        }
        let mut app = App::new(store, crate::console::app::Guardrails::default(), false);
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(200, 60)).unwrap();
        let mut draw_at = |app: &App| terminal.draw(|frame| draw(frame, app)).map(|_| ());
        app.now_ms = 600_200;
        draw_at(&app).unwrap();
        let first = app.chart_cache.borrow().computed();
        assert_eq!(first, 5, "four lock lines and the error line");
        // Frames without a new sample reuse them, however the clock moves.
        for ms in [600_400, 600_700, 600_900] {
            app.now_ms = ms;
            draw_at(&app).unwrap();
        }
        assert_eq!(app.chart_cache.borrow().computed(), first);
        app.store
            .record_reading(601_000, crate::console::store::Reading::default());
        app.now_ms = 601_100;
        draw_at(&app).unwrap();
        assert_eq!(app.chart_cache.borrow().computed(), first + 5);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(age(200), "0.2s");
        assert_eq!(age(14_000), "14s");
        assert_eq!(age(180_000), "3m");
        assert_eq!(clock(872_000), "00:14:32");
    }
}
