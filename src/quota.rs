//! [`Quota`]: how many requests per period, and how many at once.
//!
//! A quota has three parts:
//!
//! * a **limit**: how many requests (or units of cost) per period;
//! * a **period**: the window the limit refers to;
//! * a **burst**: how many may pass at once after a quiet spell. It defaults
//!   to the limit, so `60/min` lets 60 requests through at once and then one
//!   per second; `60/min` with burst 10 lets 10 through at once and then one
//!   per second.
//!
//! Over any window of length `w`, a limiter using the quota admits at most
//! `burst + w / (period / limit)` requests.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use tower_sluice::Quota;
//!
//! let q = Quota::per_minute(60).with_burst(10);
//! assert_eq!(q.limit(), 60);
//! assert_eq!(q.period(), Duration::from_secs(60));
//! assert_eq!(q.burst(), 10);
//!
//! // The string form round-trips, burst included.
//! assert_eq!(q.to_string(), "60/min;burst=10");
//! assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
//!
//! // Bad input is an error that says what went wrong, never a panic.
//! let err = "60/fortnight".parse::<Quota>().unwrap_err();
//! assert!(err.to_string().contains("fortnight"));
//! assert!(Quota::try_new(0, Duration::from_secs(1)).is_err());
//! ```
//!
//! # String syntax
//!
//! `LIMIT/[COUNT]UNIT[;burst=B]`, for example `10/s`, `60/min`, `1000/day`,
//! `100/10s`, `5/500ms` or `60/min;burst=10`. Spaces around the parts are
//! allowed and units are case-insensitive. Units:
//!
//! | unit | accepted spellings |
//! |---|---|
//! | nanosecond | `ns`, `nanos`, `nanosecond(s)` |
//! | microsecond | `us`, `µs`, `micros`, `microsecond(s)` |
//! | millisecond | `ms`, `millis`, `millisecond(s)` |
//! | second | `s`, `sec(s)`, `second(s)` |
//! | minute | `m`, `min(s)`, `minute(s)` |
//! | hour | `h`, `hr(s)`, `hour(s)` |
//! | day | `d`, `day(s)` |
//! | week | `w`, `wk(s)`, `week(s)` (7 days) |
//! | month | `mo`, `month(s)` (**30 days**, not a calendar month) |

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The largest burst window (`burst * period / limit`) a quota may have:
/// about 146 years. Larger windows are rejected so that the limiter's
/// nanosecond arithmetic can never overflow.
const MAX_WINDOW_NANOS: u64 = 1 << 62;

/// A rate: `limit` requests per `period`, with up to `burst` at once.
///
/// See the [module docs](crate::quota) for the semantics and the string
/// syntax. `Quota` is `Copy + Eq + Hash`; its [`Display`](fmt::Display) form
/// parses back to an equal `Quota`.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
///
/// let q = Quota::per_minute(60).with_burst(10);
/// assert_eq!((q.limit(), q.period(), q.burst()), (60, Duration::from_secs(60), 10));
/// assert_eq!(q.to_string().parse::<Quota>().unwrap(), q);
/// assert!("0/min".parse::<Quota>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u32,
    period: Duration,
    burst: u32,
}

/// Why a [`Quota`] could not be built or parsed.
///
/// The message names the field (or quotes the input) and says what is
/// accepted.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::{Quota, QuotaError};
///
/// assert_eq!(Quota::try_new(0, Duration::from_secs(1)), Err(QuotaError::ZeroLimit));
/// let err = "60 per minute".parse::<Quota>().unwrap_err();
/// assert!(matches!(err, QuotaError::Parse { .. }));
/// // The message quotes the input and shows the accepted syntax.
/// assert!(err.to_string().contains("expected LIMIT/[COUNT]UNIT"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// `limit` was 0: a quota must admit at least one request per period.
    ZeroLimit,
    /// `period` was zero.
    ZeroPeriod,
    /// `burst` was 0: a quota must admit at least one request at once.
    ZeroBurst,
    /// More than one request per nanosecond: `limit` exceeds `period` in
    /// nanoseconds, which no clock can enforce.
    TooFast {
        /// The requested limit.
        limit: u32,
        /// The requested period.
        period: Duration,
    },
    /// The spacing between requests, `period / limit`, is kept as a whole
    /// number of nanoseconds, and rounding it up would make the quota
    /// admit more than 1 % fewer requests than asked
    /// (`4294967295/4294967296ns` would be enforced at half the asked
    /// rate). Use a longer period or a smaller limit.
    Inexact {
        /// The requested limit.
        limit: u32,
        /// The requested period.
        period: Duration,
        /// The spacing the quota would be enforced with.
        interval: Duration,
    },
    /// The burst window `burst * period / limit` is longer than about 146
    /// years (or the period itself does not fit in 64-bit nanoseconds).
    TooLong {
        /// The requested period.
        period: Duration,
    },
    /// A string did not parse as a quota.
    Parse {
        /// The input, as given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaError::ZeroLimit => f.write_str("invalid quota: `limit` must be at least 1"),
            QuotaError::ZeroPeriod => {
                f.write_str("invalid quota: `period` must be longer than zero")
            }
            QuotaError::ZeroBurst => f.write_str("invalid quota: `burst` must be at least 1"),
            QuotaError::TooFast { limit, period } => write!(
                f,
                "invalid quota: `limit` {limit} per {period:?} is more than one per nanosecond; \
                 use a longer `period`"
            ),
            QuotaError::Inexact {
                limit,
                period,
                interval,
            } => {
                let interval_ns = interval.as_nanos().max(1);
                let enforced = period.as_nanos() / interval_ns;
                let slower = 100.0
                    * (1.0 - period.as_nanos() as f64 / (interval_ns * u128::from(*limit)) as f64);
                write!(
                    f,
                    "invalid quota: {limit} per {period:?} would be enforced as one request every \
                     {interval:?} ({enforced} per {period:?}), {slower:.1} % slower than asked, as \
                     the spacing between requests is a whole number of nanoseconds; use a longer \
                     `period` or a smaller `limit`"
                )
            }
            QuotaError::TooLong { period } => write!(
                f,
                "invalid quota: `period` {period:?} (times `burst` / `limit`) is longer than \
                 146 years; use a shorter `period`"
            ),
            QuotaError::Parse { input, reason } => write!(
                f,
                "invalid quota {input:?}: {reason}; expected LIMIT/[COUNT]UNIT[;burst=B] such as \
                 \"10/s\", \"60/min\", \"100/10s\", \"1000/day\" or \"60/min;burst=10\" \
                 (units: ns, us, ms, s, min, h, day, week, month = 30 days)"
            ),
        }
    }
}

impl std::error::Error for QuotaError {}

impl Quota {
    /// `limit` requests per `period`, burst `limit`, or an error naming the
    /// bad field.
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroLimit`], [`QuotaError::ZeroPeriod`],
    /// [`QuotaError::TooFast`] (more than one per nanosecond),
    /// [`QuotaError::Inexact`] (a rate the limiter would enforce more than
    /// 1 % slower than asked) or [`QuotaError::TooLong`] (a burst window
    /// over 146 years).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::{Quota, QuotaError};
    ///
    /// // A limit read from configuration: reject 0 instead of panicking.
    /// let q = Quota::try_new(100, Duration::from_secs(10))?;
    /// assert_eq!(q.emission_interval(), Duration::from_millis(100));
    /// assert_eq!(Quota::try_new(100, Duration::ZERO), Err(QuotaError::ZeroPeriod));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn try_new(limit: u32, period: Duration) -> Result<Self, QuotaError> {
        Self::try_with_burst(limit, period, limit)
    }

    /// `limit` requests per `period`, with at most `burst` at once, or an
    /// error naming the bad field.
    ///
    /// # Errors
    ///
    /// As [`try_new`](Self::try_new), plus [`QuotaError::ZeroBurst`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::{Quota, QuotaError};
    ///
    /// let q = Quota::try_with_burst(60, Duration::from_secs(60), 10)?;
    /// assert_eq!(q, Quota::per_minute(60).with_burst(10));
    /// assert_eq!(
    ///     Quota::try_with_burst(60, Duration::from_secs(60), 0),
    ///     Err(QuotaError::ZeroBurst)
    /// );
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn try_with_burst(limit: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        let q = Quota {
            limit,
            period,
            burst,
        };
        q.validate()?;
        Ok(q)
    }

    fn validate(&self) -> Result<(), QuotaError> {
        if self.limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if self.period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        if self.burst == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let too_long = QuotaError::TooLong {
            period: self.period,
        };
        let period_ns = u64::try_from(self.period.as_nanos()).map_err(|_| too_long.clone())?;
        if period_ns < u64::from(self.limit) {
            return Err(QuotaError::TooFast {
                limit: self.limit,
                period: self.period,
            });
        }
        let emission = period_ns.div_ceil(u64::from(self.limit));
        // Rounded up, the spacing admits `period / emission` per period
        // instead of `limit`: refuse a loss of more than 1 %.
        let spaced = u128::from(emission) * u128::from(self.limit);
        if 100 * (spaced - u128::from(period_ns)) > spaced {
            return Err(QuotaError::Inexact {
                limit: self.limit,
                period: self.period,
                interval: Duration::from_nanos(emission),
            });
        }
        match emission.checked_mul(u64::from(self.burst)) {
            Some(window) if window <= MAX_WINDOW_NANOS => Ok(()),
            _ => Err(too_long),
        }
    }

    /// `limit` requests per `period`, burst `limit`.
    ///
    /// # Panics
    ///
    /// When [`try_new`](Self::try_new) would fail: `limit` or `period` is
    /// zero, more than one per nanosecond, a rate that would be enforced
    /// more than 1 % slower than asked, or a window over 146 years.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    ///
    /// // 100 requests per 10 seconds: one every 100 ms, up to 100 at once.
    /// let q = Quota::new(100, Duration::from_secs(10));
    /// assert_eq!(q, "100/10s".parse().unwrap());
    /// ```
    #[track_caller]
    pub fn new(limit: u32, period: Duration) -> Self {
        match Self::try_new(limit, period) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    /// `n` requests per second, burst `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 0, or so large that the spacing between requests would
    /// be enforced more than 1 % slower than asked
    /// ([`QuotaError::Inexact`]; up to ten million per second is always
    /// fine); use [`try_new`](Self::try_new) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    ///
    /// let q = Quota::per_second(10);
    /// assert_eq!((q.limit(), q.period(), q.burst()), (10, Duration::from_secs(1), 10));
    /// ```
    #[track_caller]
    pub fn per_second(n: u32) -> Self {
        Self::new(n, Duration::from_secs(1))
    }

    /// `n` requests per minute, burst `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 0, or so large that the spacing between requests would
    /// be enforced more than 1 % slower than asked
    /// ([`QuotaError::Inexact`]; up to ten million per second is always
    /// fine); use [`try_new`](Self::try_new) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    ///
    /// // An API that allows 60 requests a minute.
    /// let q = Quota::per_minute(60);
    /// assert_eq!(q.to_string(), "60/min");
    /// ```
    #[track_caller]
    pub fn per_minute(n: u32) -> Self {
        Self::new(n, Duration::from_secs(60))
    }

    /// `n` requests per hour, burst `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 0; use [`try_new`](Self::try_new) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    ///
    /// assert_eq!(Quota::per_hour(3600).emission_interval(), Duration::from_secs(1));
    /// ```
    #[track_caller]
    pub fn per_hour(n: u32) -> Self {
        Self::new(n, Duration::from_secs(3600))
    }

    /// `n` requests per day (24 hours), burst `n`.
    ///
    /// # Panics
    ///
    /// When `n` is 0; use [`try_new`](Self::try_new) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    ///
    /// // A daily cap, usually combined with a per-minute quota (see `Limiter::and`).
    /// let q = Quota::per_day(1_000);
    /// assert_eq!(q, "1000/day".parse().unwrap());
    /// ```
    #[track_caller]
    pub fn per_day(n: u32) -> Self {
        Self::new(n, Duration::from_secs(86_400))
    }

    /// The same rate with at most `burst` requests at once.
    ///
    /// # Panics
    ///
    /// When `burst` is 0 or makes the burst window longer than 146 years;
    /// use [`try_with_burst`](Self::try_with_burst) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    ///
    /// // 60 a minute, but never more than 10 back to back.
    /// let q = Quota::per_minute(60).with_burst(10);
    /// assert_eq!(q.burst(), 10);
    /// assert_eq!(q.emission_interval(), Duration::from_secs(1));
    /// ```
    #[track_caller]
    #[must_use]
    pub fn with_burst(self, burst: u32) -> Self {
        match Self::try_with_burst(self.limit, self.period, burst) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    /// Requests per period.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_minute(60).limit(), 60);
    /// ```
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period the limit refers to.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_hour(1).period(), Duration::from_secs(3600));
    /// ```
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests admitted at once after a quiet spell.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_minute(60).burst(), 60); // the limit, by default
    /// assert_eq!(Quota::per_minute(60).with_burst(5).burst(), 5);
    /// ```
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The steady spacing between requests, `period / limit`, rounded up to
    /// the nanosecond so the limit is never exceeded.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_minute(60).emission_interval(), Duration::from_secs(1));
    /// // Rounded up: 3 per second is one every 333_333_334 ns.
    /// assert_eq!(Quota::per_second(3).emission_interval(), Duration::from_nanos(333_333_334));
    /// ```
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_nanos())
    }

    /// A quota from parts that were validated before.
    pub(crate) const fn from_parts(limit: u32, period: Duration, burst: u32) -> Self {
        Quota {
            limit,
            period,
            burst,
        }
    }

    pub(crate) fn period_nanos(&self) -> u64 {
        // Validated on construction: the period fits in u64 nanoseconds.
        self.period.as_nanos() as u64
    }

    pub(crate) fn emission_nanos(&self) -> u64 {
        // Validated on construction: the period fits in u64 nanoseconds.
        (self.period.as_nanos() as u64).div_ceil(u64::from(self.limit))
    }

    /// `burst * emission_interval`, the GCRA's tolerance, in nanoseconds.
    pub(crate) fn window_nanos(&self) -> u64 {
        self.emission_nanos() * u64::from(self.burst)
    }
}

impl fmt::Debug for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("limit", &self.limit)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .finish()
    }
}

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
        write!(f, "{}/", self.limit)?;
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
        let limit = parse_count(limit.trim()).map_err(|why| fail(format!("limit {why}")))?;
        let period = parse_period(per).map_err(fail)?;
        if limit == 0 {
            return Err(fail("limit must be at least 1".to_owned()));
        }
        Quota::try_with_burst(limit, period, burst.unwrap_or(limit)).map_err(|e| match e {
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

/// The period of the string form, `[COUNT]UNIT` (`10s`, `min`, `2weeks`),
/// with a reason when it is not one.
fn parse_period(per: &str) -> Result<Duration, String> {
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

#[cfg(feature = "serde")]
mod serde_impl {
    use super::Quota;
    use serde::de::{self, MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::time::Duration;

    /// Serialized as the string form (`"60/min;burst=10"`).
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl Serialize for Quota {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(self)
        }
    }

    /// Deserialized from the string form (`"60/min"`) or from a map
    /// `{limit, period, burst}` where `period` is a string such as `"1min"`
    /// or `"10s"` (or a number of seconds) and `burst` is optional. An
    /// unknown field, a field given twice or a period holding more than a
    /// period (`"10s;burst=5"`) is an error.
    #[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
    impl<'de> Deserialize<'de> for Quota {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(QuotaVisitor)
        }
    }

    struct QuotaVisitor;

    impl<'de> Visitor<'de> for QuotaVisitor {
        type Value = Quota;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a quota such as \"60/min\" or {limit: 60, period: \"1min\", burst: 10}")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Quota, E> {
            v.parse().map_err(E::custom)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Quota, A::Error> {
            let mut limit: Option<u32> = None;
            let mut period: Option<Duration> = None;
            let mut burst: Option<u32> = None;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "limit" if limit.is_some() => return Err(de::Error::duplicate_field("limit")),
                    "burst" if burst.is_some() => return Err(de::Error::duplicate_field("burst")),
                    "period" if period.is_some() => {
                        return Err(de::Error::duplicate_field("period"));
                    }
                    "limit" => limit = Some(map.next_value()?),
                    "burst" => burst = Some(map.next_value()?),
                    "period" => period = Some(map.next_value::<PeriodField>()?.0),
                    other => {
                        return Err(de::Error::unknown_field(
                            other,
                            &["limit", "period", "burst"],
                        ));
                    }
                }
            }
            let limit = limit.ok_or_else(|| de::Error::missing_field("limit"))?;
            let period = period.ok_or_else(|| de::Error::missing_field("period"))?;
            Quota::try_with_burst(limit, period, burst.unwrap_or(limit)).map_err(de::Error::custom)
        }
    }

    /// A period: `"10s"`, `"min"`, `"1day"`, or a whole number of seconds.
    struct PeriodField(Duration);

    impl<'de> Deserialize<'de> for PeriodField {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = PeriodField;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a period such as \"1min\", \"10s\" or a number of seconds")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<PeriodField, E> {
                    Ok(PeriodField(Duration::from_secs(v)))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<PeriodField, E> {
                    u64::try_from(v)
                        .map(|v| PeriodField(Duration::from_secs(v)))
                        .map_err(|_| E::custom("period must not be negative"))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<PeriodField, E> {
                    super::parse_period(v).map(PeriodField).map_err(|why| {
                        E::custom(format!(
                            "invalid period {v:?}: {why}; expected a period such as \"1min\", \
                             \"10s\" or \"day\" (a burst goes in its own `burst` field)"
                        ))
                    })
                }
            }
            d.deserialize_any(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthands() {
        assert_eq!(Quota::per_second(10).period(), Duration::from_secs(1));
        assert_eq!(Quota::per_minute(60).burst(), 60);
        assert_eq!(Quota::per_hour(5).period(), Duration::from_secs(3600));
        assert_eq!(Quota::per_day(1000).period(), Duration::from_secs(86_400));
        assert_eq!(
            Quota::per_minute(60).emission_interval(),
            Duration::from_secs(1)
        );
        // 7/s does not divide evenly: the interval rounds up.
        assert_eq!(Quota::per_second(7).emission_nanos(), 142_857_143);
    }

    #[test]
    #[should_panic(expected = "`limit` must be at least 1")]
    fn per_second_zero_panics() {
        let _ = Quota::per_second(0);
    }

    #[test]
    fn try_new_names_the_field() {
        let s = Duration::from_secs(1);
        assert_eq!(Quota::try_new(0, s), Err(QuotaError::ZeroLimit));
        assert_eq!(
            Quota::try_new(1, Duration::ZERO),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(Quota::try_with_burst(1, s, 0), Err(QuotaError::ZeroBurst));
        assert!(
            Quota::try_new(0, s)
                .unwrap_err()
                .to_string()
                .contains("`limit`")
        );
        assert!(matches!(
            Quota::try_new(10, Duration::from_nanos(5)),
            Err(QuotaError::TooFast { .. })
        ));
        assert!(matches!(
            Quota::try_new(1, Duration::MAX),
            Err(QuotaError::TooLong { .. })
        ));
        // 1/year with a burst of a million years' worth is too long.
        assert!(matches!(
            Quota::try_with_burst(1, Duration::from_secs(365 * 86_400), 1_000),
            Err(QuotaError::TooLong { .. })
        ));
        // The extremes that fit are fine.
        let max_ns = Duration::from_nanos(u64::from(u32::MAX));
        assert!(Quota::try_new(u32::MAX, max_ns).is_ok());
        assert!(Quota::try_new(u32::MAX, Duration::from_secs(3_600)).is_ok());
        assert!(Quota::try_new(1, Duration::from_secs(100 * 365 * 86_400)).is_ok());
    }

    #[test]
    fn a_rate_rounding_would_change_by_more_than_one_percent_is_refused() {
        // Asked: just under one per nanosecond; enforced: one every 2 ns.
        let period = Duration::from_nanos(4_294_967_296);
        let err = Quota::try_new(u32::MAX, period).unwrap_err();
        assert_eq!(
            err,
            QuotaError::Inexact {
                limit: u32::MAX,
                period,
                interval: Duration::from_nanos(2),
            }
        );
        let msg = err.to_string();
        for part in [
            "4294967295 per 4.294967296s",
            "one request every 2ns",
            "2147483648 per 4.294967296s",
            "50.0 % slower",
            "longer `period` or a smaller `limit`",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
        // Every constructor that validates refuses it.
        let parsed = "4294967295/4294967296ns".parse::<Quota>().unwrap_err();
        assert!(
            parsed.to_string().contains("one request every 2ns"),
            "{parsed}"
        );
        assert!(Quota::try_with_burst(u32::MAX, period, 1).is_err());
        // 3 per 4 ns would be enforced as one per 2 ns (2 per 4 ns); 99
        // per 100 ns within 1 % is fine (one per 2 ns would be 50 per 100).
        assert!(Quota::try_new(3, Duration::from_nanos(4)).is_err());
        assert!(Quota::try_new(99, Duration::from_nanos(100)).is_err());
        assert!(Quota::try_new(50, Duration::from_nanos(100)).is_ok());
        // The boundary: 50 per 99 ns is enforced as 50 per 100 ns, 1 %
        // slower, and accepted; 50 per 98 ns, 2 % slower, is not.
        assert!(Quota::try_new(50, Duration::from_nanos(99)).is_ok());
        assert!(Quota::try_new(50, Duration::from_nanos(98)).is_err());
        // What rounds within 1 %: any interval of 100 ns or more.
        assert!(Quota::try_new(10_000_000, Duration::from_secs(1)).is_ok());
        assert!(Quota::try_new(9_999_999, Duration::from_secs(1)).is_ok());
    }

    #[test]
    #[should_panic(expected = "would be enforced as one request every 2ns")]
    fn per_second_panics_on_a_rate_it_cannot_hold() {
        let _ = Quota::per_second(600_000_000);
    }

    #[test]
    fn usual_quotas_keep_working() {
        for n in (1..=10_000).chain([
            65_535, 99_999, 100_000, 1_000_000, 3_333_333, 9_999_991, 10_000_000,
        ]) {
            for q in [Quota::per_second(n), Quota::per_minute(n)] {
                assert_eq!(q.to_string().parse::<Quota>(), Ok(q));
            }
        }
        // Exact intervals are fine however short.
        for n in [100_000_000, 250_000_000, 500_000_000, 1_000_000_000] {
            assert_eq!(Quota::per_second(n).limit(), n);
        }
        for n in [1, 7, 1_000, 123_456_789, u32::MAX] {
            assert_eq!(Quota::per_hour(n).limit(), n);
            assert_eq!(Quota::per_day(n).limit(), n);
        }
    }

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
            (Quota::new(10, Duration::from_secs(14 * 86_400)), "10/14day"),
            (
                Quota::new(3, Duration::from_nanos(1_000_000_007)),
                "3/1000000007ns",
            ),
        ];
        for (q, s) in cases {
            assert_eq!(q.to_string(), s);
            assert_eq!(s.parse::<Quota>(), Ok(q));
        }
    }
}
