//! The HTML export's chart: collisions and errors per minute over time (from
//! `metric` events), with milestones and playbook steps marked, drawn by
//! plotters' SVG backend.

use jiff::Timestamp;
use plotters::prelude::*;

use crate::timeline::event::{Entry, Event, StepPhase, StepReport};

/// Largest number of points drawn per series; longer series are reduced to
/// the maximum of each bucket so spikes stay visible.
const MAX_POINTS: usize = 1200;

/// Largest rate (per minute) the chart draws; larger values are drawn at
/// this height. No real service sees a trillion lock collisions a minute,
/// and the axis arithmetic stays finite.
const MAX_RATE: f64 = 1e12;

const COLLISIONS: RGBColor = RGBColor(200, 30, 45);
const ERRORS: RGBColor = RGBColor(30, 90, 180);
const MILESTONE: RGBColor = RGBColor(60, 60, 60);
const STEP: RGBColor = RGBColor(20, 130, 60);
const STEP_FAILED: RGBColor = RGBColor(220, 120, 0);

/// Colour of the collisions series, as CSS, for the page's legend.
pub const COLLISIONS_CSS: &str = "#c81e2d";
/// Colour of the errors series, as CSS, for the page's legend.
pub const ERRORS_CSS: &str = "#1e5ab4";

/// Most metric buckets held while a journal is read: when there would be
/// more, buckets twice as wide replace them (each keeping its maximum), so a
/// journal of any length is drawn from a bounded number of points.
const MAX_BUCKETS: usize = 4 * MAX_POINTS;

/// What the chart draws, gathered while the journal is read: metric points
/// (at most [`MAX_BUCKETS`], each the maximum of its time bucket),
/// milestones and the steps that changed something.
#[derive(Debug)]
pub struct ChartData {
    /// Bucket (time / `width_ms`) → earliest time, largest rates.
    metrics: std::collections::BTreeMap<i64, (Timestamp, f64, f64)>,
    width_ms: i64,
    metric_count: usize,
    milestones: Vec<(Timestamp, String)>,
    steps: Vec<(Timestamp, String, StepPhase)>,
}

impl Default for ChartData {
    fn default() -> Self {
        Self {
            metrics: std::collections::BTreeMap::new(),
            width_ms: 1000,
            metric_count: 0,
            milestones: Vec::new(),
            steps: Vec::new(),
        }
    }
}

/// The later maximum of two rates; NaN (a rate no snapshot means) loses.
fn larger(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else {
        a.max(b)
    }
}

impl ChartData {
    /// Takes what the chart needs from one event (in any order); steps are
    /// added with [`ChartData::step`] once they are numbered.
    pub fn add(&mut self, event: &Event) {
        match &event.entry {
            Entry::Metric(m) => {
                self.metric_count += 1;
                self.put(
                    event.at,
                    chart_rate(m.collisions_per_min),
                    chart_rate(m.errors_per_min),
                );
                if self.metrics.len() > MAX_BUCKETS {
                    self.widen();
                }
            }
            Entry::Milestone(m) => self
                .milestones
                .push((event.at, m.milestone.name().to_string())),
            _ => {}
        }
    }

    /// A step event numbered `n` as in the steps section; only changes
    /// (applied, failed, undone) are marked.
    pub fn step(&mut self, at: Timestamp, n: usize, step: &StepReport) {
        if matches!(
            step.phase,
            StepPhase::Applied | StepPhase::Failed | StepPhase::Undone
        ) {
            self.steps
                .push((at, format!("{n}. {} {}", step.step, step.phase), step.phase));
        }
    }

    /// How many metric snapshots were seen.
    pub fn metric_count(&self) -> usize {
        self.metric_count
    }

    fn put(&mut self, at: Timestamp, c: f64, e: f64) {
        let bucket = at.as_millisecond().div_euclid(self.width_ms);
        let slot = self.metrics.entry(bucket).or_insert((at, c, e));
        slot.0 = slot.0.min(at);
        slot.1 = larger(slot.1, c);
        slot.2 = larger(slot.2, e);
    }

    /// Doubles the bucket width, merging neighbours, until few enough.
    fn widen(&mut self) {
        while self.metrics.len() > MAX_BUCKETS / 2 && self.width_ms < i64::MAX / 4 {
            self.width_ms *= 2;
            let old = std::mem::take(&mut self.metrics);
            for (at, c, e) in old.into_values() {
                self.put(at, c, e);
            }
        }
    }
}

/// Draws the chart as an `<svg>` element (without an XML namespace URL, so
/// the page holds no `http` address at all).
pub fn svg(data: &mut ChartData, width: u32, height: u32) -> Result<String, String> {
    data.milestones.sort_by_key(|m| m.0);
    data.steps.sort_by_key(|s| s.0);
    let metrics: Vec<(Timestamp, f64, f64)> = data.metrics.values().copied().collect();
    let (metrics, milestones, steps) = (&metrics, &data.milestones, &data.steps);
    let times = metrics
        .iter()
        .map(|m| m.0)
        .chain(milestones.iter().map(|m| m.0))
        .chain(steps.iter().map(|s| s.0));
    let (t0, t1) = match times.fold(None, |acc: Option<(Timestamp, Timestamp)>, t| {
        Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
    }) {
        Some(range) => range,
        None => {
            let now = Timestamp::UNIX_EPOCH;
            (now, now)
        }
    };
    let minutes = |t: Timestamp| (t.as_millisecond() - t0.as_millisecond()) as f64 / 60_000.0;
    let span = minutes(t1).max(1.0);
    let x_end = span * 1.02;

    let points = reduce(
        metrics
            .iter()
            .map(|(t, c, e)| (minutes(*t), *c, *e))
            .collect(),
        span,
    );
    let y1 = nice_max(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let y2 = nice_max(points.iter().map(|p| p.2).fold(0.0, f64::max));

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .margin_top(20)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .right_y_label_area_size(58)
            .build_cartesian_2d(0f64..x_end, 0f64..y1)
            .map_err(|e| e.to_string())?
            .set_secondary_coord(0f64..x_end, 0f64..y2);
        let label = |x: &f64| clock(t0, *x);
        chart
            .configure_mesh()
            .x_labels(10)
            .y_labels(6)
            .x_label_formatter(&label)
            .y_label_formatter(&|y: &f64| super::trim_float(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("time (UTC)")
            .y_desc("lock collisions / min")
            .max_light_lines(1)
            .light_line_style(RGBColor(240, 240, 240))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .configure_secondary_axes()
            .y_labels(6)
            .y_label_formatter(&|y: &f64| super::trim_float(*y))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .y_desc("errors / min")
            .draw()
            .map_err(|e| e.to_string())?;

        chart
            .draw_series(LineSeries::new(
                points.iter().filter(|p| !p.1.is_nan()).map(|p| (p.0, p.1)),
                COLLISIONS.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("lock collisions / min (left axis)")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], COLLISIONS.stroke_width(2))
            });
        chart
            .draw_secondary_series(LineSeries::new(
                points.iter().filter(|p| !p.2.is_nan()).map(|p| (p.0, p.2)),
                ERRORS.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?;

        // Milestones: dashed vertical lines labelled near the top.
        let text = ("sans-serif", 15).into_font().color(&MILESTONE);
        for (i, (t, name)) in milestones.iter().enumerate() {
            let x = minutes(*t);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, y1)],
                    6,
                    4,
                    MILESTONE.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            let y = y1 * (0.97 - 0.07 * (i % 3) as f64);
            let (dx, style) = anchored(x, x_end, 4, &text);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, y)) + Text::new(name.clone(), (dx, 0), style),
                ))
                .map_err(|e| e.to_string())?;
        }
        // Steps: dotted vertical lines with a numbered marker near the bottom.
        for (i, (t, label, phase)) in steps.iter().enumerate() {
            let x = minutes(*t);
            let color = if *phase == StepPhase::Applied {
                STEP
            } else {
                STEP_FAILED
            };
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x, 0.0), (x, y1 * 0.75)],
                    2,
                    3,
                    color.stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
            let y = y1 * (0.05 + 0.07 * (i % 4) as f64);
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, y),
                    6,
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            let style = ("sans-serif", 14).into_font().color(&color);
            let (dx, style) = anchored(x, x_end, 10, &style);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, y)) + Text::new(format!("step {label}"), (dx, 0), style),
                ))
                .map_err(|e| e.to_string())?;
        }

        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1))
}

/// Where a label goes beside its mark at `x`, `gap` pixels away: to the
/// right of it, or to the left when the mark is in the right third of the
/// chart (so the text is not cut off). Returns the pixel offset and style.
fn anchored<'a>(x: f64, x_end: f64, gap: i32, style: &TextStyle<'a>) -> (i32, TextStyle<'a>) {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let (dx, h) = if x > x_end * 0.66 {
        (-gap, HPos::Right)
    } else {
        (gap, HPos::Left)
    };
    (dx, style.pos(Pos::new(h, VPos::Center)))
}

/// Clock time (UTC) `x` minutes after `t0`: `09:41`.
fn clock(t0: Timestamp, x: f64) -> String {
    let ms = t0.as_millisecond() + (x * 60_000.0).round() as i64;
    match Timestamp::from_millisecond(ms) {
        Ok(t) => {
            let dt = t.to_zoned(jiff::tz::TimeZone::UTC).datetime();
            format!("{:02}:{:02}", dt.hour(), dt.minute())
        }
        Err(_) => String::new(),
    }
}

/// A rate as the chart draws it: NaN and infinities (which no snapshot
/// means) become NaN, which the series skip; the rest is held to
/// `0..=MAX_RATE`.
fn chart_rate(rate: f64) -> f64 {
    if rate.is_finite() {
        rate.clamp(0.0, MAX_RATE)
    } else {
        f64::NAN
    }
}

/// A round upper bound for an axis (at least 1); `max` itself when no
/// round bound above it is a finite number.
fn nice_max(max: f64) -> f64 {
    if max.is_nan() || max <= 0.0 {
        return 1.0;
    }
    if !max.is_finite() {
        return f64::MAX;
    }
    let target = max * 1.15;
    if !target.is_finite() {
        return max;
    }
    let magnitude = 10f64.powf(target.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|bound| *bound >= target)
        .filter(|bound| bound.is_finite())
        .unwrap_or(max)
}

/// Reduces a long series to at most MAX_POINTS buckets, keeping each
/// bucket's maximum of each series.
fn reduce(points: Vec<(f64, f64, f64)>, span: f64) -> Vec<(f64, f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let width = span / MAX_POINTS as f64;
    let mut out: Vec<(f64, f64, f64)> = Vec::with_capacity(MAX_POINTS + 1);
    let mut current: Option<(usize, (f64, f64, f64))> = None;
    for (x, c, e) in points {
        let bucket = (x / width).floor().max(0.0) as usize;
        match &mut current {
            Some((b, acc)) if *b == bucket => {
                acc.1 = acc.1.max(c);
                acc.2 = acc.2.max(e);
            }
            _ => {
                if let Some((_, acc)) = current.take() {
                    out.push(acc);
                }
                current = Some((bucket, (x, c, e)));
            }
        }
    }
    if let Some((_, acc)) = current {
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_series_is_held_in_bounded_buckets_that_keep_the_spike() {
        let mut data = ChartData::default();
        let t0 = Timestamp::from_second(1_700_000_000).expect("time");
        for i in 0..200_000i64 {
            let at = t0 + jiff::SignedDuration::from_secs(i * 10);
            let spike = if i == 123_457 { 9_999.0 } else { 1.0 };
            data.add(&Event {
                seq: i as u64 + 1,
                at,
                logged_at: None,
                actor: "t".into(),
                entry: Entry::Metric(crate::timeline::MetricSnapshot {
                    collisions_per_min: spike,
                    errors_per_min: 2.0,
                    ..Default::default()
                }),
            });
            assert!(data.metrics.len() <= MAX_BUCKETS);
        }
        assert_eq!(data.metric_count(), 200_000);
        let peak = data.metrics.values().map(|m| m.1).fold(0.0, f64::max);
        assert_eq!(peak, 9_999.0);
    }

    #[test]
    fn axis_bounds_stay_finite() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
        assert_eq!(nice_max(36.0), 50.0);
        assert_eq!(nice_max(1.7e308), 1.7e308);
        assert_eq!(nice_max(f64::MAX), f64::MAX);
        assert!(nice_max(f64::INFINITY).is_finite());
        assert!(nice_max(9e307).is_finite());
    }

    #[test]
    fn rates_are_held_to_what_the_chart_draws() {
        assert_eq!(chart_rate(12.5), 12.5);
        assert_eq!(chart_rate(-3.0), 0.0);
        assert_eq!(chart_rate(1.7e308), MAX_RATE);
        assert!(chart_rate(f64::NAN).is_nan());
        assert!(chart_rate(f64::INFINITY).is_nan());
    }
}
