//! Quotas that reset on the calendar: [`Calendar`], the UTC periods a
//! [`Quota`](crate::Quota) can be aligned to, and the window arithmetic
//! behind them.
//!
//! A rolling quota (the default, a GCRA) refills continuously: `1000/day`
//! admits a request whenever the last 24 hours leave room. A calendar quota
//! counts what was used since the start of the current UTC minute, hour,
//! day or month and resets to zero at the boundary: `1000000/calendar-month`
//! admits a million from 00:00 UTC on the 1st to the end of the month, then
//! a million again. That is how billing quotas and "daily limits" usually
//! read.
//!
//! ```
//! use std::time::Duration;
//! use tower_sluice::{Calendar, Limiter, Quota};
//!
//! // 60 a minute, rolling, AND 1 000 a calendar day (resets at 00:00 UTC).
//! let daily = Quota::per_calendar_day(1_000);
//! assert_eq!(daily.calendar(), Some(Calendar::Day));
//! assert_eq!(daily.to_string(), "1000/calendar-day");
//! let limiter = Limiter::new(Quota::per_minute(60)).and(daily);
//! let decision = limiter.check();
//! assert!(decision.is_allowed());
//! // The daily count resets at the next midnight UTC.
//! let usage = limiter.usage();
//! assert_eq!((usage[0].used(), usage[0].remaining()), (1, 999));
//! assert!(usage[0].resets_in() <= Duration::from_secs(86_400));
//! ```
//!
//! # Where the count lives
//!
//! In memory, a calendar quota's cell is one `AtomicU64` like a GCRA
//! cell's: the window in the high half and the count used in the low
//! half, decided by one compare-exchange. **The in-memory backend forgets
//! usage when the process restarts**; the Redis backend keeps it (in Redis,
//! with Redis' own persistence), one key per window that expires after the
//! window's end.
//!
//! # The wall clock
//!
//! Windows are UTC calendar periods. Each limiter reads the wall clock
//! ([`SystemTime`]) once, when it is created, and from then on advances it
//! by its monotonic clock, so a decision reads no wall clock and a step of
//! the system clock (an NTP correction) does not move a window. With the
//! `test-util` feature, limiters follow tokio's clock, and
//! `set_test_utc` (feature `test-util`) sets the UTC time tests start from, so a paused clock
//! can cross a boundary exactly.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::gcra::{Gcra, Params};

const NANOS: u64 = 1_000_000_000;
const DAY: u64 = 86_400;

/// A UTC calendar period a [`Quota`](crate::Quota) can reset on.
///
/// See the [module docs](crate::calendar).
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::{Calendar, Quota};
///
/// let q = Quota::per_calendar(1_000_000, Calendar::Month);
/// assert_eq!(q.calendar(), Some(Calendar::Month));
/// // A month's nominal length (for `RateLimit-Policy`'s `w`) is 30 days.
/// assert_eq!(Calendar::Month.nominal(), Duration::from_secs(30 * 86_400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Calendar {
    /// From second 0 of each UTC minute.
    Minute,
    /// From minute 0 of each UTC hour.
    Hour,
    /// From 00:00 UTC each day.
    Day,
    /// From 00:00 UTC on the 1st of each month.
    Month,
}

impl Calendar {
    /// Every calendar period, shortest first.
    ///
    /// ```
    /// use tower_sluice::Calendar;
    /// assert_eq!(Calendar::ALL.len(), 4);
    /// ```
    pub const ALL: [Calendar; 4] = [
        Calendar::Minute,
        Calendar::Hour,
        Calendar::Day,
        Calendar::Month,
    ];

    /// The period's nominal length: 60 s, 1 h, 24 h, or 30 days for a
    /// month. It is the quota's [`period`](crate::Quota::period) and the
    /// window (`w`) of the `RateLimit-Policy` field; the actual window is
    /// the calendar period (a month is 28 to 31 days).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Calendar;
    /// assert_eq!(Calendar::Hour.nominal(), Duration::from_secs(3_600));
    /// ```
    pub const fn nominal(self) -> Duration {
        Duration::from_secs(match self {
            Calendar::Minute => 60,
            Calendar::Hour => 3_600,
            Calendar::Day => DAY,
            Calendar::Month => 30 * DAY,
        })
    }

    /// The period's name in the quota string form: `minute`, `hour`,
    /// `day` or `month` (`1000/calendar-day`).
    ///
    /// ```
    /// use tower_sluice::Calendar;
    /// assert_eq!(Calendar::Day.name(), "day");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Calendar::Minute => "minute",
            Calendar::Hour => "hour",
            Calendar::Day => "day",
            Calendar::Month => "month",
        }
    }

    /// The period named `name` (`minute`/`min`/`m`, `hour`/`h`, `day`/`d`,
    /// `month`/`mo`; case-insensitive).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "minute" | "min" | "m" => Some(Calendar::Minute),
            "hour" | "h" | "hr" => Some(Calendar::Hour),
            "day" | "d" => Some(Calendar::Day),
            "month" | "mo" => Some(Calendar::Month),
            _ => None,
        }
    }

    /// The window holding `utc` (nanoseconds since the Unix epoch):
    /// `(start, end)` in nanoseconds since the epoch, `end` excluded.
    pub(crate) fn window(self, utc: u64) -> (u64, u64) {
        let secs = utc / NANOS;
        let (start, end) = match self {
            Calendar::Minute => aligned(secs, 60),
            Calendar::Hour => aligned(secs, 3_600),
            Calendar::Day => aligned(secs, DAY),
            Calendar::Month => {
                let days = (secs / DAY) as i64;
                let (y, m, _) = civil_from_days(days);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let start = days_from_civil(y, m, 1) as u64 * DAY;
                let end = days_from_civil(ny, nm, 1) as u64 * DAY;
                (start, end)
            }
        };
        (start.saturating_mul(NANOS), end.saturating_mul(NANOS))
    }
}

fn aligned(secs: u64, len: u64) -> (u64, u64) {
    let start = secs - secs % len;
    (start, start + len)
}

impl fmt::Display for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// Civil dates from days since 1970-01-01 and back, in the proleptic
// Gregorian calendar: Howard Hinnant's algorithms
// (<https://howardhinnant.github.io/date_algorithms.html>). A dozen lines
// of integer arithmetic, exact for every date we can meet, instead of a
// date crate (`time`, `chrono`) whose time zones, formatting and parsing
// a UTC month boundary does not need; tested against a day-by-day model.

/// `(year, month 1..=12, day 1..=31)` of the day `z` days after 1970-01-01.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March first
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of `year`-`month`-`day`.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the Unix epoch of `t` (0 before it, saturating far
/// after it).
pub(crate) fn utc_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The UTC time a clock created now starts from, in nanoseconds since the
/// epoch: the system clock, or under `test-util` the time set by
/// [`set_test_utc`] on this thread, advanced by tokio's clock since.
pub(crate) fn utc_now() -> u64 {
    #[cfg(feature = "test-util")]
    if let Some((utc, at)) = TEST_UTC.with(std::cell::Cell::get) {
        let since = tokio::time::Instant::now().saturating_duration_since(at);
        return utc.saturating_add(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX));
    }
    utc_nanos(SystemTime::now())
}

#[cfg(feature = "test-util")]
thread_local! {
    static TEST_UTC: std::cell::Cell<Option<(u64, tokio::time::Instant)>> =
        const { std::cell::Cell::new(None) };
}

/// Makes `now` the UTC time of tokio's clock at this moment, for the
/// limiters, stores and layers this thread creates afterwards (feature
/// `test-util`). They read the wall clock once, when created, and advance
/// it by tokio's clock, so a test on a paused clock can start just before
/// a calendar boundary and `tokio::time::advance` across it.
///
/// It affects this thread only (tests run in parallel): call it on the
/// thread that builds the limiters, before building them. Layers built
/// earlier keep the time they read.
///
/// ```
/// # #[cfg(feature = "test-util")]
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use tower_sluice::{Limiter, Quota, calendar};
///
/// // One second before midnight UTC, 2024-02-29.
/// calendar::set_test_utc(UNIX_EPOCH + Duration::from_secs(1_709_251_199));
/// let limiter = Limiter::new(Quota::per_calendar_day(1));
/// assert!(limiter.check().is_allowed());
/// assert!(!limiter.check().is_allowed());
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert!(limiter.check().is_allowed(), "a new day: 2024-03-01");
/// # }
/// # #[cfg(not(feature = "test-util"))] fn main() {}
/// ```
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub fn set_test_utc(now: SystemTime) {
    let at = tokio::time::Instant::now();
    TEST_UTC.with(|c| c.set(Some((utc_nanos(now), at))));
}

// ---------------------------------------------------------------------------
// The cell.
//
// A calendar cell's word is `tag << 32 | used`: `used` is the count charged
// in the window, `tag` names the window: its end in the limiter's clock
// (nanoseconds since the clock's origin), divided by 2^32 and rounded up.
// Windows are at least a minute long, 14 units of 2^32 ns, so consecutive
// windows never share a tag. And read as a GCRA `tat`, the word is a time
// at or after the window's end, so code that only reads words (the
// in-memory store, which forgets a key once its `tat` has passed) keeps a
// calendar cell exactly as long as its window lasts, and at most 9 s
// longer, without knowing its quota.

const USED: u64 = (1 << 32) - 1;
/// The claim bit of a word ([`Gcra::claim`]).
const CLAIMED: u64 = 1 << 63;
/// Tags take 31 bits: the top bit of a word marks a claimed cell.
const MAX_TAG: u64 = (1 << 31) - 1;

/// One window, in the clock's nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// Start (0 when it started before the clock's origin).
    pub(crate) start: u64,
    /// End, excluded.
    pub(crate) end: u64,
    tag: u64,
}

/// The window holding `at` (clock nanoseconds) for a clock whose origin is
/// `utc` nanoseconds after the epoch, or `None` centuries ahead.
pub(crate) fn window_at(cal: Calendar, utc: u64, at: u64) -> Option<Window> {
    let (start, end) = cal.window(utc.saturating_add(at));
    let end = end.checked_sub(utc)?;
    let tag = end.div_ceil(1 << 32);
    (tag <= MAX_TAG).then_some(Window {
        start: start.saturating_sub(utc),
        end,
        tag,
    })
}

/// The window a (non-zero) tag names.
fn window_of_tag(cal: Calendar, utc: u64, tag: u64) -> Option<Window> {
    // Within 2^32 ns (4.3 s) before the window's end, so inside it.
    window_at(cal, utc, (tag - 1) << 32)
}

/// What a cell holds as seen at `at`: the window of `at` and its count,
/// or a later window some request reserved ahead into, and its count.
pub(crate) fn view(word: u64, cal: Calendar, utc: u64, at: u64) -> Option<(Window, u32)> {
    let now = window_at(cal, utc, at)?;
    let tag = word >> 32;
    let used = (word & USED) as u32;
    if tag < now.tag {
        Some((now, 0))
    } else if tag == now.tag {
        Some((now, used))
    } else {
        Some((window_of_tag(cal, utc, tag)?, used))
    }
}

/// A word holding `used` in `window`.
pub(crate) fn word(window: &Window, used: u32) -> u64 {
    window.tag << 32 | u64::from(used)
}

/// How long after `at` a charge of `count` fits in a cell holding `used`
/// in `window` under `limit` (`u64::MAX`: never).
fn wait_for(window: &Window, used: u32, count: u64, limit: u32, at: u64) -> u64 {
    if count > u64::from(limit) {
        return u64::MAX;
    }
    let fits = u64::from(used) + count <= u64::from(limit);
    match (window.start > at, fits) {
        // A later window that some request reserved ahead into.
        (true, true) => window.start - at,
        (false, true) => 0,
        // The next window is empty.
        (_, false) => window.end.saturating_sub(at),
    }
}

/// The decision of a calendar cell on `word` for a charge of `count` at
/// `at`: the new word when it fits now, else `(base, wait)`: the word as
/// seen at `at` and how long until it fits.
pub(crate) fn decide(
    word: u64,
    cal: Calendar,
    utc: u64,
    limit: u32,
    count: u64,
    at: u64,
) -> Result<u64, (u64, u64)> {
    let Some((window, used)) = view(word, cal, utc, at) else {
        return Err((word, u64::MAX));
    };
    match wait_for(&window, used, count, limit, at) {
        0 => Ok(self::word(&window, used + count as u32)),
        wait => Err((self::word(&window, used), wait)),
    }
}

/// Gives back `count` charged in the window of `stamp` (the word a charge
/// wrote) from `word`, if the cell still counts that window: the word to
/// store, or `None` to leave it.
pub(crate) fn refunded(word: u64, stamp: u64, count: u64) -> Option<u64> {
    if word >> 32 != stamp >> 32 || word == 0 {
        return None;
    }
    let used = (word & USED).saturating_sub(count);
    Some((word & !USED) | used)
}

/// Applies `f` to the cell's word by compare-exchange (waiting out a
/// claim), returning the word written, or `f`'s refusal.
#[inline]
fn update<E>(g: &Gcra, mut f: impl FnMut(u64) -> Result<u64, E>) -> Result<u64, E> {
    let cell = g.word();
    let mut cur = cell.load(Relaxed);
    loop {
        if cur & CLAIMED != 0 {
            cur = g.unclaimed();
        }
        let new = f(cur)?;
        match cell.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
            Ok(_) => return Ok(new),
            Err(actual) => cur = actual,
        }
    }
}

fn parts(p: &Params) -> (Calendar, u64, u32) {
    let cal = p.calendar().expect("a calendar cell has a calendar quota");
    (cal, p.utc, p.quota.limit())
}

/// [`Gcra::try_admit`] for a calendar cell: charges `count` (the charge's
/// [units](Params::units) in the quota) at `at` if the window has room,
/// returning the new word, or the word as seen at `at`.
pub(crate) fn try_admit(g: &Gcra, p: &Params, count: u32, at: u64) -> Result<u64, u64> {
    let (cal, utc, limit) = parts(p);
    let count = u64::from(count);
    update(g, |cur| {
        decide(cur, cal, utc, limit, count, at).map_err(|(base, _)| base)
    })
}

/// [`Gcra::reserve`] for a calendar cell: charges the earliest window
/// (within `max_wait` of `now`) with room, returning the word written and
/// the wait, or the word as seen at `now`.
pub(crate) fn reserve(
    g: &Gcra,
    p: &Params,
    count: u32,
    now: u64,
    max_wait: u64,
) -> Result<(u64, u64), u64> {
    let (cal, utc, limit) = parts(p);
    let count = u64::from(count);
    let mut wait = 0;
    update(g, |cur| match decide(cur, cal, utc, limit, count, now) {
        Ok(new) => {
            wait = 0;
            Ok(new)
        }
        Err((base, w)) if w > max_wait => Err(base),
        Err((base, w)) => {
            wait = w;
            decide(cur, cal, utc, limit, count, now + w).map_err(|_| base)
        }
    })
    .map(|new| (new, wait))
}

/// [`Gcra::wait`] for a calendar cell: how long after `now` a charge of
/// `count` would fit, and the word as seen at `now`. Consumes nothing.
pub(crate) fn wait(g: &Gcra, p: &Params, count: u32, now: u64) -> (u64, u64) {
    let (cal, utc, limit) = parts(p);
    let count = u64::from(count);
    let mut cur = g.word().load(Relaxed);
    if cur & CLAIMED != 0 {
        cur = g.unclaimed();
    }
    match decide(cur, cal, utc, limit, count, now) {
        Ok(new) => (0, new - count),
        Err((base, wait)) => (wait, base),
    }
}

/// [`Gcra::refund`] for a calendar cell: gives back `count` if the
/// cell still counts the window of `stamp` (the word the charge wrote).
/// Counts add up whatever order they come in, so a refund within the
/// window is exact even after later charges; after the window, nothing is
/// given back.
pub(crate) fn refund(g: &Gcra, stamp: u64, count: u32) {
    let count = u64::from(count);
    let _ = update(g, |cur| refunded(cur, stamp, count).ok_or(()));
}

/// [`Gcra::debt`] for a calendar cell: adds `count` (known after the
/// fact) to the count of the window the cell counts at `now` (or of the
/// later window it was reserved ahead into), past the limit if need be,
/// clamped at `u32::MAX`. Later requests in that window are refused; the
/// next window starts empty.
pub(crate) fn debt(g: &Gcra, p: &Params, count: u32, now: u64) {
    let (cal, utc, _) = parts(p);
    let _ = update(g, |cur| match view(cur, cal, utc, now) {
        Some((window, used)) => Ok(word(&window, used.saturating_add(count))),
        // Centuries ahead: nothing to add to.
        None => Err(()),
    });
}

/// The word that keeps what a cell holds across a change of its quota
/// from `old` to `new` at `now` (`Limiter::set_quotas`), when either is a
/// calendar quota: the same share of the allowance stays used (rounded
/// up: a change never frees capacity it did not have).
pub(crate) fn convert(word: u64, now: u64, old: &Params, new: &Params) -> u64 {
    // The share used, in parts per 2^32.
    let share: u128 = match old.calendar() {
        Some(cal) => match view(word, cal, old.utc, now) {
            Some((w, used)) if w.start <= now => {
                (u128::from(used) << 32) / u128::from(old.quota.limit())
            }
            Some(_) | None => 1 << 32,
        },
        None => {
            let debt = u128::from(word.saturating_sub(now));
            (debt << 32) / u128::from(old.window.max(1))
        }
    };
    let share = share.min(1 << 32);
    match new.calendar() {
        Some(cal) => match window_at(cal, new.utc, now) {
            Some(w) => {
                let limit = u128::from(new.quota.limit());
                let used = (share * limit).div_ceil(1 << 32).min(limit);
                self::word(&w, used as u32)
            }
            None => word,
        },
        None => {
            let debt = (share * u128::from(new.window)).div_ceil(1 << 32);
            now.saturating_add(u64::try_from(debt).unwrap_or(u64::MAX))
                .min(crate::gcra::MAX_TAT)
        }
    }
}

/// One calendar quota's usage for a key, for dashboards and billing.
///
/// Returned by [`Limiter::usage`](crate::Limiter::usage) and
/// [`PerKeyHandle::usage`](crate::per_key::PerKeyHandle::usage), one per
/// calendar quota, in the policy's order.
///
/// ```
/// use tower_sluice::{Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_calendar_month(1_000_000));
/// limiter.check_n(1_500).unwrap();
/// let month = &limiter.usage()[0];
/// assert_eq!(month.quota(), Quota::per_calendar_month(1_000_000));
/// assert_eq!((month.used(), month.remaining()), (1_500, 998_500));
/// println!("resets at {:?}", month.resets_at());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    quota: crate::quota::Quota,
    used: u32,
    resets_in: Duration,
    resets_at: SystemTime,
}

impl Usage {
    pub(crate) fn new(
        quota: crate::quota::Quota,
        used: u32,
        resets_in: Duration,
        utc_end: u64,
    ) -> Self {
        Usage {
            quota,
            used,
            resets_in,
            resets_at: UNIX_EPOCH + Duration::from_nanos(utc_end),
        }
    }

    /// The calendar quota.
    pub fn quota(&self) -> crate::quota::Quota {
        self.quota
    }

    /// How much was charged in the current window (requests, or units of
    /// cost).
    pub fn used(&self) -> u32 {
        self.used
    }

    /// How much more the current window admits.
    pub fn remaining(&self) -> u32 {
        self.quota.limit().saturating_sub(self.used)
    }

    /// When the window ends and the count starts again from zero (UTC, as
    /// the limiter's clock reckons it).
    pub fn resets_at(&self) -> SystemTime {
        self.resets_at
    }

    /// How long until [`resets_at`](Self::resets_at).
    pub fn resets_in(&self) -> Duration {
        self.resets_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Day by day from 1970-01-01: the model Hinnant's algorithms must match.
    fn model(days: i64) -> (i64, u32, u32) {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let len = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        let mut left = days;
        // Whole years first, to keep the model quick.
        while left >= if leap(y) { 366 } else { 365 } {
            left -= if leap(y) { 366 } else { 365 };
            y += 1;
        }
        while left > 0 {
            left -= 1;
            d += 1;
            if d > len(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        (y, m, d)
    }

    proptest! {
        #[test]
        fn civil_conversion_matches_a_day_by_day_model(days in 0i64..200_000) {
            let civil = civil_from_days(days);
            prop_assert_eq!(civil, model(days));
            prop_assert_eq!(days_from_civil(civil.0, civil.1, civil.2), days);
        }

        #[test]
        fn month_windows_hold_their_instant(secs in 0u64..6_000_000_000) {
            let utc = secs * NANOS;
            let (start, end) = Calendar::Month.window(utc);
            prop_assert!(start <= utc && utc < end);
            let (y, m, d) = civil_from_days((start / NANOS / DAY) as i64);
            prop_assert_eq!(d, 1);
            let (ny, nm, nd) = civil_from_days((end / NANOS / DAY) as i64);
            prop_assert_eq!(nd, 1);
            prop_assert_eq!((ny, nm), if m == 12 { (y + 1, 1) } else { (y, m + 1) });
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 1),
            29
        );
        assert_eq!(
            days_from_civil(2023, 3, 1) - days_from_civil(2023, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 1),
            28
        );
        assert_eq!(
            days_from_civil(2000, 3, 1) - days_from_civil(2000, 2, 1),
            29
        );
        assert_eq!(
            days_from_civil(2025, 1, 1) - days_from_civil(2024, 12, 1),
            31
        );
    }

    #[test]
    fn windows_of_each_period() {
        // 2024-02-29 23:59:59.5 UTC.
        let t = 1_709_251_199 * NANOS + NANOS / 2;
        let day = days_from_civil(2024, 2, 29) as u64 * DAY * NANOS;
        assert_eq!(Calendar::Day.window(t), (day, day + DAY * NANOS));
        assert_eq!(
            Calendar::Minute.window(t),
            (t - 59 * NANOS - NANOS / 2, t + NANOS / 2)
        );
        assert_eq!(Calendar::Hour.window(t).1, t + NANOS / 2);
        let feb = days_from_civil(2024, 2, 1) as u64 * DAY * NANOS;
        assert_eq!(Calendar::Month.window(t), (feb, t + NANOS / 2));
    }

    #[test]
    fn words_name_their_window() {
        let utc = 1_700_000_000 * NANOS;
        for cal in Calendar::ALL {
            let w = window_at(cal, utc, 5 * NANOS).unwrap();
            // Read as a tat, a word is at or after its window's end.
            assert!(word(&w, 0) >= w.end && word(&w, 0) < w.end + (2 << 32));
            assert_eq!(window_of_tag(cal, utc, w.tag), Some(w));
            let next = window_at(cal, utc, w.end).unwrap();
            assert!(next.tag > w.tag);
            assert_eq!(next.start, w.end);
        }
    }

    #[test]
    fn decide_counts_and_resets() {
        let utc = 1_700_000_000 * NANOS; // 22:13:20 UTC
        let cal = Calendar::Minute;
        let mut w = 0;
        for _ in 0..3 {
            w = decide(w, cal, utc, 3, 1, 0).unwrap();
        }
        // 40 s to the minute's end.
        let (base, wait) = decide(w, cal, utc, 3, 1, 0).unwrap_err();
        assert_eq!((base, wait), (w, 40 * NANOS));
        assert_eq!(decide(w, cal, utc, 3, 1, 40 * NANOS - 1).unwrap_err().1, 1);
        let w2 = decide(w, cal, utc, 3, 3, 40 * NANOS).unwrap();
        // Reserved ahead into the next minute: the current one is closed.
        let (_, wait) = decide(w2, cal, utc, 3, 1, 0).unwrap_err();
        assert_eq!(wait, 100 * NANOS);
        // A refund in the same window gives back; in another, nothing.
        assert_eq!(refunded(w, w, 2).map(|x| x & USED), Some(1));
        assert_eq!(refunded(w2, w, 2), None);
        assert_eq!(decide(0, cal, utc, 3, 4, 0).unwrap_err().1, u64::MAX);
    }
}
