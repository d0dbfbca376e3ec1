//! Typed events from every layer, delivered to an [`Observer`].
//!
//! Set an observer on a layer (for example
//! [`RateLimitLayer::observer`](crate::RateLimitLayer::observer)) to be told
//! what it decides. With no observer set, reporting costs one branch.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use tower_sluice::{Quota, RateLimitLayer};
//! use tower_sluice::observe::Event;
//!
//! let limited = Arc::new(AtomicUsize::new(0));
//! let seen = limited.clone();
//! let layer = RateLimitLayer::new(Quota::per_second(10))
//!     .reject()
//!     .observer(move |event: &Event<'_>| {
//!         if let Event::Limited { .. } = event {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         }
//!     });
//! # let _ = layer;
//! ```
//!
//! Observers are called synchronously on the request path: keep them fast
//! (count, or hand off to a channel).
//!
//! # One observer for the whole stack
//!
//! [`Monitor`] is a cheap `Clone` handle: give a clone to every layer and
//! read per-key statistics, breaker states and queue depth from one
//! [`snapshot`](Monitor::snapshot); add [`AlertRule`]s to be told when a key
//! is limited too often, a breaker opens or a backend falls back. To send
//! events to several observers (a `Monitor` and the `metrics` exporter, say),
//! combine them with [`Fanout`]. [`Monitor::scoped`] names the observer of
//! one layer (two circuit breakers, say) so their figures stay apart.
//!
//! | you want | use |
//! |---|---|
//! | per-key and per-layer figures, breaker states, queue depth | [`Monitor`] |
//! | a callback when a threshold is crossed | [`AlertRule`] on a [`Monitor`] |
//! | Prometheus / StatsD / ... through the `metrics` facade | `MetricsObserver` (feature `metrics`) |
//! | logs | `tracing` (always on; see below) |
//! | your own reaction | any `Fn(&Event<'_>)` closure |
//!
//! # tracing
//!
//! Every layer also logs through `tracing`, with targets
//! `tower_sluice::<layer>` and structured fields: `debug` for admitted
//! requests, waits, queueing and scheduled retries (`attempt`, `delay_ms`);
//! `info` for refusals (`key`, `policy`, `retry_after_ms`) and state changes
//! (`from`, `to`, `state`); `warn` for backend failures and a full per-key
//! store; `error` for a failed service behind a queue.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

mod alert;
#[cfg(feature = "metrics")]
mod metrics;
mod monitor;
mod slot;
pub(crate) mod words;

pub use alert::{Alert, AlertRule};
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use metrics::MetricsObserver;
pub(crate) use monitor::RowHint;
pub use monitor::{
    BreakerSnapshot, KeySnapshot, LayerSnapshot, Monitor, MonitorBuilder, Scoped, Snapshot,
};

use self::words::CircuitState;
use self::words::{GiveUpReason, RetryReason};
use crate::classify::Outcome;
use crate::error::{CircuitOpen, QueueClosed, QueueFull, QueueTimeout, RateLimited};
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
        /// [`Observer::latency_one_in`]).
        latency: Option<Duration>,
    },
    /// A request sent to the inner service completed (successfully or
    /// not). Reported by the per-key layer ([`PerKey`](crate::PerKey), with
    /// the key) and feeds response-time statistics such as the
    /// [`Monitor`]'s EWMA. Cancelled requests are not reported. The circuit
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
        /// [`Observer::latency_one_in`]).
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
    /// The layer that reported the event.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Event;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layers = Arc::new(Mutex::new(Vec::new()));
    /// let seen = layers.clone();
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(10)).reject().observer(move |e: &Event<'_>| {
    ///         seen.lock().unwrap().push(e.layer());
    ///     }))
    ///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(()).await.unwrap();
    /// assert_eq!(*layers.lock().unwrap(), ["rate_limit"]);
    /// # }
    /// ```
    #[inline(always)]
    pub fn layer(&self) -> &'static str {
        match self {
            Event::Allowed { layer, .. }
            | Event::Limited { layer, .. }
            | Event::Waited { layer, .. }
            | Event::InFlightLimited { layer, .. }
            | Event::MissingKey { layer, .. }
            | Event::StoreFull { layer, .. }
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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Event;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let keys = Arc::new(Mutex::new(Vec::new()));
    /// let seen = keys.clone();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_second(10), |user: &u64| Some(*user)).observer(
    ///         move |e: &Event<'_>| {
    ///             if let Some(key) = e.key() {
    ///                 seen.lock().unwrap().push(format!("{:?} {key:?}", e.layer()));
    ///             }
    ///         },
    ///     ))
    ///     .service(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(42).await.unwrap();
    /// // Decided, then completed.
    /// assert_eq!(*keys.lock().unwrap(), [r#""per_key" 42"#, r#""per_key" 42"#]);
    /// # }
    /// ```
    pub fn key(&self) -> Option<&dyn EventKey> {
        match self {
            Event::Allowed { key, .. }
            | Event::Limited { key, .. }
            | Event::Waited { key, .. }
            | Event::InFlightLimited { key, .. }
            | Event::StoreFull { key, .. }
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
/// [`Monitor`] keeps one row per key hash, so a key reported as a `String`
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

/// Receives [`Event`]s. Implemented for every
/// `Fn(&Event<'_>) + Send + Sync + 'static` closure.
///
/// # Examples
///
/// An observer of your own, with state:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_sluice::observe::{Event, Observer};
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// #[derive(Default)]
/// struct Refusals(AtomicU64);
///
/// impl Observer for Refusals {
///     fn on_event(&self, event: &Event<'_>) {
///         if let Event::Limited { enforced: true, .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let layer = RateLimitLayer::new(Quota::per_second(10)).observer(Refusals::default());
/// # let _ = layer;
/// ```
pub trait Observer: Send + Sync + 'static {
    /// Called for each event, synchronously, on the request path.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Fanout, Monitor, Observer};
    ///
    /// // Observers can be called by hand, to forward events from your own one.
    /// struct Forward(Fanout);
    /// impl Observer for Forward {
    ///     fn on_event(&self, event: &tower_sluice::observe::Event<'_>) {
    ///         self.0.on_event(event);
    ///     }
    /// }
    /// let forward = Forward(Fanout::new().with(Monitor::new()));
    /// # let _ = forward;
    /// ```
    fn on_event(&self, event: &Event<'_>);

    /// How many calls per timed call this observer wants: the latency in
    /// [`Event::Completed`] and [`Event::BreakerCall`] is measured for
    /// about one call in `n` (chosen at random, independently per call;
    /// the others carry `None`), and never with `0`. The default, `1`,
    /// times every call.
    ///
    /// Timing a call costs two reads of the precise clock (tens of
    /// nanoseconds); an observer that only keeps an average, such as the
    /// [`Monitor`], can ask for a sample. Layers ask once, when the
    /// observer is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Event, Observer};
    ///
    /// /// Logs the latency of about one call in a hundred.
    /// struct Sampled;
    /// impl Observer for Sampled {
    ///     fn on_event(&self, event: &Event<'_>) {
    ///         if let Event::Completed { latency: Some(latency), .. } = event {
    ///             eprintln!("took {latency:?}");
    ///         }
    ///     }
    ///     fn latency_one_in(&self) -> u32 {
    ///         100
    ///     }
    /// }
    /// # let _ = Sampled;
    /// ```
    fn latency_one_in(&self) -> u32 {
        1
    }
}

impl<F> Observer for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// Sends every event to several observers, in the order they were added.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Event, Fanout, Monitor};
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// let monitor = Monitor::new();
/// let both = Fanout::new()
///     .with(monitor.clone())
///     .with(|event: &Event<'_>| eprintln!("{event:?}"));
/// let layer = RateLimitLayer::new(Quota::per_second(10)).observer(both);
/// # let _ = layer;
/// ```
#[derive(Clone, Default)]
pub struct Fanout(Vec<Arc<dyn Observer>>);

impl Fanout {
    /// No observers yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Event, Fanout};
    ///
    /// let fanout = Fanout::new().with(|e: &Event<'_>| eprintln!("{e:?}"));
    /// # let _ = fanout;
    /// ```
    pub fn new() -> Self {
        Fanout(Vec::new())
    }

    /// Adds `observer` after the others.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::{Fanout, Monitor};
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (a, b) = (Monitor::new(), Monitor::new());
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(10)).reject().observer(Fanout::new().with(a.clone()).with(b.clone())))
    ///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(()).await.unwrap();
    /// // Both saw the request.
    /// assert_eq!(a.snapshot().totals.requests, 1);
    /// assert_eq!(b.snapshot().totals.requests, 1);
    /// # }
    /// ```
    #[must_use]
    pub fn with(mut self, observer: impl Observer) -> Self {
        self.0.push(Arc::new(observer));
        self
    }
}

impl Observer for Fanout {
    #[inline]
    fn on_event(&self, event: &Event<'_>) {
        for o in &self.0 {
            o.on_event(event);
        }
    }

    /// The most frequent timing any of the observers wants.
    fn latency_one_in(&self) -> u32 {
        self.0
            .iter()
            .map(|o| o.latency_one_in())
            .filter(|&n| n > 0)
            .min()
            .unwrap_or(0)
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("observers", &self.0.len())
            .finish()
    }
}

/// Whole milliseconds, for `tracing` fields.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An optional, shared observer, as the layers hold it, with how often it
/// wants a call timed ([`Observer::latency_one_in`], asked once).
///
/// A [`Monitor`] or [`Scoped`] monitor is held as itself and bound to the
/// layer (no dynamic call, the layer's statistics found once); any other
/// observer (a [`Fanout`] holding a monitor included) behind
/// `Arc<dyn Observer>`.
#[derive(Clone, Default)]
pub(crate) struct Observers {
    kind: Kind,
    one_in: u32,
}

#[derive(Clone, Default)]
enum Kind {
    #[default]
    None,
    Monitor(monitor::Bound),
    Dyn(Arc<dyn Observer>),
}

impl Observers {
    /// `observer`, for a layer whose events carry `layer` as their layer
    /// (or backend) name: a [`Monitor`] is bound to that name's figures.
    pub(crate) fn new(observer: impl Observer, layer: &'static str) -> Self {
        let one_in = observer.latency_one_in();
        let any: &dyn std::any::Any = &observer;
        let kind = if let Some(m) = any.downcast_ref::<Monitor>() {
            Kind::Monitor(m.bind(layer))
        } else if let Some(s) = any.downcast_ref::<Scoped>() {
            Kind::Monitor(s.bind(layer))
        } else {
            Kind::Dyn(Arc::new(observer))
        };
        Observers { kind, one_in }
    }

    /// Whether anyone is listening (so callers can skip building events).
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        !matches!(self.kind, Kind::None)
    }

    /// Whether to time this call: for about one call in
    /// [`latency_one_in`](Observer::latency_one_in), at random; never
    /// without an observer. A bound [`Monitor`] has every call timed while
    /// the thread is quiet for the layer (see
    /// [`MonitorBuilder::sample_one_in`](super::MonitorBuilder::sample_one_in)).
    #[inline]
    pub(crate) fn time_this_call(&self) -> bool {
        match (&self.kind, self.one_in) {
            (Kind::None, _) => false,
            (Kind::Monitor(m), _) => m.time_call(),
            (Kind::Dyn(_), 0) => false,
            (Kind::Dyn(_), 1) => true,
            (Kind::Dyn(_), n) => one_in(n),
        }
    }

    /// Reports [`Event::Allowed`] of an unkeyed layer, building its
    /// decision only for an observer that reads it (a bound [`Monitor`]
    /// only counts the request).
    #[inline]
    pub(crate) fn emit_allowed(&self, layer: &'static str, decision: impl FnOnce() -> Decision) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.allowed(layer),
            Kind::Dyn(o) => o.on_event(&Event::Allowed {
                layer,
                key: None,
                decision: &decision(),
            }),
        }
    }

    /// Starts reporting [`Event::Allowed`] of a keyed layer: a bound
    /// [`Monitor`] counts it for the layer and draws whether to follow it
    /// (0: not followed; else the number of requests it stands for), and
    /// the rest of the report, [`emit_keyed_allowed`](Self::emit_keyed_allowed),
    /// is only needed for a followed request. Other observers: 1 (every
    /// request reported as an event).
    #[inline]
    pub(crate) fn keyed_allowed_weight(&self, layer: &'static str) -> u32 {
        match &self.kind {
            Kind::Monitor(m) => m.keyed_allowed(layer),
            Kind::None | Kind::Dyn(_) => 1,
        }
    }

    /// Reports [`Event::Allowed`] of a keyed layer, for a request
    /// [`keyed_allowed_weight`](Self::keyed_allowed_weight) weighed as
    /// `weight` (0: not followed). A bound [`Monitor`] returns where it
    /// counted the key, for [`emit_completed`](Self::emit_completed), or
    /// [`RowHint::SKIP`] for a request it does not follow; other observers
    /// [`RowHint::NONE`].
    ///
    /// Generic over the key's type so that a bound [`Monitor`] hashes it
    /// with a direct call.
    #[inline]
    pub(crate) fn emit_keyed_allowed<K: EventKey>(
        &self,
        layer: &'static str,
        key: &K,
        decision: &Decision,
        weight: u32,
    ) -> RowHint {
        match &self.kind {
            Kind::None => RowHint::NONE,
            Kind::Monitor(_) if weight == 0 => RowHint::SKIP,
            Kind::Monitor(m) => m.follow_key(layer, key, weight),
            Kind::Dyn(o) => {
                o.on_event(&Event::Allowed {
                    layer,
                    key: Some(key),
                    decision,
                });
                RowHint::NONE
            }
        }
    }

    /// Reports [`Event::Completed`]; `row` is what
    /// [`emit_keyed_allowed`](Self::emit_keyed_allowed) returned for the
    /// request (a bound [`Monitor`] counts it there without looking the key
    /// up), or [`RowHint::NONE`].
    #[inline]
    pub(crate) fn emit_completed(
        &self,
        layer: &'static str,
        key: Option<&dyn EventKey>,
        row: RowHint,
        latency: Option<Duration>,
        success: bool,
    ) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.completed(layer, key, row, latency, success),
            Kind::Dyn(o) => o.on_event(&Event::Completed {
                layer,
                key,
                latency,
                success,
            }),
        }
    }

    /// Reports [`Event::BreakerCall`], building the event only for an
    /// observer that reads it (a bound [`Monitor`] counts the call and its
    /// latency).
    #[inline]
    pub(crate) fn emit_breaker_call(
        &self,
        layer: &'static str,
        key: Option<&dyn EventKey>,
        outcome: Outcome,
        slow: bool,
        counted: bool,
        latency: Option<Duration>,
    ) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.breaker_call(layer, outcome, latency),
            Kind::Dyn(o) => o.on_event(&Event::BreakerCall {
                layer,
                key,
                outcome,
                slow,
                counted,
                latency,
            }),
        }
    }

    #[inline]
    pub(crate) fn emit(&self, event: &Event<'_>) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.observe(event),
            Kind::Dyn(o) => o.on_event(event),
        }
    }
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "Some(..)" } else { "None" })
    }
}

/// `true` with probability about `1 / n` (`n >= 1`), from the crate's
/// per-thread generator: independent draws, so layers that share a thread
/// never fall into step with one another (a shared countdown would time
/// only the first of two layers on every request).
#[inline]
pub(crate) fn one_in(n: u32) -> bool {
    crate::util::rng::one_in(n)
}
