//! What is retried by default: [`DefaultRetry`] and, for HTTP clients,
//! `HttpRetry` (feature `http`). Both are [`Classify`] rules of the shared
//! vocabulary (`crate::classify`), so they also fit a breaker.

use crate::classify::{Classify, Outcome, as_error, is_transient};

/// The default classifier of retry: responses are successes; errors are
/// retried when they are transient ([`is_transient`]: connection refused or
/// reset, timeouts, [`RateLimited`](crate::RateLimited),
/// [`CircuitOpen`](crate::CircuitOpen), queue refusals); other errors are
/// returned at once ([`Ignore`](Outcome::Ignore)). The layer waits at least
/// what a [`RateLimited`](crate::RateLimited) or
/// [`CircuitOpen`](crate::CircuitOpen) error asks for.
///
/// The layer gives it the error boxed, so any error type (and its
/// sources) is read. Used directly on an unboxed error, it reads a
/// `std::io::Error`, this crate's errors, tokio's and tower's timeouts
/// and, with their features, `reqwest::Error` and `tonic::Status`.
///
/// It is also a [`Classify`] for a breaker or metrics that should count
/// only transient errors.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::retry::DefaultRetry;
/// use tower_sluice::classify::{Classify, Outcome};
///
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(DefaultRetry.classify(&Err::<(), _>(reset)), Outcome::Failure);
/// // Not transient: returned to the caller at once, not retried.
/// let not_found: BoxError = std::io::Error::from(std::io::ErrorKind::NotFound).into();
/// assert_eq!(DefaultRetry.classify(&Err::<(), _>(not_found)), Outcome::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultRetry;

impl<Res, E: 'static> Classify<Res, E> for DefaultRetry {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => error_outcome(e),
        }
    }
}

/// Retried when transient, returned at once otherwise.
fn error_outcome<E: 'static>(error: &E) -> Outcome {
    if as_error(error).is_some_and(is_transient) {
        Outcome::Failure
    } else {
        Outcome::Ignore
    }
}

#[cfg(feature = "http")]
pub use self::http_rules::HttpRetry;

#[cfg(feature = "http")]
mod http_rules {
    use http::StatusCode;

    use super::*;
    use crate::classify::{HttpResponse, Verdict};

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
    /// It differs from [`HttpStatus`](crate::classify::HttpStatus) (which
    /// retry also accepts) in that a 500 or 501 is not retried: they
    /// rarely pass on a second try. 429 and 503 are
    /// [`Overloaded`](Outcome::Overloaded), 502, 504 and gRPC `UNAVAILABLE`
    /// [`Failure`](Outcome::Failure)s, so a breaker given it counts only
    /// the latter.
    ///
    /// Which *requests* may be retried (idempotent methods) is the
    /// request policy's business: see `HttpClone` and `HttpReplay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::{Response, StatusCode};
    /// use tower_sluice::retry::HttpRetry;
    /// use tower_sluice::classify::{Classify, Outcome};
    ///
    /// let res = Response::builder()
    ///     .status(StatusCode::TOO_MANY_REQUESTS)
    ///     .header("retry-after", "3")
    ///     .body(())
    ///     .unwrap();
    /// let verdict = HttpRetry.verdict(&Ok::<_, std::io::Error>(res));
    /// assert_eq!(verdict.outcome(), Outcome::Overloaded);
    /// assert_eq!(verdict.retry_after(), Some(Duration::from_secs(3)));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HttpRetry;

    impl HttpRetry {
        #[inline]
        fn outcome<R: HttpResponse>(res: &R) -> Outcome {
            match res.status() {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    Outcome::Overloaded
                }
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Outcome::Failure,
                StatusCode::OK
                    if res.headers().get("grpc-status").map(|v| v.as_bytes()) == Some(b"14") =>
                {
                    Outcome::Failure
                }
                _ => Outcome::Success,
            }
        }
    }

    impl<R: HttpResponse, E: 'static> Classify<R, E> for HttpRetry {
        #[inline]
        fn classify(&self, result: &Result<R, E>) -> Outcome {
            match result {
                Ok(res) => Self::outcome(res),
                Err(e) => error_outcome(e),
            }
        }

        fn verdict(&self, result: &Result<R, E>) -> Verdict {
            match result {
                Ok(res) => {
                    let verdict =
                        Verdict::new(Self::outcome(res)).with_status(res.status().as_u16());
                    match verdict.outcome() {
                        Outcome::Failure | Outcome::Overloaded => {
                            crate::classify::with_response_hints(verdict, res.headers())
                        }
                        _ => verdict,
                    }
                }
                Err(e) => Verdict::new(error_outcome(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;

    #[test]
    fn default_rule() {
        let io = |k| std::io::Error::new(k, "x");
        let boxed = |k| -> BoxError { Box::new(io(k)) };
        let c = |r: &Result<(), BoxError>| DefaultRetry.classify(r);
        assert_eq!(c(&Ok(())), Outcome::Success);
        assert_eq!(
            c(&Err(boxed(std::io::ErrorKind::ConnectionRefused))),
            Outcome::Failure
        );
        assert_eq!(
            c(&Err(boxed(std::io::ErrorKind::NotFound))),
            Outcome::Ignore
        );
        assert_eq!(
            DefaultRetry.classify(&Err::<(), _>(io(std::io::ErrorKind::TimedOut))),
            Outcome::Failure
        );
        #[derive(Debug)]
        struct Mine;
        assert_eq!(DefaultRetry.classify(&Err::<(), _>(Mine)), Outcome::Ignore);
    }
}
