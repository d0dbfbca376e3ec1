//! The layer of `adaptive::concurrency`: configuration and `Layer`.

use super::*;

/// Limits requests in flight to a number that adapts to latency; requests
/// over it are refused at once with [`ConcurrencyLimited`] (HTTP 503), or,
/// with [`wait`](Self::wait), wait for a slot in `poll_ready`, so that a
/// [`QueueLayer`](crate::QueueLayer) in front queues them.
///
/// The algorithm is [`GradientLimit`] or [`AimdLimit`], or any
/// [`ConcurrencyAlgorithm`]. See the [module docs](crate::adaptive).
///
/// # Backpressure
///
/// By default the service is ready whenever the inner one is and refuses
/// in `call` (as tower's `LoadShed`), which suits axum and tonic routers.
/// With [`wait`](Self::wait), `poll_ready` takes a slot first and is
/// pending while the limit is reached (woken when a request completes or
/// the limit grows); a readied service holds its slot until `call`, or
/// until it is dropped.
///
/// # Sharing
///
/// Every service made by the layer, and every clone, shares one limit.
///
/// Setters never panic and may come in any order, before or after
/// [`handle`](Self::handle) or a clone: a setter applies to the layer and
/// its clones, and a handle always reads the limit that the services made
/// by the layer use. Configure the layer before wrapping services: a
/// service keeps the settings the layer had when it was made. For an
/// independent limit, call [`new`](Self::new) again.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AdaptiveConcurrencyLayer::new(GradientLimit::new()))
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// assert_eq!(svc.oneshot(7).await.unwrap(), 7);
/// # }
/// ```
pub struct AdaptiveConcurrencyLayer<C = DefaultFeedback> {
    core: Shared<Core>,
    classify: C,
    wait: bool,
    shadow: bool,
}

impl AdaptiveConcurrencyLayer {
    /// A limit computed by `algorithm`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
    ///
    /// let layer = AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_millis(200)));
    /// assert_eq!(layer.handle().limit(), 20);
    /// ```
    pub fn new(algorithm: impl ConcurrencyAlgorithm) -> Self {
        AdaptiveConcurrencyLayer {
            core: Shared::new(Core {
                clock: Clock::new(),
                limit: AtomicU32::new(algorithm.initial_limit().max(1)),
                in_flight: AtomicU32::new(0),
                algorithm: Arc::new(Mutex::new(Box::new(algorithm))),
                observers: Observers::default(),
                waiters: Mutex::new(Waiters::default()),
                has_waiters: AtomicBool::new(false),
            }),
            classify: DefaultFeedback,
            wait: false,
            shadow: false,
        }
    }
}

impl<C> AdaptiveConcurrencyLayer<C> {
    /// Reports limit changes ([`Event::ConcurrencyLimitChanged`]) and
    /// refusals ([`Event::AdaptiveRejected`]) to `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    /// use tower_sluice::observe::Monitor;
    ///
    /// let monitor = Monitor::new();
    /// let layer = AdaptiveConcurrencyLayer::new(GradientLimit::new()).observer(monitor.clone());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        let observers = Observers::new(observer, LAYER);
        self.core.replace(Core::fresh, |c| c.observers = observers);
        self
    }

    /// Waits for a slot in `poll_ready` instead of refusing (see
    /// [Backpressure](Self#backpressure)): put a
    /// [`QueueLayer`](crate::QueueLayer) in front to queue the excess
    /// with a bound and a maximum wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::ServiceBuilder;
    /// use tower_sluice::QueueLayer;
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    ///
    /// // A client: excess requests wait in a bounded queue instead of failing.
    /// let stack = ServiceBuilder::new()
    ///     .layer(QueueLayer::new(1_000).max_wait(Duration::from_secs(5)))
    ///     .layer(AdaptiveConcurrencyLayer::new(GradientLimit::new()).wait());
    /// # let _ = stack;
    /// ```
    #[must_use]
    pub fn wait(mut self) -> Self {
        self.wait = true;
        self
    }

    /// Shadow (dry-run) mode: the limit is computed and refusals are
    /// reported ([`Event::AdaptiveRejected`] with `enforced: false`), but
    /// every request is let through (counted in flight, so the limit
    /// follows the real load). Ignored with [`wait`](Self::wait).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    /// use tower_sluice::observe::Monitor;
    ///
    /// // Watch what the limit would refuse before enforcing it.
    /// let monitor = Monitor::new();
    /// let layer = AdaptiveConcurrencyLayer::new(GradientLimit::new()).shadow().observer(monitor.clone());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Reads responses with `classify`: any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// results, `Result<Response, BoxError>` (default [`DefaultFeedback`]; the same value a breaker or
    /// retry takes fits). Each response's
    /// [`Outcome`](crate::classify::Outcome) goes into the [`Sample`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    /// use tower_sluice::classify::Outcome;
    ///
    /// // Responses are status codes: a 503 is an overload.
    /// let layer = AdaptiveConcurrencyLayer::new(GradientLimit::new()).classify(|r: &Result<u16, tower_sluice::BoxError>| {
    ///     match r {
    ///         Ok(503) => Outcome::Overloaded,
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::Failure,
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> AdaptiveConcurrencyLayer<C2> {
        AdaptiveConcurrencyLayer {
            core: self.core,
            classify,
            wait: self.wait,
            shadow: self.shadow,
        }
    }

    /// A handle to read the current limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    ///
    /// let layer = AdaptiveConcurrencyLayer::new(GradientLimit::new());
    /// let handle = layer.handle();
    /// // Setters may come after `handle()`: the handle follows the layer.
    /// let layer = layer.wait();
    /// assert_eq!(handle.in_flight(), 0);
    /// # let _ = layer;
    /// ```
    pub fn handle(&self) -> ConcurrencyHandle {
        ConcurrencyHandle {
            core: self.core.clone(),
        }
    }
}

impl<C: Clone> Clone for AdaptiveConcurrencyLayer<C> {
    fn clone(&self) -> Self {
        AdaptiveConcurrencyLayer {
            core: self.core.clone(),
            classify: self.classify.clone(),
            wait: self.wait,
            shadow: self.shadow,
        }
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveConcurrencyLayer<C> {
    type Service = AdaptiveConcurrency<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        let mode = match (self.wait, self.shadow) {
            (true, _) => Mode::Wait,
            (false, true) => Mode::Shadow,
            (false, false) => Mode::Reject,
        };
        AdaptiveConcurrency::new(inner, self.core.get(), self.classify.clone(), mode)
    }
}

impl<C> fmt::Debug for AdaptiveConcurrencyLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrencyLayer")
            .field("core", &self.core)
            .field("wait", &self.wait)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}
