use std::fmt;

use tower_layer::Layer;

use super::state::Breaker;
use super::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerHandle,
    PerKeyCircuitBreakerLayer,
};
use crate::classify::ErrorsAreFailures;
use crate::key::KeyOf;
use crate::observe::{Observer, Observers};
use crate::slot::Slot;

/// Wraps services in a [`CircuitBreaker`] shared by every service the layer
/// makes and all their clones.
///
/// See the [module docs](crate::circuit_breaker).
///
/// # Sharing
///
/// The layer owns one breaker: every service it wraps, every clone, and
/// every [`handle`](Self::handle) see the same state. Two layers made by two
/// calls to [`new`](Self::new) are independent.
///
/// [`observer`](Self::observer) and [`shadow`](Self::shadow) replace the
/// breaker with a fresh one (same configuration): the layer, its clones and
/// every handle taken from them, before or after, follow the new breaker,
/// and so do the services wrapped afterwards. Services wrapped before keep
/// the breaker they were made with. Nothing panics, whoever holds the layer.
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::circuit_breaker::CircuitState;
/// use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreakerLayer::builder().consecutive_failures(2).build()?;
/// let handle = breaker.handle();
/// let svc = ServiceBuilder::new()
///     .layer(breaker)
///     .service(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
/// for _ in 0..2 {
///     svc.clone().oneshot(()).await.unwrap_err();
/// }
/// assert_eq!(handle.state(), CircuitState::Open);
/// assert!(svc.clone().oneshot(()).await.unwrap_err().is::<CircuitOpen>());
/// # Ok(())
/// # }
/// ```
pub struct CircuitBreakerLayer<C = ErrorsAreFailures> {
    breaker: Slot<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker with a validated `config` and the default classifier
    /// (errors are failures).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitBreakerConfig;
    ///
    /// let config = CircuitBreakerConfig::builder().minimum_calls(5).into_config()?;
    /// let layer = CircuitBreakerLayer::new(config.clone());
    /// assert_eq!(layer.handle().config(), &config);
    ///
    /// // Each call to `new` makes its own breaker.
    /// let other = CircuitBreakerLayer::new(config);
    /// layer.handle().force_open();
    /// assert_ne!(other.handle().state(), layer.handle().state());
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer {
            breaker: Slot::new(Breaker::new(config, Observers::default(), false)),
            classifier: ErrorsAreFailures,
        }
    }

    /// A builder starting from the defaults; its
    /// [`build`](CircuitBreakerBuilder::build) names any invalid field.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder().consecutive_failures(3).build()?;
    /// # let _ = layer;
    ///
    /// let err = CircuitBreakerLayer::builder().minimum_calls(0).build().unwrap_err();
    /// assert_eq!(err.field(), "minimum_calls");
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerConfig::builder()
    }
}

impl Default for CircuitBreakerLayer {
    /// The [default configuration](crate::circuit_breaker#defaults), which
    /// counts every `Err` as a failure and every `Ok` as a success. An HTTP
    /// client's 5xx responses are `Ok`: for an HTTP client use
    /// `.http()` (feature `http`), which also judges responses.
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// For HTTP clients: judges responses by their status with
    /// [`HttpStatus`](crate::classify::HttpStatus): errors and 5xx responses are
    /// failures, 429 and 503 (an upstream shedding load on purpose) are
    /// overloads, which the breaker does not count, other responses are
    /// successes.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Request, Response};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let breaker = CircuitBreakerLayer::builder().consecutive_failures(2).build()?.http();
    /// let handle = breaker.handle();
    /// let client = ServiceBuilder::new()
    ///     .layer(breaker)
    ///     .service(service_fn(|_: Request<()>| async {
    ///         Ok::<_, BoxError>(Response::builder().status(500).body(())?)
    ///     }));
    /// for _ in 0..2 {
    ///     let res = client.clone().oneshot(Request::new(())).await?;
    ///     assert_eq!(res.status(), 500);
    /// }
    /// assert_eq!(handle.state(), CircuitState::Open, "two 5xx in a row");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http(self) -> CircuitBreakerLayer<crate::classify::HttpStatus> {
        self.classify(crate::classify::HttpStatus)
    }

    /// Decides which outcomes count as failures with `classifier`: any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// `Result<Response, BoxError>` (its error boxed, whatever its type),
    /// such as a closure returning an
    /// [`Outcome`](crate::classify::Outcome). The same value fits
    /// [`BackoffRetryLayer::classify`](crate::BackoffRetryLayer::classify)
    /// and the adaptive layers. [`Failure`](crate::classify::Outcome::Failure)s
    /// count against the circuit, [`Success`](crate::classify::Outcome::Success)es
    /// for it; [`Overloaded`](crate::classify::Outcome::Overloaded) and
    /// [`Ignore`](crate::classify::Outcome::Ignore) are not recorded (in
    /// half-open they give their trial slot back).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    /// use tower_sluice::classify::Outcome;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // The upstream answers errors as status codes: 5xx counts as a failure.
    /// let breaker = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(2)
    ///     .build()?
    ///     .classify(|r: &Result<u16, BoxError>| match r {
    ///         Ok(status) if *status < 500 => Outcome::Success,
    ///         _ => Outcome::Failure,
    ///     });
    /// let handle = breaker.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(breaker)
    ///     .service(service_fn(|status: u16| async move { Ok::<_, BoxError>(status) }));
    /// assert_eq!(svc.clone().oneshot(404).await?, 404);
    /// assert_eq!(handle.stats().failures, 0);
    /// svc.clone().oneshot(500).await?;
    /// svc.clone().oneshot(502).await?;
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// Reports state changes, refusals and call outcomes to `observer`.
    ///
    /// This replaces the breaker with a fresh one (same configuration and
    /// shadow setting) that handles already taken follow too; services
    /// wrapped before keep the old breaker (see [Sharing](Self#sharing)).
    /// Set it before wrapping services.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::observe::Event;
    ///
    /// let opened = Arc::new(AtomicU32::new(0));
    /// let counter = opened.clone();
    /// let layer = CircuitBreakerLayer::default().observer(move |event: &Event<'_>| {
    ///     if let Event::BreakerStateChanged { .. } = event {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// layer.handle().force_open();
    /// assert_eq!(opened.load(Ordering::Relaxed), 1);
    ///
    /// // A handle taken before follows the observed breaker.
    /// let layer = CircuitBreakerLayer::default();
    /// let early = layer.handle();
    /// let counter = opened.clone();
    /// let _layer = layer.observer(move |event: &Event<'_>| {
    ///     if let Event::BreakerStateChanged { .. } = event {
    ///         counter.fetch_add(1, Ordering::Relaxed);
    ///     }
    /// });
    /// early.force_open();
    /// assert_eq!(opened.load(Ordering::Relaxed), 2);
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.breaker.replace(
            |old| {
                Breaker::new(
                    old.config().clone(),
                    Observers::new(observer, super::state::LAYER),
                    old.is_shadow(),
                )
            },
            |_| {},
        );
        self
    }

    /// Shadow (dry-run) mode: the breaker counts outcomes and changes state
    /// exactly as it would when enforcing, and reports every call it would
    /// have refused ([`Event::BreakerRejected`](crate::observe::Event::BreakerRejected)
    /// with `enforced: false`, and `tracing` at info level), but lets it
    /// through. Calls let through that way are not counted (an enforcing
    /// breaker would not have seen them), so the state follows what
    /// enforcing would have done. Use it to tune thresholds on live traffic.
    ///
    /// Like [`observer`](Self::observer), this replaces the breaker with a
    /// fresh one (same configuration and observer) that handles already
    /// taken follow too.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let breaker = CircuitBreakerLayer::builder().consecutive_failures(1).build()?.shadow();
    /// let handle = breaker.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(breaker)
    ///     .service(service_fn(|fail: bool| async move {
    ///         if fail { Err::<_, BoxError>("down".into()) } else { Ok("up") }
    ///     }));
    /// svc.clone().oneshot(true).await.unwrap_err();
    /// // It would refuse now, but lets the call through.
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// assert_eq!(svc.clone().oneshot(false).await?, "up");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn shadow(self) -> Self {
        self.breaker.replace(
            |old| Breaker::new(old.config().clone(), old.observers().clone(), true),
            |_| {},
        );
        self
    }

    /// One breaker per key (per upstream host), found by `key_extractor`
    /// (a closure `|req: &Req| -> Option<K>` or a
    /// [`KeyExtractor`](crate::per_key::KeyExtractor), whose key type it
    /// takes, as [`PerKeyLayer::new`](crate::PerKeyLayer::new)); each is made on
    /// first use with this layer's configuration, classifier, observer and
    /// shadow setting. Requests without a key share one default breaker.
    /// See [`PerKeyCircuitBreakerLayer`].
    pub fn per_key<M, X>(self, key_extractor: X) -> PerKeyCircuitBreakerLayer<X::Key, X, C>
    where
        X: KeyOf<M>,
        X::Key: std::hash::Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let breaker = self.breaker.load();
        PerKeyCircuitBreakerLayer::new(
            breaker.config().clone(),
            breaker.observers().clone(),
            breaker.is_shadow(),
            self.classifier,
            key_extractor,
        )
    }

    /// A handle on the shared breaker: state, stats, force open or closed,
    /// reset, [subscribe](CircuitBreakerHandle::subscribe) to state
    /// changes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::Layer;
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// let layer = CircuitBreakerLayer::default();
    /// let svc = layer.layer(tower::service_fn(|(): ()| async { Ok::<_, tower::BoxError>(()) }));
    /// layer.handle().force_open();
    /// // The service and every handle see the same breaker.
    /// assert_eq!(svc.handle().state(), CircuitState::ForcedOpen);
    /// assert_eq!(layer.clone().handle().state(), CircuitState::ForcedOpen);
    /// ```
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> CircuitBreaker<S, C> {
        CircuitBreaker::new(inner, self.breaker.get(), self.classifier.clone())
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breaker = self.breaker.load();
        f.debug_struct("CircuitBreakerLayer")
            .field("config", breaker.config())
            .field("state", &breaker.state())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}
