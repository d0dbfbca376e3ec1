//! [`Decision`]: what one rate-limit decision answers.

use std::time::Duration;

use super::{Params, Rate};
use crate::calendar::{self, Calendar};
use crate::error::RateLimited;
use crate::quota::{Quota, Unit};

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
        Self::allowed_rolling(&p.rate(), now, tat)
    }

    /// [`allowed`](Self::allowed) of a rolling quota, from its [`Rate`].
    #[inline]
    pub(crate) fn allowed_rolling(r: &Rate, now: u64, tat: u64) -> Self {
        debug_assert!(!r.calendar);
        Decision {
            allowed: true,
            limit: r.limit,
            burst: r.burst,
            unit: r.unit,
            period: r.period,
            now,
            tat,
            retry_after: 0,
            emission: r.emission,
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
            emission: u64::from(used),
            calendar: quota.calendar(),
            ..Self::remote(quota, 0, allowed, retry_after, reset_after)
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
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// The quota that decided (for several quotas: the tightest one).
    pub fn quota(&self) -> Quota {
        Quota::from_parts(self.limit, Duration::from_nanos(self.period), self.burst)
            .with_unit(self.unit)
            .with_calendar(self.calendar)
    }

    /// The quota's limit per period.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// How many more requests of cost 1 would pass right now; for a quota
    /// of cost ([`Quota::counting`]), how many more units of it.
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
    pub fn retry_after(&self) -> Duration {
        Duration::from_nanos(self.retry_after)
    }

    /// How long until the bucket is full again (every quota's burst
    /// available); for a [calendar](crate::calendar) quota, until its
    /// window ends and its count resets.
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
