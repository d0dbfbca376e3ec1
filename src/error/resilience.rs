//! Errors of the layers that protect a service: an open circuit, a full,
//! slow or closed queue, an unavailable backend, an adaptive limit reached, a
//! throttled request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::text::Human;

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
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// `true` when the request was refused up front because its predicted
    /// wait already exceeded `max_wait`, `false` when it waited `max_wait`.
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
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// When the backend will be tried again.
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
