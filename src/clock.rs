//! The time source every limiter reads.
//!
//! Reading the time is most of the cost of a rate-limit decision (on the
//! machines we measure on, `std::time::Instant::now()` costs about 32 ns, a
//! TSC read through [`quanta`] about 13 ns and the GCRA compare-exchange about
//! 4 ns). Decisions therefore read a fast monotonic clock: quanta's
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

/// A monotonic clock that reports nanoseconds since its creation.
///
/// Cheap to clone; every limiter owns one, and the origin is the moment the
/// limiter was created, so nanosecond timestamps fit in a `u64` for 584
/// years.
#[derive(Clone)]
pub(crate) struct Clock {
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
            Clock { source, origin }
        }
        #[cfg(feature = "test-util")]
        {
            Clock {
                origin: tokio::time::Instant::now(),
            }
        }
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
