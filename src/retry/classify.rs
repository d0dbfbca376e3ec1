//! What is retried: [`ClassifyRetry`], [`Verdict`] and the default rules.

use std::error::Error;
use std::time::Duration;

use crate::BoxError;
use crate::circuit_breaker::{Classify, Outcome};
use crate::error::{CircuitOpen, QueueFull, QueueTimeout, RateLimited};

/// The verdict on one attempt: its [`Outcome`] (only
/// [`Failure`](Outcome::Failure) is retried; `Success` and `Ignore` are
/// returned as they are) and what the upstream said about waiting.
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
    pub fn new(outcome: Outcome) -> Self {
        Verdict {
            outcome,
            wait: None,
            stop: false,
            status: None,
        }
    }

    /// Not retried, returned to the caller.
    pub fn success() -> Self {
        Verdict::new(Outcome::Success)
    }

    /// A transient failure: retried if attempts, time and budget allow.
    pub fn failure() -> Self {
        Verdict::new(Outcome::Failure)
    }

    /// The upstream asked to wait at least `wait` before trying again
    /// (`Retry-After` and the like). The layer waits at least that long,
    /// up to its `max_retry_after`.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.wait = Some(self.wait.map_or(wait, |w| w.max(wait)));
        self
    }

    /// The upstream asked not to be retried (a negative or unparsable
    /// gRPC pushback): the layer gives up at once.
    pub fn do_not_retry(mut self) -> Self {
        self.stop = true;
        self
    }

    /// The HTTP status of the response, reported in
    /// [`Event::RetryScheduled`](crate::observe::Event::RetryScheduled).
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The attempt's outcome.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The wait the upstream asked for, if any.
    pub fn wait(&self) -> Option<Duration> {
        self.wait
    }

    /// Whether the upstream asked not to be retried.
    pub fn is_do_not_retry(&self) -> bool {
        self.stop
    }

    /// The response's HTTP status, if the classifier set one.
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
/// use tower_sluice::retry::{Backoff, Outcome};
///
/// // Retry every error, never a response.
/// let layer = BackoffRetryLayer::new(Backoff::default())
///     .retry_if(|r: &Result<u16, BoxError>| match r {
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::Failure,
///     });
/// # let _ = layer;
/// ```
pub trait ClassifyRetry<Res> {
    /// The verdict on `result`. The error is the inner service's error,
    /// already converted into a [`BoxError`].
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
/// timeouts (`tokio::time::error::Elapsed`, `tower::timeout::error::Elapsed`)
/// and I/O errors of the connection (refused, reset, aborted, not connected,
/// broken pipe, timed out).
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
            Some(wait) => verdict.retry_after(wait),
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
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HttpRetry;

    impl HttpRetry {
        fn outcome<B>(res: &http::Response<B>) -> Outcome {
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

    impl<B> Classify<http::Response<B>, BoxError> for HttpRetry {
        fn classify(&self, result: &Result<http::Response<B>, BoxError>) -> Outcome {
            match result {
                Ok(res) => Self::outcome(res),
                Err(_) => DefaultRetry.classify(result),
            }
        }
    }

    impl<B> ClassifyRetry<http::Response<B>> for HttpRetry {
        fn classify_retry(&self, result: &Result<http::Response<B>, BoxError>) -> Verdict {
            match result {
                Ok(res) => {
                    let verdict =
                        Verdict::new(Self::outcome(res)).with_status(res.status().as_u16());
                    if verdict.outcome() != Outcome::Failure {
                        return verdict;
                    }
                    match super::super::http::response_hints(res.headers()) {
                        super::super::http::Hint::None => verdict,
                        super::super::http::Hint::After(d) => verdict.retry_after(d),
                        super::super::http::Hint::Stop => verdict.do_not_retry(),
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
    use crate::Quota;

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
        let limiter = crate::Limiter::new(Quota::per_second(1));
        let _ = limiter.check();
        let d = limiter.check();
        let e: BoxError = Box::new(RateLimited::from_decision(&d));
        assert_eq!(
            DefaultRetry.classify_retry(&Err::<(), _>(e)).wait(),
            Some(d.retry_after())
        );
    }
}
