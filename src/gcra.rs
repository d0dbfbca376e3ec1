//! The lock-free GCRA cell every in-process limiter shares, and the
//! [`Decision`] it returns.
//!
//! The generic cell rate algorithm keeps one number per bucket: the
//! *theoretical arrival time* `tat`, in nanoseconds since the limiter's
//! clock origin. With emission interval `T = period / limit` (rounded up to
//! the nanosecond) and burst `B`, a request of cost `c` arriving at `t`:
//!
//! ```text
//! new = max(tat, t) + c*T
//! allowed  iff  new - t <= B*T        then tat = new
//! denied:  retry_after = new - t - B*T
//! after the decision: remaining = floor((B*T - (tat - t)) / T), reset_after = tat - t
//! ```
//!
//! `tat` lives in one `AtomicU64` updated by compare-exchange: no lock and no
//! allocation per decision.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, fence};
use std::time::Duration;

use crate::calendar::{self, Calendar};
use crate::cost::Charge;
use crate::error::RateLimited;
use crate::quota::{Quota, Unit};

/// The top bit of a cell's word: the cell is claimed (see [`Gcra::claim`]).
const CLAIMED: u64 = 1 << 63;

/// The latest `tat` a cell holds: 2^63 - 1 nanoseconds (292 years) after
/// the clock's origin. Later ones deny, as an overflow would.
pub(crate) const MAX_TAT: u64 = CLAIMED - 1;

/// One GCRA bucket: the theoretical arrival time, in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct Gcra {
    tat: AtomicU64,
}

impl Gcra {
    /// A full bucket.
    pub(crate) const fn new() -> Self {
        Gcra {
            tat: AtomicU64::new(0),
        }
    }

    /// A bucket with the given theoretical arrival time.
    #[cfg(test)]
    pub(crate) const fn with_tat(tat: u64) -> Self {
        Gcra {
            tat: AtomicU64::new(tat),
        }
    }

    /// The theoretical arrival time now stored (under a claim: the value
    /// before it).
    #[inline]
    pub(crate) fn tat(&self) -> u64 {
        self.tat.load(Relaxed) & !CLAIMED
    }

    /// The cell's word, for a calendar quota's cell ([`crate::calendar`]).
    #[inline]
    pub(crate) fn word(&self) -> &AtomicU64 {
        &self.tat
    }

    /// The value once no [`claim`](Self::claim) holds the cell. A claim
    /// lasts a few compare-exchanges (no lock, no allocation, no wait is
    /// taken while one is held), so this spins briefly, then yields.
    #[cold]
    pub(crate) fn unclaimed(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            let cur = self.tat.load(Acquire);
            if cur & CLAIMED == 0 {
                return cur;
            }
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Holds the cell until [`release`](Self::release): nobody else
    /// changes it meanwhile (other deciders wait). Returns its value.
    /// Claims of several cells are taken in address order by one caller
    /// at a time per cell, so they cannot deadlock.
    pub(crate) fn claim(&self) -> u64 {
        let mut cur = self.tat.load(Relaxed);
        loop {
            if cur & CLAIMED != 0 {
                cur = self.unclaimed();
            }
            match self
                .tat
                .compare_exchange_weak(cur, cur | CLAIMED, Acquire, Relaxed)
            {
                Ok(_) => return cur,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Ends a claim, storing `tat` (the claimed value to change nothing).
    pub(crate) fn release(&self, tat: u64) {
        debug_assert!(tat & CLAIMED == 0);
        self.tat.store(tat, Release);
    }

    /// Admits `inc` nanoseconds of cost at time `at` if the bucket has room,
    /// returning the new `tat`, or the current `max(tat, at)` when it does
    /// not. Nothing is consumed on denial.
    #[inline]
    pub(crate) fn try_admit(&self, window: u64, inc: u64, at: u64) -> Result<u64, u64> {
        let mut cur = self.tat.load(Relaxed);
        loop {
            let base = cur.max(at);
            // Overflow (centuries past the origin) denies rather than wraps.
            let new = match base.checked_add(inc) {
                Some(new) if new - at <= window && new <= MAX_TAT => new,
                _ if cur & CLAIMED != 0 => {
                    cur = self.unclaimed();
                    continue;
                }
                _ => return Err(base),
            };
            match self.tat.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return Ok(new),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Reserves `inc` nanoseconds of cost at the earliest time at or after
    /// `now` when the bucket has room, if that is at most `max_wait` away.
    /// Returns `(new_tat, wait)`, or `max(tat, now)` when the wait would be
    /// longer (then nothing is consumed).
    #[inline]
    pub(crate) fn reserve(
        &self,
        window: u64,
        inc: u64,
        now: u64,
        max_wait: u64,
    ) -> Result<(u64, u64), u64> {
        let mut cur = self.tat.load(Relaxed);
        loop {
            if cur & CLAIMED != 0 {
                cur = self.unclaimed();
            }
            let base = cur.max(now);
            let new = match base.checked_add(inc) {
                Some(new) if new <= MAX_TAT => new,
                _ => return Err(base),
            };
            let wait = (new - now).saturating_sub(window);
            if wait > max_wait {
                return Err(base);
            }
            match self.tat.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return Ok((new, wait)),
                Err(actual) => cur = actual,
            }
        }
    }

    /// How long after `now` a cost of `inc` would be admitted, and the
    /// current `max(tat, now)`. Consumes nothing.
    #[inline]
    pub(crate) fn wait(&self, window: u64, inc: u64, now: u64) -> (u64, u64) {
        let mut cur = self.tat.load(Relaxed);
        if cur & CLAIMED != 0 {
            cur = self.unclaimed();
        }
        let base = cur.max(now);
        let wait = match base.checked_add(inc) {
            Some(new) if new <= MAX_TAT => (new - now).saturating_sub(window),
            _ => u64::MAX,
        };
        (wait, base)
    }

    /// Gives back a cost of `inc` admitted with result `new`, if nothing was
    /// admitted since. Under a race the refund is skipped: the bucket may
    /// stay one request emptier than it should, never fuller.
    #[inline]
    pub(crate) fn refund(&self, new: u64, inc: u64) {
        while let Err(actual) =
            self.tat
                .compare_exchange(new, new.saturating_sub(inc), Relaxed, Relaxed)
        {
            if actual & CLAIMED == 0 {
                return;
            }
            // Claimed: the claim may leave the value as it was.
            self.unclaimed();
        }
    }
}

impl Gcra {
    /// Charges `inc` more nanoseconds of cost, known after the fact: `tat`
    /// moves from `max(tat, now)` by `inc`, past the burst if need be (a
    /// debt that later requests wait out), saturating at [`MAX_TAT`]. One
    /// compare-exchange loop, waiting out a claim.
    #[inline]
    pub(crate) fn debt(&self, inc: u64, now: u64) {
        let mut cur = self.tat.load(Relaxed);
        loop {
            if cur & CLAIMED != 0 {
                cur = self.unclaimed();
            }
            let new = cur.max(now).saturating_add(inc).min(MAX_TAT);
            match self.tat.compare_exchange_weak(cur, new, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

/// The parameters of one quota in nanoseconds, precomputed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub(crate) quota: Quota,
    /// Emission interval `T`.
    pub(crate) emission: u64,
    /// Tolerance `B*T`.
    pub(crate) window: u64,
    /// The period in nanoseconds.
    pub(crate) period: u64,
    /// For a calendar quota: the UTC time of the clock's origin, in
    /// nanoseconds since the epoch (set by the cell set that lends the
    /// cell, which knows its clock).
    pub(crate) utc: u64,
}

impl Params {
    pub(crate) fn new(quota: Quota) -> Self {
        Params {
            quota,
            emission: quota.emission_nanos(),
            window: quota.window_nanos(),
            period: quota.period_nanos(),
            utc: 0,
        }
    }

    /// The same parameters for a clock whose origin is `utc`.
    #[inline]
    pub(crate) fn at_utc(mut self, utc: u64) -> Self {
        self.utc = utc;
        self
    }

    /// The calendar period of a calendar quota.
    #[inline]
    pub(crate) fn calendar(&self) -> Option<Calendar> {
        self.quota.calendar()
    }

    /// The count a charge of `inc` stands for (`inc / T`: exact, as `inc`
    /// is [`units`](Self::units) times `T`), for a calendar cell.
    #[inline]
    pub(crate) fn count(&self, inc: u64) -> u64 {
        inc / self.emission.max(1)
    }

    /// What `charge` counts in this quota: its requests, or its cost when
    /// the quota counts a unit of cost.
    #[inline(always)]
    pub(crate) fn units(&self, charge: Charge) -> u32 {
        charge.of(self.quota.unit_id().is_cost())
    }

    /// What `charge` costs this quota, `n * T` with `n` its
    /// [`units`](Self::units). `n <= burst` keeps this within the window.
    #[inline]
    pub(crate) fn inc(&self, charge: Charge) -> u64 {
        self.emission * u64::from(self.units(charge))
    }
}

/// A quota's [`Params`] that may change while deciders read them.
///
/// A sequence lock: a change makes the sequence odd, stores the fields and
/// makes it even again; a reader that saw it odd, or changed, reads again.
/// Readers never wait for each other and take no lock; changes are rare and
/// must be serialized by the caller.
#[derive(Debug)]
pub(crate) struct Tunable {
    seq: AtomicU64,
    emission: AtomicU64,
    window: AtomicU64,
    period: AtomicU64,
    /// `limit << 32 | burst`.
    counts: AtomicU64,
    /// The quota's unit, which does not change.
    unit: Unit,
    /// 0 for a quota that counts cost, `u32::MAX` for one of requests
    /// (see [`cost_cap`](Self::cost_cap)).
    cap_mask: u32,
    /// The calendar period (`Calendar::ALL` index + 1), 0 for rolling.
    calendar: std::sync::atomic::AtomicU8,
    /// The UTC time of the limiter's clock origin (fixed).
    utc: u64,
}

fn calendar_code(c: Option<Calendar>) -> u8 {
    c.map_or(0, |c| {
        Calendar::ALL.iter().position(|&x| x == c).unwrap_or(0) as u8 + 1
    })
}

fn calendar_of(code: u8) -> Option<Calendar> {
    code.checked_sub(1)
        .and_then(|i| Calendar::ALL.get(usize::from(i)).copied())
}

impl Tunable {
    /// The parameters of `quota` on a clock whose origin is `utc`
    /// nanoseconds after the epoch.
    pub(crate) fn new(quota: Quota, utc: u64) -> Self {
        let p = Params::new(quota);
        Tunable {
            seq: AtomicU64::new(0),
            emission: AtomicU64::new(p.emission),
            window: AtomicU64::new(p.window),
            period: AtomicU64::new(p.period),
            counts: AtomicU64::new(u64::from(quota.limit()) << 32 | u64::from(quota.burst())),
            unit: quota.unit_id(),
            cap_mask: if quota.unit_id().is_cost() {
                0
            } else {
                u32::MAX
            },
            calendar: std::sync::atomic::AtomicU8::new(calendar_code(quota.calendar())),
            utc,
        }
    }

    /// The burst now (one load: the parameters are not read).
    #[inline]
    pub(crate) fn burst(&self) -> u32 {
        self.counts.load(Relaxed) as u32
    }

    /// What `charge` counts in this quota (see [`Params::units`]).
    #[inline(always)]
    pub(crate) fn units(&self, charge: Charge) -> u32 {
        charge.of(self.unit.is_cost())
    }

    /// The largest cost of one request ([`Charge::cost`]) that this quota
    /// admits now: its burst for a quota that counts cost, any for a
    /// quota of requests (charged 1, never more than its burst). Reads the
    /// burst alone (one load).
    #[inline(always)]
    pub(crate) fn cost_cap(&self) -> u32 {
        self.burst() | self.cap_mask
    }

    /// The parameters now.
    #[inline]
    pub(crate) fn load(&self) -> Params {
        self.copy().params
    }

    /// The parameters now, with the sequence they were read at.
    #[inline]
    pub(crate) fn copy(&self) -> Copied {
        loop {
            let seq = self.seq.load(Acquire);
            let emission = self.emission.load(Relaxed);
            let window = self.window.load(Relaxed);
            let period = self.period.load(Relaxed);
            let counts = self.counts.load(Relaxed);
            let calendar = self.calendar.load(Relaxed);
            fence(Acquire);
            if seq & 1 == 0 && self.seq.load(Relaxed) == seq {
                let quota = Quota::from_parts(
                    (counts >> 32) as u32,
                    Duration::from_nanos(period),
                    counts as u32,
                )
                .with_unit(self.unit)
                .with_calendar(calendar_of(calendar));
                let params = Params {
                    quota,
                    emission,
                    window,
                    period,
                    utc: self.utc,
                };
                return Copied { seq, params };
            }
            std::hint::spin_loop();
        }
    }

    /// The parameters now, from `copy` while no change was made since it
    /// was taken (one load), else read again into it.
    #[inline]
    pub(crate) fn through<'c>(&self, copy: &'c mut Copied) -> &'c Params {
        if self.seq.load(Acquire) != copy.seq {
            self.refresh(copy);
        }
        &copy.params
    }

    #[cold]
    #[inline(never)]
    fn refresh(&self, copy: &mut Copied) {
        *copy = self.copy();
    }

    /// Replaces the parameters (of a quota of the same unit). Callers
    /// serialize their changes.
    pub(crate) fn store(&self, quota: Quota) {
        debug_assert_eq!(quota.unit_id(), self.unit);
        let p = Params::new(quota);
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        fence(Release);
        self.emission.store(p.emission, Relaxed);
        self.window.store(p.window, Relaxed);
        self.period.store(p.period, Relaxed);
        self.counts.store(
            u64::from(quota.limit()) << 32 | u64::from(quota.burst()),
            Relaxed,
        );
        self.calendar
            .store(calendar_code(quota.calendar()), Relaxed);
        self.seq.store(seq.wrapping_add(2), Release);
    }
}

/// A holder's own copy of a [`Tunable`]'s parameters, valid while the
/// tunable's sequence stays where it was read: a decider that keeps one
/// (a service, across its calls) reads one word per decision instead of
/// the sequence lock's five.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Copied {
    seq: u64,
    params: Params,
}

impl Copied {
    /// The parameters copied.
    #[inline]
    pub(crate) fn params(&self) -> &Params {
        &self.params
    }

    /// A copy that is never current: the first use reads the parameters.
    pub(crate) const STALE: Copied = Copied {
        // Sequences are even whenever parameters are read.
        seq: 1,
        params: Params {
            quota: Quota::from_parts(1, Duration::from_secs(1), 1),
            emission: 1,
            window: 1,
            period: 1,
            utc: 0,
        },
    };
}

/// The `tat` that keeps what a bucket holds across a change of its quota
/// from `old` to `new` at `now`: the requests it could pass at once stay
/// the same (no more than `new`'s burst), and requests already reserved
/// past the burst stay reserved. Nothing refills and no burst is granted.
pub(crate) fn convert_tat(tat: u64, now: u64, old: &Params, new: &Params) -> u64 {
    if old.calendar().is_some() || new.calendar().is_some() {
        return calendar::convert(tat, now, old, new);
    }
    let debt = i128::from(tat.saturating_sub(now));
    // What the bucket holds, in requests of the old quota (negative when
    // reserved past the burst), scaled to nanoseconds of the new one.
    let held = (i128::from(old.window) - debt) * i128::from(new.emission)
        / i128::from(old.emission.max(1));
    let held = held.min(i128::from(new.window));
    let debt = i128::from(new.window) - held;
    let tat = i128::from(now) + debt;
    u64::try_from(tat.clamp(0, i128::from(MAX_TAT))).unwrap_or(MAX_TAT)
}

/// The outcome of one rate-limit decision.
///
/// Returned by [`Limiter::check`](crate::Limiter::check) and friends. The
/// counts are computed from the state right after the decision; they are
/// cheap to carry and computed only when asked for.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::{Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(60).with_burst(2));
/// let first = limiter.check();
/// assert!(first.is_allowed());
/// assert_eq!(first.remaining(), 1);
/// limiter.check();
/// let third = limiter.check();
/// assert!(!third.is_allowed());
/// assert!(third.retry_after() > Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    allowed: bool,
    // The quota, unpacked: a decision stays small on the hot path.
    limit: u32,
    burst: u32,
    unit: Unit,
    period: u64,
    /// Time of the decision, nanoseconds since the clock origin.
    now: u64,
    /// `tat` after the decision (allowed) or `max(tat, now)` (denied).
    tat: u64,
    /// Nanoseconds until the request could pass (0 when allowed).
    retry_after: u64,
    /// The emission interval; for a calendar quota, the count used in its
    /// window (and `tat` is the window's end).
    emission: u64,
    calendar: Option<Calendar>,
}

impl Decision {
    #[inline]
    pub(crate) fn allowed(p: &Params, now: u64, tat: u64) -> Self {
        if let Some(cal) = p.calendar() {
            return Self::of_calendar(p, cal, now, tat, None);
        }
        Decision {
            allowed: true,
            limit: p.quota.limit(),
            burst: p.quota.burst(),
            unit: p.quota.unit_id(),
            period: p.period,
            now,
            tat,
            retry_after: 0,
            emission: p.emission,
            calendar: None,
        }
    }

    #[inline]
    pub(crate) fn denied(p: &Params, now: u64, base: u64, inc: u64) -> Self {
        if let Some(cal) = p.calendar() {
            return Self::of_calendar(p, cal, now, base, Some(p.count(inc)));
        }
        Decision {
            allowed: false,
            limit: p.quota.limit(),
            burst: p.quota.burst(),
            unit: p.quota.unit_id(),
            period: p.period,
            now,
            tat: base,
            retry_after: base
                .saturating_add(inc)
                .saturating_sub(now)
                .saturating_sub(p.window),
            emission: p.emission,
            calendar: None,
        }
    }

    /// The decision of a calendar cell holding `word` at `now`: allowed
    /// (`charge` `None`, `word` written by the charge), or denied a charge
    /// of `charge` (`word` as the cell held it).
    #[cold]
    fn of_calendar(p: &Params, cal: Calendar, now: u64, word: u64, charge: Option<u64>) -> Self {
        let limit = p.quota.limit();
        let (used, end, retry_after) = match calendar::view(word, cal, p.utc, now) {
            Some((w, used)) => {
                let retry = charge.map_or(0, |count| {
                    calendar::decide(word, cal, p.utc, limit, count, now)
                        .err()
                        .map_or(0, |(_, wait)| wait)
                });
                (used, w.end, retry)
            }
            // Centuries ahead: nothing passes.
            None => (limit, now, u64::MAX),
        };
        Decision {
            allowed: charge.is_none(),
            limit,
            burst: p.quota.burst(),
            unit: p.quota.unit_id(),
            period: p.period,
            now,
            tat: end,
            retry_after,
            emission: u64::from(used),
            calendar: Some(cal),
        }
    }

    /// A calendar decision made elsewhere (a remote backend): `used` in the
    /// window after the decision, `reset_after` nanoseconds to its end.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn remote_calendar(
        quota: Quota,
        allowed: bool,
        used: u32,
        retry_after: u64,
        reset_after: u64,
    ) -> Self {
        Decision {
            allowed,
            limit: quota.limit(),
            burst: quota.burst(),
            unit: quota.unit_id(),
            period: quota.period_nanos(),
            now: 0,
            tat: reset_after,
            retry_after,
            emission: u64::from(used),
            calendar: quota.calendar(),
        }
    }

    /// The usage this decision reports, for a calendar quota: `utc` is the
    /// UTC time (nanoseconds since the epoch) of the clock the decision's
    /// times count from (for a remote decision, the time it was made).
    pub(crate) fn calendar_usage(&self, utc: u64) -> Option<calendar::Usage> {
        let used = self.calendar_used()?;
        Some(calendar::Usage::new(
            self.quota(),
            used,
            self.reset_after(),
            utc.saturating_add(self.tat),
        ))
    }

    /// The count used in the window, for a calendar decision.
    pub(crate) fn calendar_used(&self) -> Option<u32> {
        self.calendar
            .map(|_| u32::try_from(self.emission).unwrap_or(u32::MAX))
    }

    /// A decision made elsewhere (a remote backend), from its relative
    /// times: `reset_after` is `tat - now` after the decision. `emission`
    /// is the interval the backend used (it may round to its own unit).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn remote(
        quota: Quota,
        emission: u64,
        allowed: bool,
        retry_after: u64,
        reset_after: u64,
    ) -> Self {
        Decision {
            allowed,
            limit: quota.limit(),
            burst: quota.burst(),
            unit: quota.unit_id(),
            period: quota.period_nanos(),
            now: 0,
            tat: reset_after,
            retry_after,
            emission,
            calendar: None,
        }
    }

    /// The same decision, `elapsed` nanoseconds later, still denied (for
    /// a cached denial).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn aged(mut self, elapsed: u64) -> Self {
        self.now = self.now.saturating_add(elapsed).min(self.tat);
        self.retry_after = self.retry_after.saturating_sub(elapsed);
        self
    }

    /// Whether the request may pass.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_hour(1));
    /// assert!(limiter.check().is_allowed());
    /// assert!(!limiter.check().is_allowed());
    /// ```
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The quota that decided (for several quotas: the tightest one).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// // With several quotas, the one that ran out is reported.
    /// let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_day(1));
    /// limiter.check();
    /// assert_eq!(limiter.check().quota(), Quota::per_day(1));
    /// ```
    pub fn quota(&self) -> Quota {
        Quota::from_parts(self.limit, Duration::from_nanos(self.period), self.burst)
            .with_unit(self.unit)
            .with_calendar(self.calendar)
    }

    /// The quota's limit per period.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// assert_eq!(Limiter::new(Quota::per_minute(60)).check().limit(), 60);
    /// ```
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many more requests of cost 1 would pass right now; for a quota
    /// of cost ([`Quota::counting`]), how many more units of it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(60).with_burst(10));
    /// assert_eq!(limiter.check().remaining(), 9);
    /// assert_eq!(limiter.check().remaining(), 8);
    /// ```
    pub fn remaining(&self) -> u32 {
        if let Some(used) = self.calendar_used() {
            return self.limit.saturating_sub(used);
        }
        let used = self.tat.saturating_sub(self.now);
        let window = self.emission * u64::from(self.burst);
        let left = window.saturating_sub(used) / self.emission;
        u32::try_from(left).unwrap_or(u32::MAX)
    }

    /// How long until the request would pass; zero when it is allowed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// assert_eq!(limiter.check().retry_after(), Duration::ZERO);
    /// let denied = limiter.check();
    /// assert!(denied.retry_after() > Duration::from_secs(59));
    /// assert!(denied.retry_after() <= Duration::from_secs(60));
    /// ```
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }

    /// How long until the bucket is full again (every quota's burst
    /// available); for a [calendar](crate::calendar) quota, until its
    /// window ends and its count resets.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(60));
    /// // One request used: the bucket is full again after one emission interval.
    /// assert_eq!(limiter.check().reset_after(), Duration::from_secs(1));
    /// ```
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.tat.saturating_sub(self.now))
    }

    /// Nanoseconds until one more request of cost 1 would pass than now
    /// (until [`remaining`](Self::remaining) grows); zero when the bucket
    /// is full. For a denied request of cost 1 this is its `retry_after`.
    #[cfg(test)]
    pub(crate) fn next_unit_nanos(&self) -> u64 {
        self.remaining_and_next().1
    }

    /// [`remaining`](Self::remaining), and the nanoseconds until one more
    /// request of cost 1 would pass than now (until `remaining` grows; zero
    /// when the bucket is full; for a denied request of cost 1, its
    /// `retry_after`), with one division: an admitted HTTP response
    /// carries both.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    #[inline]
    pub(crate) fn remaining_and_next(&self) -> (u32, u64) {
        if self.calendar.is_some() {
            // A calendar window grows only at its end.
            return (self.remaining(), self.tat.saturating_sub(self.now));
        }
        let used = self.tat.saturating_sub(self.now);
        let window = self.emission.saturating_mul(u64::from(self.burst));
        let left = window.saturating_sub(used) / self.emission;
        let remaining = u32::try_from(left).unwrap_or(u32::MAX);
        let next = u64::from(remaining).saturating_add(1);
        let next_unit =
            used.saturating_sub(window.saturating_sub(next.saturating_mul(self.emission)));
        (remaining, next_unit)
    }

    /// Whether this is the decision of the quota of `p` (compared without
    /// rebuilding the quota).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    #[inline]
    pub(crate) fn is_of(&self, p: &Params) -> bool {
        self.limit == p.quota.limit()
            && self.burst == p.quota.burst()
            && self.period == p.period
            && self.unit == p.quota.unit_id()
            && self.calendar == p.calendar()
    }

    pub(crate) fn retry_after_nanos(&self) -> u64 {
        self.retry_after
    }

    /// `Ok(self)` when allowed, otherwise the [`RateLimited`] error a layer
    /// would return.
    ///
    /// # Errors
    ///
    /// [`RateLimited`] when the decision denied the request.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota, RateLimited};
    ///
    /// fn admit(limiter: &Limiter) -> Result<u32, RateLimited> {
    ///     let decision = limiter.check().into_result()?;
    ///     Ok(decision.remaining())
    /// }
    ///
    /// let limiter = Limiter::new(Quota::per_hour(1));
    /// assert_eq!(admit(&limiter), Ok(0));
    /// let err = admit(&limiter).unwrap_err();
    /// assert_eq!(err.limit(), 1);
    /// ```
    pub fn into_result(self) -> Result<Self, RateLimited> {
        if self.allowed {
            Ok(self)
        } else {
            Err(RateLimited::from_decision(&self))
        }
    }
}

/// How many quotas a [`Reserved`] can refund without allocating.
pub(crate) const INLINE_CELLS: usize = 4;

/// A set of GCRA cells with their parameters: one limiter's quotas, or one
/// key's state under its policy.
pub(crate) trait CellSet {
    fn len(&self) -> usize;
    /// Cell `i`'s parameters (read now: a limiter's may change) and state.
    fn cell(&self, i: usize) -> (Params, &Gcra);
}

impl CellSet for [(Params, Gcra)] {
    #[inline]
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    #[inline]
    fn cell(&self, i: usize) -> (Params, &Gcra) {
        let (p, g) = &self[i];
        (*p, g)
    }
}

/// Capacity admitted (possibly ahead of time) in every cell of a set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reserved {
    /// When the request may be sent, in nanoseconds from the decision.
    pub(crate) wait: u64,
    /// Time of the decision.
    pub(crate) now: u64,
    /// The `tat` written into each cell (the first [`INLINE_CELLS`]).
    pub(crate) stamps: [u64; INLINE_CELLS],
}

impl Reserved {
    /// The decision of the cell with the fewest remaining.
    pub(crate) fn decision(&self, cells: &(impl CellSet + ?Sized)) -> Decision {
        let mut best: Option<Decision> = None;
        for i in 0..cells.len() {
            let (p, g) = cells.cell(i);
            let tat = if i < INLINE_CELLS {
                self.stamps[i]
            } else {
                g.tat()
            };
            let d = Decision::allowed(&p, self.now, tat);
            if best.is_none_or(|b| d.remaining() < b.remaining()) {
                best = Some(d);
            }
        }
        best.expect("a cell set is never empty")
    }
}

/// Reserves `charge` in every cell at the earliest time within `max_wait` of
/// `now` when all have room, or returns the denial of the cell needing the
/// longest wait. Nothing is consumed on denial.
///
/// One cell is one compare-exchange loop. Several cells are checked first
/// (the longest wait any needs), then admitted one by one at that time; if
/// another request gets in between, the ones already admitted are rolled
/// back and the whole decision starts over.
#[inline]
pub(crate) fn reserve_all(
    cells: &(impl CellSet + ?Sized),
    now: u64,
    charge: Charge,
    max_wait: u64,
) -> Result<Reserved, Decision> {
    let mut stamps = [0; INLINE_CELLS];
    if cells.len() == 1 {
        let (p, g) = cells.cell(0);
        let inc = p.inc(charge);
        let reserved = match p.calendar() {
            Some(_) => calendar::reserve(g, &p, p.units(charge), now, max_wait),
            None => g.reserve(p.window, inc, now, max_wait),
        };
        return match reserved {
            Ok((tat, wait)) => {
                stamps[0] = tat;
                Ok(Reserved { wait, now, stamps })
            }
            Err(base) => Err(Decision::denied(&p, now, base, inc)),
        };
    }
    'retry: loop {
        let mut wait = 0;
        let mut worst = None;
        for i in 0..cells.len() {
            let (p, g) = cells.cell(i);
            let inc = p.inc(charge);
            let (w, base) = match p.calendar() {
                Some(_) => calendar::wait(g, &p, p.units(charge), now),
                None => g.wait(p.window, inc, now),
            };
            if w > wait || (w > 0 && worst.is_none()) {
                wait = w;
                worst = Some(Decision::denied(&p, now, base, inc));
            }
        }
        if wait > max_wait {
            return Err(worst.expect("a positive wait has a cell that needs it"));
        }
        let at = now.saturating_add(wait);
        for i in 0..cells.len() {
            let (p, g) = cells.cell(i);
            let admitted = match p.calendar() {
                Some(_) => calendar::try_admit(g, &p, p.units(charge), at),
                None => g.try_admit(p.window, p.inc(charge), at),
            };
            match admitted {
                Ok(tat) if i < INLINE_CELLS => stamps[i] = tat,
                Ok(_) => {}
                Err(_) => {
                    refund_all(cells, &stamps[..i.min(INLINE_CELLS)], charge);
                    continue 'retry;
                }
            }
        }
        return Ok(Reserved { wait, now, stamps });
    }
}

/// What [`reserve_all`] with no waiting would decide, without consuming.
pub(crate) fn peek_all(cells: &(impl CellSet + ?Sized), now: u64, charge: Charge) -> Decision {
    let mut worst: Option<Decision> = None;
    let mut stamps = [0; INLINE_CELLS];
    for i in 0..cells.len() {
        let (p, g) = cells.cell(i);
        let inc = p.inc(charge);
        let (wait, base) = match p.calendar() {
            Some(_) => calendar::wait(g, &p, p.units(charge), now),
            None => g.wait(p.window, inc, now),
        };
        if wait > 0 && worst.is_none_or(|w| wait > w.retry_after_nanos()) {
            worst = Some(Decision::denied(&p, now, base, inc));
        }
        if let Some(stamp) = stamps.get_mut(i) {
            *stamp = match p.calendar() {
                Some(_) => base.saturating_add(u64::from(p.units(charge))),
                None => base + inc,
            };
        }
    }
    match worst {
        Some(denied) => denied,
        // As if admitted: the state the request would leave.
        None => Reserved {
            wait: 0,
            now,
            stamps,
        }
        .decision(cells),
    }
}

/// Gives back what a reservation took, cell by cell, where nothing was
/// admitted after it.
pub(crate) fn refund_all(cells: &(impl CellSet + ?Sized), stamps: &[u64], charge: Charge) {
    for (i, &tat) in stamps.iter().enumerate().take(cells.len()) {
        let (p, g) = cells.cell(i);
        match p.calendar() {
            Some(_) => calendar::refund(g, tat, p.units(charge)),
            None => g.refund(tat, p.inc(charge)),
        }
    }
}

/// Settles a request charged a cost of `estimate` (writing `stamps`) at
/// its true cost `actual`, at `now`, in the cells that count cost (cells
/// that count requests keep their charge of 1):
///
/// * more than estimated: the difference is charged as a debt
///   ([`Gcra::debt`]; a calendar cell adds it to the count of its window,
///   clamped at `u32::MAX`);
/// * less: the difference is given back where nothing was admitted since
///   ([`Gcra::refund`]; a calendar cell gives it back within the window it
///   was charged in). Cells past the first [`INLINE_CELLS`] keep no stamp:
///   they are never refunded.
pub(crate) fn settle_all(
    cells: &(impl CellSet + ?Sized),
    stamps: &[u64],
    estimate: u32,
    actual: u32,
    now: u64,
) {
    settle_cells(cells, stamps, estimate, actual, now, false);
}

/// [`settle_all`], in every cell when `every` (cells that all counted the
/// estimate, as a batch of [`Charge::n`] does), else in the cells that
/// count cost.
pub(crate) fn settle_cells(
    cells: &(impl CellSet + ?Sized),
    stamps: &[u64],
    estimate: u32,
    actual: u32,
    now: u64,
    every: bool,
) {
    if estimate == actual {
        return;
    }
    for i in 0..cells.len() {
        let (p, g) = cells.cell(i);
        if !every && !p.quota.unit_id().is_cost() {
            continue;
        }
        if actual > estimate {
            let extra = actual - estimate;
            match p.calendar() {
                Some(_) => calendar::debt(g, &p, extra, now),
                None => g.debt(p.emission.saturating_mul(u64::from(extra)), now),
            }
        } else if let Some(&stamp) = stamps.get(i) {
            let less = estimate - actual;
            match p.calendar() {
                Some(_) => calendar::refund(g, stamp, less),
                None => g.refund(stamp, p.emission.saturating_mul(u64::from(less))),
            }
        }
    }
}

/// The state now, as the allowed decision of the tightest cell.
pub(crate) fn snapshot(cells: &(impl CellSet + ?Sized), now: u64) -> Decision {
    let mut stamps = [0; INLINE_CELLS];
    for (i, stamp) in stamps.iter_mut().enumerate().take(cells.len()) {
        let (p, g) = cells.cell(i);
        *stamp = match p.calendar() {
            // A calendar word is read as it is (see `Decision::allowed`).
            Some(_) => g.tat(),
            None => g.tat().max(now),
        };
    }
    Reserved {
        wait: 0,
        now,
        stamps,
    }
    .decision(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn params(q: Quota) -> Params {
        Params::new(q)
    }

    #[test]
    fn burst_then_steady_rate() {
        // 60/min with burst 10: T = 1 s, window 10 s.
        let p = params(Quota::per_minute(60).with_burst(10));
        let g = Gcra::new();
        for i in 0..10 {
            let new = g.try_admit(p.window, p.inc(Charge::n(1)), 0).unwrap();
            let d = Decision::allowed(&p, 0, new);
            assert_eq!(d.remaining(), 9 - i);
            assert_eq!(d.reset_after(), Duration::from_secs(u64::from(i) + 1));
        }
        let base = g.try_admit(p.window, p.inc(Charge::n(1)), 0).unwrap_err();
        let d = Decision::denied(&p, 0, base, p.inc(Charge::n(1)));
        assert_eq!(d.retry_after(), Duration::from_secs(1));
        assert_eq!(d.remaining(), 0);
        assert_eq!(d.reset_after(), Duration::from_secs(10));
        // One nanosecond early: still denied, by exactly one nanosecond.
        let base = g
            .try_admit(p.window, p.inc(Charge::n(1)), S - 1)
            .unwrap_err();
        let d = Decision::denied(&p, S - 1, base, p.inc(Charge::n(1)));
        assert_eq!(d.retry_after(), Duration::from_nanos(1));
        // Exactly on the boundary: allowed.
        assert!(g.try_admit(p.window, p.inc(Charge::n(1)), S).is_ok());
    }

    #[test]
    fn next_unit_is_the_wait_for_one_more() {
        // 60/min with burst 10: T = 1 s.
        let p = params(Quota::per_minute(60).with_burst(10));
        let g = Gcra::new();
        assert_eq!(Decision::allowed(&p, 0, 0).next_unit_nanos(), 0);
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.try_admit(p.window, p.inc(Charge::n(1)), 0).unwrap();
        }
        // 7 left; the 8th comes back 1 s later.
        let d = Decision::allowed(&p, 0, tat);
        assert_eq!(d.remaining(), 7);
        assert_eq!(d.next_unit_nanos(), S);
        // Half a second on: still 7, the next in 0.5 s.
        let d = Decision::allowed(&p, S / 2, tat);
        assert_eq!((d.remaining(), d.next_unit_nanos()), (7, S / 2));
        for _ in 0..7 {
            tat = g.try_admit(p.window, p.inc(Charge::n(1)), 0).unwrap();
        }
        assert_eq!(Decision::allowed(&p, 0, tat).next_unit_nanos(), S);
        // Denied: the same as its retry_after.
        let base = g
            .try_admit(p.window, p.inc(Charge::n(1)), S / 4)
            .unwrap_err();
        let d = Decision::denied(&p, S / 4, base, p.inc(Charge::n(1)));
        assert_eq!(d.next_unit_nanos(), d.retry_after_nanos());
        assert_eq!(d.next_unit_nanos(), 3 * S / 4);
    }

    #[test]
    fn remaining_and_next_agree_with_remaining() {
        for quota in [
            Quota::per_second(10),
            Quota::per_minute(60).with_burst(7),
            Quota::per_hour(1_000_000_000),
            Quota::new(3, Duration::from_millis(1_500)),
        ] {
            let p = params(quota);
            for (now, tat) in [(0, 0), (0, 1), (5, 3), (0, p.window), (S, S + p.window / 3)] {
                let d = Decision::allowed(&p, now, tat);
                assert_eq!(
                    d.remaining_and_next().0,
                    d.remaining(),
                    "{quota} {now} {tat}"
                );
                assert!(d.is_of(&p));
            }
        }
        let a = params(Quota::per_second(10));
        let b = params(Quota::per_second(10).with_burst(5));
        assert!(!Decision::allowed(&a, 0, 0).is_of(&b));
    }

    #[test]
    fn cost_up_to_burst() {
        let p = params(Quota::per_second(10).with_burst(5));
        let g = Gcra::new();
        assert!(g.try_admit(p.window, p.inc(Charge::n(5)), 0).is_ok());
        let base = g.try_admit(p.window, p.inc(Charge::n(3)), 0).unwrap_err();
        assert_eq!(
            Decision::denied(&p, 0, base, p.inc(Charge::n(3))).retry_after(),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn very_long_periods() {
        // 1/day: a second request waits a day, to the nanosecond.
        let p = params(Quota::per_day(1));
        let g = Gcra::new();
        assert!(g.try_admit(p.window, p.inc(Charge::n(1)), 5).is_ok());
        let base = g.try_admit(p.window, p.inc(Charge::n(1)), 5).unwrap_err();
        assert_eq!(
            Decision::denied(&p, 5, base, p.inc(Charge::n(1))).retry_after(),
            Duration::from_secs(86_400)
        );
        // 1000/month: T = 2592 s.
        let p = params("1000/month".parse().unwrap());
        assert_eq!(p.emission, 2_592 * S);
        let g = Gcra::new();
        assert!(g.try_admit(p.window, p.inc(Charge::n(1000)), 0).is_ok());
        let base = g.try_admit(p.window, p.inc(Charge::n(1)), 0).unwrap_err();
        assert_eq!(
            Decision::denied(&p, 0, base, p.inc(Charge::n(1))).retry_after(),
            Duration::from_secs(2_592)
        );
    }

    #[test]
    fn far_future_times_saturate_instead_of_overflowing() {
        let p = params(Quota::per_second(1));
        let g = Gcra::with_tat(MAX_TAT - 10);
        let now = MAX_TAT - 100;
        let base = g.try_admit(p.window, p.inc(Charge::n(1)), now).unwrap_err();
        let d = Decision::denied(&p, now, base, p.inc(Charge::n(1)));
        assert!(!d.is_allowed());
        assert_eq!(d.remaining(), 0);
        assert_eq!(g.wait(p.window, p.inc(Charge::n(1)), now).0, u64::MAX);
        assert!(
            g.reserve(p.window, p.inc(Charge::n(1)), now, u64::MAX)
                .is_err()
        );
        assert_eq!(g.tat(), MAX_TAT - 10);
        // A bucket whose tat is far behind `now` is simply full.
        let g = Gcra::new();
        let new = g
            .try_admit(p.window, p.inc(Charge::n(1)), MAX_TAT - S)
            .unwrap();
        assert_eq!(new, MAX_TAT);
    }

    #[test]
    fn reserve_waits_and_refund_restores() {
        let p = params(Quota::per_second(1));
        let g = Gcra::new();
        assert_eq!(g.reserve(p.window, p.inc(Charge::n(1)), 0, 0).unwrap().1, 0);
        // Next slot is 1 s away; too far for a 0.5 s budget, consumes nothing.
        assert!(g.reserve(p.window, p.inc(Charge::n(1)), 0, S / 2).is_err());
        let (new, wait) = g.reserve(p.window, p.inc(Charge::n(1)), 0, 2 * S).unwrap();
        assert_eq!(wait, S);
        assert_eq!(g.tat(), 2 * S);
        g.refund(new, p.inc(Charge::n(1)));
        assert_eq!(g.tat(), S);
        // A refund after someone else reserved is skipped (never over-admits).
        let (new, _) = g.reserve(p.window, p.inc(Charge::n(1)), 0, 2 * S).unwrap();
        let _ = g.reserve(p.window, p.inc(Charge::n(1)), 0, 3 * S).unwrap();
        g.refund(new, p.inc(Charge::n(1)));
        assert_eq!(g.tat(), 3 * S);
    }

    #[test]
    fn clock_stepping_back_is_tolerated() {
        let p = params(Quota::per_second(2));
        let g = Gcra::new();
        assert!(g.try_admit(p.window, p.inc(Charge::n(1)), 10 * S).is_ok());
        // An earlier timestamp from another core is judged conservatively:
        // skew can cost a request, never grant an extra one.
        assert!(
            g.try_admit(p.window, p.inc(Charge::n(1)), 10 * S - 1)
                .is_err()
        );
        assert!(g.try_admit(p.window, p.inc(Charge::n(1)), 10 * S).is_ok());
        assert!(g.try_admit(p.window, p.inc(Charge::n(1)), 10 * S).is_err());
    }
}
