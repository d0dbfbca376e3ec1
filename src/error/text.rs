//! How error messages write quotas and durations.

use std::fmt;
use std::time::Duration;

use crate::quota::Quota;

/// `60 per 1m (burst 10)`; `100000 tokens per 1m` for a quota of cost.
pub(crate) struct QuotaText<'a>(pub(crate) &'a Quota);

impl fmt::Display for QuotaText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.0;
        write!(f, "{}", q.limit())?;
        if !q.counts_requests() {
            write!(f, " {}", q.unit())?;
        }
        match q.calendar() {
            Some(c) => write!(f, " per calendar {}", c.name())?,
            None => write!(f, " per {}", Human(q.period()))?,
        }
        if q.burst() != q.limit() {
            write!(f, " (burst {})", q.burst())?;
        }
        Ok(())
    }
}

/// A duration for people: `1d`, `2h`, `1m`, `30s`, `1.2s`, `250ms`, `15µs`.
/// Fractions are rounded up to the millisecond (a wait is never understated).
pub(crate) struct Human(pub(crate) Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            let s = d.as_secs();
            return match s {
                0 => f.write_str("0s"),
                s if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
                s if s.is_multiple_of(3_600) => write!(f, "{}h", s / 3_600),
                s if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            };
        }
        if d < Duration::from_millis(1) {
            return write!(f, "{d:?}");
        }
        let ms = d.as_nanos().div_ceil(1_000_000);
        write!(f, "{:?}", Duration::from_millis(ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(7_200), "2h"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(1_200), "1.2s"),
            (Duration::from_nanos(1_200_000_001), "1.201s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(15), "15µs"),
        ];
        for (d, s) in cases {
            assert_eq!(Human(d).to_string(), s);
        }
    }

    #[test]
    fn calendar_quotas_read_as_calendar_periods() {
        let day = Quota::per_calendar_day(50_000).counting("tokens");
        assert_eq!(QuotaText(&day).to_string(), "50000 tokens per calendar day");
        let month = Quota::per_calendar_month(10);
        assert_eq!(QuotaText(&month).to_string(), "10 per calendar month");
        assert_eq!(QuotaText(&Quota::per_day(10)).to_string(), "10 per 1d");
    }
}
