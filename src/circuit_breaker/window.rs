//! Sliding windows of call outcomes, recorded lock-free in O(1).
//!
//! Both windows keep three totals (calls, failures, slow calls) that a
//! judgement reads without walking the window's history.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::config::SlidingWindow;

/// A recorded call: always [`PRESENT`], plus [`FAILURE`] and [`SLOW`].
pub(crate) const PRESENT: u8 = 1;
pub(crate) const FAILURE: u8 = 2;
pub(crate) const SLOW: u8 = 4;

/// Totals of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Counts {
    fn of(flags: u8) -> Counts {
        Counts {
            calls: u32::from(flags & PRESENT != 0),
            failures: u32::from(flags & FAILURE != 0),
            slow: u32::from(flags & SLOW != 0),
        }
    }
}

#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(kind: SlidingWindow) -> Window {
        match kind {
            SlidingWindow::Count(n) => Window::Count(CountWindow::new(n)),
            SlidingWindow::Time { size, buckets } => Window::Time(TimeWindow::new(
                u64::try_from(size.as_nanos()).unwrap_or(u64::MAX),
                buckets,
            )),
        }
    }

    /// Whether recording and reading need the time.
    pub(crate) fn needs_time(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    #[inline]
    pub(crate) fn record(&self, now: u64, flags: u8) {
        match self {
            Window::Count(w) => w.record(flags),
            Window::Time(w) => w.record(now, flags),
        }
    }

    pub(crate) fn counts(&self, now: u64) -> Counts {
        match self {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(now),
        }
    }

    /// Forgets everything. Records racing with a reset may survive it.
    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

/// The last `n` calls: a ring of outcome flags and running totals. A record
/// claims the next slot with one `fetch_add`, swaps its flags in and moves
/// the totals by the difference, so every slot's outcome is counted exactly
/// once, whatever the interleaving.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    next: AtomicU32,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(n: u32) -> Self {
        CountWindow {
            slots: (0..n).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    #[inline]
    fn record(&self, flags: u8) {
        let len = self.slots.len() as u32;
        // A full window of plain successes is a uniform ring: recording
        // another success changes nothing, wherever it would land, so it
        // claims no slot (the steady state of a healthy upstream costs
        // three loads). A failure racing with it is ordered after it.
        if flags == PRESENT
            && self.failures.load(Ordering::Relaxed) == 0
            && self.slow.load(Ordering::Relaxed) == 0
            && self.calls.load(Ordering::Relaxed) == len
        {
            return;
        }
        // Claim the next slot, wrapping without a division.
        let i = match self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |i| {
                Some(if i + 1 >= len { 0 } else { i + 1 })
            }) {
            Ok(i) | Err(i) => i,
        };
        let slot = &self.slots[i as usize];
        // Overwriting a slot with what it holds changes no total: skip the
        // write (the steady state of a healthy upstream). Totals always
        // match the slots' contents, since every write adjusts them by what
        // it actually replaced.
        if slot.load(Ordering::Relaxed) == flags {
            return;
        }
        let old = slot.swap(flags, Ordering::Relaxed);
        if old == flags {
            return;
        }
        let (new, old) = (Counts::of(flags), Counts::of(old));
        let apply = |total: &AtomicU32, new: u32, old: u32| {
            if new > old {
                total.fetch_add(1, Ordering::Relaxed);
            } else if new < old {
                total.fetch_sub(1, Ordering::Relaxed);
            }
        };
        apply(&self.calls, new.calls, old.calls);
        apply(&self.failures, new.failures, old.failures);
        apply(&self.slow, new.slow, old.slow);
    }

    fn counts(&self) -> Counts {
        Counts {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for slot in self.slots.iter() {
            let old = slot.swap(0, Ordering::Relaxed);
            let old = Counts::of(old);
            self.calls.fetch_sub(old.calls, Ordering::Relaxed);
            self.failures.fetch_sub(old.failures, Ordering::Relaxed);
            self.slow.fetch_sub(old.slow, Ordering::Relaxed);
        }
    }
}

/// The calls of the last `size` nanoseconds, in `n` buckets of `size / n`.
/// Bucket `i` holds the epoch (bucket index since the clock's origin, plus
/// one; 0 is empty) it counts for. A record into a bucket of an older epoch
/// first recycles it: it marks the bucket [`RECYCLING`], zeroes it, adds
/// itself and publishes the new epoch. Only that recycling, once per bucket
/// length, ever makes another recorder wait.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    bucket_nanos: u64,
    /// `epoch << 16 | index` of the bucket last located (0: none).
    hint: AtomicU64,
}

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

const RECYCLING: u64 = u64::MAX;

impl Bucket {
    #[inline]
    fn add(&self, c: Counts) {
        self.calls.fetch_add(c.calls, Ordering::Relaxed);
        if c.failures != 0 {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if c.slow != 0 {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl TimeWindow {
    fn new(size_nanos: u64, n: u32) -> Self {
        TimeWindow {
            buckets: (0..n).map(|_| Bucket::default()).collect(),
            bucket_nanos: (size_nanos / u64::from(n)).max(1),
            hint: AtomicU64::new(0),
        }
    }

    #[inline]
    fn epoch(&self, now: u64) -> u64 {
        now / self.bucket_nanos + 1
    }

    /// The epoch of `now` and its bucket's index, without dividing when
    /// `now` falls in the bucket of the last call (the usual case).
    #[inline]
    fn locate(&self, now: u64) -> (u64, usize) {
        let hint = self.hint.load(Ordering::Relaxed);
        let (epoch, index) = (hint >> 16, (hint & 0xffff) as usize);
        let start = epoch.wrapping_sub(1).wrapping_mul(self.bucket_nanos);
        if epoch != 0 && now.wrapping_sub(start) < self.bucket_nanos {
            return (epoch, index);
        }
        let epoch = self.epoch(now);
        let index = (epoch % self.buckets.len() as u64) as usize;
        if self.buckets.len() <= 0x1_0000 && epoch < 1 << 48 {
            self.hint
                .store(epoch << 16 | index as u64, Ordering::Relaxed);
        }
        (epoch, index)
    }

    #[inline]
    fn record(&self, now: u64, flags: u8) {
        let (epoch, index) = self.locate(now);
        let bucket = &self.buckets[index];
        let counts = Counts::of(flags);
        loop {
            let current = bucket.epoch.load(Ordering::Acquire);
            if current == epoch {
                bucket.add(counts);
                return;
            }
            if current == RECYCLING {
                std::hint::spin_loop();
                continue;
            }
            if current > epoch {
                // Recorded so late that its bucket has moved on: too old.
                return;
            }
            if bucket
                .epoch
                .compare_exchange_weak(current, RECYCLING, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                bucket.calls.store(0, Ordering::Relaxed);
                bucket.failures.store(0, Ordering::Relaxed);
                bucket.slow.store(0, Ordering::Relaxed);
                bucket.add(counts);
                bucket.epoch.store(epoch, Ordering::Release);
                return;
            }
        }
    }

    fn counts(&self, now: u64) -> Counts {
        let epoch = self.epoch(now);
        let n = self.buckets.len() as u64;
        let mut total = Counts::default();
        for bucket in self.buckets.iter() {
            let e = bucket.epoch.load(Ordering::Acquire);
            if e != RECYCLING && e != 0 && e <= epoch && e + n > epoch {
                total.calls += bucket.calls.load(Ordering::Relaxed);
                total.failures += bucket.failures.load(Ordering::Relaxed);
                total.slow += bucket.slow.load(Ordering::Relaxed);
            }
        }
        total
    }

    fn reset(&self) {
        for bucket in self.buckets.iter() {
            // Epoch 0 is never current, so the bucket is recycled on its
            // next record.
            let _ = bucket
                .epoch
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                    (e != RECYCLING).then_some(0)
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn flags(failure: bool, slow: bool) -> u8 {
        PRESENT | if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 }
    }

    proptest! {
        /// The count window agrees with the last `n` entries of a `Vec`.
        #[test]
        fn count_window_matches_a_naive_last_n(
            n in 1u32..40,
            calls in prop::collection::vec((any::<bool>(), any::<bool>()), 0..300),
            reset_at in prop::option::of(0usize..300),
        ) {
            let w = Window::new(SlidingWindow::Count(n));
            let mut naive: Vec<(bool, bool)> = Vec::new();
            for (i, &(failure, slow)) in calls.iter().enumerate() {
                if reset_at == Some(i) {
                    w.reset();
                    naive.clear();
                }
                w.record(0, flags(failure, slow));
                naive.push((failure, slow));
                let last = &naive[naive.len().saturating_sub(n as usize)..];
                let want = Counts {
                    calls: last.len() as u32,
                    failures: last.iter().filter(|c| c.0).count() as u32,
                    slow: last.iter().filter(|c| c.1).count() as u32,
                };
                prop_assert_eq!(w.counts(0), want);
            }
        }

        /// The time window agrees with a naive list of timestamped calls,
        /// counting whole buckets.
        #[test]
        fn time_window_matches_a_naive_bucketed_list(
            buckets in 1u32..8,
            steps in prop::collection::vec((0u64..3_000, any::<bool>()), 0..200),
        ) {
            let size = Duration::from_secs(1);
            let w = Window::new(SlidingWindow::Time { size, buckets });
            let bucket = 1_000_000_000 / u64::from(buckets);
            let mut now = 0u64;
            let mut naive: Vec<(u64, bool)> = Vec::new();
            for &(advance_ms, failure) in &steps {
                now += advance_ms * 1_000_000;
                w.record(now, flags(failure, false));
                naive.push((now, failure));
                let epoch = now / bucket;
                let live: Vec<_> = naive
                    .iter()
                    .filter(|(t, _)| t / bucket + u64::from(buckets) > epoch)
                    .collect();
                let want = Counts {
                    calls: live.len() as u32,
                    failures: live.iter().filter(|c| c.1).count() as u32,
                    slow: 0,
                };
                prop_assert_eq!(w.counts(now), want);
            }
        }
    }

    #[test]
    fn concurrent_records_are_each_counted_once() {
        let w = std::sync::Arc::new(Window::new(SlidingWindow::Count(64)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        w.record(0, flags((i + t) % 3 == 0, false));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let c = w.counts(0);
        assert_eq!(c.calls, 64);
        assert!(c.failures <= 64);
    }
}
