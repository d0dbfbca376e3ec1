//! [`Limiter`]: an in-memory GCRA limiter of one or several quotas, usable
//! on its own or behind [`RateLimitLayer`](crate::RateLimitLayer).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use crate::clock::Clock;
use crate::cost::Charge;
use crate::error::{ConfigError, ExceedsBurst};
use crate::gcra::{self, CellSet, Copied, Decision, Gcra, Params, Rate, Reserved, Tunable};
use crate::quota::Quota;
use crate::util::IgnorePoison;

/// A lock-free rate limiter holding one quota or several at once.
///
/// A request passes only if every quota admits it, and a denied request
/// consumes nothing from any of them. Decisions are one clock read and a
/// compare-exchange per quota: no lock, no allocation.
///
/// Share it with an [`Arc`](std::sync::Arc); every method takes `&self`.
///
/// # Examples
///
/// ```
/// use tower_sluice::{Limiter, Quota};
///
/// // 60 per minute, at most 10 at once, and 1000 per day.
/// let limiter = Limiter::new(Quota::per_minute(60).with_burst(10)).and(Quota::per_day(1000));
/// for _ in 0..10 {
///     assert!(limiter.check().is_allowed());
/// }
/// let denied = limiter.check();
/// assert!(!denied.is_allowed());
/// assert!(denied.retry_after() > std::time::Duration::ZERO);
/// // Checking without consuming:
/// assert!(!limiter.peek().is_allowed());
/// ```
pub struct Limiter {
    clock: Clock,
    cells: Cells,
    /// The smallest [`cost_cap`](Tunable::cost_cap) of several quotas:
    /// one compare finds a cost over any cost quota's burst. Kept by
    /// [`set_quotas`](Limiter::set_quotas).
    cost_cap: AtomicU32,
    /// Serializes [`set_quotas`](Limiter::set_quotas).
    changes: Mutex<()>,
}

enum Cells {
    One([(Tunable, Gcra); 1]),
    Many(Box<[(Tunable, Gcra)]>),
}

impl Limiter {
    /// A limiter with one quota.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// // 5 a second: after a quiet spell, 5 pass at once, then one every 200 ms.
    /// let limiter = Limiter::new(Quota::per_second(5));
    /// for _ in 0..5 {
    ///     assert!(limiter.check().is_allowed());
    /// }
    /// assert!(!limiter.check().is_allowed());
    /// ```
    pub fn new(quota: Quota) -> Self {
        let clock = Clock::new();
        Limiter {
            cells: Cells::One([(Tunable::new(quota, clock.utc()), Gcra::new())]),
            clock,
            cost_cap: AtomicU32::new(u32::MAX),
            changes: Mutex::new(()),
        }
    }

    /// Adds another quota: requests must then pass this one too (for example
    /// 60/min *and* 1000/day).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// // 10 a second, but no more than 3 a minute.
    /// let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_minute(3));
    /// for _ in 0..3 {
    ///     assert!(limiter.check().is_allowed());
    /// }
    /// let denied = limiter.check();
    /// assert!(!denied.is_allowed());
    /// assert_eq!(denied.quota(), Quota::per_minute(3), "the quota that ran out");
    /// ```
    #[must_use]
    pub fn and(self, quota: Quota) -> Self {
        let mut cells: Vec<(Tunable, Gcra)> = match self.cells {
            Cells::One(cell) => cell.into(),
            Cells::Many(cells) => cells.into_vec(),
        };
        cells.push((Tunable::new(quota, self.clock.utc()), Gcra::new()));
        let limiter = Limiter {
            clock: self.clock,
            cells: Cells::Many(cells.into_boxed_slice()),
            cost_cap: self.cost_cap,
            changes: self.changes,
        };
        limiter.keep_cost_cap();
        limiter
    }

    /// Stores the smallest cost cap of the quotas (after a change).
    fn keep_cost_cap(&self) {
        let cap = self.cells().iter().map(|(t, _)| t.cost_cap()).min();
        self.cost_cap.store(cap.unwrap_or(u32::MAX), Relaxed);
    }

    /// The quotas, in the order they were added.
    pub fn quotas(&self) -> impl Iterator<Item = Quota> + '_ {
        self.cells().iter().map(|(p, _)| p.load().quota)
    }

    #[inline]
    fn cells(&self) -> &[(Tunable, Gcra)] {
        self.cells.slice()
    }

    /// Changes the quota of a limiter that holds one, while it serves.
    ///
    /// Every holder of the limiter (every clone of a
    /// [`RateLimitLayer`](crate::RateLimitLayer)'s services) follows at once.
    /// What the bucket holds is kept: the requests it could pass at once
    /// stay the same (or the new burst, if that is smaller), then it
    /// refills at the new rate. So a lowered quota does not refill the
    /// bucket, and a raised one grants no burst that was not earned at the
    /// new rate. Requests already waiting for their turn keep it. A
    /// decision made at the very moment of the change may still follow the
    /// old quota.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the limiter holds several quotas: change them
    /// together with [`set_quotas`](Self::set_quotas).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower_sluice::{Limiter, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(Quota::per_minute(60)).reject();
    /// // Later, while serving: the upstream granted more.
    /// let limiter: &Arc<Limiter> = layer.limiter();
    /// limiter.set_quota(Quota::per_minute(120))?;
    /// assert!(limiter.quotas().eq([Quota::per_minute(120)]));
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        self.set_quotas([quota])
    }

    /// Changes every quota of the limiter while it serves, in the order
    /// they were added. Each keeps what its bucket holds, as
    /// [`set_quota`](Self::set_quota) describes.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when `quotas` does not hold as many quotas as the
    /// limiter, or a quota would count another unit than the one it
    /// replaces ([`Quota::counting`]); nothing changes then.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(60)).and(Quota::per_day(1000));
    /// limiter.set_quotas([Quota::per_minute(30), Quota::per_day(500)])?;
    /// assert!(limiter.quotas().eq([Quota::per_minute(30), Quota::per_day(500)]));
    /// assert!(limiter.set_quotas([Quota::per_minute(30)]).is_err());
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn set_quotas(&self, quotas: impl IntoIterator<Item = Quota>) -> Result<(), ConfigError> {
        let cells = self.cells();
        let quotas: Vec<Quota> = quotas.into_iter().collect();
        if quotas.len() != cells.len() {
            return Err(ConfigError::new(
                "limiter",
                "set_quotas",
                "give as many quotas as the limiter holds",
            ));
        }
        if cells
            .iter()
            .zip(&quotas)
            .any(|((tunable, _), q)| tunable.load().quota.unit_id() != q.unit_id())
        {
            return Err(ConfigError::new(
                "limiter",
                "set_quotas",
                "give each quota the unit of the one it replaces",
            ));
        }
        let _serial = self.changes.lock().ignore_poison();
        for ((tunable, gcra), quota) in cells.iter().zip(quotas) {
            let old = tunable.load();
            let new = Params::new(quota).at_utc(self.clock.utc());
            // Deciders wait on the claim, then see the new parameters.
            let tat = gcra.claim();
            tunable.store(quota);
            gcra.release(gcra::convert_tat(tat, self.clock.now(), &old, &new));
        }
        self.keep_cost_cap();
        Ok(())
    }

    /// The usage of each [calendar](crate::calendar) quota, in the order
    /// they were added: how much the current window used, how much is
    /// left, and when it resets. Consumes nothing. Rolling quotas are left
    /// out (their state is [`peek`](Self::peek)'s).
    ///
    /// The count lives in this process: it is lost when the process
    /// restarts. Use the Redis backend (with Redis persistence) for usage
    /// that must survive a restart.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_second(100))
    ///     .and(Quota::per_calendar_day(10_000))
    ///     .and(Quota::per_calendar_month(200_000));
    /// limiter.check_n(40)?;
    /// let usage = limiter.usage();
    /// assert_eq!(usage.len(), 2);
    /// assert_eq!((usage[0].used(), usage[0].remaining()), (40, 9_960));
    /// assert_eq!((usage[1].used(), usage[1].remaining()), (40, 199_960));
    /// // The day ends before (or with) the month.
    /// assert!(usage[0].resets_at() <= usage[1].resets_at());
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    pub fn usage(&self) -> Vec<crate::calendar::Usage> {
        let now = self.clock.now();
        let cells = &self.cells;
        (0..cells.len())
            .filter_map(|i| {
                let (p, g) = cells.cell(i);
                p.calendar()?;
                Decision::allowed(&p, now, g.tat()).calendar_usage(self.clock.utc())
            })
            .collect()
    }

    /// The smallest burst among the quotas: the largest cost that can pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_minute(100).with_burst(5));
    /// assert_eq!(limiter.max_cost(), 5);
    /// assert!(limiter.check_n(5).is_ok());
    /// assert!(limiter.check_n(6).is_err(), "could never pass");
    /// ```
    pub fn max_cost(&self) -> u32 {
        self.quotas().map(|q| q.burst()).min().unwrap_or(0)
    }

    /// Decides a request of cost 1 now, consuming capacity when allowed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(2));
    /// let first = limiter.check();
    /// assert!(first.is_allowed());
    /// assert_eq!(first.remaining(), 1);
    /// limiter.check();
    /// // Denied: nothing is consumed, and the decision says how long to wait.
    /// let denied = limiter.check();
    /// assert!(!denied.is_allowed());
    /// assert!(denied.retry_after() > Duration::from_secs(29));
    /// ```
    #[inline]
    pub fn check(&self) -> Decision {
        self.decide(self.clock.now(), Charge::ONE)
    }

    /// Decides a batch of `cost` now, charging `cost` to every quota
    /// whatever it counts (as governor's `check_n`), consuming capacity
    /// when allowed. For one request of a cost charged to the quotas that
    /// count cost, see [`check_cost`](Self::check_cost).
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than a quota's burst: such a
    /// request could never pass, so it is an error rather than a denial
    /// with a retry time.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// // A batch of 8 rows against 10 rows a second.
    /// let limiter = Limiter::new(Quota::per_second(10));
    /// assert!(limiter.check_n(8)?.is_allowed());
    /// // 2 are left: a second batch of 8 is denied, and consumes nothing.
    /// assert!(!limiter.check_n(8)?.is_allowed());
    /// assert!(limiter.check_n(2)?.is_allowed());
    /// // More than the burst can never pass: an error, not a denial.
    /// assert!(limiter.check_n(11).is_err());
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    pub fn check_n(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        self.validate(Charge::n(cost))?;
        Ok(self.decide(self.clock.now(), Charge::n(cost)))
    }

    /// Decides one request of cost `cost` now, consuming capacity when
    /// allowed: every quota that counts requests is charged 1, every quota
    /// that counts a unit ([`Quota::counting`]) is charged `cost`. All
    /// decide together: a denied request consumes from none of them, and
    /// the decision is the denying quota's. A cost of 0 is charged nothing
    /// and always allowed (the decision reports the state of the tightest
    /// quota).
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than the burst of a quota
    /// that counts cost: such a request could never pass.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// // 3 requests a minute and 1 000 tokens a minute.
    /// let limiter = Limiter::new(Quota::per_minute(3)).and(Quota::per_minute(1_000).counting("tokens"));
    /// assert!(limiter.check_cost(600)?.is_allowed());
    /// // 400 tokens left: a request of 500 is denied by the token quota, consuming nothing.
    /// let denied = limiter.check_cost(500)?;
    /// assert!(!denied.is_allowed());
    /// assert_eq!(denied.quota().unit(), "tokens");
    /// assert_eq!(denied.remaining(), 400);
    /// assert!(limiter.check_cost(400)?.is_allowed());
    /// // The token quota is spent, but cost 0 passes without a charge.
    /// assert!(limiter.check_cost(0)?.is_allowed());
    /// // The request quota was charged 1 per request: one left.
    /// assert_eq!(limiter.states()[0].remaining(), 1);
    /// // More tokens than the burst can never pass: an error, not a wait.
    /// assert!(limiter.check_cost(1_001).is_err());
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    #[inline]
    pub fn check_cost(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        self.decide_checked(Charge::cost(cost))
    }

    /// Decides `charge`, one request of a cost ([`Charge::cost`]), now:
    /// charged nothing when its cost is 0, or an error when its cost is
    /// more than the burst of a quota that counts cost. One quota is read
    /// once for the check and the decision, and the common case (a rolling
    /// quota, a cost within its burst) pays one compare for both rare
    /// ones; each quota's burst alone is read for several.
    #[inline]
    pub(crate) fn decide_checked(&self, charge: Charge) -> Result<Decision, ExceedsBurst> {
        debug_assert_eq!(charge.requests, 1, "one request of a cost");
        let now = self.clock.now();
        match &self.cells {
            Cells::One([(t, g)]) => {
                let p = t.load();
                if p.calendar().is_some() {
                    return self.decide_checked_rest(now, charge);
                }
                // One branch on the quota's unit, which does not change
                // (always predicted), then each kind decides with its own
                // charge known.
                if p.quota.unit_id().is_cost() {
                    // Charged the cost; a cost of 0 wraps to the largest
                    // value: one compare finds it and a cost over the burst.
                    if charge.cost.wrapping_sub(1) >= p.quota.burst() {
                        return self.decide_checked_rest(now, charge);
                    }
                    Ok(decide_one(&p, g, now, charge))
                } else {
                    // Charged 1, never more than the burst.
                    if charge.cost == 0 {
                        return self.decide_checked_rest(now, charge);
                    }
                    Ok(decide_one(&p, g, now, Charge::ONE))
                }
            }
            Cells::Many(_) => {
                // A cost of 0 wraps to the largest value: one compare
                // finds it and a cost over any cost quota's burst.
                if charge.cost.wrapping_sub(1) >= self.cost_cap.load(Relaxed) {
                    return self.decide_checked_rest(now, charge);
                }
                Ok(self.decide_many(now, charge))
            }
        }
    }

    /// What [`decide_checked`](Self::decide_checked) leaves: a cost of 0,
    /// one over a burst, a calendar quota.
    #[inline(never)]
    fn decide_checked_rest(&self, now: u64, charge: Charge) -> Result<Decision, ExceedsBurst> {
        if charge.cost == 0 {
            return Ok(gcra::snapshot(&self.cells, now));
        }
        self.validate(charge)?;
        Ok(self.decide_many(now, charge))
    }

    /// What [`check_cost`](Self::check_cost) would decide now, without
    /// consuming.
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than the burst of a quota
    /// that counts cost.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1_000).counting("tokens"));
    /// limiter.check_cost(900)?;
    /// assert!(!limiter.peek_cost(200)?.is_allowed());
    /// assert!(limiter.peek_cost(100)?.is_allowed());
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    pub fn peek_cost(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        let charge = Charge::cost(cost);
        self.validate(charge)?;
        let now = self.clock.now();
        if cost == 0 {
            return Ok(gcra::snapshot(&self.cells, now));
        }
        Ok(gcra::peek_all(&self.cells, now, charge))
    }

    /// The state of each quota now, in the order they were added, without
    /// consuming (for example to fill response headers).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(60)).and(Quota::per_minute(1_000).counting("tokens"));
    /// limiter.check_cost(250)?;
    /// let left: Vec<u32> = limiter.states().iter().map(|d| d.remaining()).collect();
    /// assert_eq!(left, [59, 750]);
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    pub fn states(&self) -> Vec<Decision> {
        let now = self.clock.now();
        (0..self.cells.len())
            .map(|i| {
                let (p, g) = self.cells.cell(i);
                match p.calendar() {
                    // A calendar word is read as it is.
                    Some(_) => Decision::allowed(&p, now, g.tat()),
                    None => Decision::allowed(&p, now, g.tat().max(now)),
                }
            })
            .collect()
    }

    /// What [`check`](Self::check) would decide now, without consuming.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// assert!(limiter.peek().is_allowed());
    /// assert!(limiter.peek().is_allowed(), "peeking consumed nothing");
    /// assert!(limiter.check().is_allowed());
    /// assert!(!limiter.peek().is_allowed());
    /// ```
    pub fn peek(&self) -> Decision {
        gcra::peek_all(&self.cells, self.clock.now(), Charge::ONE)
    }

    /// What [`check_n`](Self::check_n) would decide now, without consuming.
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than a quota's burst.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_second(10));
    /// limiter.check_n(6)?;
    /// // Would a batch of 5 pass? No: 4 are left. Nothing is consumed.
    /// assert!(!limiter.peek_n(5)?.is_allowed());
    /// assert!(limiter.peek_n(4)?.is_allowed());
    /// # Ok::<(), tower_sluice::ExceedsBurst>(())
    /// ```
    pub fn peek_n(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        self.validate(Charge::n(cost))?;
        Ok(gcra::peek_all(
            &self.cells,
            self.clock.now(),
            Charge::n(cost),
        ))
    }

    /// An error when `charge` is more than a quota's burst.
    ///
    /// Reads each quota's burst alone (one load), not its parameters.
    #[inline]
    pub(crate) fn validate(&self, charge: Charge) -> Result<(), ExceedsBurst> {
        for (t, _) in self.cells() {
            if t.units(charge) > t.burst() {
                return Err(exceeds(t, charge));
            }
        }
        Ok(())
    }

    /// Decides at time `now` (nanoseconds since the clock origin).
    #[inline]
    fn decide(&self, now: u64, charge: Charge) -> Decision {
        match &self.cells {
            Cells::One([(t, g)]) => {
                let p = t.load();
                if p.calendar().is_some() {
                    return self.decide_many(now, charge);
                }
                decide_one(&p, g, now, charge)
            }
            Cells::Many(_) => self.decide_many(now, charge),
        }
    }

    /// [`decide`](Self::decide) for several quotas (or a calendar one),
    /// out of line so that deciding one rolling quota stays short.
    #[inline(never)]
    fn decide_many(&self, now: u64, charge: Charge) -> Decision {
        // The slice: its length and cells are read once, not matched on
        // the holder's kind at each cell.
        let cells = self.cells();
        match gcra::reserve_all(cells, now, charge, 0) {
            Ok(reserved) => reserved.decision(cells),
            Err(denied) => denied,
        }
    }

    /// A copy of the single quota's parameters for
    /// [`check_with`](Self::check_with) (for several quotas, one that is
    /// never used).
    pub(crate) fn copied(&self) -> Copied {
        match &self.cells {
            Cells::One([(t, _)]) => t.copy(),
            Cells::Many(_) => Copied::STALE,
        }
    }

    /// [`check`](Self::check) of a limiter of one quota, for a caller
    /// that keeps its own copy of the quota's parameters across decisions:
    /// they cost one load while no change was made (see [`Copied`]).
    /// Returns the decision's times only (the caller builds the
    /// [`Decision`] from them and `copy` when it needs one, with
    /// [`Stamp::decision`]); `None` for a limiter of several quotas or of
    /// a calendar quota (call `check`).
    #[inline]
    pub(crate) fn check_with(&self, copy: &mut Copied) -> Option<Stamp> {
        match &self.cells {
            Cells::One([(t, g)]) => {
                let now = self.clock.now();
                let p = t.through(copy);
                if p.calendar().is_some() {
                    return None;
                }
                Some(match g.try_admit(p.window, p.inc(Charge::ONE), now) {
                    Ok(tat) => Stamp {
                        allowed: true,
                        now,
                        tat,
                    },
                    Err(base) => Stamp {
                        allowed: false,
                        now,
                        tat: base,
                    },
                })
            }
            Cells::Many(_) => None,
        }
    }

    /// The cells and the time now, for [`crate::limits`].
    pub(crate) fn cells_now(&self) -> (&dyn CellSet, u64) {
        (&self.cells, self.clock.now())
    }

    /// The state as a decision of the tightest quota when `reserved` was
    /// due (its decision's time plus its wait), consuming nothing and
    /// reading no clock (for reporting).
    pub(crate) fn snapshot_at(&self, reserved: &Reserved) -> Decision {
        gcra::snapshot(&self.cells, reserved.now.saturating_add(reserved.wait))
    }

    /// Reserves `charge` at the earliest time within `max_wait` nanoseconds
    /// of now when every quota has room, or returns the denial of the quota
    /// that needs the longest wait. Nothing is consumed on denial.
    pub(crate) fn reserve(&self, charge: Charge, max_wait: u64) -> Result<Reserved, Decision> {
        gcra::reserve_all(&self.cells, self.clock.now(), charge, max_wait)
    }

    /// [`reserve`](Self::reserve) of cost 1 for a caller that keeps its
    /// own copy of a single quota's parameters (see
    /// [`check_with`](Self::check_with)), written into `into` (where the
    /// caller keeps it) rather than returned.
    #[inline]
    pub(crate) fn reserve_into(
        &self,
        copy: &mut Copied,
        max_wait: u64,
        into: &mut Reserved,
    ) -> Result<(), Decision> {
        let Cells::One([(t, g)]) = &self.cells else {
            *into = self.reserve(Charge::ONE, max_wait)?;
            return Ok(());
        };
        let now = self.clock.now();
        let p = t.through(copy);
        if p.calendar().is_some() {
            *into = self.reserve(Charge::ONE, max_wait)?;
            return Ok(());
        }
        let inc = p.inc(Charge::ONE);
        match g.reserve(p.window, inc, now, max_wait) {
            Ok((tat, wait)) => {
                into.wait = wait;
                into.now = now;
                into.stamps[0] = tat;
                Ok(())
            }
            Err(base) => Err(Decision::denied(p, now, base, inc)),
        }
    }

    /// Settles a request that reserved `reserved` for a cost of
    /// `estimate` at its true cost `true_cost`, now (see
    /// [`Settlement`](crate::cost::Settlement) for the rules): quotas that
    /// count cost are charged the difference (a debt past the burst if
    /// need be) or given it back where nothing was admitted since; quotas
    /// that count requests keep their charge.
    pub(crate) fn settle(&self, reserved: &Reserved, estimate: u32, true_cost: u32) {
        gcra::settle_all(
            &self.cells,
            &reserved.stamps,
            estimate,
            true_cost,
            self.clock.now(),
        );
    }

    /// [`settle`](Self::settle) for a reservation that charged `estimate`
    /// to every quota ([`Charge::n`], a budget of one unit): every quota
    /// is settled. `reserved`: `None` for nothing reserved (an estimate of
    /// 0), which only a debt changes.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn settle_n(&self, reserved: Option<&Reserved>, estimate: u32, true_count: u32) {
        let stamps = reserved.map_or(&[][..], |r| &r.stamps[..]);
        gcra::settle_cells(
            &self.cells,
            stamps,
            estimate,
            true_count,
            self.clock.now(),
            true,
        );
    }

    /// Returns a reservation's capacity if nothing was admitted after it.
    pub(crate) fn refund(&self, reserved: &Reserved, charge: Charge) {
        gcra::refund_all(&self.cells, &reserved.stamps, charge);
    }
}

/// A decision of cost 1 on one quota, as [`Limiter::check_with`] returns
/// it: what the [`Decision`] is made of besides the quota.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// Whether the request may pass.
    pub(crate) allowed: bool,
    /// Time of the decision.
    now: u64,
    /// `tat` after the decision (allowed) or `max(tat, now)` (denied).
    tat: u64,
}

impl Stamp {
    /// The decision, with the parameters it was made with.
    pub(crate) fn decision(&self, copy: &Copied) -> Decision {
        let p = copy.params();
        if self.allowed {
            Decision::allowed(p, self.now, self.tat)
        } else {
            Decision::denied(p, self.now, self.tat, p.inc(Charge::ONE))
        }
    }
}

/// The error of `charge` over the burst of `t`'s quota.
#[cold]
#[inline(never)]
fn exceeds(t: &Tunable, charge: Charge) -> ExceedsBurst {
    let p = t.load();
    ExceedsBurst::new(p.units(charge), p.quota)
}

/// Decides `charge` at `now` in one cell. Inlined into each caller, so
/// that a plain decision charges its constant and keeps the quota's
/// parameters in registers.
#[inline(always)]
fn decide_one(p: &Params, g: &Gcra, now: u64, charge: Charge) -> Decision {
    let inc = p.inc(charge);
    match g.try_admit(p.window, inc, now) {
        Ok(tat) => Decision::allowed(p, now, tat),
        Err(base) => Decision::denied(p, now, base, inc),
    }
}

impl CellSet for [(Tunable, Gcra)] {
    #[inline]
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    #[inline]
    fn cell(&self, i: usize) -> (Params, &Gcra) {
        let (t, g) = &self[i];
        (t.load(), g)
    }

    #[inline]
    fn rate(&self, i: usize) -> (Rate, &Gcra) {
        let (t, g) = &self[i];
        (t.rate(), g)
    }
}

impl Cells {
    #[inline]
    fn slice(&self) -> &[(Tunable, Gcra)] {
        match self {
            Cells::One(cell) => cell,
            Cells::Many(cells) => cells,
        }
    }
}

impl CellSet for Cells {
    #[inline]
    fn len(&self) -> usize {
        self.slice().len()
    }

    #[inline]
    fn cell(&self, i: usize) -> (Params, &Gcra) {
        self.slice().cell(i)
    }

    #[inline]
    fn rate(&self, i: usize) -> (Rate, &Gcra) {
        self.slice().rate(i)
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("quotas", &self.quotas().collect::<Vec<_>>())
            .field("clock", &self.clock)
            .finish()
    }
}
