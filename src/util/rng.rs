//! The crate's one source of randomness: SplitMix64, seedable and small.
//!
//! Jitter (retry backoff, a breaker's open duration, adaptive concurrency),
//! probabilistic shedding (client-side throttling) and the monitor's
//! sampling need spread, not secrecy: SplitMix64 passes BigCrush, costs a
//! few instructions per draw and keeps no more than one word of state.
//!
//! * [`SplitMix`]: a generator owned by one user (`&mut self`), such as one
//!   request's backoff.
//! * [`SharedRng`]: one generator shared by threads without a lock (each
//!   draw is one `fetch_add`), such as a layer's.
//! * [`mix`]: one draw from a seed, for a value derived from a seed.
//! * [`thread_seed`]: a fresh seed from this thread's generator, itself
//!   seeded once from the OS's randomness.
//!
//! Implementation notes: kept here rather than taken from a crate because
//! `SharedRng` draws with one atomic add (a `fastrand::Rng` is `!Sync`) and
//! seeded streams must repeat across versions for `seed(..)` to be useful
//! in tests.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// SplitMix64's increment (the golden ratio).
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a well-mixed 64-bit value of `z`.
#[inline]
pub(crate) fn mix(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x` as a number uniform in `[0, 1)` (its top 53 bits).
#[inline]
pub(crate) fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A generator owned by one user.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Uniform in `[lo, hi]` (nanosecond resolution).
    pub(crate) fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo).as_nanos().min(u64::MAX as u128 - 1) as u64 + 1;
        let r = ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64;
        lo + Duration::from_nanos(r)
    }
}

/// A generator shared by threads: each draw is one atomic add.
pub(crate) struct SharedRng(AtomicU64);

impl SharedRng {
    pub(crate) fn new(seed: u64) -> Self {
        SharedRng(AtomicU64::new(seed))
    }

    /// A generator that continues from this one's state.
    pub(crate) fn fork(&self) -> Self {
        SharedRng::new(self.0.load(Ordering::Relaxed))
    }

    /// Seeded from this thread's generator: different per layer and run.
    pub(crate) fn from_entropy() -> Self {
        SharedRng::new(thread_seed())
    }

    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        mix(self
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA))
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn next_f64(&self) -> f64 {
        unit(self.next_u64())
    }
}

impl std::fmt::Debug for SharedRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedRng")
    }
}

thread_local! {
    /// This thread's generator state, seeded on first use.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// One draw from this thread's generator, seeded once from the OS's
/// randomness (through std's `RandomState`): a fresh seed, or a random
/// number where any will do.
#[inline]
pub(crate) fn thread_seed() -> u64 {
    THREAD.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = RandomState::new().hash_one(0x5EED_u64) | 1;
        }
        s = s.wrapping_add(GAMMA);
        state.set(s);
        mix(s)
    })
}

/// True with probability `1 / n` (always for `n <= 1`), drawn from this
/// thread's generator.
#[inline]
pub(crate) fn one_in(n: u32) -> bool {
    // The high 32 bits scaled to [0, n): 0 with probability 1/n.
    ((thread_seed() >> 32) * u64::from(n)) >> 32 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_streams_repeat() {
        let (mut a, mut b) = (SplitMix::new(7), SplitMix::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let shared = SharedRng::new(7);
        let zs: Vec<u64> = (0..8).map(|_| shared.next_u64()).collect();
        assert_eq!(xs, zs, "the shared generator draws the same stream");
        // The first output of SplitMix64 seeded with 0 (reference value).
        assert_eq!(SplitMix::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn draws_are_spread() {
        let mut g = SplitMix::new(1);
        let lo = Duration::from_millis(10);
        let hi = Duration::from_millis(20);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = g.between(lo, hi);
            assert!(d >= lo && d <= hi);
            let i = ((d - lo).as_nanos() * 10 / (hi - lo).as_nanos()).min(9) as usize;
            buckets[i] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
        let hits = (0..100_000).filter(|_| one_in(10)).count();
        assert!((9_000..11_000).contains(&hits), "{hits}");
        assert!((0..100).all(|_| one_in(1)));
        assert_ne!(thread_seed(), thread_seed());
    }
}
