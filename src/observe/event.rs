//! [`Event`](crate::observe::Event): what a layer did, in words every observer reads.

use std::fmt;
use std::time::Duration;

use super::words::CircuitState;
use super::words::{GiveUpReason, RetryReason};
use crate::classify::Outcome;
use crate::error::{CircuitOpen, ExceedsBurst, QueueClosed, QueueFull, QueueTimeout, RateLimited};
use crate::gcra::Decision;

/// Something a layer did. New variants and fields are added as layers grow
/// (the enum and its variants are `#[non_exhaustive]`).
///
/// `key` is the request's key for per-key layers, `None` otherwise.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::observe::Event;
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// // Log refusals and long waits; ignore the rest. `Event` and its variants are
/// // `#[non_exhaustive]`: match with `..` and keep a catch-all arm.
/// let layer = RateLimitLayer::new(Quota::per_second(10)).observer(|event: &Event<'_>| match event {
///     Event::Limited { error, .. } => eprintln!("limited: {error}"),
///     Event::Waited { waited, .. } if *waited > Duration::from_secs(1) => {
///         eprintln!("waited {waited:?}")
///     }
///     _ => {}
/// });
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A request was admitted.
    #[non_exhaustive]
    Allowed {
        /// The reporting layer, such as `"rate_limit"` or `"per_key"`.
        layer: &'static str,
        /// The request's key, for per-key layers.
        key: Option<&'a dyn EventKey>,
        /// The decision, with the remaining quota.
        decision: &'a Decision,
    },
    /// A request was denied (or would wait longer than allowed).
    #[non_exhaustive]
    Limited {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, for per-key layers.
        key: Option<&'a dyn EventKey>,
        /// The error returned to the caller (in shadow mode: the error it
        /// would have got).
        error: &'a RateLimited,
        /// `false` in shadow (dry-run) mode: the request was let through.
        enforced: bool,
    },
    /// A request waited for capacity before it was sent.
    #[non_exhaustive]
    Waited {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, for per-key layers.
        key: Option<&'a dyn EventKey>,
        /// How long it waited.
        waited: Duration,
    },
    /// A request was refused because its key already had as many requests
    /// in flight as its policy allows.
    #[non_exhaustive]
    InFlightLimited {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key.
        key: Option<&'a dyn EventKey>,
        /// The key's cap.
        limit: u32,
        /// `false` in shadow (dry-run) mode: the request was let through.
        enforced: bool,
    },
    /// A request carried no key.
    #[non_exhaustive]
    MissingKey {
        /// The reporting layer.
        layer: &'static str,
        /// `false` in shadow (dry-run) mode: the request was let through.
        enforced: bool,
    },
    /// A new key was refused because the per-key store is full of active
    /// keys (`max_keys`). Nothing was admitted without a limit. (From a
    /// [per-key circuit breaker](crate::circuit_breaker::PerKeyCircuitBreakerLayer):
    /// the new key shares the default breaker instead.)
    #[non_exhaustive]
    StoreFull {
        /// The reporting layer.
        layer: &'static str,
        /// The refused key.
        key: Option<&'a dyn EventKey>,
        /// The store's bound.
        max_keys: usize,
        /// `false` when the request was let through anyway: in shadow
        /// (dry-run) mode, or by a per-key circuit breaker (the key shares
        /// the default breaker).
        enforced: bool,
    },
    /// A request was refused because its cost is more than a quota's
    /// burst ([`ExceedsBurst`]): it could never pass, so it failed at once
    /// instead of waiting (HTTP 413 through the per-key layer's `.http()`).
    #[non_exhaustive]
    TooLarge {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, for per-key layers.
        key: Option<&'a dyn EventKey>,
        /// The error returned to the caller (in shadow mode: the error it
        /// would have got), with the cost and the quota.
        error: &'a ExceedsBurst,
        /// `false` in shadow (dry-run) mode: the request was let through.
        enforced: bool,
    },
    /// A circuit breaker changed state.
    #[non_exhaustive]
    BreakerStateChanged {
        /// The reporting layer (`"circuit_breaker"`).
        layer: &'static str,
        /// The key of a [per-key breaker](crate::circuit_breaker::PerKeyCircuitBreakerLayer);
        /// `None` for a plain breaker and a per-key layer's shared default
        /// breaker.
        key: Option<&'a dyn EventKey>,
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
    },
    /// A circuit breaker refused a call without calling the inner service.
    #[non_exhaustive]
    BreakerRejected {
        /// The reporting layer.
        layer: &'static str,
        /// The key of a per-key breaker; `None` for a plain breaker and the
        /// shared default breaker.
        key: Option<&'a dyn EventKey>,
        /// The breaker's state when it refused.
        state: CircuitState,
        /// The error returned to the caller (in shadow mode: the error it
        /// would have got).
        error: &'a CircuitOpen,
        /// `false` in shadow (dry-run) mode: the call was let through (and
        /// its outcome not counted, as an enforcing breaker would not have
        /// seen it).
        enforced: bool,
    },
    /// A call through a circuit breaker completed and was classified.
    /// Cancelled calls (futures dropped before completion) are not reported.
    #[non_exhaustive]
    BreakerCall {
        /// The reporting layer.
        layer: &'static str,
        /// The key of a per-key breaker; `None` for a plain breaker and the
        /// shared default breaker.
        key: Option<&'a dyn EventKey>,
        /// The classifier's verdict.
        outcome: Outcome,
        /// Whether the call was slower than `slow_call_duration` (always
        /// `false` when slow calls are not tracked).
        slow: bool,
        /// Whether it was counted: `false` when the breaker changed state
        /// while it ran (it started in an earlier state) or it was ignored.
        counted: bool,
        /// How long the call took, from admission to its outcome; `None`
        /// when this call was not timed (see
        /// [`Observer::latency_one_in`](crate::observe::Observer::latency_one_in)).
        latency: Option<Duration>,
    },
    /// A request sent to the inner service completed (successfully or
    /// not). Reported by the per-key layer ([`PerKey`](crate::PerKey), with
    /// the key) and feeds response-time statistics such as the
    /// [`Monitor`](crate::observe::Monitor)'s EWMA. Cancelled requests are not reported. The circuit
    /// breaker reports its calls' latency in [`Event::BreakerCall`]
    /// instead.
    #[non_exhaustive]
    Completed {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, for per-key layers.
        key: Option<&'a dyn EventKey>,
        /// From the layer's `call` to the inner service's result: the
        /// response time as the caller sees it, any wait for the request's
        /// turn included. `None` when this request was not timed (see
        /// [`Observer::latency_one_in`](crate::observe::Observer::latency_one_in)).
        latency: Option<Duration>,
        /// Whether the inner service returned `Ok`.
        success: bool,
    },
    /// A retry layer will make another attempt after `delay`.
    #[non_exhaustive]
    RetryScheduled {
        /// The reporting layer (`"retry"`).
        layer: &'static str,
        /// The request's key, when the layer was given one
        /// ([`BackoffRetryLayer::key`](crate::BackoffRetryLayer::key)).
        key: Option<&'a dyn EventKey>,
        /// The number of the attempt to come (2 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// What the upstream asked for (`Retry-After` and the like), before
        /// the cap of `max_retry_after`.
        upstream: Option<Duration>,
        /// What failed.
        reason: RetryReason<'a>,
    },
    /// A retry layer gave up and returned the last result.
    #[non_exhaustive]
    RetryGaveUp {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, when the layer was given one
        /// ([`BackoffRetryLayer::key`](crate::BackoffRetryLayer::key)).
        key: Option<&'a dyn EventKey>,
        /// Attempts made, the first included.
        attempts: u32,
        /// Why it stopped.
        reason: GiveUpReason,
    },
    /// A retry layer could not retry because its budget was exhausted
    /// (followed by [`Event::RetryGaveUp`]).
    #[non_exhaustive]
    RetryBudgetExhausted {
        /// The reporting layer.
        layer: &'static str,
        /// The request's key, when the layer was given one
        /// ([`BackoffRetryLayer::key`](crate::BackoffRetryLayer::key)).
        key: Option<&'a dyn EventKey>,
        /// Attempts made, the first included.
        attempts: u32,
    },
    /// A request joined a queue because it could not be sent at once.
    #[non_exhaustive]
    Queued {
        /// The reporting layer (`"queue"`).
        layer: &'static str,
        /// Requests waiting, this one included.
        depth: usize,
    },
    /// A request was sent to the inner service: after waiting in the
    /// queue (`queued: true`), or at once because nobody was waiting and
    /// there was room (`queued: false`, `waited` zero). Every request a
    /// queue sends is reported once, so a queue's request count is complete.
    #[non_exhaustive]
    Dequeued {
        /// The reporting layer.
        layer: &'static str,
        /// How long it waited in the queue (zero when sent at once).
        waited: Duration,
        /// Requests still waiting after it left.
        depth: usize,
        /// Whether it waited in the queue before it was sent.
        queued: bool,
    },
    /// A request was refused because the queue (or its key's share of the
    /// queue) was full.
    #[non_exhaustive]
    QueueFull {
        /// The reporting layer.
        layer: &'static str,
        /// The error returned to the caller.
        error: &'a QueueFull,
    },
    /// A request waited in a queue for its `max_wait`, or was refused up
    /// front because its predicted wait was longer
    /// ([`QueueTimeout::predicted`]).
    #[non_exhaustive]
    QueueTimedOut {
        /// The reporting layer.
        layer: &'static str,
        /// The error returned to the caller.
        error: &'a QueueTimeout,
        /// Requests waiting after it left (or, refused up front, without
        /// it).
        depth: usize,
    },
    /// The service behind a queue failed in `poll_ready`: the queue is
    /// closed for it, and its waiting requests fail with this error.
    #[non_exhaustive]
    QueueClosed {
        /// The reporting layer.
        layer: &'static str,
        /// The error returned to the callers; its source is the service's
        /// error.
        error: &'a QueueClosed,
    },
    /// A limiter backend (Redis) could not decide, and its failure policy
    /// decided instead. Reported for every such decision; state changes of
    /// the backend's health are [`BackendStateChanged`](Self::BackendStateChanged).
    #[non_exhaustive]
    BackendFailure {
        /// The backend, such as `"redis"`.
        backend: &'static str,
        /// The request's key.
        key: Option<&'a dyn EventKey>,
        /// What went wrong; `None` when the backend was skipped because it
        /// is known to be down (its breaker is open).
        error: Option<BackendErrorKind>,
        /// What the failure policy did with the request.
        action: FailureAction,
    },
    /// A limiter backend went down (after consecutive failures; decisions
    /// then skip it until a probe succeeds) or came back.
    #[non_exhaustive]
    BackendStateChanged {
        /// The backend, such as `"redis"`.
        backend: &'static str,
        /// `true` when it came back, `false` when it went down.
        available: bool,
    },
    /// An adaptive layer changed a rate limit: a key's quota
    /// ([`adaptive::AdaptivePolicy`](crate::adaptive::AdaptivePolicy)) or a
    /// client's sending rate ([`AimdLayer`](crate::adaptive::AimdLayer)),
    /// both as quotas over the same period.
    #[non_exhaustive]
    LimitChanged {
        /// The reporting layer, such as `"adaptive_per_key"` or `"aimd"`.
        layer: &'static str,
        /// The key, for per-key limits.
        key: Option<&'a dyn EventKey>,
        /// The limit before the change.
        old: crate::quota::Quota,
        /// The limit after it.
        new: crate::quota::Quota,
    },
    /// An adaptive concurrency layer changed its limit on requests in
    /// flight.
    #[non_exhaustive]
    ConcurrencyLimitChanged {
        /// The reporting layer (`"adaptive_concurrency"`).
        layer: &'static str,
        /// The limit before the change.
        old: u32,
        /// The limit after it.
        new: u32,
    },
    /// An adaptive layer refused a request locally, without calling the
    /// inner service: over the adaptive concurrency limit
    /// ([`ConcurrencyLimited`](crate::error::ConcurrencyLimited)) or shed
    /// by client-side throttling ([`Throttled`](crate::error::Throttled)).
    #[non_exhaustive]
    AdaptiveRejected {
        /// The reporting layer (`"adaptive_concurrency"` or
        /// `"adaptive_throttle"`).
        layer: &'static str,
        /// The error returned to the caller (in shadow mode: the error it
        /// would have got).
        error: &'a (dyn std::error::Error + 'static),
        /// `false` in shadow (dry-run) mode: the request was let through.
        enforced: bool,
    },
}

/// Why a limiter backend failed to decide.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{BackendErrorKind, Event};
///
/// // Count Redis timeouts apart from other failures.
/// let observer = |event: &Event<'_>| {
///     if let Event::BackendFailure { error: Some(BackendErrorKind::Timeout), .. } = event {
///         eprintln!("redis timed out");
///     }
/// };
/// # let _ = observer;
/// assert_eq!(BackendErrorKind::Refused.to_string(), "connection refused");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// No answer within the per-decision deadline.
    Timeout,
    /// The connection was refused (the server is not there).
    Refused,
    /// Another I/O or connection error.
    Io,
    /// The server ran the script and it failed, or answered something the
    /// backend does not understand.
    Script,
    /// Any other error from the server or the client.
    Other,
}

impl fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Refused => "connection refused",
            BackendErrorKind::Io => "i/o error",
            BackendErrorKind::Script => "script error",
            BackendErrorKind::Other => "error",
        })
    }
}

/// What a backend's failure policy did with a request it could not decide.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Event, FailureAction};
///
/// // Requests let through unlimited while the backend is down.
/// let observer = |event: &Event<'_>| {
///     if let Event::BackendFailure { action: FailureAction::Allowed, key, .. } = event {
///         eprintln!("let {key:?} through unlimited");
///     }
/// };
/// # let _ = observer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureAction {
    /// Let through unlimited (fail open).
    Allowed,
    /// Refused with an error (fail closed).
    Refused,
    /// Decided by the local fallback limiter (which may have allowed or
    /// denied it).
    Fallback,
}

impl Event<'_> {
    /// The layer that reported the event, such as `"rate_limit"` or
    /// `"per_key"`.
    #[inline(always)]
    pub fn layer(&self) -> &'static str {
        match self {
            Event::Allowed { layer, .. }
            | Event::Limited { layer, .. }
            | Event::Waited { layer, .. }
            | Event::InFlightLimited { layer, .. }
            | Event::MissingKey { layer, .. }
            | Event::StoreFull { layer, .. }
            | Event::TooLarge { layer, .. }
            | Event::BreakerStateChanged { layer, .. }
            | Event::BreakerRejected { layer, .. }
            | Event::BreakerCall { layer, .. }
            | Event::Completed { layer, .. } => layer,
            Event::BackendFailure { backend, .. } | Event::BackendStateChanged { backend, .. } => {
                backend
            }
            Event::RetryScheduled { layer, .. }
            | Event::RetryGaveUp { layer, .. }
            | Event::RetryBudgetExhausted { layer, .. }
            | Event::Queued { layer, .. }
            | Event::Dequeued { layer, .. }
            | Event::QueueFull { layer, .. }
            | Event::QueueTimedOut { layer, .. }
            | Event::QueueClosed { layer, .. } => layer,
            Event::LimitChanged { layer, .. }
            | Event::ConcurrencyLimitChanged { layer, .. }
            | Event::AdaptiveRejected { layer, .. } => layer,
        }
    }

    /// The request's key, for per-key layers.
    pub fn key(&self) -> Option<&dyn EventKey> {
        match self {
            Event::Allowed { key, .. }
            | Event::Limited { key, .. }
            | Event::Waited { key, .. }
            | Event::InFlightLimited { key, .. }
            | Event::StoreFull { key, .. }
            | Event::TooLarge { key, .. }
            | Event::BreakerStateChanged { key, .. }
            | Event::BreakerRejected { key, .. }
            | Event::BreakerCall { key, .. }
            | Event::Completed { key, .. }
            | Event::BackendFailure { key, .. }
            | Event::RetryScheduled { key, .. }
            | Event::RetryGaveUp { key, .. }
            | Event::RetryBudgetExhausted { key, .. }
            | Event::LimitChanged { key, .. } => *key,
            Event::MissingKey { .. }
            | Event::BackendStateChanged { .. }
            | Event::Queued { .. }
            | Event::Dequeued { .. }
            | Event::QueueFull { .. }
            | Event::QueueTimedOut { .. }
            | Event::QueueClosed { .. }
            | Event::ConcurrencyLimitChanged { .. }
            | Event::AdaptiveRejected { .. } => None,
        }
    }
}

/// A request's key as events carry it: any `Debug + Hash` value, borrowed.
///
/// Observers show it with `{:?}` and identify it with
/// [`key_hash`](Self::key_hash), which is cheap (no formatting) and the same
/// for equal keys of the same type within a process: a
/// [`Monitor`](crate::observe::Monitor) keeps one row per key hash, so a key reported as a `String`
/// by one layer and as a `&str` by another is one row (their `Hash` agree),
/// while `42u64` and `42i32` are two.
///
/// ```
/// use tower_sluice::observe::EventKey;
///
/// let a: &dyn EventKey = &"alice";
/// let b: &dyn EventKey = &String::from("alice");
/// assert_eq!(a.key_hash(), b.key_hash());
/// assert_eq!(format!("{a:?}"), "\"alice\"");
/// ```
pub trait EventKey: fmt::Debug {
    /// A 64-bit hash of the key, equal for equal keys within a process.
    fn key_hash(&self) -> u64;
}

impl<T: fmt::Debug + std::hash::Hash + ?Sized> EventKey for T {
    #[inline]
    fn key_hash(&self) -> u64 {
        use std::hash::BuildHasher;
        static HASHER: std::sync::OnceLock<hashbrown::DefaultHashBuilder> =
            std::sync::OnceLock::new();
        HASHER.get_or_init(Default::default).hash_one(self)
    }
}
