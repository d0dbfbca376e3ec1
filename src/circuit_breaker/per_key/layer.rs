//! The layer: one breaker per key, in a bounded store.

use std::fmt;
use std::hash::Hash;

use tower_layer::Layer;

use super::super::CircuitBreakerConfig;
use super::store::Breakers;
use super::{PerKeyCircuitBreaker, PerKeyCircuitBreakerHandle};
use crate::observe::Observers;
use crate::slot::Slot;

/// The default bound of [`PerKeyCircuitBreakerLayer::max_keys`].
pub(super) const DEFAULT_MAX_KEYS: usize = 10_000;

/// Wraps services in a [`PerKeyCircuitBreaker`]: one circuit breaker per
/// key (an upstream host, a tenant, a route), so one failing host opens
/// only its own breaker while calls to the others keep passing.
///
/// Made by [`CircuitBreakerLayer::per_key`](crate::CircuitBreakerLayer::per_key)
/// with a [`KeyExtractor`](crate::per_key::KeyExtractor) (a closure `|req: &Req| -> Option<K>`). Each
/// key's breaker is created on its first call from the layer's
/// configuration, classifier, observer and shadow setting, and behaves
/// exactly like the plain [`CircuitBreakerLayer`](crate::CircuitBreakerLayer)'s
/// (see the [module docs](crate::circuit_breaker)).
///
/// # Requests without a key
///
/// A request whose extractor returns `None` goes through one **shared
/// default breaker**, configured like the others; so do requests of a new
/// key while the store is full (below). Read and steer it with
/// [`PerKeyCircuitBreakerHandle::default_breaker`]. Its events carry no
/// key.
///
/// # Bounded memory
///
/// The layer holds at most [`max_keys`](Self::max_keys) breakers (10 000 by
/// default). When a new key arrives and its shard is full, the shard
/// forgets its least recently used breaker that is
/// [`Closed`](crate::circuit_breaker::CircuitState::Closed) (not forced) with no call in flight.
/// What that forgets: the breaker's sliding window (calls, failures and
/// slow calls recorded since it last closed) and its count of consecutive
/// failures, so if the key comes back it starts with an empty window, as a
/// breaker does right after closing; a key that was failing below the
/// threshold needs [`minimum_calls`](crate::circuit_breaker::CircuitBreakerBuilder::minimum_calls)
/// new calls before it can open. Nothing else is lost: a Closed breaker
/// has no open-duration backoff to remember (it resets on close).
///
/// Breakers that are [`Open`](crate::circuit_breaker::CircuitState::Open),
/// [`HalfOpen`](crate::circuit_breaker::CircuitState::HalfOpen), forced open or closed, or have a
/// call in flight are **never** forgotten: a failing host keeps refusing
/// however many other keys pass. If a shard holds only such breakers, a
/// new key shares the default breaker until one of them closes (or is
/// [`reset`](PerKeyCircuitBreakerHandle::reset)); an observer is told with
/// [`Event::StoreFull`](crate::observe::Event::StoreFull). The store never
/// grows past the bound and never panics.
///
/// A breaker opened by a host that then gets no traffic stays (its state
/// reads alternate between Open and HalfOpen, since half-open trials that
/// never come fail the round): if hosts come and go, reset departed ones
/// through the handle.
///
/// # Cost
///
/// Keys hash to one of up to 64 shards, each a `hashbrown` table behind a
/// `Mutex`. On top of the plain breaker, each call extracts its key,
/// hashes it, takes its shard's lock for a lookup (and an LRU stamp), and
/// clones the breaker's `Arc` (one atomic increment, and a decrement when
/// the call completes). The shard lock is held for the lookup only, but
/// every call to keys of one shard contends on it: one very hot key is
/// served by one mutex. A new key, when its shard is full, scans the shard
/// (at most `max_keys / shards` entries, 64 to ~160 by default) to find
/// the breaker to forget. A call costs one hash, one lookup and one
/// uncontended lock more than through the plain breaker (figures in the
/// benches' README).
///
/// Memory: each breaker takes about 350 bytes plus its window (24 bytes a
/// bucket of a time window, 1 byte a call of a count window), about 600
/// bytes with the default 10-bucket window, plus its table slot (the key,
/// a hash, a pointer and a stamp) and, with an observer, a boxed copy of
/// its key: about 6 MB for the default 10 000 `u64` keys.
///
/// # Sharing
///
/// Every service the layer makes, every clone, and every
/// [handle](Self::handle) share one store.
///
/// # Example
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::circuit_breaker::CircuitState;
/// use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
///
/// /// A request to an upstream host.
/// struct Request { host: &'static str, fail: bool }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breakers = CircuitBreakerLayer::builder()
///     .consecutive_failures(2)
///     .build()?
///     .per_key(|req: &Request| Some(req.host))
///     .max_keys(1_000);
/// let handle = breakers.handle();
/// let svc = ServiceBuilder::new()
///     .layer(breakers)
///     .service(service_fn(|req: Request| async move {
///         if req.fail { Err::<_, BoxError>("connection refused".into()) } else { Ok(req.host) }
///     }));
///
/// // "a" fails twice: its breaker opens.
/// for _ in 0..2 {
///     svc.clone().oneshot(Request { host: "a", fail: true }).await.unwrap_err();
/// }
/// assert_eq!(handle.state(&"a"), Some(CircuitState::Open));
/// let err = svc.clone().oneshot(Request { host: "a", fail: false }).await.unwrap_err();
/// assert!(err.is::<CircuitOpen>());
///
/// // "b" has its own breaker, still closed.
/// assert_eq!(svc.clone().oneshot(Request { host: "b", fail: false }).await?, "b");
/// assert_eq!(handle.state(&"b"), Some(CircuitState::Closed));
/// assert_eq!(handle.len(), 2);
///
/// // A health check says "b" is down too.
/// handle.force_open(&"b");
/// assert!(svc.oneshot(Request { host: "b", fail: false }).await.is_err());
/// # Ok(())
/// # }
/// ```
pub struct PerKeyCircuitBreakerLayer<K, X, C> {
    pub(super) extractor: X,
    pub(super) classifier: C,
    pub(super) breakers: Slot<Breakers<K>>,
}

impl<K, X, C> PerKeyCircuitBreakerLayer<K, X, C>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    pub(crate) fn new(
        config: CircuitBreakerConfig,
        observers: Observers,
        shadow: bool,
        classifier: C,
        extractor: X,
    ) -> Self {
        PerKeyCircuitBreakerLayer {
            extractor,
            classifier,
            breakers: Slot::new(Breakers::new(config, observers, shadow, DEFAULT_MAX_KEYS)),
        }
    }

    /// Holds at most `max_keys` breakers (at least 1; default 10 000). See
    /// [Bounded memory](Self#bounded-memory).
    ///
    /// This replaces the store with an empty one (fresh breakers) that the
    /// layer, its clones and every handle taken from them follow; services
    /// wrapped before keep the old store. Set it before wrapping services.
    ///
    /// ```
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::default().per_key(|host: &String| Some(host.clone()));
    /// let early = layer.handle();
    /// let layer = layer.max_keys(100);
    /// assert_eq!(layer.handle().max_keys(), 100);
    /// // A handle taken before follows the new store.
    /// assert_eq!(early.max_keys(), 100);
    /// ```
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        self.breakers.replace(
            |old| {
                let d = &old.default;
                Breakers::new(
                    d.config().clone(),
                    d.observers().clone(),
                    d.is_shadow(),
                    max_keys,
                )
            },
            |_| {},
        );
        self
    }
}

impl<K, X, C> PerKeyCircuitBreakerLayer<K, X, C> {
    /// A handle on the layer's breakers: read and steer them by key.
    pub fn handle(&self) -> PerKeyCircuitBreakerHandle<K> {
        PerKeyCircuitBreakerHandle {
            breakers: self.breakers.clone(),
        }
    }
}

impl<S, K, X: Clone, C: Clone> Layer<S> for PerKeyCircuitBreakerLayer<K, X, C> {
    type Service = PerKeyCircuitBreaker<S, K, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PerKeyCircuitBreaker {
            inner,
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            breakers: self.breakers.get(),
        }
    }
}

impl<K, X: Clone, C: Clone> Clone for PerKeyCircuitBreakerLayer<K, X, C> {
    fn clone(&self) -> Self {
        PerKeyCircuitBreakerLayer {
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<K, X, C> fmt::Debug for PerKeyCircuitBreakerLayer<K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breakers = self.breakers.load();
        f.debug_struct("PerKeyCircuitBreakerLayer")
            .field("config", breakers.default.config())
            .field("max_keys", &breakers.max_keys())
            .field("extractor", &std::any::type_name::<X>())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}
