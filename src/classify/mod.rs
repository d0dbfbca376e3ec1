//! What a call's result means: [`Outcome`] (success, failure, or neither)
//! and [`Classify`], the rule that decides it, shared by the circuit
//! breaker, retry and the metrics a [`Monitor`](crate::observe::Monitor)
//! keeps.
//!
//! A classifier is a closure `Fn(&Result<Res, E>) -> Outcome` or a type:
//! [`ErrorsAreFailures`] (the default: `Err` fails) and, with the `http`
//! feature, `HttpStatus` (5xx fail, 429 and 503 are ignored).
//!
//! ```
//! use tower_sluice::CircuitBreakerLayer;
//! use tower_sluice::classify::Outcome;
//!
//! let breaker = CircuitBreakerLayer::default().classify(|r: &Result<u16, std::io::Error>| match r {
//!     Ok(500..) | Err(_) => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//! });
//! # let _ = breaker;
//! ```

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
    /// The call failed and counts against the breaker.
    Failure,
    /// Neither: not recorded (for example a request the upstream shed with
    /// 429 or 503, or a client error). In half-open it gives its trial slot
    /// back.
    Ignore,
}

/// Decides the [`Outcome`] of a call from the inner service's result.
///
/// Implemented for every `Fn(&Result<Res, E>) -> Outcome` closure. The
/// service keeps one and clones it into each response future, so keep it
/// cheap to clone (a closure capturing nothing is free; wrap big state in an
/// `Arc`).
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::classify::Outcome;
///
/// // Timeouts count, "not found" does not.
/// let layer = CircuitBreakerLayer::default().classify(|r: &Result<u16, std::io::Error>| match r {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Ignore,
///     Err(_) => Outcome::Failure,
/// });
/// # let _ = layer;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a `Result<{Res}, {E}>`",
    label = "not a classifier of this service's results",
    note = "a classifier is a closure `|r: &Result<{Res}, {E}>| -> Outcome` or a type implementing `Classify<{Res}, {E}>`; for HTTP clients use `HttpStatus` (with the `reqwest` feature for reqwest)"
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
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
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

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use self::http::{HttpResponse, HttpStatus};
