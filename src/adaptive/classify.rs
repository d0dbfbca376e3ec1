//! What a response tells the adaptive layers: [`Feedback`], [`Signal`] and
//! the classifiers [`DefaultFeedback`] and `HttpFeedback` (feature `http`).

use std::error::Error;
use std::time::Duration;

use crate::BoxError;
use crate::error::RateLimited;

/// How a call went, as the adaptive layers see it.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::adaptive::{ClassifyFeedback, DefaultFeedback, Signal};
///
/// let ok = DefaultFeedback.feedback(&Ok::<_, BoxError>(()));
/// assert_eq!(ok.signal(), Signal::Success);
/// let failed = DefaultFeedback.feedback(&Err::<(), _>(BoxError::from("boom")));
/// assert_eq!(failed.signal(), Signal::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// The upstream did its work.
    Success,
    /// The call failed (an error, a 5xx): counts against a key's success
    /// rate and as a drop for adaptive concurrency.
    Failure,
    /// The upstream refused the call because of load or a quota: HTTP 429,
    /// [`RateLimited`], gRPC `RESOURCE_EXHAUSTED`. Cuts an AIMD rate.
    Overloaded,
    /// Neither: not counted (for example a client error).
    Ignore,
}

/// What the upstream said about its quota: how many requests remain, and
/// when its window resets.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::{Feedback, Signal, Upstream};
///
/// // An upstream that said 5 requests remain for the next 10 s.
/// let upstream = Upstream { remaining: 5, reset: Duration::from_secs(10) };
/// let feedback = Feedback::new(Signal::Success).with_upstream(upstream);
/// assert_eq!(feedback.upstream(), Some(upstream));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Requests the upstream will still accept before `reset`.
    pub remaining: u64,
    /// When the upstream's window resets, from the response.
    pub reset: Duration,
}

/// The verdict on one response: its [`Signal`], the wait the upstream asked
/// for (`Retry-After`) and what it said about its quota.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::{Feedback, Signal};
///
/// let feedback = Feedback::new(Signal::Overloaded).with_retry_after(Duration::from_secs(30));
/// assert_eq!(feedback.signal(), Signal::Overloaded);
/// assert_eq!(feedback.retry_after(), Some(Duration::from_secs(30)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Feedback {
    signal: Signal,
    retry_after: Option<Duration>,
    upstream: Option<Upstream>,
}

impl Feedback {
    /// A verdict with `signal` and no hints.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{Feedback, Signal};
    /// let f = Feedback::new(Signal::Ignore);
    /// assert_eq!((f.signal(), f.retry_after(), f.upstream()), (Signal::Ignore, None, None));
    /// ```
    pub fn new(signal: Signal) -> Self {
        Feedback {
            signal,
            retry_after: None,
            upstream: None,
        }
    }

    /// The upstream asked not to send before `wait` has passed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{Feedback, Signal};
    /// let f = Feedback::new(Signal::Overloaded).with_retry_after(Duration::from_secs(2));
    /// assert_eq!(f.retry_after(), Some(Duration::from_secs(2)));
    /// ```
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// The upstream said how much of its quota remains.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{Feedback, Signal, Upstream};
    /// let u = Upstream { remaining: 0, reset: Duration::from_secs(60) };
    /// assert_eq!(Feedback::new(Signal::Success).with_upstream(u).upstream(), Some(u));
    /// ```
    pub fn with_upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }

    /// The wait the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The upstream's quota, if it said.
    pub fn upstream(&self) -> Option<Upstream> {
        self.upstream
    }
}

impl From<Signal> for Feedback {
    fn from(signal: Signal) -> Self {
        Feedback::new(signal)
    }
}

/// Classifies a result for the adaptive layers.
///
/// Implemented for closures `Fn(&Result<Res, BoxError>) -> Feedback`, for
/// [`DefaultFeedback`] and, with the feature `http`, for `HttpFeedback`.
/// The layers keep one and call it on each completed response.
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::adaptive::{Feedback, Signal};
///
/// // Status codes as responses: 429 means overloaded.
/// let classify = |r: &Result<u16, BoxError>| -> Feedback {
///     match r {
///         Ok(429) => Signal::Overloaded.into(),
///         Ok(s) if *s >= 500 => Signal::Failure.into(),
///         Ok(_) => Signal::Success.into(),
///         Err(_) => Signal::Failure.into(),
///     }
/// };
/// # let _ = classify;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot read feedback from a `Result<{Res}, BoxError>`",
    label = "not a feedback classifier of this service's responses",
    note = "pass a closure `|r: &Result<{Res}, BoxError>| -> Signal` (or `Feedback`), or `HttpFeedback` for HTTP clients (`http::Response`, or `reqwest::Response` with the `reqwest` feature)"
)]
pub trait ClassifyFeedback<Res> {
    /// The feedback of `result` (the inner service's error already
    /// converted into a [`BoxError`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{ClassifyFeedback, Signal};
    /// use tower_sluice::BoxError;
    /// use tower_sluice::adaptive::Feedback;
    ///
    /// let by_status = |r: &Result<u16, BoxError>| match r {
    ///     Ok(429) => Feedback::new(Signal::Overloaded),
    ///     _ => Feedback::new(Signal::Success),
    /// };
    /// assert_eq!(by_status.feedback(&Ok(429)).signal(), Signal::Overloaded);
    /// ```
    fn feedback(&self, result: &Result<Res, BoxError>) -> Feedback;
}

impl<F, Res> ClassifyFeedback<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Feedback,
{
    #[inline]
    fn feedback(&self, result: &Result<Res, BoxError>) -> Feedback {
        self(result)
    }
}

/// The default classifier: a response is a success; an error is
/// [`Overloaded`](Signal::Overloaded) when it is (or wraps) a
/// [`RateLimited`] (with its `retry_after`) or a gRPC
/// `RESOURCE_EXHAUSTED` status (feature `tonic`), otherwise a
/// [`Failure`](Signal::Failure).
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{ClassifyFeedback, DefaultFeedback, Signal};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let limited: BoxError = limiter.check().into_result().unwrap_err().into();
/// let f = DefaultFeedback.feedback(&Err::<(), _>(limited));
/// assert_eq!(f.signal(), Signal::Overloaded);
/// assert!(f.retry_after().is_some()); // the RateLimited's retry_after
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultFeedback;

impl<Res> ClassifyFeedback<Res> for DefaultFeedback {
    #[inline]
    fn feedback(&self, result: &Result<Res, BoxError>) -> Feedback {
        match result {
            Ok(_) => Feedback::new(Signal::Success),
            Err(e) => error_feedback(&**e),
        }
    }
}

/// The feedback of an error: see [`DefaultFeedback`].
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::adaptive::{error_feedback, Feedback, Signal};
///
/// // A classifier for a client whose responses never signal overload.
/// let classify = |r: &Result<String, BoxError>| match r {
///     Ok(_) => Feedback::new(Signal::Success),
///     Err(e) => error_feedback(&**e),
/// };
/// # let _ = classify;
/// assert_eq!(error_feedback(&*BoxError::from("timeout")).signal(), Signal::Failure);
/// ```
pub fn error_feedback(error: &(dyn Error + 'static)) -> Feedback {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RateLimited>() {
            return Feedback::new(Signal::Overloaded).with_retry_after(r.retry_after());
        }
        #[cfg(feature = "tonic")]
        if let Some(s) = e.downcast_ref::<tonic::Status>()
            && s.code() == tonic::Code::ResourceExhausted
        {
            return Feedback::new(Signal::Overloaded);
        }
        next = e.source();
    }
    Feedback::new(Signal::Failure)
}

#[cfg(feature = "http")]
pub use self::http_rules::{HttpFeedback, upstream_quota};

#[cfg(feature = "http")]
mod http_rules {
    use std::time::Duration;

    use http::{HeaderMap, StatusCode};

    use super::*;
    use crate::classify::HttpResponse;
    use crate::headers::digits;
    use crate::headers::fields::{
        RATELIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET, ratelimit_items, reset_delay,
        response_now,
    };
    use crate::headers::hints::{Hint, response_hints};

    /// For HTTP clients: 429 and gRPC `RESOURCE_EXHAUSTED` (status 8 in a
    /// trailers-only response) are [`Overloaded`](Signal::Overloaded), with
    /// the wait of `Retry-After` (and the other fields
    /// [`response_hints`] reads); other 5xx are failures; everything else
    /// succeeds. Errors as in [`DefaultFeedback`]. Every response's quota
    /// fields are read too ([`upstream_quota`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::Response;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::adaptive::{ClassifyFeedback, HttpFeedback, Signal};
    ///
    /// let res = Response::builder().status(429).header("retry-after", "7").body(()).unwrap();
    /// let f = HttpFeedback.feedback(&Ok::<_, BoxError>(res));
    /// assert_eq!(f.signal(), Signal::Overloaded);
    /// assert_eq!(f.retry_after(), Some(Duration::from_secs(7)));
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct HttpFeedback;

    impl<R: HttpResponse> ClassifyFeedback<R> for HttpFeedback {
        fn feedback(&self, result: &Result<R, BoxError>) -> Feedback {
            let res = match result {
                Ok(res) => res,
                Err(e) => return error_feedback(&**e),
            };
            let headers = res.headers();
            let status = res.status();
            let exhausted = headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"8");
            let mut feedback = if status == StatusCode::TOO_MANY_REQUESTS || exhausted {
                let f = Feedback::new(Signal::Overloaded);
                match response_hints(headers) {
                    Hint::After(d) => f.with_retry_after(d),
                    _ => f,
                }
            } else if status.is_server_error() {
                Feedback::new(Signal::Failure)
            } else {
                Feedback::new(Signal::Success)
            };
            if let Some(u) = upstream_quota(headers) {
                feedback = feedback.with_upstream(u);
            }
            feedback
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
    /// use tower_sluice::adaptive::{upstream_quota, Upstream};
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

        fn res(status: u16, headers: &[(&str, &str)]) -> http::Response<()> {
            let mut b = http::Response::builder().status(status);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        }

        #[test]
        fn statuses_and_fields() {
            let f = HttpFeedback.feedback(&Ok(res(429, &[("retry-after", "7")])));
            assert_eq!(f.signal(), Signal::Overloaded);
            assert_eq!(f.retry_after(), Some(Duration::from_secs(7)));
            let f = HttpFeedback.feedback(&Ok(res(200, &[("grpc-status", "8")])));
            assert_eq!(f.signal(), Signal::Overloaded);
            let f = HttpFeedback.feedback(&Ok(res(502, &[])));
            assert_eq!(f.signal(), Signal::Failure);
            let f = HttpFeedback.feedback(&Ok(res(
                200,
                &[("x-ratelimit-remaining", "4"), ("x-ratelimit-reset", "9")],
            )));
            assert_eq!(f.signal(), Signal::Success);
            assert_eq!(
                f.upstream(),
                Some(Upstream {
                    remaining: 4,
                    reset: Duration::from_secs(9)
                })
            );
            let f = HttpFeedback.feedback(&Ok(res(
                200,
                &[("ratelimit-remaining", "2"), ("ratelimit-reset", "1")],
            )));
            assert_eq!(f.upstream().unwrap().remaining, 2);
        }

        #[test]
        fn signed_numbers_are_malformed() {
            let quota =
                |fields: &[(&str, &str)]| HttpFeedback.feedback(&Ok(res(200, fields))).upstream();
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
            let f = HttpFeedback.feedback(&Ok(res(429, &[("retry-after", "+5")])));
            assert_eq!((f.signal(), f.retry_after()), (Signal::Overloaded, None));
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
}
