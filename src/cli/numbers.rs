//! Numeric flags: every count, size and time a command takes has a range,
//! stated in its `--help` text, and anything outside it — 0, a negative
//! number, `1e20`, `nan`, `inf`, text — is refused by the parser with a
//! message that names the flag and the range (exit 2), before the command
//! starts anything.
//!
//! Whole numbers go through clap's `value_parser!(u64).range(..)`
//! ([`whole`]); seconds given as a decimal through [`seconds`].

use std::ffi::OsStr;
use std::ops::RangeInclusive;
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;

/// A whole number in `range` (as any unsigned type the flag needs).
pub fn whole<T>(range: RangeInclusive<u64>) -> Whole<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    Whole {
        range,
        target: std::marker::PhantomData,
    }
}

/// Seconds given as a decimal (`2.5`), finite and in `low..=high`.
pub fn seconds(low: f64, high: f64) -> Seconds {
    Seconds { low, high }
}

/// Parser for a whole-number flag; see [`whole`].
#[derive(Clone)]
pub struct Whole<T> {
    range: RangeInclusive<u64>,
    target: std::marker::PhantomData<fn() -> T>,
}

impl<T> TypedValueParser for Whole<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        // clap's own messages for `-1`, `1e20` or `nan` are "invalid digit
        // found in string": every refusal says the range instead.
        let parsed = clap::value_parser!(u64)
            .range(self.range.clone())
            .parse_ref(cmd, arg, value)
            .ok()
            .and_then(|n| T::try_from(n).ok());
        parsed.ok_or_else(|| {
            refused(
                cmd,
                arg,
                value,
                format!(
                    "a whole number in {}..={} is needed",
                    self.range.start(),
                    self.range.end()
                ),
            )
        })
    }
}

/// Parser for a seconds flag; see [`seconds`].
#[derive(Clone, Copy)]
pub struct Seconds {
    low: f64,
    high: f64,
}

impl TypedValueParser for Seconds {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let parsed = value
            .to_str()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && (self.low..=self.high).contains(s));
        parsed.map(Duration::from_secs_f64).ok_or_else(|| {
            refused(
                cmd,
                arg,
                value,
                format!(
                    "a number of seconds in {}..={} is needed",
                    self.low, self.high
                ),
            )
        })
    }
}

/// A decimal number (`2.5`), finite and in `low..=high`.
pub fn decimal(low: f64, high: f64) -> Decimal {
    Decimal { low, high }
}

/// Parser for a decimal flag; see [`decimal`].
#[derive(Clone, Copy)]
pub struct Decimal {
    low: f64,
    high: f64,
}

impl TypedValueParser for Decimal {
    type Value = f64;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<f64, clap::Error> {
        value
            .to_str()
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|x| x.is_finite() && (self.low..=self.high).contains(x))
            .ok_or_else(|| {
                refused(
                    cmd,
                    arg,
                    value,
                    format!("a number in {}..={} is needed", self.low, self.high),
                )
            })
    }
}

/// The parse error for `value` given to `arg`: what was given, and `needed`.
fn refused(
    cmd: &clap::Command,
    arg: Option<&clap::Arg>,
    value: &OsStr,
    needed: String,
) -> clap::Error {
    let flag = arg.map_or_else(|| "the value".to_owned(), |a| format!("'{a}'"));
    let given = value.to_string_lossy();
    // A value as long as a file is not echoed back whole.
    let given = match given.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &given[..cut]),
        None => given.into_owned(),
    };
    clap::Error::raw(
        ErrorKind::ValueValidation,
        format!("invalid value '{given}' for {flag}: {needed}\n"),
    )
    .with_cmd(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<P: TypedValueParser>(parser: &P, value: &str) -> Result<P::Value, String> {
        let mut cmd = clap::Command::new("warroom").arg(clap::Arg::new("clients").long("clients"));
        cmd.build();
        let arg = cmd.get_arguments().next().expect("the flag");
        parser
            .parse_ref(&cmd, Some(arg), OsStr::new(value))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_outside_the_range_name_it() {
        let clients = whole::<usize>(1..=1000);
        assert_eq!(parse(&clients, "1"), Ok(1));
        assert_eq!(parse(&clients, "1000"), Ok(1000));
        for bad in [
            "0",
            "1001",
            "-1",
            "1e20",
            "nan",
            "99999999999999999999999",
            "",
            "x",
        ] {
            let err = parse(&clients, bad).unwrap_err();
            assert!(
                err.contains("'--clients <clients>'") && err.contains("1..=1000"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn seconds_must_be_finite_and_in_range() {
        let duration = seconds(0.1, 3600.0);
        assert_eq!(parse(&duration, "2.5"), Ok(Duration::from_millis(2500)));
        for bad in [
            "0", "0.05", "3600.5", "-1", "1e20", "nan", "inf", "-inf", "x",
        ] {
            let err = parse(&duration, bad).unwrap_err();
            assert!(err.contains("0.1..=3600"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_huge_value_is_not_echoed_whole() {
        let err = parse(&whole::<u64>(1..=10), &"9".repeat(10_000)).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
