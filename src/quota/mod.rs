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
//! # Units
//!
//! A quota counts requests unless it names a unit of cost with
//! [`Quota::counting`]: `Quota::per_minute(100_000).counting("tokens")` is
//! 100 000 tokens a minute, limit and burst in tokens. A request is charged
//! 1 by every quota that counts requests and its cost (from the layer's
//! cost function, see [`cost`](crate::cost)) by every quota that counts a
//! unit, so one policy holds "60 requests a minute *and* 100 000 tokens a
//! minute" and decides both together.
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
//! `LIMIT [COST-UNIT]/[COUNT]UNIT[;burst=B]`, for example `10/s`, `60/min`,
//! `1000/day`, `100/10s`, `5/500ms`, `60/min;burst=10` or (a quota of cost,
//! see [`Quota::counting`]) `100000 tokens/min`. Spaces around the parts are
//! allowed and period units are case-insensitive (cost units are kept as
//! written). Period units:
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
//!
//! # Calendar quotas
//!
//! A quota can instead reset on UTC calendar boundaries (see
//! [`crate::calendar`]): `LIMIT/calendar-UNIT`, where UNIT is `minute`,
//! `hour`, `day` or `month` (`1000000/calendar-month`, resets at 00:00 UTC
//! on the 1st). Its burst is its limit: the whole window's allowance may be
//! used at once, so `;burst=` is refused. A calendar quota may count a
//! unit of cost too: `1000000 tokens/calendar-month`.
//!
//! ```
//! use tower_sluice::{Calendar, Quota};
//!
//! let q: Quota = "1000000/calendar-month".parse()?;
//! assert_eq!(q, Quota::per_calendar_month(1_000_000));
//! assert_eq!(q.calendar(), Some(Calendar::Month));
//! assert_eq!(q.burst(), q.limit());
//! assert!("10/calendar-week".parse::<Quota>().is_err());
//!
//! // 1 000 000 tokens per calendar month.
//! let tokens = Quota::per_calendar_month(1_000_000).counting("tokens");
//! assert_eq!(tokens.to_string(), "1000000 tokens/calendar-month");
//! assert_eq!(tokens.to_string().parse::<Quota>()?, tokens);
//! # Ok::<(), tower_sluice::QuotaError>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::calendar::Calendar;

mod error;
mod parse;
#[cfg(feature = "serde")]
mod serde;
mod unit;

pub use error::QuotaError;
pub(crate) use unit::Unit;

/// The largest burst window (`burst * period / limit`) a quota may have:
/// about 146 years. Larger windows are rejected so that the limiter's
/// nanosecond arithmetic can never overflow.
const MAX_WINDOW_NANOS: u64 = 1 << 62;

/// A rate: `limit` requests per `period`, with up to `burst` at once;
/// rolling (a GCRA, the default) or reset on UTC calendar boundaries
/// ([`per_calendar`](Self::per_calendar)).
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
    unit: Unit,
    /// `Some` for a quota that resets on a calendar boundary.
    calendar: Option<Calendar>,
}

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
            unit: Unit::REQUESTS,
            calendar: None,
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

    /// `limit` per UTC calendar `period`, reset to zero at each boundary:
    /// the start of each minute, hour, day (00:00 UTC) or month (00:00 UTC
    /// on the 1st), or an error when `limit` is 0.
    ///
    /// The whole limit may be used at once (its burst is its limit), and
    /// its [`period`](Self::period) is the period's nominal length
    /// ([`Calendar::nominal`]). It combines with rolling quotas in one
    /// [`Limiter`](crate::Limiter) or [`Policy`](crate::per_key::Policy).
    /// See [`crate::calendar`].
    ///
    /// # Errors
    ///
    /// [`QuotaError::ZeroLimit`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Calendar, Quota, QuotaError};
    ///
    /// let q = Quota::try_per_calendar(10_000, Calendar::Day)?;
    /// assert_eq!(q.to_string(), "10000/calendar-day");
    /// assert_eq!(Quota::try_per_calendar(0, Calendar::Day), Err(QuotaError::ZeroLimit));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn try_per_calendar(limit: u32, period: Calendar) -> Result<Self, QuotaError> {
        if limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        Ok(Quota {
            limit,
            period: period.nominal(),
            burst: limit,
            unit: Unit::REQUESTS,
            calendar: Some(period),
        })
    }

    /// `limit` per UTC calendar `period`, reset at each boundary; see
    /// [`try_per_calendar`](Self::try_per_calendar).
    ///
    /// # Panics
    ///
    /// When `limit` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Calendar, Limiter, Quota};
    ///
    /// // 1 000 000 tokens per calendar month, resets on the 1st.
    /// let monthly = Quota::per_calendar(1_000_000, Calendar::Month);
    /// let limiter = Limiter::new(monthly);
    /// assert!(limiter.check_n(250_000)?.is_allowed());
    /// assert_eq!(limiter.usage()[0].remaining(), 750_000);
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    #[track_caller]
    pub fn per_calendar(limit: u32, period: Calendar) -> Self {
        match Self::try_per_calendar(limit, period) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    /// `n` per UTC calendar minute (from second 0). See
    /// [`per_calendar`](Self::per_calendar).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_calendar_minute(60).to_string(), "60/calendar-minute");
    /// ```
    #[track_caller]
    pub fn per_calendar_minute(n: u32) -> Self {
        Self::per_calendar(n, Calendar::Minute)
    }

    /// `n` per UTC calendar hour (from minute 0). See
    /// [`per_calendar`](Self::per_calendar).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_calendar_hour(500).to_string(), "500/calendar-hour");
    /// ```
    #[track_caller]
    pub fn per_calendar_hour(n: u32) -> Self {
        Self::per_calendar(n, Calendar::Hour)
    }

    /// `n` per UTC calendar day (from 00:00 UTC). See
    /// [`per_calendar`](Self::per_calendar).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// // "Daily limits: total requests per day", reset at midnight UTC.
    /// assert_eq!(Quota::per_calendar_day(10_000), "10000/calendar-day".parse().unwrap());
    /// ```
    #[track_caller]
    pub fn per_calendar_day(n: u32) -> Self {
        Self::per_calendar(n, Calendar::Day)
    }

    /// `n` per UTC calendar month (from 00:00 UTC on the 1st). See
    /// [`per_calendar`](Self::per_calendar).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// assert_eq!(Quota::per_calendar_month(1_000_000).to_string(), "1000000/calendar-month");
    /// ```
    #[track_caller]
    pub fn per_calendar_month(n: u32) -> Self {
        Self::per_calendar(n, Calendar::Month)
    }

    /// The calendar period a quota resets on, or `None` for a rolling
    /// quota.
    pub fn calendar(&self) -> Option<Calendar> {
        self.calendar
    }

    /// The same rate with at most `burst` requests at once.
    ///
    /// # Panics
    ///
    /// On a [calendar](Self::per_calendar) quota, when `burst` is not its
    /// limit (a calendar window's whole allowance may be used at once).
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
        if let Some(cal) = self.calendar {
            assert!(
                burst == self.limit,
                "invalid quota: a calendar quota ({}/calendar-{cal}) admits its whole limit at once; \
                 `burst` does not apply",
                self.limit
            );
            return self;
        }
        match Self::try_with_burst(self.limit, self.period, burst) {
            Ok(q) => q.with_unit(self.unit),
            Err(e) => panic!("{e}"),
        }
    }

    /// The same quota, counting `unit` instead of requests: a request is
    /// then charged its *cost* (tokens, bytes, credits: what the layer's
    /// cost function says) rather than 1. `"requests"` counts requests.
    ///
    /// The limit and burst are in that unit: `Quota::per_minute(100_000)
    /// .counting("tokens")` admits 100 000 tokens a minute, and a request
    /// costing more than the burst can never pass (an error, never a wait).
    /// A policy may mix quotas of several units; each is charged in its own.
    ///
    /// A unit name is a letter followed by letters, digits, `-`, `_` or
    /// `.`, at most 32 characters; a process may name up to 64 units.
    ///
    /// # Panics
    ///
    /// When the name is not such a token; use
    /// [`try_counting`](Self::try_counting) for a fallible version.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    ///
    /// let tokens = Quota::per_minute(100_000).counting("tokens");
    /// assert_eq!(tokens.unit(), "tokens");
    /// assert!(!tokens.counts_requests());
    /// assert_eq!(tokens.to_string(), "100000 tokens/min");
    /// assert_eq!("100000 tokens/min".parse::<Quota>().unwrap(), tokens);
    /// // Requests are the default unit.
    /// assert_eq!(Quota::per_minute(60).unit(), "requests");
    /// assert_eq!(Quota::per_minute(60).counting("requests"), Quota::per_minute(60));
    /// ```
    #[track_caller]
    #[must_use]
    pub fn counting(self, unit: &str) -> Self {
        match self.try_counting(unit) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        }
    }

    /// The same quota counting `unit`, or an error saying why the name is
    /// refused.
    ///
    /// # Errors
    ///
    /// [`QuotaError::BadUnit`] when `unit` is not a token (see
    /// [`counting`](Self::counting)) or the process already names 64 units.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Quota, QuotaError};
    ///
    /// let q = Quota::per_day(1_000_000).try_counting("tokens")?;
    /// assert_eq!(q.unit(), "tokens");
    /// assert!(matches!(
    ///     Quota::per_day(10).try_counting("two words"),
    ///     Err(QuotaError::BadUnit { .. })
    /// ));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn try_counting(self, unit: &str) -> Result<Self, QuotaError> {
        let unit = Unit::named(unit).map_err(|reason| QuotaError::BadUnit {
            unit: unit.to_owned(),
            reason,
        })?;
        Ok(self.with_unit(unit))
    }

    /// What the quota counts: `"requests"` (the default), or the unit
    /// named with [`counting`](Self::counting).
    pub fn unit(&self) -> &'static str {
        self.unit.name()
    }

    /// Whether the quota counts requests (each charged 1) rather than a
    /// unit of cost (each request charged its cost).
    pub fn counts_requests(&self) -> bool {
        !self.unit.is_cost()
    }

    /// The same quota with `unit`.
    #[inline]
    pub(crate) const fn with_unit(mut self, unit: Unit) -> Self {
        self.unit = unit;
        self
    }

    /// The unit, as kept.
    #[inline]
    pub(crate) const fn unit_id(&self) -> Unit {
        self.unit
    }

    /// Requests (or units of cost) admitted per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The period the limit refers to.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests (or units of cost) admitted at once after a quiet spell:
    /// the limit, unless set with [`with_burst`](Self::with_burst).
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
    /// // 3 a second: one every 333_333_334 ns, not 333_333_333.
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
            unit: Unit::REQUESTS,
            calendar: None,
        }
    }

    /// The same quota with the window kind `calendar` (parts validated
    /// before).
    pub(crate) const fn with_calendar(mut self, calendar: Option<Calendar>) -> Self {
        self.calendar = calendar;
        self
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
        let mut d = f.debug_struct("Quota");
        d.field("limit", &self.limit)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .field("unit", &self.unit());
        if let Some(cal) = self.calendar {
            d.field("calendar", &cal);
        }
        d.finish()
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
}
