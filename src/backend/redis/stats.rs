//! `RedisStats` and the counters behind it.

use super::*;

/// Counters of a [`RedisBackend`], from [`RedisBackend::stats`].
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::redis::RedisBackend;
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let stats = backend.stats();
/// assert_eq!(stats.decisions, 0); // nothing connects before the first decision
/// # Ok::<(), redis::RedisError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// Decisions made by Redis.
    pub decisions: u64,
    /// Requests denied locally by the deny cache, without a round trip.
    pub deny_cache_hits: u64,
    /// Decisions that hit the deadline.
    pub timeouts: u64,
    /// Decisions whose connection was refused.
    pub refused: u64,
    /// Decisions that failed with another I/O or connection error.
    pub io_errors: u64,
    /// Decisions where the script failed or its answer was not understood.
    pub script_errors: u64,
    /// Decisions that failed with any other error.
    pub other_errors: u64,
    /// Decisions that skipped Redis because it was known to be down.
    pub skipped: u64,
    /// Requests let through because of a failure ([`FailurePolicy::FailOpen`]).
    pub failed_open: u64,
    /// Requests refused because of a failure ([`FailurePolicy::FailClosed`]).
    pub failed_closed: u64,
    /// Requests decided by the local fallback limiter.
    pub fallback: u64,
    /// Times Redis (or, on a Cluster, a master) was declared down.
    pub went_down: u64,
    /// Times Redis (or a master) came back.
    pub came_back: u64,
    /// Settlements Redis applied ([`Backend::settle`]).
    pub settled: u64,
    /// Of the settlements Redis applied, those carried by their key's next
    /// decision (see [`RedisBackend::settle_delay`](super::RedisBackend::settle_delay)).
    pub settles_carried: u64,
    /// Settlements dropped: failed or timed out (sent on their own or
    /// carried by a decision), or not sent while Redis was down, without a
    /// tokio runtime, or with too many waiting already. A dropped
    /// settlement is never retried; its request keeps its estimate.
    pub settles_dropped: u64,
    /// Settlements of grants the failure policy let through without a
    /// charge ([`FailurePolicy::FailOpen`]): nothing was charged on Redis,
    /// so nothing is settled there.
    pub settles_skipped: u64,
    /// Settlements of grants the local fallback decided
    /// ([`FailurePolicy::Fallback`]), applied to the fallback's own state,
    /// where they were charged.
    pub settled_in_fallback: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) decisions: AtomicU64,
    pub(super) deny_cache_hits: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) refused: AtomicU64,
    pub(super) io_errors: AtomicU64,
    pub(super) script_errors: AtomicU64,
    pub(super) other_errors: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) failed_open: AtomicU64,
    pub(super) failed_closed: AtomicU64,
    pub(super) fallback: AtomicU64,
    pub(super) went_down: AtomicU64,
    pub(super) came_back: AtomicU64,
    pub(super) settled: AtomicU64,
    pub(super) settles_carried: AtomicU64,
    pub(super) settles_dropped: AtomicU64,
    pub(super) settles_skipped: AtomicU64,
    pub(super) settled_in_fallback: AtomicU64,
}

impl Counters {
    pub(super) fn count_error(&self, kind: BackendErrorKind) {
        let counter = match kind {
            BackendErrorKind::Timeout => &self.timeouts,
            BackendErrorKind::Refused => &self.refused,
            BackendErrorKind::Io => &self.io_errors,
            BackendErrorKind::Script => &self.script_errors,
            _ => &self.other_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self) -> RedisStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisStats {
            decisions: r(&self.decisions),
            deny_cache_hits: r(&self.deny_cache_hits),
            timeouts: r(&self.timeouts),
            refused: r(&self.refused),
            io_errors: r(&self.io_errors),
            script_errors: r(&self.script_errors),
            other_errors: r(&self.other_errors),
            skipped: r(&self.skipped),
            failed_open: r(&self.failed_open),
            failed_closed: r(&self.failed_closed),
            fallback: r(&self.fallback),
            went_down: r(&self.went_down),
            came_back: r(&self.came_back),
            settled: r(&self.settled),
            settles_carried: r(&self.settles_carried),
            settles_dropped: r(&self.settles_dropped),
            settles_skipped: r(&self.settles_skipped),
            settled_in_fallback: r(&self.settled_in_fallback),
        }
    }
}
