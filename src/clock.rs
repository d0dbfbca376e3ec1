//! The time source every limiter reads.
//!
//! Reading the time is most of the cost of a rate-limit decision (more than
//! the GCRA compare-exchange; a TSC read through [`quanta`] costs well under
//! half of `std::time::Instant::now()`, see the benches' README).
//! Decisions therefore read a fast monotonic clock: quanta's
//! calibrated TSC where the CPU has an invariant one, the OS monotonic clock
//! elsewhere. Each decision reads it once.
//!
//! With the crate feature `test-util`, the clock follows
//! [`tokio::time::Instant`] instead, so that `tokio::time::pause()` and
//! `tokio::time::advance()` drive every limiter exactly. Enable it in
//! `[dev-dependencies]` only, as you would tokio's own `test-util`:
//!
//! ```toml
//! [dev-dependencies]
//! tower-sluice = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! Waiting always sleeps on tokio timers, whichever clock decides.
//!
//! A second, coarser clock ([`CoarseClock`]: `CLOCK_MONOTONIC_COARSE` on
//! Linux, read through the vDSO) serves decisions that only need to know
//! which bucket of seconds a moment falls in, where its millisecond
//! resolution is far finer than needed and its lower cost matters (the
//! circuit breaker's time window). It follows tokio's clock under
//! `test-util` too.

/// A monotonic clock that reports nanoseconds since its creation.
///
/// Cheap to clone; every limiter owns one, and the origin is the moment the
/// limiter was created, so nanosecond timestamps fit in a `u64` for 584
/// years.
#[derive(Clone)]
pub(crate) struct Clock {
    /// The UTC time of the origin, nanoseconds since the Unix epoch: read
    /// once, so calendar windows follow this clock (see `crate::calendar`).
    utc: u64,
    #[cfg(not(feature = "test-util"))]
    source: quanta::Clock,
    #[cfg(not(feature = "test-util"))]
    origin: u64,
    #[cfg(feature = "test-util")]
    origin: tokio::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub(crate) fn new() -> Self {
        #[cfg(not(feature = "test-util"))]
        {
            let source = quanta::Clock::new();
            let origin = source.raw();
            Clock {
                utc: crate::calendar::utc_now(),
                source,
                origin,
            }
        }
        #[cfg(feature = "test-util")]
        {
            Clock {
                utc: crate::calendar::utc_now(),
                origin: tokio::time::Instant::now(),
            }
        }
    }

    /// The UTC time of the origin, in nanoseconds since the Unix epoch
    /// (`utc() + now()` is the time now, as this clock reckons it).
    #[inline]
    pub(crate) fn utc(&self) -> u64 {
        self.utc
    }

    /// Nanoseconds since the origin. Never goes backwards by more than the
    /// hardware's cross-core skew; the GCRA tolerates small steps back.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(not(feature = "test-util"))]
        {
            self.source.delta_as_nanos(self.origin, self.source.raw())
        }
        #[cfg(feature = "test-util")]
        {
            let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if cfg!(feature = "test-util") {
            "tokio"
        } else {
            "quanta"
        };
        f.debug_struct("Clock").field("source", &kind).finish()
    }
}

/// A cheaper, coarser monotonic clock for decisions that only need to
/// know which bucket of several seconds (or which side of a threshold of
/// hundreds of milliseconds) a moment falls in: the circuit breaker's time
/// window and, when it allows, its slow-call timing.
///
/// On Linux and Android it reads `CLOCK_MONOTONIC_COARSE` through the vDSO
/// (no `rdtsc`, no system call: a read of the time the kernel stored at its
/// last tick), which costs about a third of the precise [`Clock`] on the
/// machines we measure on. Its resolution is the kernel's tick, typically
/// 1 to 4 ms ([`resolution`](Self::resolution)); it lags the precise clock
/// by at most that much. Elsewhere it is the precise [`Clock`] (resolution
/// reported as zero). With the crate feature `test-util` it follows
/// [`tokio::time::Instant`] exactly, like [`Clock`].
#[derive(Clone)]
pub(crate) struct CoarseClock {
    #[cfg(all(
        not(feature = "test-util"),
        any(target_os = "linux", target_os = "android")
    ))]
    origin: u64,
    #[cfg(any(
        feature = "test-util",
        not(any(target_os = "linux", target_os = "android"))
    ))]
    inner: Clock,
}

#[cfg(all(
    not(feature = "test-util"),
    any(target_os = "linux", target_os = "android")
))]
#[inline]
fn coarse_nanos() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // Monotonic time is never negative.
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

impl CoarseClock {
    /// A clock whose origin is now.
    pub(crate) fn new() -> Self {
        #[cfg(all(
            not(feature = "test-util"),
            any(target_os = "linux", target_os = "android")
        ))]
        {
            CoarseClock {
                origin: coarse_nanos(),
            }
        }
        #[cfg(any(
            feature = "test-util",
            not(any(target_os = "linux", target_os = "android"))
        ))]
        {
            CoarseClock {
                inner: Clock::new(),
            }
        }
    }

    /// Nanoseconds since the origin, a multiple of the kernel tick (never
    /// goes backwards).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        #[cfg(all(
            not(feature = "test-util"),
            any(target_os = "linux", target_os = "android")
        ))]
        {
            coarse_nanos().saturating_sub(self.origin)
        }
        #[cfg(any(
            feature = "test-util",
            not(any(target_os = "linux", target_os = "android"))
        ))]
        {
            self.inner.now()
        }
    }

    /// How far [`now`](Self::now) may lag the precise time, in nanoseconds
    /// (0 where it is the precise clock). Asked of the kernel once per
    /// process.
    pub(crate) fn resolution() -> u64 {
        #[cfg(all(
            not(feature = "test-util"),
            any(target_os = "linux", target_os = "android")
        ))]
        {
            static RESOLUTION: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
            *RESOLUTION.get_or_init(|| {
                let ts = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
                let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
                let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
                secs.saturating_mul(1_000_000_000).saturating_add(nanos)
            })
        }
        #[cfg(any(
            feature = "test-util",
            not(any(target_os = "linux", target_os = "android"))
        ))]
        {
            0
        }
    }
}

impl CoarseClock {
    /// Whether `span` nanoseconds are at least `ticks` of this clock's
    /// resolution: long enough that bucketing by the coarse clock blurs a
    /// bucket's edges by at most `1 / ticks` of it.
    pub(crate) fn spans(span: u64, ticks: u64) -> bool {
        span >= Self::resolution().saturating_mul(ticks)
    }
}

/// The clock of a time-bucketed count (a window of buckets, a retry
/// budget): the [`CoarseClock`] when a bucket spans at least `ticks` of
/// its resolution (a few ns cheaper per read), else the precise [`Clock`].
#[derive(Clone, Debug)]
pub(crate) enum BucketClock {
    Coarse(CoarseClock),
    Precise(Clock),
}

impl BucketClock {
    /// The clock for buckets of `bucket` nanoseconds.
    pub(crate) fn for_buckets(bucket: u64, ticks: u64) -> Self {
        if CoarseClock::spans(bucket, ticks) {
            BucketClock::Coarse(CoarseClock::new())
        } else {
            BucketClock::Precise(Clock::new())
        }
    }

    /// Nanoseconds since the origin (never goes backwards).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            BucketClock::Coarse(c) => c.now(),
            BucketClock::Precise(c) => c.now(),
        }
    }

    /// Whether it reads the coarse clock.
    #[cfg(test)]
    pub(crate) fn is_coarse(&self) -> bool {
        matches!(self, BucketClock::Coarse(_))
    }
}

impl std::fmt::Debug for CoarseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if cfg!(feature = "test-util") {
            "tokio"
        } else if cfg!(any(target_os = "linux", target_os = "android")) {
            "CLOCK_MONOTONIC_COARSE"
        } else {
            "quanta"
        };
        f.debug_struct("CoarseClock")
            .field("source", &kind)
            .field("resolution_ns", &Self::resolution())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn advances_with_real_time() {
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        assert!(b >= a + 15_000_000, "{a} -> {b}");
        assert!(b < a + 5_000_000_000, "{a} -> {b}");
    }

    #[test]
    fn coarse_clock_advances_with_real_time() {
        let c = CoarseClock::new();
        let res = CoarseClock::resolution();
        assert!(res < 100_000_000, "resolution {res} ns");
        let a = c.now();
        std::thread::sleep(Duration::from_millis(50));
        let b = c.now();
        // Each reading lags the precise time by at most one tick.
        assert!(b + res >= a + 50_000_000, "{a} -> {b} (resolution {res})");
        assert!(b < a + 5_000_000_000, "{a} -> {b}");
    }

    #[test]
    fn bucket_clock_is_coarse_only_for_buckets_of_enough_ticks() {
        let tick = CoarseClock::resolution();
        assert!(BucketClock::for_buckets(1_000_000_000, 10).is_coarse() || tick > 100_000_000);
        // Where the coarse clock has ticks, a bucket of one tick is too short.
        assert_eq!(BucketClock::for_buckets(tick, 10).is_coarse(), tick == 0);
        assert!(CoarseClock::spans(10 * tick, 10));
        assert_eq!(
            CoarseClock::spans((10 * tick).saturating_sub(1), 10),
            tick == 0
        );
    }

    #[test]
    fn coarse_clock_never_goes_backwards() {
        let c = CoarseClock::new();
        let mut last = c.now();
        for _ in 0..100_000 {
            let now = c.now();
            assert!(now >= last, "{last} -> {now}");
            last = now;
        }
    }
}

/// A point in time for measuring latency: quanta's global clock, or
/// tokio's with `test-util` (so paused-time tests see exact figures).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp(
    #[cfg(not(feature = "test-util"))] quanta::Instant,
    #[cfg(feature = "test-util")] tokio::time::Instant,
);

impl Stamp {
    #[inline]
    pub(crate) fn now() -> Self {
        #[cfg(not(feature = "test-util"))]
        {
            Stamp(quanta::Instant::now())
        }
        #[cfg(feature = "test-util")]
        {
            Stamp(tokio::time::Instant::now())
        }
    }

    /// Time since this stamp.
    #[inline]
    pub(crate) fn elapsed(&self) -> std::time::Duration {
        #[cfg(not(feature = "test-util"))]
        {
            quanta::Instant::now().saturating_duration_since(self.0)
        }
        #[cfg(feature = "test-util")]
        {
            tokio::time::Instant::now().saturating_duration_since(self.0)
        }
    }
}
