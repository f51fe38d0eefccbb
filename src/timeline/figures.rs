//! The numbers a postmortem header needs, computed from the milestones:
//! Time to Detect, Time to Mitigate and Duration.
//!
//! Definitions (the clock starts when impact started):
//! - Time to Detect = `detected − started`; without `detected`, `declared`
//!   stands in (declaring an incident implies it was detected).
//! - Time to Mitigate = `mitigated − started`; without `mitigated`,
//!   `resolved` stands in.
//! - Duration = `resolved − started`; ongoing while not resolved.
//!
//! Without `started` none of them can be computed and each is reported as
//! not recorded, never guessed from other events.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::event::{Entry, Event, Milestone};

/// A span between two milestones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Interval {
    /// The milestone the clock starts at.
    pub from: Milestone,
    /// The milestone the clock stops at.
    pub to: Milestone,
    /// Length in milliseconds.
    pub millis: i64,
}

impl Interval {
    /// `6h 15m`, `14m`, `45s`, `2d 3h 4m`.
    pub fn human(&self) -> String {
        human_duration(self.millis)
    }
}

/// The figures of an incident, from its journal.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Figures {
    /// Incident identifier, if recorded.
    pub id: Option<String>,
    /// Title, if recorded.
    pub title: Option<String>,
    /// Latest severity, if recorded.
    pub severity: Option<String>,
    /// Highest severity recorded (`SEV-1` is higher than `SEV-2`; severities
    /// without a number count below those with one), if any.
    pub peak_severity: Option<String>,
    /// Each milestone's time (first record wins).
    #[serde(serialize_with = "milestone_times")]
    pub milestones: BTreeMap<Milestone, Timestamp>,
    /// Time to Detect.
    pub time_to_detect: Option<Interval>,
    /// Time to Mitigate.
    pub time_to_mitigate: Option<Interval>,
    /// Started to resolved.
    pub duration: Option<Interval>,
    /// True while there is a `started` but no `resolved` milestone.
    pub ongoing: bool,
    /// Time of the first event, if any.
    #[serde(serialize_with = "option_time")]
    pub first_event: Option<Timestamp>,
    /// Time of the last event, if any.
    #[serde(serialize_with = "option_time")]
    pub last_event: Option<Timestamp>,
}

impl Figures {
    /// Computes the figures from events (in any order).
    pub fn from_events(events: &[Event]) -> Figures {
        let mut builder = FiguresBuilder::default();
        for event in events {
            builder.add(event);
        }
        builder.finish()
    }

    /// When the incident started, or else its first event.
    pub fn start(&self) -> Option<Timestamp> {
        self.milestones
            .get(&Milestone::Started)
            .copied()
            .or(self.first_event)
    }

    /// How an interval reads in a postmortem header: `14m`, or
    /// `14m (started → declared; no detected milestone)`, or `not recorded`.
    pub fn describe(&self, interval: Option<&Interval>, wanted: Milestone) -> String {
        match interval {
            Some(i) if i.to == wanted => i.human(),
            Some(i) => format!(
                "{} ({} → {}; no {} milestone)",
                i.human(),
                i.from,
                i.to,
                wanted
            ),
            None if !self.milestones.contains_key(&Milestone::Started) => {
                "not recorded (no started milestone)".to_string()
            }
            None => format!("not recorded (no {wanted} milestone)"),
        }
    }

    /// The Duration cell: `6h 41m (started → resolved)` or `ongoing`.
    pub fn describe_duration(&self) -> String {
        match (&self.duration, self.ongoing) {
            (Some(d), _) => format!("{} (started → resolved)", d.human()),
            (None, true) => "ongoing (not resolved)".to_string(),
            (None, false) => "not recorded (no started milestone)".to_string(),
        }
    }
}

/// Computes [`Figures`] one event at a time (in any order), holding only
/// the figures: exports read a journal of any size through it.
#[derive(Debug, Default)]
pub struct FiguresBuilder {
    figures: Figures,
    severity: Option<(Timestamp, u64, String)>,
    peak: Option<(u64, String)>,
}

impl FiguresBuilder {
    /// Takes one event into account.
    pub fn add(&mut self, event: &Event) {
        let figures = &mut self.figures;
        figures.first_event = Some(figures.first_event.map_or(event.at, |t| t.min(event.at)));
        figures.last_event = Some(figures.last_event.map_or(event.at, |t| t.max(event.at)));
        match &event.entry {
            Entry::Incident(inc) => {
                figures.id.get_or_insert_with(|| inc.id.clone());
                if figures.title.is_none() {
                    figures.title = inc.title.clone();
                }
            }
            Entry::Milestone(m) => {
                let at = figures.milestones.entry(m.milestone).or_insert(event.at);
                // The first record in time wins when one was recorded twice.
                *at = (*at).min(event.at);
            }
            Entry::Severity(s) => {
                let newer = self
                    .severity
                    .as_ref()
                    .is_none_or(|(at, seq, _)| (event.at, event.seq) >= (*at, *seq));
                if newer {
                    self.severity = Some((event.at, event.seq, s.severity.clone()));
                }
                let rank = severity_rank(&s.severity);
                if self.peak.as_ref().is_none_or(|(best, _)| rank < *best) {
                    self.peak = Some((rank, s.severity.clone()));
                }
            }
            _ => {}
        }
    }

    /// The figures of every event added.
    pub fn finish(self) -> Figures {
        let mut figures = self.figures;
        figures.severity = self.severity.map(|(_, _, s)| s);
        figures.peak_severity = self.peak.map(|(_, s)| s);
        let between = |from: Milestone, to: &[Milestone]| -> Option<Interval> {
            let start = figures.milestones.get(&from)?;
            to.iter().find_map(|m| {
                figures.milestones.get(m).map(|end| Interval {
                    from,
                    to: *m,
                    millis: end.as_millisecond() - start.as_millisecond(),
                })
            })
        };
        figures.time_to_detect = between(
            Milestone::Started,
            &[Milestone::Detected, Milestone::Declared],
        );
        figures.time_to_mitigate = between(
            Milestone::Started,
            &[Milestone::Mitigated, Milestone::Resolved],
        );
        figures.duration = between(Milestone::Started, &[Milestone::Resolved]);
        figures.ongoing = figures.milestones.contains_key(&Milestone::Started)
            && !figures.milestones.contains_key(&Milestone::Resolved);
        figures
    }
}

/// `SEV-1`, `sev1`, `P1`, `S 2` → 1, 2; lower is more severe. A severity
/// without a number ranks below every numbered one.
fn severity_rank(severity: &str) -> u64 {
    let digits: String = severity
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    digits.parse().unwrap_or(u64::MAX)
}

/// Formats milliseconds as `2d 3h 4m`, `6h 15m`, `14m`, `14m 30s` or `45s`.
pub fn human_duration(millis: i64) -> String {
    let negative = millis < 0;
    let total_secs = millis.unsigned_abs() / 1000;
    let (d, h, m, s) = (
        total_secs / 86_400,
        (total_secs / 3600) % 24,
        (total_secs / 60) % 60,
        total_secs % 60,
    );
    let mut parts = Vec::new();
    if d > 0 {
        parts.push(format!("{d}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 && d == 0 && h == 0 {
        parts.push(format!("{s}s"));
    }
    if parts.is_empty() {
        parts.push(if millis == 0 {
            "0s".to_string()
        } else {
            "<1s".to_string()
        });
    }
    let text = parts.join(" ");
    if negative { format!("-{text}") } else { text }
}

fn milestone_times<S: serde::Serializer>(
    map: &BTreeMap<Milestone, Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(map.len()))?;
    for (m, t) in map {
        out.serialize_entry(m.name(), &super::event::rfc3339_millis(*t))?;
    }
    out.end()
}

fn option_time<S: serde::Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&super::event::rfc3339_millis(*t)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_like_a_postmortem() {
        assert_eq!(human_duration(14 * 60_000), "14m");
        assert_eq!(human_duration((6 * 60 + 15) * 60_000), "6h 15m");
        assert_eq!(human_duration(45_000), "45s");
        assert_eq!(human_duration(14 * 60_000 + 30_000), "14m 30s");
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(2 * 86_400_000 + 3_600_000), "2d 1h");
    }
}
