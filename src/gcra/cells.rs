//! Deciding a set of cells together: all of a limiter's quotas, or all of
//! a key's under its policy, admitted all or none.

use super::{Decision, Gcra, Params, Rate};
use crate::calendar;
use crate::cost::Charge;

/// How many quotas a [`Reserved`] can refund without allocating.
pub(crate) const INLINE_CELLS: usize = 4;

/// A set of GCRA cells with their parameters: one limiter's quotas, or one
/// key's state under its policy.
pub(crate) trait CellSet {
    fn len(&self) -> usize;
    /// Cell `i`'s parameters (read now: a limiter's may change) and state.
    fn cell(&self, i: usize) -> (Params, &Gcra);

    /// Cell `i`'s [`Rate`] (read now) and state: what deciding a rolling
    /// cell needs, where reading all its parameters costs more.
    #[inline]
    fn rate(&self, i: usize) -> (Rate, &Gcra) {
        let (p, g) = self.cell(i);
        (p.rate(), g)
    }
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
    /// The decision of the cell with the fewest remaining (the first of
    /// them). Each cell's remaining is counted from its [`Rate`], and the
    /// decision is built once, for that cell.
    pub(crate) fn decision(&self, cells: &(impl CellSet + ?Sized)) -> Decision {
        let (mut best, mut best_tat) = (0, 0);
        let mut fewest = u64::MAX;
        for i in 0..cells.len() {
            let (r, g) = cells.rate(i);
            if r.calendar {
                return self.decision_by_params(cells);
            }
            let tat = self.stamp(i, g);
            // As `Decision::remaining`: capped at `u32::MAX`.
            let left = r.left(self.now, tat).min(u64::from(u32::MAX));
            if left < fewest {
                (best, best_tat, fewest) = (i, tat, left);
            }
        }
        let (r, _) = cells.rate(best);
        if r.calendar {
            // Changed meanwhile.
            return self.decision_by_params(cells);
        }
        Decision::allowed_rolling(&r, self.now, best_tat)
    }

    /// The `tat` cell `i` (state `g`) holds after the reservation.
    #[inline]
    fn stamp(&self, i: usize, g: &Gcra) -> u64 {
        match self.stamps.get(i) {
            Some(&tat) => tat,
            None => g.tat(),
        }
    }

    /// [`decision`](Self::decision) of a set with a calendar quota, whose
    /// remaining needs its window: every cell's decision is built.
    #[inline(never)]
    fn decision_by_params(&self, cells: &(impl CellSet + ?Sized)) -> Decision {
        let mut best: Option<Decision> = None;
        for i in 0..cells.len() {
            let (p, g) = cells.cell(i);
            let d = Decision::allowed(&p, self.now, self.stamp(i, g));
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
        // Each cell's rate is read once a pass; a denial is built once,
        // for the cell that needs the longest wait.
        let mut wait = 0;
        let mut worst = (0, 0, 0);
        for i in 0..cells.len() {
            let (r, g) = cells.rate(i);
            let inc = r.inc(charge);
            let (w, base) = if r.calendar {
                let (p, _) = cells.cell(i);
                calendar::wait(g, &p, p.units(charge), now)
            } else {
                g.wait(r.window, inc, now)
            };
            if w > wait {
                wait = w;
                worst = (i, base, inc);
            }
        }
        if wait > max_wait {
            return Err(denial(cells, now, worst));
        }
        let at = now.saturating_add(wait);
        for i in 0..cells.len() {
            let (r, g) = cells.rate(i);
            let admitted = if r.calendar {
                let (p, _) = cells.cell(i);
                calendar::try_admit(g, &p, p.units(charge), at)
            } else {
                g.try_admit(r.window, r.inc(charge), at)
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

/// The denial of cell `i` of `cells`, from `(i, base, inc)`: the cell's
/// `max(tat, now)` and the charge it was denied.
#[inline(never)]
fn denial(
    cells: &(impl CellSet + ?Sized),
    now: u64,
    (i, base, inc): (usize, u64, u64),
) -> Decision {
    let (p, _) = cells.cell(i);
    Decision::denied(&p, now, base, inc)
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
        settle_cell(&p, g, stamps.get(i).copied(), estimate, actual, now);
    }
}

/// Settles one cell charged `estimate` at `actual`: a debt moves it at
/// `now`; a refund gives back what it can if the cell still holds `stamp`
/// (no stamp: nothing is given back; `now` is not read).
#[inline]
pub(crate) fn settle_cell(
    p: &Params,
    g: &Gcra,
    stamp: Option<u64>,
    estimate: u32,
    actual: u32,
    now: u64,
) {
    if actual > estimate {
        let extra = actual - estimate;
        match p.calendar() {
            Some(_) => calendar::debt(g, p, extra, now),
            None => g.debt(p.emission.saturating_mul(u64::from(extra)), now),
        }
    } else if let Some(stamp) = stamp {
        let less = estimate - actual;
        match p.calendar() {
            Some(_) => calendar::refund(g, stamp, less),
            None => g.refund(stamp, p.emission.saturating_mul(u64::from(less))),
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
    use crate::quota::Quota;
    use crate::util::rng::SplitMix;

    /// The decision of the first cell with the fewest remaining, each
    /// cell's decision built in full.
    fn tightest(cells: &[(Params, Gcra)], now: u64, tats: &[u64]) -> Decision {
        let mut best: Option<Decision> = None;
        for ((p, _), &tat) in cells.iter().zip(tats) {
            let d = Decision::allowed(p, now, tat);
            if best.is_none_or(|b| d.remaining() < b.remaining()) {
                best = Some(d);
            }
        }
        best.unwrap()
    }

    /// [`Reserved::decision`] of cells of `quotas` holding `tats` at
    /// `now`, and [`tightest`] of them.
    fn decide(quotas: &[Quota], now: u64, tats: &[u64]) -> (Decision, Decision) {
        let cells: Vec<(Params, Gcra)> = quotas
            .iter()
            .zip(tats)
            .map(|(&q, &tat)| (Params::new(q), Gcra::with_tat(tat)))
            .collect();
        let mut stamps = [0; INLINE_CELLS];
        for (stamp, &tat) in stamps.iter_mut().zip(tats) {
            *stamp = tat;
        }
        let reserved = Reserved {
            wait: 0,
            now,
            stamps,
        };
        (reserved.decision(&cells[..]), tightest(&cells, now, tats))
    }

    #[test]
    fn decision_is_the_first_of_the_fewest_remaining() {
        const S: u64 = 1_000_000_000;
        // Five cells (one past the stamps kept inline), rates apart and
        // alike, requests and a cost.
        let quotas = [
            Quota::per_second(10),
            Quota::per_minute(600).with_burst(10),
            Quota::per_second(1_000_000_000).counting("tokens"),
            Quota::new(3, std::time::Duration::from_millis(1_500)),
            Quota::per_hour(7).with_burst(2),
        ];
        let now = 1_000 * S;
        // A tie (full buckets of the same burst): the first one decides.
        let (fast, slow) = decide(&quotas[..2], now, &[0, 0]);
        assert_eq!(fast, slow);
        assert_eq!(fast.quota(), quotas[0]);
        let (fast, _) = decide(&quotas[..2], now, &[now, now + S / 10]);
        assert_eq!(fast.quota(), quotas[1], "the second has one fewer");
        let mut rng = SplitMix::new(21);
        for _ in 0..20_000 {
            let n = 2 + (rng.next_u64() % 4) as usize;
            let tats: Vec<u64> = quotas[..n]
                .iter()
                .map(|q| {
                    let window = Params::new(*q).window;
                    // Behind now (full), on an emission boundary, or
                    // anywhere up to a bit past the window.
                    match rng.next_u64() % 4 {
                        0 => now - rng.next_u64() % S,
                        1 => now + (rng.next_u64() % 12) * q.emission_nanos(),
                        _ => now + rng.next_u64() % (window + window / 8 + 1),
                    }
                })
                .collect();
            let (fast, slow) = decide(&quotas[..n], now, &tats);
            assert_eq!(fast, slow, "{tats:?}");
        }
    }

    #[test]
    fn decision_with_a_calendar_quota() {
        let quotas = [
            Quota::per_second(10),
            Quota::per_calendar_minute(5),
            Quota::per_second(20),
        ];
        let now = 1_000_000_000_000;
        for tats in [[0, 0, 0], [now, now, now + 400_000_000]] {
            let (fast, slow) = decide(&quotas, now, &tats);
            assert_eq!(fast, slow);
        }
    }
}
