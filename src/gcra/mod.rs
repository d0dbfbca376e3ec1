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
//!
//! The cell is here; the rest in named files: [`Params`] and [`Tunable`]
//! (a quota's parameters in nanoseconds, changeable while deciders read
//! them), [`Decision`] (what a decision answers), and the functions that
//! decide a set of cells together (`cells.rs`).

mod cells;
mod decision;
mod params;

pub(crate) use cells::{
    CellSet, INLINE_CELLS, Reserved, peek_all, refund_all, reserve_all, settle_all, settle_cell,
    settle_cells, snapshot,
};
pub use decision::Decision;
pub(crate) use params::{Copied, Params, Rate, Tunable, convert_tat};

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cost::Charge;
    use crate::quota::Quota;

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
