//! [`Verdict`]: an [`Outcome`] with what the upstream said, and the
//! [`Upstream`] quota it may carry.

use std::time::Duration;

use super::Outcome;

/// What the upstream said about its quota: how many requests remain, and
/// when its window resets.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::classify::{Upstream, Verdict};
///
/// // An upstream that said 5 requests remain for the next 10 s.
/// let upstream = Upstream { remaining: 5, reset: Duration::from_secs(10) };
/// let verdict = Verdict::success().with_upstream(upstream);
/// assert_eq!(verdict.upstream(), Some(upstream));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Requests the upstream will still accept before `reset`.
    pub remaining: u64,
    /// When the upstream's window resets, from the response.
    pub reset: Duration,
}

/// The verdict on one call: its [`Outcome`] and what the upstream said
/// with it: the wait it asked for (`Retry-After` and the like), whether it
/// asked not to be retried, the response's status, and its quota.
///
/// A classifier returns one from [`Classify::verdict`](super::Classify::verdict)
/// (a closure may return one instead of an [`Outcome`]). Each layer reads
/// what it needs: retry the wait, the stop and the status; the AIMD layer
/// the wait and the quota; the breaker only the outcome.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::classify::{Classify, Outcome, Verdict};
///
/// /// Status codes as responses; 429 asks for 2 s.
/// let by_status = |r: &Result<u16, std::io::Error>| match r {
///     Ok(429) => Verdict::overloaded().with_retry_after(Duration::from_secs(2)).with_status(429),
///     Ok(s @ 500..) => Verdict::failure().with_status(*s),
///     Ok(s) => Verdict::success().with_status(*s),
///     Err(_) => Verdict::failure(),
/// };
///
/// let v = by_status.verdict(&Ok(429));
/// assert_eq!(v.outcome(), Outcome::Overloaded);
/// assert_eq!(v.retry_after(), Some(Duration::from_secs(2)));
/// assert_eq!(v.status(), Some(429));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Verdict {
    outcome: Outcome,
    wait: Option<Duration>,
    stop: bool,
    status: Option<u16>,
    upstream: Option<Upstream>,
}

impl Verdict {
    /// A verdict with `outcome` and nothing else said.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::classify::{Outcome, Verdict};
    /// assert_eq!(Verdict::new(Outcome::Failure), Verdict::failure());
    /// assert_eq!(Verdict::from(Outcome::Ignore).outcome(), Outcome::Ignore);
    /// ```
    #[inline]
    pub const fn new(outcome: Outcome) -> Self {
        Verdict {
            outcome,
            wait: None,
            stop: false,
            status: None,
            upstream: None,
        }
    }

    /// [`Outcome::Success`].
    #[inline]
    pub const fn success() -> Self {
        Verdict::new(Outcome::Success)
    }

    /// [`Outcome::Failure`]: retried if attempts, time and budget allow.
    #[inline]
    pub const fn failure() -> Self {
        Verdict::new(Outcome::Failure)
    }

    /// [`Outcome::Overloaded`]: the upstream refused because of load or a
    /// quota.
    #[inline]
    pub const fn overloaded() -> Self {
        Verdict::new(Outcome::Overloaded)
    }

    /// The upstream asked to wait at least `wait` before trying again
    /// (`Retry-After` and the like). Retry waits at least that long, up to
    /// its `max_retry_after`; the AIMD layer pauses, up to its `max_pause`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::classify::Verdict;
    /// // Several hints: the longest wait wins.
    /// let v = Verdict::failure()
    ///     .with_retry_after(Duration::from_secs(1))
    ///     .with_retry_after(Duration::from_secs(3));
    /// assert_eq!(v.retry_after(), Some(Duration::from_secs(3)));
    /// ```
    #[inline]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.wait = Some(self.wait.map_or(wait, |w| w.max(wait)));
        self
    }

    /// The upstream asked not to be retried (a negative or unparsable
    /// gRPC pushback): retry gives up at once.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::classify::Verdict;
    /// assert!(Verdict::failure().do_not_retry().is_do_not_retry());
    /// assert!(!Verdict::failure().is_do_not_retry());
    /// ```
    #[inline]
    pub fn do_not_retry(mut self) -> Self {
        self.stop = true;
        self
    }

    /// The HTTP status of the response, reported in
    /// [`Event::RetryScheduled`](crate::observe::Event::RetryScheduled).
    #[inline]
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The upstream said how much of its quota remains: the AIMD layer
    /// spreads what remains until the reset.
    #[inline]
    pub fn with_upstream(mut self, upstream: Upstream) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// What `res` says along with this verdict: its status, the wait it
    /// asks for when the verdict is a failure or an overload
    /// ([`response_hints`](crate::retry::response_hints): `Retry-After`,
    /// `RateLimit`, `X-RateLimit-Reset`, `grpc-retry-pushback-ms`), and
    /// the quota it reports ([`upstream_quota`](super::upstream_quota)). For a closure that
    /// decides the outcome itself and lets the layers read the rest, as
    /// [`HttpStatus`](super::HttpStatus) does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::Response;
    /// use tower_sluice::classify::{Classify, Verdict};
    ///
    /// // Only 503 is retried, waiting its Retry-After.
    /// let rule = |r: &Result<Response<()>, std::io::Error>| match r {
    ///     Ok(res) if res.status() == 503 => Verdict::overloaded().with_response(res),
    ///     Ok(res) => Verdict::success().with_response(res),
    ///     Err(_) => Verdict::failure(),
    /// };
    /// let busy = Response::builder().status(503).header("retry-after", "4").body(()).unwrap();
    /// let v = rule.verdict(&Ok(busy));
    /// assert_eq!((v.status(), v.retry_after()), (Some(503), Some(Duration::from_secs(4))));
    /// ```
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn with_response<R: super::HttpResponse>(self, res: &R) -> Self {
        let headers = res.headers();
        let mut verdict = self.with_status(res.status().as_u16());
        if matches!(verdict.outcome(), Outcome::Failure | Outcome::Overloaded) {
            verdict = super::with_response_hints(verdict, headers);
        }
        match super::upstream_quota(headers) {
            Some(u) => verdict.with_upstream(u),
            None => verdict,
        }
    }

    /// The outcome.
    #[inline]
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The wait the upstream asked for, if any.
    #[inline]
    pub fn retry_after(&self) -> Option<Duration> {
        self.wait
    }

    /// Whether the upstream asked not to be retried.
    #[inline]
    pub fn is_do_not_retry(&self) -> bool {
        self.stop
    }

    /// The response's HTTP status, if the classifier set one.
    #[inline]
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The upstream's quota, if it said.
    #[inline]
    pub fn upstream(&self) -> Option<Upstream> {
        self.upstream
    }
}

impl From<Outcome> for Verdict {
    #[inline]
    fn from(outcome: Outcome) -> Self {
        Verdict::new(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders() {
        let u = Upstream {
            remaining: 3,
            reset: Duration::from_secs(9),
        };
        let v = Verdict::overloaded()
            .with_retry_after(Duration::from_secs(5))
            .with_retry_after(Duration::from_secs(2))
            .with_status(429)
            .with_upstream(u);
        assert_eq!(v.outcome(), Outcome::Overloaded);
        assert_eq!(v.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(v.status(), Some(429));
        assert_eq!(v.upstream(), Some(u));
        assert!(!v.is_do_not_retry());
        assert!(v.do_not_retry().is_do_not_retry());
        assert_eq!(Verdict::success(), Verdict::from(Outcome::Success));
        assert_eq!(Verdict::success().status(), None);
    }
}
