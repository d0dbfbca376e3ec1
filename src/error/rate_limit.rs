//! Errors of rate limiting: a quota exhausted, a cost over the burst, and keys
//! missing, too long, too many or with too many requests in flight.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::text::{Human, QuotaText};
use crate::gcra::Decision;
use crate::quota::Quota;

/// A request was denied because a quota is exhausted.
///
/// Carries how long to wait ([`retry_after`](Self::retry_after)) and the
/// state of the quota that denied it. The message names the limit and the
/// wait, for example `rate limit exceeded: 60 per 1m (burst 10); retry after
/// 1s`, and the unit of a quota of cost: `rate limit exceeded: 100000
/// tokens per 1m; retry after 12s`.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{Quota, RateLimitLayer, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(Quota::per_minute(1)).reject())
///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// svc.clone().oneshot(()).await.unwrap();
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// let limited = err.downcast_ref::<RateLimited>().expect("a RateLimited");
/// assert_eq!(limited.limit(), 1);
/// assert_eq!(limited.remaining(), 0);
/// println!("{limited}"); // rate limit exceeded: 1 per 1m (burst 1); retry after 1m
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    retry_after: Duration,
    reset_after: Duration,
    remaining: u32,
    quota: Quota,
    policy: Option<Arc<str>>,
}

impl RateLimited {
    pub(crate) fn from_decision(d: &Decision) -> Self {
        RateLimited {
            retry_after: d.retry_after(),
            reset_after: d.reset_after(),
            remaining: d.remaining(),
            quota: d.quota(),
            policy: None,
        }
    }

    pub(crate) fn with_policy(mut self, name: Option<Arc<str>>) -> Self {
        self.policy = name;
        self
    }

    /// The name of the key's [`Policy`](crate::per_key::Policy), when it
    /// has one (for example a tier, `"free"`).
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// How long to wait before the request would pass.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The denying quota's limit per period.
    pub fn limit(&self) -> u32 {
        self.quota.limit()
    }

    /// Requests of cost 1 that would pass right now (usually 0; more when a
    /// costly request was denied).
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// How long until the quota is full again.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// The quota that denied the request: with several quotas, the one
    /// that ran out.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit exceeded: ")?;
        if let Some(policy) = &self.policy {
            write!(f, "{policy} ")?;
        }
        write!(
            f,
            "{}; retry after {}",
            QuotaText(&self.quota),
            Human(self.retry_after)
        )
    }
}

impl std::error::Error for RateLimited {}

/// The request carried no key (for example no `x-api-key` header), so no
/// per-key limit could be applied. Maps to HTTP 400.
///
/// Configure [`PerKeyLayer`](crate::PerKeyLayer) to let such requests
/// through or to use a fallback key instead.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::error::MissingKey;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // The key is the request's API key, when it has one.
/// let svc = ServiceBuilder::new()
///     .layer(PerKeyLayer::new(Quota::per_second(10), |key: &Option<&str>| key.map(str::to_owned)))
///     .service(service_fn(|_: Option<&str>| async { Ok::<_, BoxError>(()) }));
/// let err = svc.oneshot(None).await.unwrap_err();
/// assert!(err.is::<MissingKey>());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct MissingKey;

impl fmt::Display for MissingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "request has no rate-limit key (the key extractor found none); \
             send the key this service expects (for example an API key header)",
        )
    }
}

impl std::error::Error for MissingKey {}

/// A new key was refused because the per-key store is full of keys that
/// are all still active (`max_keys` reached), with
/// [`FullStore::Refuse`](crate::backend::FullStore::Refuse) (or no key
/// could give its place). No key's limit was loosened to make room. Maps
/// to HTTP 429.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::backend::FullStore;
/// use tower_sluice::error::TooManyKeys;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = PerKeyLayer::new(Quota::per_hour(10), |user: &&str| Some(user.to_string()))
///     .max_keys(1)
///     .full_store(FullStore::Refuse);
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
/// svc.clone().oneshot("ann").await.unwrap();
/// // "ann" is still active, so there is no room for "bob".
/// let err = svc.clone().oneshot("bob").await.unwrap_err();
/// let full = err.downcast_ref::<TooManyKeys>().unwrap();
/// assert_eq!(full.max_keys(), 1);
/// assert!(!full.retry_after().is_zero());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TooManyKeys {
    max_keys: usize,
    retry_after: Duration,
}

impl TooManyKeys {
    pub(crate) fn new(max_keys: usize, retry_after: Duration) -> Self {
        TooManyKeys {
            max_keys,
            retry_after,
        }
    }

    /// The store's bound on keys (its `max_keys`).
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// When the first tracked key will turn idle and make room.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for TooManyKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too many active rate-limit keys (max_keys {}); retry after {}, or raise max_keys",
            self.max_keys,
            Human(self.retry_after)
        )
    }
}

impl std::error::Error for TooManyKeys {}

/// A key already has as many requests in flight as its policy allows.
/// Maps to HTTP 429.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::error::TooManyInFlight;
/// use tower_sluice::per_key::Policy;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let policy = Policy::new(Quota::per_second(100)).max_in_flight(1).named("free");
/// let mut svc = ServiceBuilder::new()
///     .layer(PerKeyLayer::new(policy, |user: &&str| Some(user.to_string())))
///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
/// // The first request is in flight while its future is alive.
/// let first = svc.ready().await?.call("ann");
/// let err = svc.ready().await?.call("ann").await.unwrap_err();
/// let busy = err.downcast_ref::<TooManyInFlight>().unwrap();
/// assert_eq!((busy.limit(), busy.policy()), (1, Some("free")));
/// first.await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TooManyInFlight {
    limit: u32,
    policy: Option<Arc<str>>,
}

impl TooManyInFlight {
    pub(crate) fn new(limit: u32, policy: Option<Arc<str>>) -> Self {
        TooManyInFlight { limit, policy }
    }

    /// The key's cap on requests in flight.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The name of the key's policy, if it has one.
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }
}

impl fmt::Display for TooManyInFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("too many requests in flight: ")?;
        if let Some(policy) = &self.policy {
            write!(f, "{policy} ")?;
        }
        write!(f, "allows {} at once; retry when one completes", self.limit)
    }
}

impl std::error::Error for TooManyInFlight {}

/// A request's cost is larger than a quota's burst, so it could never pass.
///
/// Raise the burst ([`Quota::with_burst`]) or split the request. Layers
/// return it at once rather than wait; the HTTP responder answers it with
/// `413 Content Too Large`. The message names the cost, the burst and the
/// quota, with its unit: `request cost 20000 tokens exceeds the burst of
/// 10000 tokens (10000 tokens per 1m), so it can never pass; …`.
///
/// # Examples
///
/// ```
/// use tower_sluice::{Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(60).with_burst(10));
/// let err = limiter.check_n(11).unwrap_err();
/// assert_eq!(err.cost(), 11);
/// assert_eq!(err.quota().burst(), 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExceedsBurst {
    cost: u32,
    quota: Quota,
}

impl ExceedsBurst {
    pub(crate) fn new(cost: u32, quota: Quota) -> Self {
        ExceedsBurst { cost, quota }
    }

    /// The request's cost.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The quota whose burst is too small.
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

impl fmt::Display for ExceedsBurst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.quota.counts_requests() {
            String::new()
        } else {
            format!(" {}", self.quota.unit())
        };
        write!(
            f,
            "request cost {}{unit} exceeds the burst of {}{unit} ({}), so it can never pass; \
             raise the burst or split the request",
            self.cost,
            self.quota.burst(),
            QuotaText(&self.quota)
        )
    }
}

impl std::error::Error for ExceedsBurst {}

/// A key was refused before it reached the backend because it is longer
/// than the backend accepts (see `RedisBackend::max_key_len`).
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::error::KeyTooLong;
///
/// fn is_client_error(err: &BoxError) -> bool {
///     // A key over `RedisBackend::max_key_len` is the caller's fault: answer 400.
///     err.downcast_ref::<KeyTooLong>().is_some_and(|e| e.key_len() > e.max())
/// }
/// # let _ = is_client_error;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyTooLong {
    len: usize,
    max: usize,
}

impl KeyTooLong {
    #[allow(dead_code)]
    pub(crate) fn new(len: usize, max: usize) -> Self {
        KeyTooLong { len, max }
    }

    /// The key's length in bytes (with the backend's prefix).
    pub fn key_len(&self) -> usize {
        self.len
    }

    /// The longest key the backend accepts, in bytes.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl fmt::Display for KeyTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate-limit key is {} bytes, longer than the backend's limit of {} bytes; \
             key requests by something shorter (or hash long keys)",
            self.len, self.max
        )
    }
}

impl std::error::Error for KeyTooLong {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit_and_the_wait() {
        let e = RateLimited {
            retry_after: Duration::from_millis(1_200),
            reset_after: Duration::from_secs(10),
            remaining: 0,
            quota: Quota::per_minute(60).with_burst(10),
            policy: None,
        };
        assert_eq!(
            e.to_string(),
            "rate limit exceeded: 60 per 1m (burst 10); retry after 1.2s"
        );
        let e = ExceedsBurst::new(20, Quota::per_second(10));
        assert_eq!(
            e.to_string(),
            "request cost 20 exceeds the burst of 10 (10 per 1s), so it can never pass; \
             raise the burst or split the request"
        );
    }

    #[test]
    fn messages_name_the_unit_of_a_quota_of_cost() {
        let tokens = Quota::per_minute(100_000).counting("tokens");
        let e = RateLimited {
            retry_after: Duration::from_secs(12),
            reset_after: Duration::from_secs(30),
            remaining: 40,
            quota: tokens,
            policy: Some("free".into()),
        };
        assert_eq!(
            e.to_string(),
            "rate limit exceeded: free 100000 tokens per 1m; retry after 12s"
        );
        let e = ExceedsBurst::new(200_000, tokens);
        assert_eq!(
            e.to_string(),
            "request cost 200000 tokens exceeds the burst of 100000 tokens \
             (100000 tokens per 1m), so it can never pass; raise the burst or split the request"
        );
    }
}
