//! The text form of a [`Quota`]: `Display` and `FromStr`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::QuotaError;
use super::{Quota, Unit};
use crate::calendar::Calendar;

/// Units, largest first; the first name is the canonical one for `Display`.
const UNITS: &[(&[&str], u64)] = &[
    (&["month", "months", "mo"], 30 * 86_400 * NANOS_PER_SEC),
    (
        &["week", "weeks", "w", "wk", "wks"],
        7 * 86_400 * NANOS_PER_SEC,
    ),
    (&["day", "days", "d"], 86_400 * NANOS_PER_SEC),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600 * NANOS_PER_SEC),
    (
        &["min", "mins", "m", "minute", "minutes"],
        60 * NANOS_PER_SEC,
    ),
    (&["s", "sec", "secs", "second", "seconds"], NANOS_PER_SEC),
    (&["ms", "millis", "millisecond", "milliseconds"], 1_000_000),
    (
        &["us", "µs", "micros", "microsecond", "microseconds"],
        1_000,
    ),
    (&["ns", "nanos", "nanosecond", "nanoseconds"], 1),
];

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl fmt::Display for Quota {
    /// `LIMIT/[COUNT]UNIT`, plus `;burst=B` when the burst differs from the
    /// limit. Months and weeks are only used for exactly one of them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.limit)?;
        if self.unit.is_cost() {
            write!(f, " {}", self.unit.name())?;
        }
        if let Some(cal) = self.calendar {
            return write!(f, "/calendar-{cal}");
        }
        let nanos = self.period.as_nanos() as u64;
        let (names, unit) = UNITS
            .iter()
            .enumerate()
            .find(|(i, (_, unit))| {
                let calendar = *i < 2; // month, week: only as a whole one
                if calendar {
                    nanos == *unit
                } else {
                    nanos.is_multiple_of(*unit)
                }
            })
            .map(|(_, u)| *u)
            .unwrap_or(UNITS[UNITS.len() - 1]);
        let count = nanos / unit;
        f.write_str("/")?;
        if count != 1 {
            write!(f, "{count}")?;
        }
        f.write_str(names[0])?;
        if self.burst != self.limit {
            write!(f, ";burst={}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for Quota {
    type Err = QuotaError;

    fn from_str(input: &str) -> Result<Self, QuotaError> {
        let fail = |reason: String| QuotaError::Parse {
            input: input.to_owned(),
            reason,
        };
        let (rate, burst) = match input.split_once(';') {
            Some((rate, rest)) => {
                let rest = rest.trim();
                let value = rest
                    .strip_prefix("burst")
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix('='))
                    .ok_or_else(|| fail(format!("unknown option {rest:?}, expected `burst=N`")))?;
                let burst =
                    parse_count(value.trim()).map_err(|why| fail(format!("burst {why}")))?;
                (rate, Some(burst))
            }
            None => (input, None),
        };
        let (limit, per) = rate
            .split_once('/')
            .ok_or_else(|| fail("missing '/' between limit and period".to_owned()))?;
        let limit = limit.trim();
        let (limit, unit) = match limit.split_once(char::is_whitespace) {
            Some((count, unit)) => (count, Some(unit.trim())),
            None => (limit, None),
        };
        let limit = parse_count(limit).map_err(|why| fail(format!("limit {why}")))?;
        let unit = match unit {
            Some(unit) => Unit::named(unit).map_err(fail)?,
            None => Unit::REQUESTS,
        };
        if let Some(cal) = parse_calendar(per).map_err(fail)? {
            if burst.is_some_and(|b| b != limit) {
                return Err(fail(
                    "a calendar quota admits its whole limit at once; `burst` does not apply"
                        .to_owned(),
                ));
            }
            return Quota::try_per_calendar(limit, cal)
                .map(|q| q.with_unit(unit))
                .map_err(|e| fail(e.to_string()));
        }
        let period = parse_period(per).map_err(fail)?;
        if limit == 0 {
            return Err(fail("limit must be at least 1".to_owned()));
        }
        let quota = Quota::try_with_burst(limit, period, burst.unwrap_or(limit));
        quota.map(|q| q.with_unit(unit)).map_err(|e| match e {
            QuotaError::Parse { .. } => e,
            other => fail(
                other
                    .to_string()
                    .trim_start_matches("invalid quota: ")
                    .to_owned(),
            ),
        })
    }
}

/// The calendar period of `calendar-UNIT` (`None` for any other period),
/// with a reason when UNIT is not one.
pub(super) fn parse_calendar(per: &str) -> Result<Option<Calendar>, String> {
    let per = per.trim();
    let Some(unit) = per
        .get(..9)
        .filter(|p| p.eq_ignore_ascii_case("calendar-"))
        .map(|_| per[9..].trim())
    else {
        return Ok(None);
    };
    Calendar::from_name(unit).map(Some).ok_or_else(|| {
        format!("unknown calendar period {unit:?} (expected minute, hour, day or month)")
    })
}

/// The period of the string form, `[COUNT]UNIT` (`10s`, `min`, `2weeks`),
/// with a reason when it is not one.
pub(super) fn parse_period(per: &str) -> Result<Duration, String> {
    let per = per.trim();
    let digits = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
    let (count, unit) = per.split_at(digits);
    let count = if count.is_empty() {
        1
    } else {
        parse_u64(count).map_err(|why| format!("period count {why}"))?
    };
    let unit = unit.trim();
    if unit.is_empty() {
        return Err("missing unit after the count".to_owned());
    }
    let lower = unit.to_lowercase();
    let unit_nanos = UNITS
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("unknown unit {unit:?}"))?;
    let period_nanos = count
        .checked_mul(unit_nanos)
        .ok_or_else(|| "period is too long".to_owned())?;
    Ok(Duration::from_nanos(period_nanos))
}

/// A positive decimal `u32`, with a reason when it is not one.
fn parse_count(s: &str) -> Result<u32, String> {
    let n = parse_u64(s)?;
    u32::try_from(n).map_err(|_| format!("{s} is too large (at most {})", u32::MAX))
}

/// A positive decimal `u64`, with a reason when it is not one.
fn parse_u64(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("is missing".to_owned());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number"));
    }
    let n: u64 = s.parse().map_err(|_| format!("{s} is too large"))?;
    if n == 0 {
        return Err("must be at least 1".to_owned());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("10/s", Quota::per_second(10)),
            ("60/min", Quota::per_minute(60)),
            ("1000/day", Quota::per_day(1000)),
            ("100/10s", Quota::new(100, Duration::from_secs(10))),
            ("5 / 500 ms", Quota::new(5, Duration::from_millis(500))),
            ("3/Hour", Quota::per_hour(3)),
            ("2/2weeks", Quota::new(2, Duration::from_secs(14 * 86_400))),
            (
                "1000/month",
                Quota::new(1000, Duration::from_secs(30 * 86_400)),
            ),
            ("60/min;burst=10", Quota::per_minute(60).with_burst(10)),
            ("60/m ; burst = 10", Quota::per_minute(60).with_burst(10)),
            ("7/seconds", Quota::per_second(7)),
            (
                "100000 tokens/min",
                Quota::per_minute(100_000).counting("tokens"),
            ),
            (
                " 5000  bytes / s ; burst = 100",
                Quota::per_second(5000).with_burst(100).counting("bytes"),
            ),
            ("60 requests/min", Quota::per_minute(60)),
            ("10/calendar-minute", Quota::per_calendar_minute(10)),
            ("10 / Calendar-Hour", Quota::per_calendar_hour(10)),
            ("10/calendar-d", Quota::per_calendar_day(10)),
            ("10/calendar-mo", Quota::per_calendar_month(10)),
            ("10/calendar-day;burst=10", Quota::per_calendar_day(10)),
            (
                "1000000 tokens/calendar-month",
                Quota::per_calendar_month(1_000_000).counting("tokens"),
            ),
            (
                "500 credits / calendar-day ; burst = 500",
                Quota::per_calendar_day(500).counting("credits"),
            ),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<Quota>(), Ok(want), "{s}");
        }
    }

    #[test]
    fn parse_errors_quote_the_input_and_say_why() {
        let cases = [
            ("", "missing '/'"),
            ("60", "missing '/'"),
            ("0/min", "limit must be at least 1"),
            ("x/min", "\"x\" is not a whole number"),
            ("-1/min", "is not a whole number"),
            ("99999999999/s", "too large"),
            ("60/", "missing unit"),
            ("60/10", "missing unit"),
            ("60/fortnight", "unknown unit \"fortnight\""),
            ("60/0s", "period count must be at least 1"),
            ("60/min;burst=0", "burst must be at least 1"),
            ("60/min;bust=3", "unknown option"),
            ("10/ns;burst=1", ""),
            ("11/10ns", "more than one per nanosecond"),
            ("1/9999999day", "period is too long"),
            ("10 to kens/s", "holds ' '"),
            ("10 1x/s", "must start with a letter"),
            ("5/calendar-week", "unknown calendar period \"week\""),
            ("5/calendar-day;burst=2", "`burst` does not apply"),
            ("0/calendar-day", "limit must be at least 1"),
            ("5 tokens/calendar-week", "unknown calendar period \"week\""),
            ("5 tokens/calendar-day;burst=2", "`burst` does not apply"),
            (
                "1/99999999999999999999day",
                "period count 99999999999999999999 is too large",
            ),
        ];
        for (s, want) in cases {
            match s.parse::<Quota>() {
                Ok(q) => assert_eq!(s, "10/ns;burst=1", "{s} parsed as {q}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(&format!("{s:?}")), "{msg}");
                    assert!(msg.contains(want), "{s}: {msg}");
                    assert!(msg.contains("expected LIMIT/"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn display_round_trips() {
        let cases = [
            (Quota::per_second(10), "10/s"),
            (Quota::per_minute(60), "60/min"),
            (Quota::per_minute(60).with_burst(10), "60/min;burst=10"),
            (Quota::per_hour(100), "100/h"),
            (Quota::per_day(1000), "1000/day"),
            (Quota::new(100, Duration::from_secs(10)), "100/10s"),
            (Quota::new(1, Duration::from_secs(120)), "1/2min"),
            (Quota::new(5, Duration::from_millis(1500)), "5/1500ms"),
            (
                Quota::new(1000, Duration::from_secs(30 * 86_400)),
                "1000/month",
            ),
            (Quota::new(10, Duration::from_secs(7 * 86_400)), "10/week"),
            (
                Quota::per_day(1_000_000).counting("tokens"),
                "1000000 tokens/day",
            ),
            (
                Quota::per_minute(100).with_burst(10).counting("credits"),
                "100 credits/min;burst=10",
            ),
            (Quota::new(10, Duration::from_secs(14 * 86_400)), "10/14day"),
            (
                Quota::new(3, Duration::from_nanos(1_000_000_007)),
                "3/1000000007ns",
            ),
            (Quota::per_calendar_minute(60), "60/calendar-minute"),
            (Quota::per_calendar_hour(1), "1/calendar-hour"),
            (Quota::per_calendar_day(1000), "1000/calendar-day"),
            (Quota::per_calendar_month(7), "7/calendar-month"),
            (
                Quota::per_calendar_month(1_000_000).counting("tokens"),
                "1000000 tokens/calendar-month",
            ),
        ];
        for (q, s) in cases {
            assert_eq!(q.to_string(), s);
            assert_eq!(s.parse::<Quota>(), Ok(q));
        }
    }
}
