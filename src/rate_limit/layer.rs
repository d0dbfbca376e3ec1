use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::{RateLimit, RateLimitByCost};
use crate::cost::{ByCost, One};
use crate::key::ConstKey;
use crate::limiter::Limiter;
use crate::observe::{Observer, Observers};
use crate::per_key::PerKeyLayer;
use crate::quota::Quota;

/// What a [`RateLimit`] service does when its quota is exhausted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Reserve capacity in `poll_ready` and sleep until it is due, failing
    /// fast when the wait would be longer than `max_wait` nanoseconds.
    Wait { max_wait: u64 },
    /// Decide in `call`; deny at once with `RateLimited`.
    Reject,
    /// Decide in `call` and report, but let every request through.
    Shadow,
}

/// Applies a rate limit shared by every service the layer makes and all
/// their clones.
///
/// See the [module docs](crate::rate_limit) for the modes and examples.
///
/// # Sharing
///
/// The layer owns one bucket. Every service it wraps, and every clone of
/// those services, draws from that one bucket, so `Router::layer` in axum
/// (which clones per request) and cloned clients enforce one limit. Two
/// layers made by two calls to [`new`](Self::new) are independent; to share
/// one limiter between layers, pass the same `Arc` to
/// [`with_limiter`](Self::with_limiter).
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{Quota, RateLimitLayer, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(Quota::per_minute(1)).reject())
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
/// let err = svc.clone().oneshot(2).await.unwrap_err();
/// assert!(err.is::<RateLimited>(), "the clone shares the bucket");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer<C = One> {
    limiter: Arc<Limiter>,
    mode: Mode,
    observers: Observers,
    cost: C,
}

impl RateLimitLayer {
    /// Limits requests to `quota`, waiting for capacity (backpressure in
    /// `poll_ready`) when it is exhausted.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // 2 a second, 2 at once: the third request waits for its slot, it never fails.
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(2)))
    ///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// let start = tokio::time::Instant::now();
    /// for n in 0..3 {
    ///     assert_eq!(svc.clone().oneshot(n).await?, n);
    /// }
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(start.elapsed(), Duration::from_millis(500));
    /// # let _ = start;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(quota: Quota) -> Self {
        Self::with_limiter(Arc::new(Limiter::new(quota)))
    }

    /// Limits requests with an existing [`Limiter`], which may hold several
    /// quotas and may be shared with other layers or code.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower_sluice::{Limiter, Quota, RateLimitLayer};
    ///
    /// let limiter = Arc::new(Limiter::new(Quota::per_minute(60)).and(Quota::per_day(1000)));
    /// let layer = RateLimitLayer::with_limiter(limiter.clone());
    /// assert_eq!(layer.limiter().quotas().count(), 2);
    /// ```
    pub fn with_limiter(limiter: Arc<Limiter>) -> Self {
        RateLimitLayer {
            limiter,
            mode: Mode::Wait { max_wait: u64::MAX },
            observers: Observers::default(),
            cost: One,
        }
    }

    /// One bucket shared by every instance of a service: `quota` kept in
    /// `backend` (such as a `RedisBackend`, feature `redis`) under `key`.
    ///
    /// This is a [`PerKeyLayer`] with a [`ConstKey`]: requests wait for
    /// their turn up to `max_wait` (in the response future), and fail
    /// with [`RateLimited`](crate::RateLimited) when the wait would be
    /// longer; set `Duration::ZERO` to reject at once. The in-process
    /// [`RateLimitLayer`] is faster when one instance is all there is.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[cfg(feature = "redis")] {
    /// use std::time::Duration;
    /// use tower_sluice::backend::redis::RedisBackend;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// // Every instance together: at most 600 calls a minute to the upstream.
    /// let redis = RedisBackend::from_url("redis://127.0.0.1:6379").unwrap();
    /// let layer = RateLimitLayer::shared(Quota::per_minute(600), redis, "upstream-api")
    ///     .max_wait(Duration::from_secs(5));
    /// # let _ = layer; }
    /// ```
    pub fn shared<K, B>(quota: Quota, backend: B, key: K) -> PerKeyLayer<K, ConstKey<K>, B>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        PerKeyLayer::new(quota, ConstKey::new(key))
            .backend(backend)
            .max_wait(Duration::from_secs(60))
    }
}

impl<C> RateLimitLayer<C> {
    /// Never wait: `call` fails at once with
    /// [`RateLimited`](crate::RateLimited) when the quota is exhausted.
    /// The service is always ready (if the inner one is), which is what
    /// axum and tonic routers need.
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
    ///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    /// // The second is refused at once, with the time to wait before trying again.
    /// let err = svc.clone().oneshot(2).await.unwrap_err();
    /// let limited = err.downcast_ref::<RateLimited>().unwrap();
    /// assert!(limited.retry_after().as_secs() > 50);
    /// # }
    /// ```
    #[must_use]
    pub fn reject(mut self) -> Self {
        self.mode = Mode::Reject;
        self
    }

    /// Shadow (dry-run) mode: decide and report every decision (to the
    /// observer, and `tracing` at debug level) exactly as
    /// [`reject`](Self::reject) would, but let every request through.
    /// Admitted requests consume quota as usual; denied ones consume
    /// nothing. Use it to try a limit on live traffic before enforcing it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Event;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let would_deny = Arc::new(AtomicUsize::new(0));
    /// let seen = would_deny.clone();
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_minute(1)).shadow().observer(
    ///         move |event: &Event<'_>| {
    ///             if let Event::Limited { enforced: false, .. } = event {
    ///                 seen.fetch_add(1, Ordering::Relaxed);
    ///             }
    ///         },
    ///     ))
    ///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// // Both pass; the second is reported as one the limit would have refused.
    /// assert_eq!(svc.clone().oneshot(1).await?, 1);
    /// assert_eq!(svc.clone().oneshot(2).await?, 2);
    /// assert_eq!(would_deny.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn shadow(mut self) -> Self {
        self.mode = Mode::Shadow;
        self
    }

    /// Wait for capacity, but at most `max_wait`: when the predicted wait is
    /// longer, fail at once with [`RateLimited`](crate::RateLimited)
    /// (consuming nothing) instead of waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{Quota, RateLimitLayer, RateLimited};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // One a second; a caller waits up to 1.5 s for its turn.
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(1)).max_wait(Duration::from_millis(1500)))
    ///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// let start = tokio::time::Instant::now();
    /// let (first, second, third) = tokio::join!(
    ///     svc.clone().oneshot(1),
    ///     svc.clone().oneshot(2),
    ///     svc.clone().oneshot(3),
    /// );
    /// assert_eq!(first?, 1);
    /// assert_eq!(second?, 2); // waited 1 s for its turn
    /// assert!(third.unwrap_err().is::<RateLimited>()); // would have waited 2 s
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # let _ = start;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        let nanos = u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX);
        self.mode = Mode::Wait { max_wait: nanos };
        self
    }

    /// Reports every decision to `observer` (replacing any observer set
    /// before). In waiting mode, [`Event::Waited`](crate::observe::Event::Waited)
    /// carries the planned wait; tokio timers may fire up to a millisecond
    /// later, which never lets a request through early.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_minute(1)).reject().observer(monitor.clone()))
    ///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// let _ = svc.clone().oneshot(1).await;
    /// let _ = svc.clone().oneshot(2).await;
    /// let snapshot = monitor.snapshot();
    /// let stats = snapshot.layer("rate_limit").unwrap();
    /// assert_eq!((stats.allowed, stats.limited), (1, 1));
    /// # }
    /// ```
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer, super::service::LAYER);
        self
    }

    /// The shared limiter: the handle to inspect the bucket (for example
    /// [`Limiter::peek`]), share it, or change its quota while the layer
    /// serves ([`Limiter::set_quota`]; every service and clone follows).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower_sluice::{Limiter, Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(Quota::per_minute(60).with_burst(10)).reject();
    /// // Other code can ask the same bucket, before or while the layer serves.
    /// let handle: Arc<Limiter> = layer.limiter().clone();
    /// let decision = handle.peek();
    /// assert!(decision.is_allowed());
    /// assert_eq!(decision.remaining(), 9);
    /// // The upstream raised our quota: every clone follows.
    /// handle.set_quota(Quota::per_minute(120).with_burst(10))?;
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }
}

impl RateLimitLayer {
    /// Charges each request the cost `cost` says (a closure
    /// `|req: &Req| -> u32` or a [`Cost`](crate::cost::Cost)): 1 to every quota that counts
    /// requests, the cost to every quota that counts a unit
    /// ([`Quota::counting`]). See the [`cost`](crate::cost) module.
    ///
    /// A request of cost 0 passes without a charge. A cost above the burst
    /// of a quota that counts cost fails at once with
    /// [`ExceedsBurst`](crate::ExceedsBurst), never waits (in
    /// [shadow](Self::shadow) mode it is let through and reported as
    /// [`Event::TooLarge`](crate::observe::Event::TooLarge)). The service
    /// decides in `call` (the cost is read from the request), and a
    /// request that waits for its turn does so in its response future,
    /// which needs a `Clone` inner service; see [`RateLimitByCost`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{ExceedsBurst, Limiter, Quota, RateLimitLayer, RateLimited};
    ///
    /// struct Completion { max_tokens: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // A provider allows 3 requests and 10 000 tokens a minute.
    /// let limiter = Limiter::new(Quota::per_minute(3)).and(Quota::per_minute(10_000).counting("tokens"));
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::with_limiter(Arc::new(limiter)).reject().cost(|c: &Completion| c.max_tokens))
    ///     .service(service_fn(|_: Completion| async { Ok::<_, BoxError>("done") }));
    /// svc.clone().oneshot(Completion { max_tokens: 8_000 }).await?;
    /// // The token quota refuses the next 8 000, and names itself.
    /// let err = svc.clone().oneshot(Completion { max_tokens: 8_000 }).await.unwrap_err();
    /// assert_eq!(err.downcast_ref::<RateLimited>().unwrap().quota().unit(), "tokens");
    /// // A request above the burst could never pass: an error, at once.
    /// let err = svc.clone().oneshot(Completion { max_tokens: 20_000 }).await.unwrap_err();
    /// assert_eq!(err.downcast_ref::<ExceedsBurst>().unwrap().cost(), 20_000);
    /// // Cost 0 is free.
    /// svc.clone().oneshot(Completion { max_tokens: 0 }).await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn cost<F>(self, cost: F) -> RateLimitLayer<ByCost<F>> {
        RateLimitLayer {
            limiter: self.limiter,
            mode: self.mode,
            observers: self.observers,
            cost: ByCost::new(cost),
        }
    }
}

impl<F> RateLimitLayer<ByCost<F>> {
    /// Settles each request at its true cost, read from its response by
    /// `hook` (`None`: keep the estimate), as
    /// [`PerKeyLayer::settle`](crate::PerKeyLayer::settle) does for a key:
    /// the quotas that count cost are charged the difference. More than
    /// the estimate is a debt the next requests wait out (or are refused
    /// for), past the burst if need be; less is given back where no
    /// request admitted since relied on it. Quotas that count requests keep
    /// their 1. Only the first settlement of a request counts (the hook's
    /// or a handler's through [`settle_handle`](Self::settle_handle)); a
    /// request whose response is dropped, fails or is never settled keeps
    /// its estimate. See [`Settlement`](crate::cost::Settlement).
    ///
    /// A settlement is one more compare-exchange per quota that counts
    /// cost; a layer that settles decides every request by reservation,
    /// to know what to give back. `Res` must be the inner service's
    /// response type: a hook of another type is never called.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{Quota, RateLimitLayer, RateLimited};
    ///
    /// struct Prompt { estimate: u32, used: u32 }
    /// struct Answer { used: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // 1 000 tokens a minute for the whole service; charge the
    /// // estimate, settle at the usage the answer reports.
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         RateLimitLayer::new(Quota::per_minute(1_000).counting("tokens"))
    ///             .reject()
    ///             .cost(|p: &Prompt| p.estimate)
    ///             .settle(|a: &Answer| Some(a.used)),
    ///     )
    ///     .service(service_fn(|p: Prompt| async move { Ok::<_, BoxError>(Answer { used: p.used }) }));
    /// svc.clone().oneshot(Prompt { estimate: 100, used: 950 }).await?;
    /// // 50 tokens are left: an estimate of 100 is refused.
    /// let err = svc.clone().oneshot(Prompt { estimate: 100, used: 10 }).await.err().unwrap();
    /// assert!(err.is::<RateLimited>());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn settle<Res: 'static>(
        self,
        hook: impl Fn(&Res) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        RateLimitLayer {
            cost: self.cost.settling(|s| s.with_hook(hook)),
            ..self
        }
    }

    /// Hands each admitted request of type `Req` its
    /// [`Settlement`](crate::cost::Settlement) (an `http::Request` keeps it
    /// in its extensions), for its handler to
    /// [`settle`](crate::cost::Settlement::settle) when it knows the true
    /// cost (when a stream ends, say). See [`settle`](Self::settle) for
    /// what settling does.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::cost::Settlement;
    /// use tower_sluice::{Quota, RateLimitLayer, RateLimited};
    ///
    /// type Req = http::Request<u32>; // the body: what the handler will use
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         RateLimitLayer::new(Quota::per_minute(1_000).counting("tokens"))
    ///             .reject()
    ///             .cost(|_: &Req| 500)
    ///             .settle_handle::<Req>(),
    ///     )
    ///     .service(service_fn(|req: Req| async move {
    ///         req.extensions().get::<Settlement>().unwrap().settle(*req.body());
    ///         Ok::<_, BoxError>(())
    ///     }));
    /// // Estimated 500 each, really 100: the refunds make room for more.
    /// for _ in 0..5 {
    ///     svc.clone().oneshot(http::Request::new(100)).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn settle_handle<Req: crate::cost::Settleable + 'static>(self) -> Self {
        RateLimitLayer {
            cost: self.cost.settling(|s| s.with_handle::<Req>()),
            ..self
        }
    }
}

impl<S, F: Clone> Layer<S> for RateLimitLayer<ByCost<F>> {
    type Service = RateLimitByCost<S, F>;

    fn layer(&self, inner: S) -> RateLimitByCost<S, F> {
        RateLimitByCost::new(
            inner,
            self.limiter.clone(),
            self.mode,
            self.observers.clone(),
            self.cost.cost.clone(),
            self.cost.settle.clone(),
        )
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit::new(
            inner,
            self.limiter.clone(),
            self.mode,
            self.observers.clone(),
        )
    }
}
