//! The layer of `adaptive::throttle`: configuration and `Layer`.

use super::*;

/// Rejects requests locally, before they reach an upstream that is
/// refusing them, with probability
///
/// ```text
/// max(0, (requests - K × accepts) / (requests + 1))
/// ```
///
/// over a sliding window (default 2 minutes), where `requests` counts every
/// request the application made (those rejected here included) and
/// `accepts` those the upstream accepted ([`Outcome::Success`] and
/// [`Outcome::Ignore`]; failures and overloads are not accepts). With
/// `K = 2` (the default) the upstream keeps receiving about twice what it
/// accepts, enough to notice quickly when it recovers. Rejected requests
/// fail at once with [`Throttled`] (HTTP 503).
///
/// Classes ([`Criticality`], found by [`criticality`](Self::criticality))
/// have their own `K`, so sheddable requests are rejected first and
/// critical ones last.
///
/// See the [module docs](crate::adaptive).
///
/// # Sharing
///
/// Every service made by the layer, and every clone, shares one window.
///
/// Setters never panic and may come in any order, before or after
/// [`handle`](Self::handle) or a clone: a setter applies to the layer and
/// its clones, and a handle always reads the window that the services made
/// by the layer use. Configure the layer before wrapping services: a
/// service keeps the settings the layer had when it was made. For an
/// independent window, call [`new`](Self::new) again.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::AdaptiveThrottleLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AdaptiveThrottleLayer::new())
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// // A healthy backend: nothing is throttled.
/// for n in 0..100 {
///     assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
/// }
/// # }
/// ```
pub struct AdaptiveThrottleLayer<P = AllCritical, C = DefaultFeedback> {
    core: Slot<Core>,
    criticality: P,
    classify: C,
}

impl Default for AdaptiveThrottleLayer {
    fn default() -> Self {
        AdaptiveThrottleLayer::new()
    }
}

impl AdaptiveThrottleLayer {
    /// `K = 2` over a window of 2 minutes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::AdaptiveThrottleLayer;
    ///
    /// let layer = AdaptiveThrottleLayer::new();
    /// assert_eq!(layer.handle().counts(), (0, 0));
    /// ```
    pub fn new() -> Self {
        AdaptiveThrottleLayer {
            core: Slot::new(Core {
                clock: Clock::new(),
                shadow: false,
                class_k: class_k(2.0),
                bucket: window_to_bucket(Duration::from_secs(120)),
                ring: Mutex::new(Ring::empty()),
                rng: SharedRng::from_entropy(),
                observers: Observers::default(),
            }),
            criticality: AllCritical,
            classify: DefaultFeedback,
        }
    }
}

fn class_k(k: f64) -> [f64; 4] {
    [k * 2.0, k, k * 0.75, k * 0.5]
}

fn window_to_bucket(window: Duration) -> u64 {
    (u64::try_from(window.as_nanos()).unwrap_or(u64::MAX) / BUCKETS as u64).max(1)
}

impl<P, C> AdaptiveThrottleLayer<P, C> {
    fn edit(self, f: impl FnOnce(&mut Core)) -> Self {
        self.core.replace(Core::fresh, f);
        self
    }

    /// The multiplier `K` (default 2; at least 1): lower rejects sooner,
    /// higher lets more through to the upstream. Sets every class's `K`
    /// from it (×2, ×1, ×0.75, ×0.5).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// // Shed sooner: the upstream receives about 1.5× what it accepts.
    /// let layer = AdaptiveThrottleLayer::new().k(1.5);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn k(self, k: f64) -> Self {
        let k = if k.is_nan() { 2.0 } else { k.max(1.0) };
        self.edit(|c| c.class_k = class_k(k))
    }

    /// One class's own `K` (at least 0.5).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
    /// // Never shed the most critical class unless the upstream is nearly dead.
    /// let layer = AdaptiveThrottleLayer::new().class_k(Criticality::CriticalPlus, 10.0);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn class_k(self, class: Criticality, k: f64) -> Self {
        let k = if k.is_nan() { 2.0 } else { k.max(0.5) };
        self.edit(|c| c.class_k[class.index()] = k)
    }

    /// The window requests and accepts are counted over (default 2
    /// minutes), in 20 buckets.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// // React within 30 s instead of 2 minutes.
    /// let layer = AdaptiveThrottleLayer::new().window(Duration::from_secs(30));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn window(self, window: Duration) -> Self {
        self.edit(|c| c.bucket = window_to_bucket(window))
    }

    /// Shadow (dry-run) mode: requests are drawn and refusals reported
    /// ([`Event::AdaptiveRejected`] with `enforced: false`), but every
    /// request is sent.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// # use tower_sluice::observe::Monitor;
    /// let monitor = Monitor::new();
    /// let layer = AdaptiveThrottleLayer::new().shadow().observer(monitor.clone());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn shadow(self) -> Self {
        self.edit(|c| c.shadow = true)
    }

    /// Seeds the random draws, for reproducible tests.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// let layer = AdaptiveThrottleLayer::new().seed(1);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn seed(self, seed: u64) -> Self {
        self.edit(|c| c.rng = SharedRng::new(seed))
    }

    /// Reports rejections ([`Event::AdaptiveRejected`]) to `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// use tower_sluice::observe::Event;
    ///
    /// let layer = AdaptiveThrottleLayer::new().observer(|e: &Event<'_>| {
    ///     if let Event::AdaptiveRejected { .. } = e {
    ///         eprintln!("shed a request locally");
    ///     }
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit(|c| c.observers = Observers::new(observer, LAYER))
    }

    /// Finds each request's class (default: all
    /// [`Critical`](Criticality::Critical)).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
    /// // Requests are (path, user) pairs; prefetches are sheddable.
    /// let layer = AdaptiveThrottleLayer::new().criticality(|req: &(&str, u64)| {
    ///     if req.0.starts_with("/prefetch") { Criticality::Sheddable } else { Criticality::Critical }
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn criticality<P2>(self, criticality: P2) -> AdaptiveThrottleLayer<P2, C> {
        AdaptiveThrottleLayer {
            core: self.core,
            criticality,
            classify: self.classify,
        }
    }

    /// Reads responses with `classify`: any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// results, `Result<Response, BoxError>` (default [`DefaultFeedback`]; use
    /// `classify::HttpStatus`, feature `http`, for
    /// HTTP clients; the same value a breaker or retry takes fits).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::AdaptiveThrottleLayer;
    /// use tower_sluice::classify::Outcome;
    ///
    /// // A 429 or 503 from the upstream is a refusal.
    /// let layer = AdaptiveThrottleLayer::new().classify(|r: &Result<u16, tower_sluice::BoxError>| match r {
    ///     Ok(429 | 503) => Outcome::Overloaded,
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure,
    /// });
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> AdaptiveThrottleLayer<P, C2> {
        AdaptiveThrottleLayer {
            core: self.core,
            criticality: self.criticality,
            classify,
        }
    }

    /// A handle to read the counts and the rejection probability.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
    /// let layer = AdaptiveThrottleLayer::new().k(1.5);
    /// let handle = layer.handle();
    /// assert_eq!(handle.probability(Criticality::Critical), 0.0);
    /// ```
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            core: self.core.clone(),
        }
    }
}

impl<P: Clone, C: Clone> Clone for AdaptiveThrottleLayer<P, C> {
    fn clone(&self) -> Self {
        AdaptiveThrottleLayer {
            core: self.core.clone(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for AdaptiveThrottleLayer<P, C> {
    type Service = AdaptiveThrottle<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveThrottle {
            inner,
            core: self.core.get(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<P, C> fmt::Debug for AdaptiveThrottleLayer<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleLayer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
