//! What a call's result means, in one vocabulary that the circuit
//! breaker, retry, the adaptive layers and the metrics a
//! [`Monitor`](crate::observe::Monitor) keeps all read: an [`Outcome`]
//! (success, failure, overloaded, or neither), the richer [`Verdict`] that
//! adds what the upstream said (the wait it asked for, the quota it
//! reported), and [`Classify`], the rule that decides them.
//!
//! A classifier is a closure `Fn(&Result<Res, BoxError>) -> Outcome` (or
//! `-> Verdict`) or a type: [`ErrorsAreFailures`] (the breaker's default:
//! `Err` fails) and, with the `http` feature, `HttpStatus` (5xx fail, 429
//! and 503 are overloads, with `Retry-After` and the quota fields read).
//!
//! The layers classify the inner service's result with its error boxed
//! into a [`BoxError`](crate::BoxError), as every layer returns it, so the
//! same classifier value fits
//! [`CircuitBreakerLayer::classify`](crate::CircuitBreakerLayer::classify),
//! [`BackoffRetryLayer::classify`](crate::BackoffRetryLayer::classify) and
//! the adaptive layers' `classify`, wherever each sits in the stack and
//! whatever the client's own error type (`reqwest::Error`,
//! `hyper::Error`, `std::io::Error`, ...). Read the error with
//! `downcast_ref`, or with [`is_transient`] and [`error_hints`], which also
//! look through its sources:
//!
//! ```
//! use std::io;
//! use tower::BoxError;
//! use tower_sluice::classify::Outcome;
//! use tower_sluice::retry::Backoff;
//! use tower_sluice::adaptive::AdaptiveThrottleLayer;
//! use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer};
//!
//! // One rule for a service answering status codes, failing with io::Error.
//! let rule = |r: &Result<u16, BoxError>| match r {
//!     Ok(429) => Outcome::Overloaded,
//!     Ok(500..) => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(e) => match e.downcast_ref::<io::Error>().map(io::Error::kind) {
//!         Some(io::ErrorKind::NotFound) => Outcome::Ignore,
//!         _ => Outcome::Failure,
//!     },
//! };
//! let breaker = CircuitBreakerLayer::default().classify(rule);
//! let retry = BackoffRetryLayer::new(Backoff::default()).classify(rule);
//! let throttle = AdaptiveThrottleLayer::new().classify(rule);
//! # let _ = (breaker, retry, throttle);
//! ```
//!
//! Each layer reads what it needs: the breaker records failures and
//! successes (an overload or an ignored call is not recorded); retry
//! retries failures and overloads, waiting at least the verdict's
//! [`retry_after`](Verdict::retry_after) or the wait an error carries
//! ([`error_hints`]); the adaptive layers cut on overloads and steer on the
//! verdict's [`upstream`](Verdict::upstream) quota.

mod errors;
#[cfg(feature = "http")]
mod http;
mod verdict;

pub(crate) use self::errors::as_error;
pub use self::errors::{error_hints, is_transient};
#[cfg(feature = "http")]
pub(crate) use self::http::with_response_hints;
#[cfg(feature = "http")]
pub use self::http::{HttpResponse, HttpStatus, upstream_quota};
pub use self::verdict::{Upstream, Verdict};

/// The verdict on one call.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::classify::Outcome;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // Client errors (4xx) say nothing about the upstream's health.
/// let layer = CircuitBreakerLayer::default().classify(|r: &Result<u16, BoxError>| match r {
///     Ok(400..=499) => Outcome::Ignore,
///     Ok(500..) | Err(_) => Outcome::Failure,
///     Ok(_) => Outcome::Success,
/// });
/// let handle = layer.handle();
/// let svc = layer.layer(service_fn(|status: u16| async move { Ok::<_, BoxError>(status) }));
/// for status in [200, 404, 500] {
///     svc.clone().oneshot(status).await?;
/// }
/// let stats = handle.stats();
/// assert_eq!((stats.calls, stats.failures), (2, 1)); // the 404 was not recorded
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded (it may still be slow).
    Success,
    /// The call failed: it counts against the breaker, is retried, and
    /// counts against an adaptive limit.
    Failure,
    /// The upstream refused the call on purpose, because of load or a
    /// quota (HTTP 429 or 503, a [`RateLimited`](crate::RateLimited), gRPC
    /// `RESOURCE_EXHAUSTED`): it is alive and saying so. The breaker does
    /// not record it (in half-open it gives its trial slot back); retry
    /// retries it after the wait it asked for; the adaptive layers slow
    /// down.
    Overloaded,
    /// Neither: not recorded and not retried (for example a client error).
    /// In half-open it gives its trial slot back.
    Ignore,
}

/// Decides the [`Outcome`] of a call from the inner service's result, and
/// on demand the fuller [`Verdict`].
///
/// The layers classify `Result<Res, BoxError>`: the inner service's
/// result with its error boxed, whatever its type, so one classifier fits
/// the breaker, retry and the adaptive layers wherever they sit (see the
/// [module docs](self)). The classifiers of this crate accept any `E`.
///
/// Implemented for every closure `Fn(&Result<Res, E>) -> Outcome`, and
/// `Fn(&Result<Res, E>) -> Verdict` for a rule that also says how long to
/// wait or what quota remains. The service keeps one and clones it into
/// each response future, so keep it cheap to clone (a closure capturing
/// nothing is free; wrap big state in an `Arc`). A layer may call it more
/// than once on a result (`classify` first, `verdict` when it needs more),
/// so keep it free of side effects.
///
/// ```
/// use tower_sluice::{BoxError, CircuitBreakerLayer};
/// use tower_sluice::classify::Outcome;
///
/// // Errors count, except an I/O "not found".
/// let layer = CircuitBreakerLayer::default().classify(|r: &Result<u16, BoxError>| match r {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.downcast_ref::<std::io::Error>()
///         .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => Outcome::Ignore,
///     Err(_) => Outcome::Failure,
/// });
/// # let _ = layer;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a `Result<{Res}, {E}>`",
    label = "not a classifier of this service's results",
    note = "the layers classify the inner service's response with its error boxed: a closure `|r: &Result<{Res}, BoxError>| -> Outcome` (or `-> Verdict`), whatever the service's own error type, or a type implementing `Classify<{Res}, {E}>`; for HTTP clients use `HttpStatus` (with the `reqwest` feature for `reqwest::Response`)"
)]
pub trait Classify<Res, E> {
    /// The outcome of `result`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::classify::{Classify, ErrorsAreFailures, Outcome};
    ///
    /// let timeouts_only = |r: &Result<(), std::io::Error>| match r {
    ///     Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Failure,
    ///     _ => Outcome::Success,
    /// };
    /// let refused = Err(std::io::ErrorKind::ConnectionRefused.into());
    /// assert_eq!(timeouts_only.classify(&refused), Outcome::Success);
    /// assert_eq!(ErrorsAreFailures.classify(&refused), Outcome::Failure);
    /// ```
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// The outcome of `result` with what the upstream said: the wait it
    /// asked for, its quota, the response's status. Retry asks for it when
    /// it retries, the AIMD layer on every response. By default the
    /// [`classify`](Classify::classify) outcome alone.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::classify::{Classify, Outcome, Verdict};
    ///
    /// // 429 with a fixed wait of 2 s.
    /// let rule = |r: &Result<u16, std::io::Error>| match r {
    ///     Ok(429) => Verdict::overloaded().with_retry_after(Duration::from_secs(2)),
    ///     Ok(_) => Verdict::success(),
    ///     Err(_) => Verdict::failure(),
    /// };
    /// assert_eq!(rule.classify(&Ok(429)), Outcome::Overloaded);
    /// assert_eq!(rule.verdict(&Ok(429)).retry_after(), Some(Duration::from_secs(2)));
    /// ```
    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict {
        Verdict::new(self.classify(result))
    }
}

impl<F, Res, E, O> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> O,
    O: Into<Verdict>,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result).into().outcome()
    }

    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict {
        self(result).into()
    }
}

/// The default classifier: `Err` is a failure, `Ok` a success.
///
/// # Examples
///
/// ```
/// use tower_sluice::classify::{Classify, ErrorsAreFailures, Outcome};
///
/// assert_eq!(ErrorsAreFailures.classify(&Ok::<u32, ()>(7)), Outcome::Success);
/// assert_eq!(ErrorsAreFailures.classify(&Err::<u32, ()>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAreFailures;

impl<Res, E> Classify<Res, E> for ErrorsAreFailures {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
