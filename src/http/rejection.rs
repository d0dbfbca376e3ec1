//! [`Rejection`]: a request the limiter turned away, classified once for
//! every protocol (HTTP responses, gRPC statuses).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::error::RateLimited;
use crate::error::{
    BackendUnavailable, CircuitOpen, ConcurrencyLimited, ExceedsBurst, KeyTooLong, MissingKey,
    QueueClosed, QueueFull, QueueTimeout, Throttled, TooManyInFlight, TooManyKeys,
};
use crate::policy::Policy;
use crate::policy::QuotaStates;

/// Why a request was turned away, as protocols see it.
///
/// New limiter errors map onto these kinds as their layers land (circuit
/// open, queue full and queue timeout onto [`Unavailable`](Self::Unavailable)),
/// so responders written against them keep working.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::error::MissingKey;
/// use tower_sluice::http::{Rejection, RejectionKind};
/// use tower_sluice::{Limiter, Quota};
///
/// let kind = |err: BoxError| Rejection::new(&*err).kind();
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// assert_eq!(kind(limiter.check().into_result().unwrap_err().into()), RejectionKind::RateLimited);
/// assert_eq!(kind(MissingKey::default().into()), RejectionKind::MissingKey);
/// assert_eq!(kind("disk full".into()), RejectionKind::Other);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// A quota is exhausted ([`RateLimited`]). HTTP 429,
    /// gRPC `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// The key has as many requests in flight as its policy allows
    /// ([`TooManyInFlight`]). HTTP 429, gRPC `RESOURCE_EXHAUSTED`.
    TooManyInFlight,
    /// The per-key store is full of active keys ([`TooManyKeys`]).
    /// HTTP 429, gRPC `RESOURCE_EXHAUSTED`.
    TooManyKeys,
    /// The request costs more than a quota's burst, so it can never pass
    /// ([`ExceedsBurst`]). HTTP 413 Content Too Large (the request is too
    /// large for the limit, and retrying it as it is cannot help), gRPC
    /// `INVALID_ARGUMENT`; no `Retry-After`.
    TooLarge,
    /// The request has no usable key ([`MissingKey`], or
    /// [`KeyTooLong`] for a backend). HTTP 400 (configurable), gRPC
    /// `INVALID_ARGUMENT`.
    MissingKey,
    /// The service cannot take the request for now (circuit open, queue
    /// full or timed out, limiter backend down). HTTP 503, gRPC
    /// `UNAVAILABLE`.
    Unavailable,
    /// Not a limiter error: HTTP 500, gRPC `UNKNOWN`.
    Other,
}

impl RejectionKind {
    /// The HTTP status this kind maps to by default.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sluice::http::RejectionKind;
    ///
    /// assert_eq!(RejectionKind::RateLimited.status(), StatusCode::TOO_MANY_REQUESTS);
    /// assert_eq!(RejectionKind::TooManyKeys.status(), StatusCode::TOO_MANY_REQUESTS);
    /// assert_eq!(RejectionKind::MissingKey.status(), StatusCode::BAD_REQUEST);
    /// assert_eq!(RejectionKind::TooLarge.status(), StatusCode::PAYLOAD_TOO_LARGE); // 413
    /// assert_eq!(RejectionKind::Unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(RejectionKind::Other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::RateLimited
            | RejectionKind::TooManyInFlight
            | RejectionKind::TooManyKeys => StatusCode::TOO_MANY_REQUESTS,
            RejectionKind::MissingKey => StatusCode::BAD_REQUEST,
            RejectionKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectionKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RejectionKind::Other => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A request the limiter turned away: the error, what kind of rejection it
/// is, how long the client should wait, and (from the per-key HTTP layer)
/// the key's policy and the state of its quotas.
///
/// Made from any error with [`Rejection::new`], which looks through the
/// error's `source()` chain for a limiter error, so errors wrapped by other
/// layers (such as tower's `Buffer`) are still recognised.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::BoxError;
/// use tower_sluice::error::MissingKey;
/// use tower_sluice::http::{Rejection, RejectionKind};
///
/// let err: BoxError = MissingKey::default().into();
/// let rejection = Rejection::new(&*err);
/// assert_eq!(rejection.kind(), RejectionKind::MissingKey);
/// assert_eq!(rejection.retry_after(), None);
///
/// let err: BoxError = "connection reset".into();
/// assert_eq!(Rejection::new(&*err).kind(), RejectionKind::Other);
/// ```
#[derive(Clone)]
pub struct Rejection<'a> {
    error: &'a (dyn Error + 'static),
    cause: &'a (dyn Error + 'static),
    kind: RejectionKind,
    retry_after: Option<Duration>,
    policy: Option<&'a Policy>,
    states: Option<QuotaStates>,
}

impl<'a> Rejection<'a> {
    /// Classifies `error`.
    ///
    /// # Examples
    ///
    /// A limiter error wrapped by another layer is still recognised:
    ///
    /// ```
    /// use std::{error::Error, fmt};
    /// use tower_sluice::http::{Rejection, RejectionKind};
    /// use tower_sluice::{Limiter, Quota, RateLimited};
    ///
    /// /// Another layer's error, wrapping the limiter's.
    /// #[derive(Debug)]
    /// struct Wrapped(RateLimited);
    ///
    /// impl fmt::Display for Wrapped {
    ///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    ///         f.write_str("inner service failed")
    ///     }
    /// }
    ///
    /// impl Error for Wrapped {
    ///     fn source(&self) -> Option<&(dyn Error + 'static)> {
    ///         Some(&self.0)
    ///     }
    /// }
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err = Wrapped(limiter.check().into_result().unwrap_err());
    /// let rejection = Rejection::new(&err);
    /// assert_eq!(rejection.kind(), RejectionKind::RateLimited);
    /// assert!(rejection.retry_after().is_some());
    /// ```
    pub fn new(error: &'a (dyn Error + 'static)) -> Self {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some((kind, retry_after)) = classify(e) {
                return Rejection {
                    error,
                    cause: e,
                    kind,
                    retry_after,
                    policy: None,
                    states: None,
                };
            }
            current = e.source();
        }
        Rejection {
            error,
            cause: error,
            kind: RejectionKind::Other,
            retry_after: None,
            policy: None,
            states: None,
        }
    }

    /// Adds the key's policy and the state of its quotas.
    pub(crate) fn with_context(
        mut self,
        policy: Option<&'a Policy>,
        states: Option<QuotaStates>,
    ) -> Self {
        self.policy = policy;
        self.states = states;
        self
    }

    /// The kind of rejection.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// How long the client should wait before trying again, when known
    /// (`None` for a missing key, where waiting would not help).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error as the layer returned it.
    pub fn error(&self) -> &'a (dyn Error + 'static) {
        self.error
    }

    /// The limiter error found in [`error`](Self::error)'s source chain
    /// (the error itself when it is one, or when it is not a limiter
    /// error at all).
    pub fn cause(&self) -> &'a (dyn Error + 'static) {
        self.cause
    }

    /// The [`RateLimited`] error, when a quota is exhausted (`None` for
    /// every other kind).
    pub fn rate_limited(&self) -> Option<&'a RateLimited> {
        self.cause.downcast_ref()
    }

    /// The key's policy, when the per-key HTTP layer rejected the request
    /// (not for errors mapped after the fact, as in a `HandleErrorLayer`).
    pub fn policy(&self) -> Option<&'a Policy> {
        self.policy
    }

    /// The state of each of the key's quotas when it was rejected, read
    /// without consuming (with [`policy`](Self::policy)).
    pub fn states(&self) -> Option<&QuotaStates> {
        self.states.as_ref()
    }
}

/// The kind and wait of a limiter error, or `None` for other errors. New
/// error types (circuit breaker, queue) add their arm here.
fn classify(e: &(dyn Error + 'static)) -> Option<(RejectionKind, Option<Duration>)> {
    if let Some(e) = e.downcast_ref::<RateLimited>() {
        Some((RejectionKind::RateLimited, Some(e.retry_after())))
    } else if e.is::<TooManyInFlight>() {
        Some((RejectionKind::TooManyInFlight, None))
    } else if let Some(e) = e.downcast_ref::<TooManyKeys>() {
        Some((RejectionKind::TooManyKeys, Some(e.retry_after())))
    } else if e.is::<MissingKey>() {
        Some((RejectionKind::MissingKey, None))
    } else if e.is::<ExceedsBurst>() {
        Some((RejectionKind::TooLarge, None))
    } else if let Some(e) = e.downcast_ref::<CircuitOpen>() {
        Some((RejectionKind::Unavailable, Some(e.retry_after())))
    } else if let Some(e) = e.downcast_ref::<BackendUnavailable>() {
        Some((RejectionKind::Unavailable, Some(e.retry_after())))
    } else if e.is::<KeyTooLong>() {
        Some((RejectionKind::MissingKey, None))
    } else if e.is::<QueueFull>()
        || e.is::<QueueTimeout>()
        || e.is::<QueueClosed>()
        || e.is::<ConcurrencyLimited>()
        || e.is::<Throttled>()
    {
        Some((RejectionKind::Unavailable, None))
    } else {
        None
    }
}

impl fmt::Debug for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejection")
            .field("kind", &self.kind)
            .field("retry_after", &self.retry_after)
            .field("error", &self.error)
            .field("policy", &self.policy)
            .field("states", &self.states)
            .finish()
    }
}
