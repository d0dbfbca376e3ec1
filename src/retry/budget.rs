//! [`RetryBudget`]: retries at most a fraction of recent requests.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{ConfigError, invalid};
use crate::clock::BucketClock;

/// The window is kept in this many buckets.
const BUCKETS: usize = 10;
/// Fixed-point scale of the ratio: it is taken to 0.1%, rounded down.
const SCALE: i64 = 1_000;
const TAG_BITS: u32 = 24;
const COUNT_BITS: u32 = 64 - TAG_BITS;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// First attempts a thread counts for a budget before adding them to it.
const BATCH: u32 = 16;
/// Budgets a thread keeps a tally for at once.
const TALLIES: usize = 4;

/// Numbers budgets, so that a thread's tally names its budget.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A retry budget shared by every clone: over any window (10 s by
/// default), retries may number at most `ratio` times the first attempts
/// made in it (20% by default) plus a floor of `min_per_sec` retries a
/// second (10 by default), Finagle's defaults. A failing upstream
/// therefore sees at most `(1 + ratio)` times its normal load, plus the
/// floor, however many attempts each request may make.
///
/// Each first attempt deposits `ratio` of a token and each retry takes one
/// token; tokens (and withdrawals) expire after the window. The arithmetic
/// is exact in fixed point: the ratio is taken to 0.1%, rounded *down*, so
/// the budget never allows more than asked (tower's `TpsBudget` truncates
/// `1 / ratio` and over-allocates for ratios such as 0.6, tower#857).
///
/// It is lock-free, and a deposit costs no atomic operation and no clock
/// read: each thread counts its first attempts in a tally of its own and
/// adds them to the shared window 16 at a time, as if all were made when
/// the first of them was (so they expire no later than they should). A
/// retry sees every deposit its own thread made, and those of other
/// threads once their tally is added; a withdrawal is an atomic
/// read-modify-write and a scan of 10 atomics. So under concurrency a
/// retry may be refused that an exact serial budget would have allowed,
/// never the reverse.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::retry::RetryBudget;
///
/// // At most 10% extra load, and no floor.
/// let budget = RetryBudget::new(Duration::from_secs(10), 0.1, 0)?;
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// assert!(budget.withdraw());
/// assert!(budget.withdraw());
/// assert!(!budget.withdraw()); // 20 requests earn 2 retries
/// # Ok::<_, tower_sluice::error::ConfigError>(())
/// ```
///
/// See the [module docs](super).
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Names the budget in threads' tallies.
    id: u64,
    /// Coarse when a bucket spans 10 ticks of the coarse clock.
    clock: BucketClock,
    window: Duration,
    ratio: f64,
    min_per_sec: u32,
    bucket_nanos: u64,
    /// Tokens added per first attempt, and taken per retry (reduced).
    deposit: i64,
    withdraw: i64,
    /// The floor: `min_per_sec * window` retries, in token units.
    reserve: i64,
    /// Per bucket: epoch tag (high bits) and signed count (low bits).
    buckets: [AtomicU64; BUCKETS],
}

impl Default for RetryBudget {
    /// 20% over 10 s, plus 10 retries a second.
    fn default() -> Self {
        RetryBudget::new(Duration::from_secs(10), 0.2, 10).expect("valid defaults")
    }
}

impl RetryBudget {
    /// A budget allowing, over any `window`, `ratio` retries per first
    /// attempt plus `min_per_sec` retries a second.
    ///
    /// # Errors
    ///
    /// A `window` under 10 ms (field `window`), or a `ratio` that is NaN,
    /// negative or above 100 (field `ratio`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::{Backoff, RetryBudget};
    ///
    /// // One budget for two clients of the same upstream: together they retry
    /// // at most 10% of their requests, plus one retry a second.
    /// let budget = RetryBudget::new(Duration::from_secs(30), 0.1, 1)?;
    /// let a = BackoffRetryLayer::new(Backoff::default()).budget(budget.clone());
    /// let b = BackoffRetryLayer::new(Backoff::default()).budget(budget);
    /// # let _ = (a, b);
    /// assert_eq!(RetryBudget::new(Duration::ZERO, 0.1, 1).unwrap_err().field(), "window");
    /// # Ok::<_, tower_sluice::error::ConfigError>(())
    /// ```
    pub fn new(window: Duration, ratio: f64, min_per_sec: u32) -> Result<Self, ConfigError> {
        if window < Duration::from_millis(10) || window > Duration::from_secs(86_400 * 365) {
            return Err(invalid("window", "must be between 10 ms and a year"));
        }
        if !(0.0..=100.0).contains(&ratio) {
            return Err(invalid("ratio", "must be a number in [0, 100]"));
        }
        let mut deposit = (ratio * SCALE as f64 + 1e-6).floor() as i64;
        let mut withdraw = SCALE;
        let g = gcd(deposit, withdraw);
        deposit /= g;
        withdraw /= g;
        let floor = (f64::from(min_per_sec) * window.as_secs_f64()).floor() as i64;
        let bucket_nanos = (window.as_nanos() / BUCKETS as u128) as u64;
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                clock: BucketClock::for_buckets(bucket_nanos, 10),
                window,
                ratio,
                min_per_sec,
                bucket_nanos,
                deposit,
                withdraw,
                reserve: floor.saturating_mul(withdraw),
                buckets: Default::default(),
            }),
        })
    }

    /// Records a first attempt (the layer calls it for each request).
    #[inline]
    pub fn deposit(&self) {
        let i = &*self.inner;
        if i.deposit == 0 {
            return;
        }
        // Counted in this thread's tally when it is this budget's and not
        // full (no atomic, no clock); the rest is out of line.
        let counted = TALLY
            .try_with(|t| match &mut *t.borrow_mut() {
                [first, ..] if first.id == i.id && (1..BATCH).contains(&first.count) => {
                    first.count += 1;
                    true
                }
                _ => false,
            })
            .unwrap_or(false);
        if !counted {
            self.deposit_slow();
        }
    }

    /// [`deposit`](Self::deposit) when this thread's tally for the budget
    /// is full, empty or missing: adds what it holds, starts a new one.
    #[cold]
    #[inline(never)]
    fn deposit_slow(&self) {
        let i = &*self.inner;
        let e = i.epoch();
        let started = TALLY.try_with(|t| {
            let mut t = t.borrow_mut();
            let k = t
                .iter()
                .position(|tally| tally.id == i.id)
                .unwrap_or_else(|| {
                    // The least recently used tally goes to this budget.
                    let last = TALLIES - 1;
                    t[last].settle(None, e);
                    t[last] = Tally {
                        id: i.id,
                        count: 0,
                        epoch: e,
                        budget: Arc::downgrade(&self.inner),
                    };
                    last
                });
            t[..=k].rotate_right(1);
            let tally = &mut t[0];
            tally.settle(Some(i), e);
            tally.count = 1;
            tally.epoch = e;
        });
        if started.is_err() {
            // The thread is ending: count it directly.
            i.add(e, i.deposit);
        }
    }

    /// Takes one retry from the budget: `true` if one was left.
    pub fn withdraw(&self) -> bool {
        let i = &*self.inner;
        let e = i.epoch();
        i.settle_here(e);
        i.add(e, -i.withdraw);
        if i.reserve + i.sum(e) >= 0 {
            true
        } else {
            i.add(e, i.withdraw);
            false
        }
    }

    /// How many retries the budget would allow now (rounded down), the
    /// floor of `min_per_sec` over the window included.
    pub fn remaining(&self) -> u64 {
        let i = &*self.inner;
        let e = i.epoch();
        i.settle_here(e);
        let balance = i.reserve + i.sum(e);
        u64::try_from(balance / i.withdraw).unwrap_or(0)
    }
}

/// First attempts one thread counted for one budget and has not added to
/// it yet.
struct Tally {
    /// The budget's [`Inner::id`] (0: none).
    id: u64,
    count: u32,
    /// The epoch of the first of them: all are added to its bucket.
    epoch: u64,
    /// To add them when the tally goes to another budget.
    budget: Weak<Inner>,
}

impl Tally {
    const EMPTY: Tally = Tally {
        id: 0,
        count: 0,
        epoch: 0,
        budget: Weak::new(),
    };

    /// Adds what the tally holds to its budget (`inner`, or the one it
    /// names if still alive) at epoch `e`, and empties it. Deposits whose
    /// epoch has left the window are dropped: they would have expired.
    fn settle(&mut self, inner: Option<&Inner>, e: u64) {
        let count = std::mem::take(&mut self.count);
        if count == 0 || self.epoch + BUCKETS as u64 <= e {
            return;
        }
        let n = i64::from(count);
        match inner {
            Some(i) => i.add(self.epoch, n.saturating_mul(i.deposit)),
            None => {
                if let Some(i) = self.budget.upgrade() {
                    i.add(self.epoch, n.saturating_mul(i.deposit));
                }
            }
        }
    }
}

thread_local! {
    /// This thread's tallies, the most recently used first.
    static TALLY: RefCell<[Tally; TALLIES]> = const { RefCell::new([Tally::EMPTY; TALLIES]) };
}

impl Inner {
    /// Adds this thread's tally of the budget, if any, before a judgement
    /// at epoch `e`.
    fn settle_here(&self, e: u64) {
        let _ = TALLY.try_with(|t| {
            if let Some(tally) = t.borrow_mut().iter_mut().find(|t| t.id == self.id) {
                tally.settle(Some(self), e);
            }
        });
    }

    fn epoch(&self) -> u64 {
        self.clock.now() / self.bucket_nanos
    }

    fn add(&self, e: u64, n: i64) {
        let tag = e & TAG_MASK;
        let bucket = &self.buckets[(e % BUCKETS as u64) as usize];
        let mut w = bucket.load(Ordering::Relaxed);
        loop {
            let count = if w >> COUNT_BITS == tag { decode(w) } else { 0 };
            let new = encode(tag, count.saturating_add(n));
            match bucket.compare_exchange_weak(w, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(actual) => w = actual,
            }
        }
    }

    /// The sum of the buckets of epochs `(e - BUCKETS, e]`.
    fn sum(&self, e: u64) -> i64 {
        let n = BUCKETS as u64;
        let mut total = 0i64;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let back = (e % n + n - i as u64) % n;
            if back > e {
                continue;
            }
            let w = bucket.load(Ordering::Acquire);
            if w >> COUNT_BITS == (e - back) & TAG_MASK {
                total = total.saturating_add(decode(w));
            }
        }
        total
    }
}

fn encode(tag: u64, count: i64) -> u64 {
    let max = (1i64 << (COUNT_BITS - 1)) - 1;
    (tag << COUNT_BITS) | (count.clamp(-max, max) as u64 & COUNT_MASK)
}

fn decode(w: u64) -> i64 {
    ((w << TAG_BITS) as i64) >> TAG_BITS
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.debug_struct("RetryBudget")
            .field("window", &i.window)
            .field("ratio", &i.ratio)
            .field("min_per_sec", &i.min_per_sec)
            .field("remaining", &self.remaining())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips() {
        for c in [0i64, 1, -1, 12345, -98765, (1 << 38), -(1 << 38)] {
            let w = encode(0xABCDEF, c);
            assert_eq!(w >> COUNT_BITS, 0xABCDEF);
            assert_eq!(decode(w), c);
        }
    }

    #[test]
    fn fractional_ratios_do_not_over_allocate() {
        // tower#857: 0.6 must give 6 retries per 10 requests, not 10.
        for (ratio, deposits, allowed) in [(0.6, 10, 6), (0.2, 10, 2), (0.25, 7, 1), (1.5, 4, 6)] {
            let b = RetryBudget::new(Duration::from_secs(3600), ratio, 0).unwrap();
            for _ in 0..deposits {
                b.deposit();
            }
            let n = (0..100).take_while(|_| b.withdraw()).count();
            assert_eq!(n, allowed, "ratio {ratio}");
        }
    }

    #[test]
    fn floor_alone() {
        let b = RetryBudget::new(Duration::from_secs(10), 0.0, 10).unwrap();
        assert_eq!(b.remaining(), 100);
        let n = (0..1000).take_while(|_| b.withdraw()).count();
        assert_eq!(n, 100);
    }

    #[test]
    fn deposits_of_other_threads_count_once_their_tally_is_added() {
        let b = RetryBudget::new(Duration::from_secs(3600), 1.0, 0).unwrap();
        let other = b.clone();
        std::thread::spawn(move || {
            for _ in 0..=BATCH {
                other.deposit();
            }
        })
        .join()
        .unwrap();
        // One full tally was added; the last deposit was still the
        // ending thread's own: never more than was deposited.
        assert_eq!(b.remaining(), u64::from(BATCH));
        // This thread's own deposits are seen at once.
        b.deposit();
        assert_eq!(b.remaining(), u64::from(BATCH) + 1);
        assert!((0..=BATCH).all(|_| b.withdraw()));
        assert!(!b.withdraw());
    }

    #[test]
    fn more_budgets_than_tallies_on_one_thread_keep_every_deposit() {
        let budgets: Vec<RetryBudget> = (0..TALLIES + 2)
            .map(|_| RetryBudget::new(Duration::from_secs(3600), 1.0, 0).unwrap())
            .collect();
        for _ in 0..10 {
            for b in &budgets {
                b.deposit();
            }
        }
        for b in &budgets {
            assert_eq!(b.remaining(), 10);
        }
        // A budget dropped with deposits in a tally: the tally goes to
        // another budget without adding them anywhere.
        let gone = RetryBudget::new(Duration::from_secs(3600), 1.0, 0).unwrap();
        gone.deposit();
        drop(gone);
        for b in &budgets {
            b.deposit();
            assert_eq!(b.remaining(), 11);
        }
    }

    #[test]
    fn invalid_settings_name_the_field() {
        let e = |w, r| RetryBudget::new(w, r, 0).unwrap_err().field();
        assert_eq!(e(Duration::ZERO, 0.2), "window");
        assert_eq!(e(Duration::from_secs(1), f64::NAN), "ratio");
        assert_eq!(e(Duration::from_secs(1), -0.1), "ratio");
    }
}
