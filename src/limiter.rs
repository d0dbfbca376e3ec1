//! [`Limiter`]: an in-memory GCRA limiter of one or several quotas, usable
//! on its own or behind [`RateLimitLayer`](crate::RateLimitLayer).

use std::fmt;
use std::time::Duration;

use crate::Quota;
use crate::clock::Clock;
use crate::error::ExceedsBurst;
use crate::gcra::{Decision, Gcra, Params};

/// How many quotas a [`Reservation`] can refund without allocating.
const INLINE_CELLS: usize = 4;

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
}

enum Cells {
    One((Params, Gcra)),
    Many(Box<[(Params, Gcra)]>),
}

/// Capacity reserved ahead of time by a waiting layer; refunded when the
/// request is abandoned before it is sent.
#[derive(Debug)]
pub(crate) struct Reservation {
    /// Nanoseconds to wait before sending.
    pub(crate) wait: u64,
    /// `tat` written into each cell (up to [`INLINE_CELLS`]).
    stamps: [u64; INLINE_CELLS],
}

impl Limiter {
    /// A limiter with one quota.
    pub fn new(quota: Quota) -> Self {
        Limiter {
            clock: Clock::new(),
            cells: Cells::One((Params::new(quota), Gcra::new())),
        }
    }

    /// Adds another quota: requests must then pass this one too (for example
    /// 60/min *and* 1000/day).
    #[must_use]
    pub fn and(self, quota: Quota) -> Self {
        let mut cells: Vec<(Params, Gcra)> = match self.cells {
            Cells::One(cell) => vec![cell],
            Cells::Many(cells) => cells.into_vec(),
        };
        cells.push((Params::new(quota), Gcra::new()));
        Limiter {
            clock: self.clock,
            cells: Cells::Many(cells.into_boxed_slice()),
        }
    }

    /// The quotas, in the order they were added.
    pub fn quotas(&self) -> impl Iterator<Item = Quota> + '_ {
        self.cells().iter().map(|(p, _)| p.quota)
    }

    fn cells(&self) -> &[(Params, Gcra)] {
        match &self.cells {
            Cells::One(cell) => std::slice::from_ref(cell),
            Cells::Many(c) => c,
        }
    }

    /// The smallest burst among the quotas: the largest cost that can pass.
    pub fn max_cost(&self) -> u32 {
        self.quotas().map(|q| q.burst()).min().unwrap_or(0)
    }

    /// Decides a request of cost 1 now, consuming capacity when allowed.
    #[inline]
    pub fn check(&self) -> Decision {
        self.decide(self.clock.now(), 1)
    }

    /// Decides a request of cost `cost` now, consuming capacity when
    /// allowed.
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than a quota's burst: such a
    /// request could never pass, so it is an error rather than a denial
    /// with a retry time.
    pub fn check_n(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        self.validate_cost(cost)?;
        Ok(self.decide(self.clock.now(), cost))
    }

    /// What [`check`](Self::check) would decide now, without consuming.
    pub fn peek(&self) -> Decision {
        self.peek_at(self.clock.now(), 1)
    }

    /// What [`check_n`](Self::check_n) would decide now, without consuming.
    ///
    /// # Errors
    ///
    /// [`ExceedsBurst`] when `cost` is larger than a quota's burst.
    pub fn peek_n(&self, cost: u32) -> Result<Decision, ExceedsBurst> {
        self.validate_cost(cost)?;
        Ok(self.peek_at(self.clock.now(), cost))
    }

    fn validate_cost(&self, cost: u32) -> Result<(), ExceedsBurst> {
        match self.quotas().find(|q| cost > q.burst()) {
            Some(q) => Err(ExceedsBurst::new(cost, q)),
            None => Ok(()),
        }
    }

    /// Decides at time `now` (nanoseconds since the clock origin).
    #[inline]
    pub(crate) fn decide(&self, now: u64, cost: u32) -> Decision {
        match &self.cells {
            Cells::One((p, g)) => {
                let inc = p.inc(cost);
                match g.try_admit(p.window, inc, now) {
                    Ok(tat) => Decision::allowed(p, now, tat),
                    Err(base) => Decision::denied(p, now, base, inc),
                }
            }
            Cells::Many(cells) => match self.reserve_many(cells, now, cost, 0) {
                Ok(_) => Self::tightest_allowed(cells, now),
                Err(denied) => denied,
            },
        }
    }

    fn peek_at(&self, now: u64, cost: u32) -> Decision {
        let mut worst: Option<Decision> = None;
        for (p, g) in self.cells() {
            let inc = p.inc(cost);
            let (wait, base) = g.wait(p.window, inc, now);
            if wait > 0 && worst.is_none_or(|w| wait > w.retry_after_nanos()) {
                worst = Some(Decision::denied(p, now, base, inc));
            }
        }
        match worst {
            Some(denied) => denied,
            None => {
                // As if admitted: report the state the request would leave.
                let after = |p: &Params, g: &Gcra| g.tat().max(now) + p.inc(cost);
                self.cells()
                    .iter()
                    .map(|(p, g)| Decision::allowed(p, now, after(p, g)))
                    .min_by_key(Decision::remaining)
                    .expect("a limiter has at least one quota")
            }
        }
    }

    /// The current state as a decision of the tightest quota, consuming
    /// nothing (for reporting).
    pub(crate) fn snapshot(&self) -> Decision {
        Self::tightest_allowed(self.cells(), self.clock.now())
    }

    /// The allowed decision of the quota with the fewest remaining.
    fn tightest_allowed(cells: &[(Params, Gcra)], now: u64) -> Decision {
        cells
            .iter()
            .map(|(p, g)| Decision::allowed(p, now, g.tat().max(now)))
            .min_by_key(Decision::remaining)
            .expect("a limiter has at least one quota")
    }

    /// Reserves `cost` at the earliest time within `max_wait` of now when
    /// every quota has room, or returns the denial of the quota that needs
    /// the longest wait. Nothing is consumed on denial.
    pub(crate) fn reserve(&self, cost: u32, max_wait: u64) -> Result<Reservation, Decision> {
        let now = self.clock.now();
        match &self.cells {
            Cells::One((p, g)) => {
                let inc = p.inc(cost);
                match g.reserve(p.window, inc, now, max_wait) {
                    Ok((tat, wait)) => {
                        let mut stamps = [0; INLINE_CELLS];
                        stamps[0] = tat;
                        Ok(Reservation { wait, stamps })
                    }
                    Err(base) => Err(Decision::denied(p, now, base, inc)),
                }
            }
            Cells::Many(cells) => self.reserve_many(cells, now, cost, max_wait),
        }
    }

    /// Several quotas: find the wait every quota agrees on, then admit the
    /// request in each at that time; on a race, roll back and start over.
    fn reserve_many(
        &self,
        cells: &[(Params, Gcra)],
        now: u64,
        cost: u32,
        max_wait: u64,
    ) -> Result<Reservation, Decision> {
        'retry: loop {
            // Pass 1: the longest wait any quota needs; deny without
            // consuming if it is over budget.
            let mut wait = 0;
            let mut worst = None;
            for (p, g) in cells {
                let inc = p.inc(cost);
                let (w, base) = g.wait(p.window, inc, now);
                if w > wait {
                    wait = w;
                    worst = Some(Decision::denied(p, now, base, inc));
                }
            }
            if wait > max_wait {
                return Err(worst.expect("a positive wait has a quota that needs it"));
            }
            // Pass 2: admit in every quota at `now + wait`.
            let at = now.saturating_add(wait);
            let mut stamps = [0; INLINE_CELLS];
            for (i, (p, g)) in cells.iter().enumerate() {
                match g.try_admit(p.window, p.inc(cost), at) {
                    Ok(tat) => {
                        if i < INLINE_CELLS {
                            stamps[i] = tat;
                        }
                    }
                    Err(_) => {
                        // Another request got in between the passes.
                        Self::refund_cells(cells, &stamps[..i.min(INLINE_CELLS)], cost);
                        continue 'retry;
                    }
                }
            }
            return Ok(Reservation { wait, stamps });
        }
    }

    /// Returns a reservation's capacity if nothing was admitted after it.
    pub(crate) fn refund(&self, reservation: &Reservation, cost: u32) {
        let cells = self.cells();
        let n = cells.len().min(INLINE_CELLS);
        Self::refund_cells(cells, &reservation.stamps[..n], cost);
    }

    fn refund_cells(cells: &[(Params, Gcra)], stamps: &[u64], cost: u32) {
        for ((p, g), &tat) in cells.iter().zip(stamps) {
            g.refund(tat, p.inc(cost));
        }
    }

    /// The wait of a reservation as a `Duration`.
    pub(crate) fn wait_of(reservation: &Reservation) -> Duration {
        Duration::from_nanos(reservation.wait)
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
