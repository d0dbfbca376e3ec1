//! `FailurePolicy`: what a `RedisBackend` does when Redis cannot decide.

/// What a [`RedisBackend`] does when Redis cannot decide (down, slow,
/// erroring).
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
///
/// // Four instances share the limit; while Redis is down each keeps a quarter.
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?
///     .failure_policy(FailurePolicy::Fallback { expected_instances: 4 });
/// assert_eq!(backend.get_failure_policy(), FailurePolicy::Fallback { expected_instances: 4 });
/// # Ok::<(), redis::RedisError>(())
/// ```
///
/// [`RedisBackend`]: super::RedisBackend
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Let every request through while Redis is failing. Availability
    /// first: an outage of Redis lifts every limit.
    FailOpen,
    /// Refuse every request with
    /// [`BackendUnavailable`] (HTTP 503
    /// with `Retry-After`). Protection first: an outage of Redis is an
    /// outage of the service.
    ///
    /// [`BackendUnavailable`]: crate::error::BackendUnavailable
    FailClosed,
    /// Decide with a local in-memory limiter at `rate / expected_instances`
    /// (burst divided likewise, at least 1). With the right count, the
    /// instances together stay near the shared limit; with fewer instances
    /// than expected, they admit less than the limit (safe); with more,
    /// more (by the ratio).
    Fallback {
        /// How many instances share the limit (at least 1).
        expected_instances: u32,
    },
}

impl Default for FailurePolicy {
    /// [`Fallback`](Self::Fallback) with one instance: each instance keeps
    /// the whole limit locally, so a fleet of N admits up to N times the
    /// limit while Redis is down, and a single instance exactly the limit.
    fn default() -> Self {
        FailurePolicy::Fallback {
            expected_instances: 1,
        }
    }
}
