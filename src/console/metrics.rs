//! Reading the exporter's `/metrics`: the exposition is parsed with
//! `nom-openmetrics` (OpenMetrics or the classic text format), the series
//! the console charts are picked out, and per-minute rates are computed
//! from two scrapes, a counter that went down counting as a reset.

use std::collections::BTreeMap;

use super::store::Reading;

/// One sample of a scrape: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    /// Sample name (`warroom_lock_collisions_total`).
    pub name: String,
    /// Labels, by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Parses an exposition (OpenMetrics, ending in `# EOF`, or the classic
/// text format). A family announced with no samples (a counter family
/// nothing has been counted in yet) is allowed; anything else that does
/// not parse is an error naming its line.
pub fn parse_exposition(text: &str) -> Result<Vec<MetricSample>, String> {
    let mut rest = text;
    let mut samples = Vec::new();
    loop {
        rest = rest.trim_start_matches('\n');
        if rest.is_empty() || nom_openmetrics::parser::eof_marker(rest).is_ok() {
            return Ok(samples);
        }
        match nom_openmetrics::parser::family(rest) {
            Ok((next, family)) if next.len() < rest.len() => {
                samples.extend(family.samples.iter().map(|s| {
                    MetricSample {
                        name: s.name().to_owned(),
                        labels: s
                            .labels()
                            .iter()
                            .map(|l| (l.name.to_owned(), l.value.clone()))
                            .collect(),
                        value: s.number(),
                    }
                }));
                rest = next;
            }
            _ if rest.starts_with('#') => {
                rest = rest.split_once('\n').map(|(_, tail)| tail).unwrap_or("");
            }
            _ => {
                let line = text[..text.len() - rest.len()].lines().count() + 1;
                let shown: String = rest
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(80)
                    .collect();
                return Err(format!("metrics line {line} does not parse: {shown:?}"));
            }
        }
    }
}

/// The counters and gauges the console charts, from one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// Counter totals by series (name and labels).
    pub counters: BTreeMap<String, f64>,
    /// `warroom_lock_holders_max`.
    pub holders_max: f64,
    /// `warroom_app_errors_last_minute`.
    pub errors_last_minute: f64,
    /// Key with the most holders, when more than one.
    pub contended_key: Option<String>,
}

const COLLISIONS: &str = "warroom_lock_collisions_total";
const OVERRUNS: &str = "warroom_lock_lease_overruns_total";
const REJECTIONS: &str = "warroom_fencing_rejections_total";

impl Scrape {
    /// Picks the console's series out of parsed samples. Fails when the
    /// exposition is not the exporter's (no `warroom_lock_holders_max`).
    pub fn from_samples(samples: &[MetricSample]) -> Result<Self, String> {
        let mut scrape = Scrape::default();
        let mut seen_holders = false;
        let mut top = 1.0;
        for sample in samples {
            let charted = matches!(
                sample.name.as_str(),
                COLLISIONS
                    | OVERRUNS
                    | REJECTIONS
                    | "warroom_lock_holders_max"
                    | "warroom_app_errors_last_minute"
                    | "warroom_lock_holders"
            );
            if charted && !(sample.value.is_finite() && sample.value >= 0.0) {
                return Err(format!(
                    "{} is {}: not a count (is this warroom's exporter?)",
                    sample.name, sample.value
                ));
            }
            match sample.name.as_str() {
                COLLISIONS | OVERRUNS | REJECTIONS => {
                    let series = format!("{}{:?}", sample.name, sample.labels);
                    scrape.counters.insert(series, sample.value);
                }
                "warroom_lock_holders_max" => {
                    seen_holders = true;
                    scrape.holders_max = sample.value;
                }
                "warroom_app_errors_last_minute" => scrape.errors_last_minute = sample.value,
                "warroom_lock_holders" if sample.value > top => {
                    top = sample.value;
                    scrape.contended_key = sample.labels.get("key").cloned();
                }
                _ => {}
            }
        }
        if !seen_holders {
            return Err(
                "no warroom_lock_holders_max in /metrics: is this warroom's exporter?".into(),
            );
        }
        Ok(scrape)
    }

    /// Sum of a counter over its series.
    pub fn total(&self, name: &str) -> f64 {
        self.counters
            .iter()
            .filter(|(series, _)| series.starts_with(name) && series[name.len()..].starts_with('{'))
            .map(|(_, v)| v)
            .sum()
    }

    /// How much a counter grew since `before`, series by series; a series
    /// that went down was reset (the exporter restarted) and counts from 0.
    pub fn increase(&self, before: &Scrape, name: &str) -> f64 {
        self.counters
            .iter()
            .filter(|(series, _)| series.starts_with(name) && series[name.len()..].starts_with('{'))
            .map(|(series, &now)| match before.counters.get(series) {
                Some(&then) if now >= then => now - then,
                Some(_) => now,
                None => now,
            })
            .sum()
    }

    /// The reading for the panels: rates per minute over `elapsed_ms`
    /// since `before` (none before the second scrape: rates are 0).
    pub fn reading(&self, before: Option<(&Scrape, i64)>) -> Reading {
        let per_min = |name: &str| match before {
            Some((then, elapsed_ms)) if elapsed_ms > 0 => {
                self.increase(then, name) * 60_000.0 / elapsed_ms as f64
            }
            _ => 0.0,
        };
        Reading {
            collisions_per_min: per_min(COLLISIONS),
            holders_max: self.holders_max,
            overruns_per_min: per_min(OVERRUNS),
            rejections_per_min: per_min(REJECTIONS),
            errors_per_min: self.errors_last_minute,
            contended_key: self.contended_key.clone(),
            collisions_total: self.total(COLLISIONS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_that_is_not_a_count_refuses_the_scrape() {
        for value in ["NaN", "+Inf", "-Inf", "-5"] {
            for name in [
                "warroom_lock_collisions_total{mode=\"legacy\"}",
                "warroom_lock_holders_max",
                "warroom_app_errors_last_minute",
                "warroom_lock_holders{key=\"k\"}",
            ] {
                let text = format!("warroom_lock_holders_max 1\n{name} {value}\n");
                let samples = parse_exposition(&text).unwrap();
                let err = Scrape::from_samples(&samples).unwrap_err();
                assert!(err.contains("not a count"), "{name} {value}: {err}");
            }
        }
    }

    const EXPOSITION: &str = "# HELP warroom_lock_collisions Grants while another holder held.\n\
# TYPE warroom_lock_collisions counter\n\
warroom_lock_collisions_total{mode=\"legacy\"} 3\n\
warroom_lock_collisions_total{mode=\"fenced\"} 0\n\
# HELP warroom_app_errors Errors.\n\
# TYPE warroom_app_errors counter\n\
# HELP warroom_lock_holders Holders.\n\
# TYPE warroom_lock_holders gauge\n\
warroom_lock_holders{key=\"lock:a,b=c\"} 2\n\
# HELP warroom_lock_holders_max Most.\n\
# TYPE warroom_lock_holders_max gauge\n\
warroom_lock_holders_max 2\n\
# HELP warroom_app_errors_last_minute Errors.\n\
# TYPE warroom_app_errors_last_minute gauge\n\
warroom_app_errors_last_minute 61\n\
# EOF\n";

    #[test]
    fn label_values_with_commas_and_equals_survive() {
        let samples = parse_exposition(EXPOSITION).unwrap();
        let scrape = Scrape::from_samples(&samples).unwrap();
        assert_eq!(scrape.contended_key.as_deref(), Some("lock:a,b=c"));
        assert_eq!(scrape.total(COLLISIONS), 3.0);
        assert_eq!(scrape.errors_last_minute, 61.0);
    }

    #[test]
    fn a_broken_line_is_named() {
        let err = parse_exposition("warroom_lock_holders_max two\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(Scrape::from_samples(&parse_exposition("up 1\n").unwrap()).is_err());
    }

    #[test]
    fn rates_per_minute_and_counter_resets() {
        let at = |n: f64| {
            let text =
                EXPOSITION.replace("{mode=\"legacy\"} 3", &format!("{{mode=\"legacy\"}} {n}"));
            Scrape::from_samples(&parse_exposition(&text).unwrap()).unwrap()
        };
        let first = at(3.0);
        assert_eq!(first.reading(None).collisions_per_min, 0.0);
        let second = at(5.0);
        assert_eq!(
            second.reading(Some((&first, 1_000))).collisions_per_min,
            120.0
        );
        // The exporter restarted: 5 -> 1 is one new collision, not -4.
        let reset = at(1.0);
        assert_eq!(
            reset.reading(Some((&second, 1_000))).collisions_per_min,
            60.0
        );
    }
}
