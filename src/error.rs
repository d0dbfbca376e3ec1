//! Error types returned by the layers.
//!
//! Every layer returns [`tower::BoxError`](crate::BoxError), the tower
//! convention, so layers compose and work with axum's `HandleErrorLayer`.
//! The concrete types here are public: downcast to read what the caller
//! needs.
//!
//! ```
//! use std::time::Duration;
//! use tower_sluice::{BoxError, RateLimited};
//!
//! fn wait_for(err: &BoxError) -> Option<Duration> {
//!     err.downcast_ref::<RateLimited>().map(|e| e.retry_after())
//! }
//! # let _ = wait_for;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::gcra::Decision;
use crate::quota::Quota;

/// A request was denied because a quota is exhausted.
///
/// Carries how long to wait ([`retry_after`](Self::retry_after)) and the
/// state of the quota that denied it. The message names the limit and the
/// wait, for example `rate limit exceeded: 60 per 1m (burst 10); retry after
/// 1s`.
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::per_key::Policy;
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let free = Policy::new(Quota::per_hour(1)).named("free");
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(free, |user: &&str| Some(user.to_string())))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
    /// svc.clone().oneshot("ann").await.unwrap();
    /// let err = svc.clone().oneshot("ann").await.unwrap_err();
    /// assert_eq!(err.downcast_ref::<RateLimited>().unwrap().policy(), Some("free"));
    /// # }
    /// ```
    pub fn policy(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// How long to wait before the request would pass.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err = limiter.check().into_result().unwrap_err();
    /// // The next request would pass in about a minute.
    /// assert!(err.retry_after() > Duration::from_secs(59));
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The denying quota's limit per period.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(60).with_burst(1));
    /// limiter.check();
    /// assert_eq!(limiter.check().into_result().unwrap_err().limit(), 60);
    /// ```
    pub fn limit(&self) -> u32 {
        self.quota.limit()
    }

    /// Requests of cost 1 that would pass right now (usually 0; more when a
    /// costly request was denied).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(60).with_burst(1));
    /// limiter.check();
    /// assert_eq!(limiter.check().into_result().unwrap_err().remaining(), 0);
    /// ```
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// How long until the quota is full again.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::{Limiter, Quota};
    /// let limiter = Limiter::new(Quota::per_minute(60).with_burst(2));
    /// limiter.check();
    /// limiter.check();
    /// let err = limiter.check().into_result().unwrap_err();
    /// // Both slots come back within two seconds.
    /// assert!(err.reset_after() <= Duration::from_secs(2));
    /// assert!(err.reset_after() > err.retry_after());
    /// ```
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// The quota that denied the request.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// // With several quotas, the one that denied the request.
    /// let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_day(1));
    /// limiter.check();
    /// assert_eq!(limiter.check().into_result().unwrap_err().quota(), Quota::per_day(1));
    /// ```
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

    /// The store's bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::TooManyKeys;
    ///
    /// // In an error handler: the bound, for a log line.
    /// fn max_keys(err: &BoxError) -> Option<usize> {
    ///     err.downcast_ref::<TooManyKeys>().map(|e| e.max_keys())
    /// }
    /// # let _ = max_keys;
    /// ```
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// When the first tracked key will turn idle and make room.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::TooManyKeys;
    ///
    /// // In an error handler: the `Retry-After` of a 429.
    /// fn retry_after(err: &BoxError) -> Option<Duration> {
    ///     err.downcast_ref::<TooManyKeys>().map(|e| e.retry_after())
    /// }
    /// # let _ = retry_after;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::TooManyInFlight;
    ///
    /// // In an error handler: the cap, for the message to the client.
    /// fn limit(err: &BoxError) -> Option<u32> {
    ///     err.downcast_ref::<TooManyInFlight>().map(|e| e.limit())
    /// }
    /// # let _ = limit;
    /// ```
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The name of the key's policy, if it has one.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::TooManyInFlight;
    ///
    /// // In an error handler: the tier, to suggest an upgrade.
    /// fn policy(err: &BoxError) -> Option<String> {
    ///     err.downcast_ref::<TooManyInFlight>().and_then(|e| e.policy().map(str::to_owned))
    /// }
    /// # let _ = policy;
    /// ```
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
/// Raise the burst ([`Quota::with_burst`]) or split the request.
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// assert_eq!(Limiter::new(Quota::per_second(5)).check_n(6).unwrap_err().cost(), 6);
    /// ```
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The quota whose burst is too small.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::{Limiter, Quota};
    /// let q = Quota::per_second(5);
    /// assert_eq!(Limiter::new(q).check_n(6).unwrap_err().quota(), q);
    /// ```
    pub fn quota(&self) -> Quota {
        self.quota
    }
}

impl fmt::Display for ExceedsBurst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request cost {} exceeds the burst of {} ({}), so it can never pass; \
             raise the burst or split the request",
            self.cost,
            self.quota.burst(),
            QuotaText(&self.quota)
        )
    }
}

impl std::error::Error for ExceedsBurst {}

/// A call was refused because the circuit breaker is open (or half-open
/// with all its trial calls taken). The inner service was not called.
/// Maps to HTTP 503 with `Retry-After`, gRPC `UNAVAILABLE`.
///
/// [`retry_after`](Self::retry_after) is the time left until the breaker
/// lets trial calls through again.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreakerLayer::default();
/// let handle = breaker.handle();
/// let svc = ServiceBuilder::new()
///     .layer(breaker)
///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
/// handle.force_open();
/// let err = svc.oneshot(()).await.unwrap_err();
/// let open = err.downcast_ref::<CircuitOpen>().unwrap();
/// println!("upstream unavailable, try again in {:?}", open.retry_after());
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitOpen {
    retry_after: Duration,
}

impl CircuitOpen {
    pub(crate) fn new(retry_after: Duration) -> Self {
        CircuitOpen { retry_after }
    }

    /// How long until the breaker admits trial calls again (a hint when it
    /// is half-open or forced open).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::CircuitOpen;
    ///
    /// // In an error handler: the `Retry-After` of a 503.
    /// fn retry_after(err: &BoxError) -> Option<Duration> {
    ///     err.downcast_ref::<CircuitOpen>().map(|e| e.retry_after())
    /// }
    /// # let _ = retry_after;
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker is open (the upstream is failing); retry after {}",
            Human(self.retry_after)
        )
    }
}

impl std::error::Error for CircuitOpen {}

/// A request arrived at a full queue ([`QueueLayer`](crate::QueueLayer))
/// and was refused at once. Maps to HTTP 503, gRPC `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use std::future::pending;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::{QueueFull, QueueLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // One request in flight, one waiting, no room for a third.
/// let mut svc = ServiceBuilder::new()
///     .layer(QueueLayer::new(1).concurrency(1))
///     .service(service_fn(|_: u32| pending::<Result<(), BoxError>>()));
/// let _in_flight = tokio::spawn(svc.ready().await?.call(1));
/// let _waiting = tokio::spawn(svc.ready().await?.call(2));
/// tokio::task::yield_now().await;
/// let err = svc.ready().await?.call(3).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<QueueFull>().unwrap().capacity(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueFull {
    capacity: usize,
}

impl QueueFull {
    pub(crate) fn new(capacity: usize) -> Self {
        QueueFull { capacity }
    }

    /// How many requests the queue holds at most.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::QueueFull;
    ///
    /// // In an error handler: the bound, for an alert.
    /// fn capacity(err: &BoxError) -> Option<usize> {
    ///     err.downcast_ref::<QueueFull>().map(|e| e.capacity())
    /// }
    /// # let _ = capacity;
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request queue is full ({} waiting); try again later",
            self.capacity
        )
    }
}

impl std::error::Error for QueueFull {}

/// A request waited in a queue longer than its `max_wait` (or its predicted
/// wait was already longer, so it was refused at once). Maps to HTTP 503,
/// gRPC `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use std::future::pending;
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::{QueueLayer, QueueTimeout};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let mut svc = ServiceBuilder::new()
///     .layer(QueueLayer::new(10).concurrency(1).max_wait(Duration::from_secs(1)))
///     .service(service_fn(|_: u32| pending::<Result<(), BoxError>>()));
/// let _stuck = tokio::spawn(svc.ready().await?.call(1));
/// tokio::task::yield_now().await;
/// let err = svc.ready().await?.call(2).await.unwrap_err();
/// let timeout = err.downcast_ref::<QueueTimeout>().unwrap();
/// assert_eq!(timeout.max_wait(), Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueTimeout {
    max_wait: Duration,
    predicted: bool,
}

impl QueueTimeout {
    pub(crate) fn new(max_wait: Duration, predicted: bool) -> Self {
        QueueTimeout {
            max_wait,
            predicted,
        }
    }

    /// The longest a request may wait in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::QueueTimeout;
    ///
    /// // In an error handler: the configured wait.
    /// fn max_wait(err: &BoxError) -> Option<Duration> {
    ///     err.downcast_ref::<QueueTimeout>().map(|e| e.max_wait())
    /// }
    /// # let _ = max_wait;
    /// ```
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// `true` when the request was refused up front because its predicted
    /// wait already exceeded `max_wait`, `false` when it waited `max_wait`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::QueueTimeout;
    ///
    /// // In an error handler: refused up front (no time was spent waiting).
    /// fn predicted(err: &BoxError) -> Option<bool> {
    ///     err.downcast_ref::<QueueTimeout>().map(|e| e.predicted())
    /// }
    /// # let _ = predicted;
    /// ```
    pub fn predicted(&self) -> bool {
        self.predicted
    }
}

impl fmt::Display for QueueTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.predicted {
            write!(
                f,
                "request would wait in the queue longer than its limit of {}; refused at once",
                Human(self.max_wait)
            )
        } else {
            write!(
                f,
                "request waited in the queue for its limit of {} without being served",
                Human(self.max_wait)
            )
        }
    }
}

impl std::error::Error for QueueTimeout {}

/// The limiter's backend (Redis) could not decide and its failure policy
/// is to refuse ("fail closed"). Maps to HTTP 503 with `Retry-After`, gRPC
/// `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::error::BackendUnavailable;
///
/// fn describe(err: &BoxError) -> String {
///     match err.downcast_ref::<BackendUnavailable>() {
///         Some(e) => format!("{} is down; retry in {:?}", e.backend(), e.retry_after()),
///         None => err.to_string(),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendUnavailable {
    backend: &'static str,
    retry_after: Duration,
}

impl BackendUnavailable {
    #[allow(dead_code)]
    pub(crate) fn new(backend: &'static str, retry_after: Duration) -> Self {
        BackendUnavailable {
            backend,
            retry_after,
        }
    }

    /// The backend, such as `"redis"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::BackendUnavailable;
    ///
    /// // In an error handler: which store failed.
    /// fn backend(err: &BoxError) -> Option<&'static str> {
    ///     err.downcast_ref::<BackendUnavailable>().map(|e| e.backend())
    /// }
    /// # let _ = backend;
    /// ```
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// When the backend will be tried again.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::BackendUnavailable;
    ///
    /// // In an error handler: the `Retry-After` of a 503.
    /// fn retry_after(err: &BoxError) -> Option<Duration> {
    ///     err.downcast_ref::<BackendUnavailable>().map(|e| e.retry_after())
    /// }
    /// # let _ = retry_after;
    /// ```
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for BackendUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter backend ({}) is unavailable and the limiter fails closed; retry after {}",
            self.backend,
            Human(self.retry_after)
        )
    }
}

impl std::error::Error for BackendUnavailable {}

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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::KeyTooLong;
    ///
    /// // In an error handler: the offending length.
    /// fn key_len(err: &BoxError) -> Option<usize> {
    ///     err.downcast_ref::<KeyTooLong>().map(|e| e.key_len())
    /// }
    /// # let _ = key_len;
    /// ```
    pub fn key_len(&self) -> usize {
        self.len
    }

    /// The longest key the backend accepts, in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::KeyTooLong;
    ///
    /// // In an error handler: the accepted length.
    /// fn max(err: &BoxError) -> Option<usize> {
    ///     err.downcast_ref::<KeyTooLong>().map(|e| e.max())
    /// }
    /// # let _ = max;
    /// ```
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

/// The service behind a [`QueueLayer`](crate::QueueLayer) failed in
/// `poll_ready`, so it can take no more requests: the request was not sent.
///
/// Every request waiting for that service, and every later one, fails with
/// this error; its [`source`](std::error::Error::source) (and
/// [`cause`](Self::cause)) is the service's own error. Build a new service
/// to recover. Maps to HTTP 503, gRPC `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use std::task::{Context, Poll};
/// use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::{QueueClosed, QueueLayer};
///
/// /// A service that has failed for good.
/// struct Broken;
/// impl Service<()> for Broken {
///     type Response = ();
///     type Error = BoxError;
///     type Future = std::future::Ready<Result<(), BoxError>>;
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
///         Poll::Ready(Err("connection lost".into()))
///     }
///     fn call(&mut self, _: ()) -> Self::Future {
///         unreachable!("never ready")
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new().layer(QueueLayer::new(10)).service(Broken);
/// let err = svc.oneshot(()).await.unwrap_err();
/// let closed = err.downcast_ref::<QueueClosed>().unwrap();
/// assert_eq!(closed.cause().to_string(), "connection lost");
/// # }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct QueueClosed {
    cause: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl QueueClosed {
    pub(crate) fn new(cause: crate::BoxError) -> Self {
        QueueClosed {
            cause: Arc::from(cause),
        }
    }

    /// The error the inner service returned from `poll_ready`.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl fmt::Display for QueueClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the queued service failed in poll_ready and takes no more requests; \
             see the source error, and build a new service to recover",
        )
    }
}

impl std::error::Error for QueueClosed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// A request was refused at once because the
/// [adaptive concurrency limit](crate::adaptive::AdaptiveConcurrencyLayer)
/// was reached: the service is at the number of requests in flight its
/// latency allows. Maps to HTTP 503, gRPC `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
/// use tower_sluice::error::ConcurrencyLimited;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let limit = AimdLimit::new(Duration::from_secs(1)).initial(1).min(1);
/// let mut svc = ServiceBuilder::new()
///     .layer(AdaptiveConcurrencyLayer::new(limit))
///     .service(service_fn(|_: u32| async { Ok::<_, BoxError>(()) }));
/// let first = svc.ready().await?.call(1);
/// let err = svc.ready().await?.call(2).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<ConcurrencyLimited>().unwrap().limit(), 1);
/// first.await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyLimited {
    limit: u32,
}

impl ConcurrencyLimited {
    pub(crate) fn new(limit: u32) -> Self {
        ConcurrencyLimited { limit }
    }

    /// The limit on requests in flight when the request was refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::ConcurrencyLimited;
    ///
    /// // In an error handler: the limit at the time.
    /// fn limit(err: &BoxError) -> Option<u32> {
    ///     err.downcast_ref::<ConcurrencyLimited>().map(|e| e.limit())
    /// }
    /// # let _ = limit;
    /// ```
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

impl fmt::Display for ConcurrencyLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adaptive concurrency limit reached ({} in flight); try again later or queue in front",
            self.limit
        )
    }
}

impl std::error::Error for ConcurrencyLimited {}

/// A request was shed locally by
/// [client-side adaptive throttling](crate::adaptive::AdaptiveThrottleLayer):
/// the upstream has been refusing requests, so this one was not sent.
/// Maps to HTTP 503, gRPC `UNAVAILABLE`.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::AdaptiveThrottleLayer;
/// use tower_sluice::error::Throttled;
/// use tower_sluice::{Limiter, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // An upstream that refuses everything with `RateLimited`.
/// let limiter = std::sync::Arc::new(Limiter::new(Quota::per_hour(1)));
/// limiter.check();
/// let svc = ServiceBuilder::new()
///     .layer(AdaptiveThrottleLayer::new().seed(7))
///     .service(service_fn(move |_: u32| {
///         let refused = limiter.check().into_result().map(drop);
///         async move { refused.map_err(BoxError::from) }
///     }));
/// let mut throttled = 0;
/// for n in 0..200 {
///     if let Err(e) = svc.clone().oneshot(n).await {
///         if let Some(t) = e.downcast_ref::<Throttled>() {
///             assert!(t.probability() > 0.0);
///             throttled += 1;
///         }
///     }
/// }
/// // Most requests were shed locally instead of being sent.
/// assert!(throttled > 100);
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Throttled {
    probability: f64,
}

impl Throttled {
    pub(crate) fn new(probability: f64) -> Self {
        Throttled { probability }
    }

    /// The probability with which requests of this criticality were being
    /// rejected when this one was.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::Throttled;
    ///
    /// // In an error handler: how hard the client is shedding.
    /// fn probability(err: &BoxError) -> Option<f64> {
    ///     err.downcast_ref::<Throttled>().map(|e| e.probability())
    /// }
    /// # let _ = probability;
    /// ```
    pub fn probability(&self) -> f64 {
        self.probability
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request throttled locally: the upstream is refusing requests \
             (rejecting {:.0}% here); try again later",
            self.probability * 100.0
        )
    }
}

impl std::error::Error for Throttled {}

/// An invalid setting of a layer, found when it is built; the message
/// names the layer and the field (the builder method's name).
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
///
/// let err = CircuitBreakerLayer::builder().minimum_calls(0).build().unwrap_err();
/// assert_eq!(err.field(), "minimum_calls");
/// assert_eq!(err.to_string(), "invalid circuit breaker minimum_calls: must be at least 1");
///
/// use std::time::Duration;
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::Backoff;
///
/// let err = BackoffRetryLayer::try_new(Backoff::exponential(Duration::ZERO)).unwrap_err();
/// assert_eq!(err.field(), "base");
/// assert_eq!(err.to_string(), "invalid retry base: must be above zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(layer: &'static str, field: &'static str, reason: &'static str) -> Self {
        ConfigError {
            layer,
            field,
            reason,
        }
    }

    /// The name of the invalid setting (the builder method's name).
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {}: {}", self.layer, self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// `60 per 1m (burst 10)`.
pub(crate) struct QuotaText<'a>(pub(crate) &'a Quota);

impl fmt::Display for QuotaText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = self.0;
        write!(f, "{} per {}", q.limit(), Human(q.period()))?;
        if q.burst() != q.limit() {
            write!(f, " (burst {})", q.burst())?;
        }
        Ok(())
    }
}

/// A duration for people: `1d`, `2h`, `1m`, `30s`, `1.2s`, `250ms`, `15µs`.
/// Fractions are rounded up to the millisecond (a wait is never understated).
pub(crate) struct Human(pub(crate) Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            let s = d.as_secs();
            return match s {
                0 => f.write_str("0s"),
                s if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
                s if s.is_multiple_of(3_600) => write!(f, "{}h", s / 3_600),
                s if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
                s => write!(f, "{s}s"),
            };
        }
        if d < Duration::from_millis(1) {
            return write!(f, "{d:?}");
        }
        let ms = d.as_nanos().div_ceil(1_000_000);
        write!(f, "{:?}", Duration::from_millis(ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::from_secs(7_200), "2h"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_millis(1_200), "1.2s"),
            (Duration::from_nanos(1_200_000_001), "1.201s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(15), "15µs"),
        ];
        for (d, s) in cases {
            assert_eq!(Human(d).to_string(), s);
        }
    }

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
}
