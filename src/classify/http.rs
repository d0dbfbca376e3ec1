//! HTTP responses, whatever the client: [`HttpResponse`], the shared
//! classifier [`HttpStatus`] and the quota a response reports
//! ([`upstream_quota`]).

use std::any::Any;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::{Classify, Outcome, Upstream, Verdict};
use crate::headers::digits;
use crate::headers::fields::{
    RATELIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, ratelimit_items, reset_delay, response_now,
};
use crate::headers::hints::{Hint, response_hints};

/// A response of an HTTP client: its status and headers. The HTTP
/// classifiers ([`HttpStatus`], `retry::HttpRetry`)
/// read responses through it, so they work with `http::Response` (hyper,
/// axum, tonic) and, with the `reqwest` feature, `reqwest::Response`.
///
/// # Examples
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_sluice::classify::{Classify, HttpResponse, HttpStatus, Outcome};
///
/// /// The response type of a client of your own.
/// struct MyResponse { code: u16, headers: HeaderMap }
///
/// impl HttpResponse for MyResponse {
///     fn status(&self) -> StatusCode {
///         StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_GATEWAY)
///     }
///     fn headers(&self) -> &HeaderMap {
///         &self.headers
///     }
/// }
///
/// let res = MyResponse { code: 502, headers: HeaderMap::new() };
/// assert_eq!(HttpStatus.classify(&Ok::<_, std::io::Error>(res)), Outcome::Failure);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an HTTP response the HTTP classifiers can read",
    note = "they read `http::Response<B>`, and `reqwest::Response` with the `reqwest` feature; implement `HttpResponse` for another client's response type"
)]
pub trait HttpResponse {
    /// The response's status.
    fn status(&self) -> StatusCode;
    /// The response's headers.
    fn headers(&self) -> &HeaderMap;
}

impl<B> HttpResponse for http::Response<B> {
    #[inline]
    fn status(&self) -> StatusCode {
        http::Response::status(self)
    }

    #[inline]
    fn headers(&self) -> &HeaderMap {
        http::Response::headers(self)
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl HttpResponse for reqwest::Response {
    #[inline]
    fn status(&self) -> StatusCode {
        reqwest::Response::status(self)
    }

    #[inline]
    fn headers(&self) -> &HeaderMap {
        reqwest::Response::headers(self)
    }
}

/// The HTTP status an error carries, if it is one: a `reqwest::Error` made
/// by `error_for_status` (feature `reqwest`), as it is or boxed.
pub(crate) fn error_status<E: 'static>(error: &E) -> Option<StatusCode> {
    let any: &dyn Any = error;
    #[cfg(feature = "reqwest")]
    {
        if let Some(e) = any.downcast_ref::<reqwest::Error>() {
            return e.status();
        }
        if let Some(e) = any.downcast_ref::<crate::BoxError>() {
            return e
                .downcast_ref::<reqwest::Error>()
                .and_then(reqwest::Error::status);
        }
    }
    let _ = any;
    None
}

/// For HTTP clients: the classifier the breaker, retry and the adaptive
/// layers can all share.
///
/// * 429 and 503 (and a gRPC `RESOURCE_EXHAUSTED`, status 8 in a
///   trailers-only response) are [`Overloaded`](Outcome::Overloaded): the
///   upstream sheds load on purpose and is alive (the breaker does not
///   count them; retry retries them; the adaptive layers slow down);
/// * other 5xx (and gRPC `UNAVAILABLE`, status 14) and errors are
///   failures; an error that carries a status (reqwest's
///   `error_for_status`) is judged by its status;
/// * other responses (1xx-4xx) are successes.
///
/// Its [`verdict`](Classify::verdict) adds the response's status, the wait
/// a retried response asks for ([`response_hints`](crate::retry::response_hints):
/// `Retry-After`, `RateLimit`, `X-RateLimit-Reset`,
/// `grpc-retry-pushback-ms`) and the quota every response reports
/// ([`upstream_quota`]).
///
/// Works with any [`HttpResponse`] and any error type: one classifier for a
/// hyper client (`http::Response`) or a reqwest client (`reqwest::Response`,
/// feature `reqwest`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::Response;
/// use tower_sluice::classify::{Classify, HttpStatus, Outcome};
///
/// let status = |code: u16| {
///     let res = Response::builder().status(code).body(()).unwrap();
///     HttpStatus.classify(&Ok::<_, std::io::Error>(res))
/// };
/// assert_eq!(status(404), Outcome::Success);
/// assert_eq!(status(500), Outcome::Failure);
/// assert_eq!(status(503), Outcome::Overloaded);
///
/// let res = Response::builder().status(429).header("retry-after", "3").body(()).unwrap();
/// let verdict = HttpStatus.verdict(&Ok::<_, std::io::Error>(res));
/// assert_eq!(verdict.retry_after(), Some(Duration::from_secs(3)));
/// ```
///
/// The same value on every layer of a client:
///
/// ```
/// use tower_sluice::adaptive::AimdLayer;
/// use tower_sluice::classify::HttpStatus;
/// use tower_sluice::retry::Backoff;
/// use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer, Quota};
///
/// let breaker = CircuitBreakerLayer::default().classify(HttpStatus);
/// let retry = BackoffRetryLayer::new(Backoff::default()).classify(HttpStatus);
/// let aimd = AimdLayer::new(Quota::per_second(50)).classify(HttpStatus);
/// # let _ = (breaker, retry, aimd);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatus;

impl HttpStatus {
    /// The outcome of a response with `status`.
    #[inline]
    fn of(status: StatusCode) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            Outcome::Overloaded
        } else if status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a response: its status, or a gRPC status carried in
    /// the headers of a trailers-only response.
    #[inline]
    fn response<R: HttpResponse>(res: &R) -> Outcome {
        let status = res.status();
        if status == StatusCode::OK {
            return match res.headers().get("grpc-status").map(|v| v.as_bytes()) {
                Some(b"8") => Outcome::Overloaded,
                Some(b"14") => Outcome::Failure,
                _ => Outcome::Success,
            };
        }
        Self::of(status)
    }
}

impl<R: HttpResponse, E: 'static> Classify<R, E> for HttpStatus {
    #[inline]
    fn classify(&self, result: &Result<R, E>) -> Outcome {
        match result {
            Ok(res) => Self::response(res),
            Err(e) => error_status(e).map_or(Outcome::Failure, Self::of),
        }
    }

    fn verdict(&self, result: &Result<R, E>) -> Verdict {
        match result {
            Ok(res) => Verdict::new(Self::response(res)).with_response(res),
            Err(e) => match error_status(e) {
                Some(status) => Verdict::new(Self::of(status)).with_status(status.as_u16()),
                None => Verdict::failure(),
            },
        }
    }
}

/// `verdict` with the wait (or the stop) `headers` ask for.
pub(crate) fn with_response_hints(verdict: Verdict, headers: &HeaderMap) -> Verdict {
    match response_hints(headers) {
        Hint::None => verdict,
        Hint::After(d) => verdict.with_retry_after(d),
        Hint::Stop => verdict.do_not_retry(),
    }
}

/// What a response's headers say remains of the upstream's quota: the
/// IETF `RateLimit` field (the item with the fewest requests left, its
/// `r` and `t`), or `X-RateLimit-Remaining` with `X-RateLimit-Reset`
/// (seconds, or a Unix time when larger than 10⁹, taken relative to
/// the response's `Date`), or `RateLimit-Remaining` with
/// `RateLimit-Reset` (earlier drafts).
///
/// Numbers are digits only (a value such as `+5` or `-1` is ignored)
/// and saturate. The reset is returned as the upstream said it; the
/// layers cut the wait it implies to their bound
/// ([`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT) by default).
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_sluice::classify::{upstream_quota, Upstream};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("ratelimit", r#""minute";r=12;t=30, "day";r=900;t=3600"#.parse().unwrap());
/// assert_eq!(
///     upstream_quota(&headers),
///     Some(Upstream { remaining: 12, reset: Duration::from_secs(30) })
/// );
/// ```
pub fn upstream_quota(headers: &HeaderMap) -> Option<Upstream> {
    if let Some(u) = headers
        .get(RATELIMIT)
        .and_then(|v| v.to_str().ok())
        .and_then(ietf)
    {
        return Some(u);
    }
    let number = |name: &str| digits(headers.get(name)?.to_str().ok()?.trim());
    let pair = |remaining: &str, reset: &str| -> Option<Upstream> {
        let remaining = number(remaining)?;
        let reset = i64::try_from(number(reset)?).unwrap_or(i64::MAX);
        let reset = reset_delay(reset, || response_now(headers));
        Some(Upstream { remaining, reset })
    };
    pair(X_RATELIMIT_REMAINING.as_str(), X_RATELIMIT_RESET.as_str())
        .or_else(|| pair("ratelimit-remaining", "ratelimit-reset"))
}

/// The item of an IETF `RateLimit` field with the fewest requests left.
fn ietf(s: &str) -> Option<Upstream> {
    ratelimit_items(s)
        .filter_map(|(r, t)| {
            Some(Upstream {
                remaining: r?,
                reset: Duration::from_secs(t?),
            })
        })
        // The first of the items with the fewest left.
        .reduce(|best, u| {
            if u.remaining < best.remaining {
                u
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let c = |code: u16| {
            let res = http::Response::builder().status(code).body(()).unwrap();
            HttpStatus.classify(&Ok::<_, ()>(res))
        };
        assert_eq!(c(200), Outcome::Success);
        assert_eq!(c(404), Outcome::Success);
        assert_eq!(c(429), Outcome::Overloaded);
        assert_eq!(c(503), Outcome::Overloaded);
        assert_eq!(c(500), Outcome::Failure);
        assert_eq!(c(502), Outcome::Failure);
        assert_eq!(
            HttpStatus.classify(&Err::<http::Response<()>, _>(())),
            Outcome::Failure
        );
    }

    fn res(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    fn verdict(status: u16, headers: &[(&str, &str)]) -> Verdict {
        HttpStatus.verdict(&Ok::<_, ()>(res(status, headers)))
    }

    #[test]
    fn statuses_and_fields() {
        let v = verdict(429, &[("retry-after", "7")]);
        assert_eq!(v.outcome(), Outcome::Overloaded);
        assert_eq!(v.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(v.status(), Some(429));
        assert_eq!(
            verdict(200, &[("grpc-status", "8")]).outcome(),
            Outcome::Overloaded
        );
        assert_eq!(
            verdict(200, &[("grpc-status", "14")]).outcome(),
            Outcome::Failure
        );
        assert_eq!(
            verdict(200, &[("grpc-status", "0")]).outcome(),
            Outcome::Success
        );
        let v = verdict(502, &[("grpc-retry-pushback-ms", "-1")]);
        assert_eq!(v.outcome(), Outcome::Failure);
        assert!(v.is_do_not_retry());
        // A success's wait hint is not read; its quota is.
        let v = verdict(
            200,
            &[
                ("retry-after", "5"),
                ("x-ratelimit-remaining", "4"),
                ("x-ratelimit-reset", "9"),
            ],
        );
        assert_eq!(v.outcome(), Outcome::Success);
        assert_eq!(v.retry_after(), None);
        assert_eq!(
            v.upstream(),
            Some(Upstream {
                remaining: 4,
                reset: Duration::from_secs(9)
            })
        );
        let v = verdict(
            200,
            &[("ratelimit-remaining", "2"), ("ratelimit-reset", "1")],
        );
        assert_eq!(v.upstream().unwrap().remaining, 2);
    }

    #[test]
    fn signed_numbers_are_malformed() {
        let quota = |fields: &[(&str, &str)]| verdict(200, fields).upstream();
        for (remaining, reset) in [("+4", "9"), ("4", "+9"), ("-4", "9"), ("4", "-9")] {
            assert_eq!(
                quota(&[
                    ("x-ratelimit-remaining", remaining),
                    ("x-ratelimit-reset", reset)
                ]),
                None,
                "{remaining} {reset}"
            );
        }
        assert_eq!(quota(&[("ratelimit", r#""a";r=+4;t=9"#)]), None);
        assert_eq!(quota(&[("ratelimit", r#""a";r=4;t=+9"#)]), None);
        // A 429's `Retry-After: +5` is ignored too.
        let v = verdict(429, &[("retry-after", "+5")]);
        assert_eq!((v.outcome(), v.retry_after()), (Outcome::Overloaded, None));
        // Huge numbers saturate (the layers cap the waits).
        let max = u64::MAX.to_string();
        assert_eq!(
            quota(&[
                ("x-ratelimit-remaining", &format!("{max}0")),
                ("x-ratelimit-reset", "5")
            ]),
            Some(Upstream {
                remaining: u64::MAX,
                reset: Duration::from_secs(5)
            })
        );
    }
}
