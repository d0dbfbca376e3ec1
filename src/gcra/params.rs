//! A quota's parameters in nanoseconds: [`Params`], and [`Tunable`] for
//! parameters that may change while deciders read them.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU64, fence};
use std::time::Duration;

use super::MAX_TAT;
use crate::calendar::{self, Calendar};
use crate::cost::Charge;
use crate::quota::{Quota, Unit};

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

    /// What deciding a rolling cell reads of these parameters.
    #[inline]
    pub(crate) fn rate(&self) -> Rate {
        Rate {
            emission: self.emission,
            window: self.window,
            period: self.period,
            limit: self.quota.limit(),
            burst: self.quota.burst(),
            unit: self.quota.unit_id(),
            calendar: self.calendar().is_some(),
        }
    }
}

/// What deciding a rolling cell reads of its quota, from one read of its
/// parameters: what admitting into it needs (the emission interval `T`,
/// the tolerance `B*T`, what it counts) and what its decision reports.
/// The quota itself is not rebuilt. A calendar quota's cell needs all of
/// its [`Params`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    /// Emission interval `T`.
    pub(crate) emission: u64,
    /// Tolerance `B*T`.
    pub(crate) window: u64,
    /// The period in nanoseconds.
    pub(crate) period: u64,
    /// The quota's limit per period.
    pub(crate) limit: u32,
    /// The quota's burst `B`.
    pub(crate) burst: u32,
    /// What the quota counts.
    pub(crate) unit: Unit,
    /// Whether the quota is a calendar one (then read its [`Params`]).
    pub(crate) calendar: bool,
}

impl Rate {
    /// What `charge` costs this quota (see [`Params::inc`]).
    #[inline]
    pub(crate) fn inc(&self, charge: Charge) -> u64 {
        self.emission * u64::from(charge.of(self.unit.is_cost()))
    }

    /// [`Decision::remaining`](super::Decision::remaining) of an allowed
    /// decision of a rolling quota that left `tat` at `now`, not capped
    /// at `u32::MAX`.
    #[inline]
    pub(crate) fn left(&self, now: u64, tat: u64) -> u64 {
        let used = tat.saturating_sub(now);
        self.window.saturating_sub(used) / self.emission
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

    /// The [`Rate`] now: the parameters, without rebuilding the quota.
    #[inline]
    pub(crate) fn rate(&self) -> Rate {
        loop {
            let seq = self.seq.load(Acquire);
            let emission = self.emission.load(Relaxed);
            let window = self.window.load(Relaxed);
            let period = self.period.load(Relaxed);
            let counts = self.counts.load(Relaxed);
            let calendar = self.calendar.load(Relaxed);
            fence(Acquire);
            if seq & 1 == 0 && self.seq.load(Relaxed) == seq {
                return Rate {
                    emission,
                    window,
                    period,
                    limit: (counts >> 32) as u32,
                    burst: counts as u32,
                    unit: self.unit,
                    calendar: calendar != 0,
                };
            }
            std::hint::spin_loop();
        }
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
