//! What is retried: [`ClassifyRetry`], [`Verdict`] and the default rules.

use std::error::Error;
use std::time::Duration;

use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::error::{CircuitOpen, QueueFull, QueueTimeout, RateLimited};

/// The verdict on one attempt: its [`Outcome`] (only
/// [`Failure`](Outcome::Failure) is retried; `Success` and `Ignore` are
/// returned as they are) and what the upstream said about waiting.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::BoxError;
/// use tower_sluice::retry::{ClassifyRetry, Verdict};
/// use tower_sluice::classify::Outcome;
///
/// /// Retries HTTP-like status codes, waiting 2 s after a 429.
/// #[derive(Clone)]
/// struct ByStatus;
/// impl ClassifyRetry<u16> for ByStatus {
///     fn classify_retry(&self, result: &Result<u16, BoxError>) -> Verdict {
///         match result {
///             Ok(429) => Verdict::failure().with_retry_after(Duration::from_secs(2)).with_status(429),
///             Ok(s @ 500..) => Verdict::failure().with_status(*s),
///             Ok(s) => Verdict::success().with_status(*s),
///             Err(_) => Verdict::new(Outcome::Ignore),
///         }
///     }
/// }
///
/// let v = ByStatus.classify_retry(&Ok(429));
/// assert_eq!(v.outcome(), Outcome::Failure);
/// assert_eq!(v.retry_after(), Some(Duration::from_secs(2)));
/// assert_eq!(v.status(), Some(429));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Verdict {
    outcome: Outcome,
    wait: Option<Duration>,
    stop: bool,
    status: Option<u16>,
}

impl Verdict {
    /// A verdict with `outcome` and no hint.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// # use tower_sluice::classify::Outcome;
    /// assert_eq!(Verdict::new(Outcome::Failure), Verdict::failure());
    /// assert_eq!(Verdict::new(Outcome::Ignore).outcome(), Outcome::Ignore);
    /// ```
    pub fn new(outcome: Outcome) -> Self {
        Verdict {
            outcome,
            wait: None,
            stop: false,
            status: None,
        }
    }

    /// Not retried, returned to the caller.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// # use tower_sluice::classify::Outcome;
    /// assert_eq!(Verdict::success().outcome(), Outcome::Success);
    /// ```
    pub fn success() -> Self {
        Verdict::new(Outcome::Success)
    }

    /// A transient failure: retried if attempts, time and budget allow.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// # use tower_sluice::classify::Outcome;
    /// let v = Verdict::failure();
    /// assert_eq!((v.outcome(), v.retry_after()), (Outcome::Failure, None));
    /// ```
    pub fn failure() -> Self {
        Verdict::new(Outcome::Failure)
    }

    /// The upstream asked to wait at least `wait` before trying again
    /// (`Retry-After` and the like). The layer waits at least that long,
    /// up to its `max_retry_after`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::retry::Verdict;
    /// // Several hints: the longest wait wins.
    /// let v = Verdict::failure()
    ///     .with_retry_after(Duration::from_secs(1))
    ///     .with_retry_after(Duration::from_secs(3));
    /// assert_eq!(v.retry_after(), Some(Duration::from_secs(3)));
    /// ```
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.wait = Some(self.wait.map_or(wait, |w| w.max(wait)));
        self
    }

    /// The upstream asked not to be retried (a negative or unparsable
    /// gRPC pushback): the layer gives up at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// assert!(Verdict::failure().do_not_retry().is_do_not_retry());
    /// assert!(!Verdict::failure().is_do_not_retry());
    /// ```
    pub fn do_not_retry(mut self) -> Self {
        self.stop = true;
        self
    }

    /// The HTTP status of the response, reported in
    /// [`Event::RetryScheduled`](crate::observe::Event::RetryScheduled).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// assert_eq!(Verdict::failure().with_status(503).status(), Some(503));
    /// ```
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The attempt's outcome.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// # use tower_sluice::classify::Outcome;
    /// assert_eq!(Verdict::failure().outcome(), Outcome::Failure);
    /// ```
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The wait the upstream asked for, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::retry::Verdict;
    /// assert_eq!(Verdict::failure().retry_after(), None);
    /// assert_eq!(Verdict::failure().with_retry_after(Duration::from_secs(5)).retry_after(), Some(Duration::from_secs(5)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        self.wait
    }

    /// Whether the upstream asked not to be retried.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// assert!(Verdict::failure().do_not_retry().is_do_not_retry());
    /// ```
    pub fn is_do_not_retry(&self) -> bool {
        self.stop
    }

    /// The response's HTTP status, if the classifier set one.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::Verdict;
    /// assert_eq!(Verdict::success().status(), None);
    /// assert_eq!(Verdict::success().with_status(200).status(), Some(200));
    /// ```
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

/// Decides whether an attempt's result is retried, and how long the
/// upstream asked to wait.
///
/// Implemented for closures `Fn(&Result<Res, BoxError>) -> Outcome`
/// (with the waits of [`error_hints`] added), for [`DefaultRetry`], for
/// `HttpRetry` (feature `http`), and, through [`FromClassify`], for any
/// [`Classify`] shared with the circuit breaker.
///
/// ```
/// use tower_sluice::{BackoffRetryLayer, BoxError};
/// use tower_sluice::retry::Backoff;
/// use tower_sluice::classify::Outcome;
///
/// // Retry every error, never a response.
/// let layer = BackoffRetryLayer::new(Backoff::default())
///     .classify(|r: &Result<u16, BoxError>| match r {
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::Failure,
///     });
/// # let _ = layer;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot decide whether a `Result<{Res}, BoxError>` is retried",
    label = "not a retry classifier of this service's responses",
    note = "pass a closure `|r: &Result<{Res}, BoxError>| -> Outcome`, `FromClassify(classifier)`, or use `.http()` for HTTP clients (`http::Response`, or `reqwest::Response` with the `reqwest` feature)"
)]
pub trait ClassifyRetry<Res> {
    /// The verdict on `result`. The error is the inner service's error,
    /// already converted into a [`BoxError`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::retry::{ClassifyRetry, DefaultRetry};
    /// use tower_sluice::classify::Outcome;
    ///
    /// let io: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
    /// assert_eq!(DefaultRetry.classify_retry(&Err::<(), _>(io)).outcome(), Outcome::Failure);
    /// assert_eq!(DefaultRetry.classify_retry(&Ok::<_, BoxError>(())).outcome(), Outcome::Success);
    /// ```
    fn classify_retry(&self, result: &Result<Res, BoxError>) -> Verdict;
}

impl<F, Res> ClassifyRetry<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Outcome,
{
    fn classify_retry(&self, result: &Result<Res, BoxError>) -> Verdict {
        with_error_hints(Verdict::new(self(result)), result)
    }
}

/// Uses a [`Classify`] (for example one shared with the circuit breaker)
/// to decide: its [`Failure`](Outcome::Failure)s are retried, with the
/// waits of [`error_hints`].
///
/// # Examples
///
/// ```
/// use tower_sluice::retry::{Backoff, FromClassify};
/// use tower_sluice::classify::Outcome;
/// use tower_sluice::{BackoffRetryLayer, BoxError, CircuitBreakerLayer};
///
/// // One rule for what counts as a failure, shared by retry and the breaker.
/// let failed = |r: &Result<u16, BoxError>| match r {
///     Ok(s) if *s >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// let retry = BackoffRetryLayer::new(Backoff::default()).classify(FromClassify(failed));
/// let breaker = CircuitBreakerLayer::default().classify(failed);
/// # let _ = (retry, breaker);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct FromClassify<C>(pub C);

impl<C, Res> ClassifyRetry<Res> for FromClassify<C>
where
    C: Classify<Res, BoxError>,
{
    fn classify_retry(&self, result: &Result<Res, BoxError>) -> Verdict {
        with_error_hints(Verdict::new(self.0.classify(result)), result)
    }
}

/// The default classifier: responses are successes; errors are retried
/// when they are transient ([`is_transient`]), with the wait they carry
/// ([`error_hints`]); other errors are returned at once
/// ([`Ignore`](Outcome::Ignore)).
///
/// It is also a [`Classify`], for a breaker or metrics that should count
/// only transient errors.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::retry::{ClassifyRetry, DefaultRetry};
/// use tower_sluice::classify::Outcome;
///
/// let not_found: BoxError = std::io::Error::from(std::io::ErrorKind::NotFound).into();
/// // Not transient: returned to the caller at once, not retried.
/// assert_eq!(DefaultRetry.classify_retry(&Err::<(), _>(not_found)).outcome(), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultRetry;

impl<Res> Classify<Res, BoxError> for DefaultRetry {
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) if is_transient(&**e) => Outcome::Failure,
            Err(_) => Outcome::Ignore,
        }
    }
}

impl<Res> ClassifyRetry<Res> for DefaultRetry {
    #[inline]
    fn classify_retry(&self, result: &Result<Res, BoxError>) -> Verdict {
        match result {
            Ok(_) => Verdict::success(),
            Err(_) => with_error_hints(Verdict::new(self.classify(result)), result),
        }
    }
}

/// Whether an error (or one of its sources) is worth retrying:
/// [`RateLimited`], [`CircuitOpen`], [`QueueFull`], [`QueueTimeout`],
/// timeouts (`tokio::time::error::Elapsed`, `tower::timeout::error::Elapsed`),
/// I/O errors of the connection (refused, reset, aborted, not connected,
/// broken pipe, timed out) and, with the `reqwest` feature, a
/// `reqwest::Error` of connecting or timing out, or one made by
/// `error_for_status` from a 429, 502, 503 or 504.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::retry::is_transient;
///
/// let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
/// let bad_input: BoxError = "invalid JSON".into();
/// assert!(is_transient(&*reset));
/// assert!(!is_transient(&*bad_input));
/// ```
pub fn is_transient(error: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<RateLimited>()
            || e.is::<CircuitOpen>()
            || e.is::<QueueFull>()
            || e.is::<QueueTimeout>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
        {
            return true;
        }
        #[cfg(feature = "reqwest")]
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return true;
            }
            if let Some(status) = r.status() {
                return matches!(status.as_u16(), 429 | 502 | 503 | 504);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The wait an error asks for: [`RateLimited::retry_after`] or
/// [`CircuitOpen::retry_after`], found on the error or its sources.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::retry::error_hints;
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let limited: BoxError = limiter.check().into_result().unwrap_err().into();
/// assert!(error_hints(&*limited).unwrap() > Duration::from_secs(59));
/// assert_eq!(error_hints(&*BoxError::from("other")), None);
/// ```
pub fn error_hints(error: &(dyn Error + 'static)) -> Option<Duration> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RateLimited>() {
            return Some(r.retry_after());
        }
        if let Some(o) = e.downcast_ref::<CircuitOpen>() {
            return Some(o.retry_after());
        }
        next = e.source();
    }
    None
}

fn with_error_hints<Res>(verdict: Verdict, result: &Result<Res, BoxError>) -> Verdict {
    match result {
        Err(e) if verdict.outcome == Outcome::Failure => match error_hints(&**e) {
            Some(wait) => verdict.with_retry_after(wait),
            None => verdict,
        },
        _ => verdict,
    }
}

#[cfg(feature = "http")]
pub use self::http_rules::HttpRetry;

#[cfg(feature = "http")]
mod http_rules {
    use http::StatusCode;

    use super::*;
    use crate::classify::HttpResponse;

    /// For HTTP clients: transient errors as in [`DefaultRetry`], and
    /// responses 429, 502, 503 and 504 (and gRPC `UNAVAILABLE` in a
    /// trailers-only response) are retried, waiting what the response asks
    /// for: `Retry-After` (delay-seconds, or an HTTP-date compared with the
    /// response's `Date`), the IETF `RateLimit` field's `t`, or
    /// `X-RateLimit-Reset` (seconds or a Unix time), in that order of
    /// preference; `grpc-retry-pushback-ms` wins over all, and a negative
    /// or unparsable pushback means do not retry. See
    /// [`response_hints`](super::super::response_hints).
    ///
    /// Which *requests* may be retried (idempotent methods) is the
    /// request policy's business: see `HttpClone` and `HttpReplay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::{Response, StatusCode};
    /// use tower_sluice::BoxError;
    /// use tower_sluice::retry::{ClassifyRetry, HttpRetry};
    /// use tower_sluice::classify::Outcome;
    ///
    /// let res = Response::builder()
    ///     .status(StatusCode::TOO_MANY_REQUESTS)
    ///     .header("retry-after", "3")
    ///     .body(())
    ///     .unwrap();
    /// let verdict = HttpRetry.classify_retry(&Ok::<_, BoxError>(res));
    /// assert_eq!(verdict.outcome(), Outcome::Failure);
    /// assert_eq!(verdict.retry_after(), Some(Duration::from_secs(3)));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HttpRetry;

    impl HttpRetry {
        fn outcome<R: HttpResponse>(res: &R) -> Outcome {
            match res.status() {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
                StatusCode::OK
                    if res.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"14") =>
                {
                    Outcome::Failure
                }
                _ => Outcome::Success,
            }
        }
    }

    impl<R: HttpResponse> Classify<R, BoxError> for HttpRetry {
        fn classify(&self, result: &Result<R, BoxError>) -> Outcome {
            match result {
                Ok(res) => Self::outcome(res),
                Err(_) => DefaultRetry.classify(result),
            }
        }
    }

    impl<R: HttpResponse> ClassifyRetry<R> for HttpRetry {
        fn classify_retry(&self, result: &Result<R, BoxError>) -> Verdict {
            match result {
                Ok(res) => {
                    let verdict =
                        Verdict::new(Self::outcome(res)).with_status(res.status().as_u16());
                    if verdict.outcome() != Outcome::Failure {
                        return verdict;
                    }
                    match crate::headers::hints::response_hints(res.headers()) {
                        crate::headers::hints::Hint::None => verdict,
                        crate::headers::hints::Hint::After(d) => verdict.with_retry_after(d),
                        crate::headers::hints::Hint::Stop => verdict.do_not_retry(),
                    }
                }
                Err(_) => DefaultRetry.classify_retry(result),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::Quota;

    #[test]
    fn transient_errors() {
        let io = |k| -> BoxError { Box::new(std::io::Error::new(k, "x")) };
        assert!(is_transient(&*io(std::io::ErrorKind::ConnectionRefused)));
        assert!(!is_transient(&*io(std::io::ErrorKind::NotFound)));
        let e: BoxError = Box::new(CircuitOpen::new(Duration::from_secs(3)));
        assert!(is_transient(&*e));
        assert_eq!(error_hints(&*e), Some(Duration::from_secs(3)));
        let e: BoxError = Box::new(QueueFull::new(3));
        assert!(is_transient(&*e));
        assert_eq!(error_hints(&*e), None);
        let e: BoxError = "boom".into();
        assert!(!is_transient(&*e));
        let limiter = crate::limiter::Limiter::new(Quota::per_second(1));
        let _ = limiter.check();
        let d = limiter.check();
        let e: BoxError = Box::new(RateLimited::from_decision(&d));
        assert_eq!(
            DefaultRetry.classify_retry(&Err::<(), _>(e)).retry_after(),
            Some(d.retry_after())
        );
    }
}
