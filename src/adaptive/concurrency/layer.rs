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
/// Every service made by the layer, and every clone, shares one limit.
pub struct AdaptiveConcurrencyLayer<C = DefaultFeedback> {
    core: Arc<Core>,
    classify: C,
    wait: bool,
    shadow: bool,
}

impl AdaptiveConcurrencyLayer {
    /// A limit computed by `algorithm`.
    pub fn new(algorithm: impl ConcurrencyAlgorithm) -> Self {
        AdaptiveConcurrencyLayer {
            core: Arc::new(Core {
                clock: Clock::new(),
                limit: AtomicU32::new(algorithm.initial_limit().max(1)),
                in_flight: AtomicU32::new(0),
                algorithm: Mutex::new(Box::new(algorithm)),
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
    /// # Panics
    ///
    /// When called after [`handle`](Self::handle) or after cloning the layer.
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        match Arc::get_mut(&mut self.core) {
            Some(core) => core.observers = Observers::new(observer),
            None => panic!(
                "AdaptiveConcurrencyLayer: set the observer before calling `handle()` or cloning the layer"
            ),
        }
        self
    }

    /// Waits for a slot in `poll_ready` instead of refusing (see
    /// [Backpressure](Self#backpressure)): put a
    /// [`QueueLayer`](crate::QueueLayer) in front to queue the excess
    /// with a bound and a maximum wait.
    #[must_use]
    pub fn wait(mut self) -> Self {
        self.wait = true;
        self
    }

    /// Shadow (dry-run) mode: the limit is computed and refusals are
    /// reported ([`Event::AdaptiveRejected`] with `enforced: false`), but
    /// every request is let through (counted in flight, so the limit
    /// follows the real load). Ignored with [`wait`](Self::wait).
    #[must_use]
    pub fn shadow(mut self) -> Self {
        self.shadow = true;
        self
    }

    /// Reads responses with `classify` (default [`DefaultFeedback`]).
    pub fn classify<C2>(self, classify: C2) -> AdaptiveConcurrencyLayer<C2> {
        AdaptiveConcurrencyLayer {
            core: self.core,
            classify,
            wait: self.wait,
            shadow: self.shadow,
        }
    }

    /// A handle to read the current limit.
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
        AdaptiveConcurrency::new(inner, self.core.clone(), self.classify.clone(), mode)
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
