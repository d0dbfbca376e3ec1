//! [`PerKeyCircuitBreakerLayer`]: one breaker per key (per upstream host),
//! in a bounded, sharded store.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use hashbrown::{DefaultHashBuilder, HashTable};
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::state::{Breaker, LAYER, Stats};
use super::{CircuitBreakerConfig, CircuitBreakerHandle, CircuitState, Classify};
use crate::BoxError;
use crate::observe::{Event, EventKey, Observers};
use crate::per_key::KeyExtractor;
use crate::slot::Slot;

/// The default bound of [`PerKeyCircuitBreakerLayer::max_keys`].
const DEFAULT_MAX_KEYS: usize = 10_000;

/// Wraps services in a [`PerKeyCircuitBreaker`]: one circuit breaker per
/// key (an upstream host, a tenant, a route), so one failing host opens
/// only its own breaker while calls to the others keep passing.
///
/// Made by [`CircuitBreakerLayer::per_key`](crate::CircuitBreakerLayer::per_key)
/// with a [`KeyExtractor`] (a closure `|req: &Req| -> Option<K>`). Each
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
/// [`Closed`](CircuitState::Closed) (not forced) with no call in flight.
/// What that forgets: the breaker's sliding window (calls, failures and
/// slow calls recorded since it last closed) and its count of consecutive
/// failures, so if the key comes back it starts with an empty window, as a
/// breaker does right after closing; a key that was failing below the
/// threshold needs [`minimum_calls`](super::CircuitBreakerBuilder::minimum_calls)
/// new calls before it can open. Nothing else is lost: a Closed breaker
/// has no open-duration backoff to remember (it resets on close).
///
/// Breakers that are [`Open`](CircuitState::Open),
/// [`HalfOpen`](CircuitState::HalfOpen), forced open or closed, or have a
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
/// the breaker to forget. Single-threaded and uncontended, with 64 `u64`
/// keys, a call cost about 20 ns more than through the plain breaker on
/// our (loaded) test machine.
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
    extractor: X,
    classifier: C,
    breakers: Slot<Breakers<K>>,
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
    /// let layer = CircuitBreakerLayer::default()
    ///     .per_key::<String, _>(|host: &String| Some(host.clone()));
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

/// Stops calling the inner service for keys (hosts) that fail, one breaker
/// per key.
///
/// Made by [`PerKeyCircuitBreakerLayer`]; see its docs. Clones share the
/// breakers.
pub struct PerKeyCircuitBreaker<S, K, X, C> {
    inner: S,
    extractor: X,
    classifier: C,
    breakers: Arc<Breakers<K>>,
}

impl<S, K, X, C> PerKeyCircuitBreaker<S, K, X, C> {
    /// A handle on the shared breakers.
    pub fn handle(&self) -> PerKeyCircuitBreakerHandle<K> {
        PerKeyCircuitBreakerHandle {
            breakers: Slot::from_arc(self.breakers.clone()),
        }
    }

    crate::inner_accessors!();
}

impl<S, K, X, C, Req> Service<Req> for PerKeyCircuitBreaker<S, K, X, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Passes readiness through: an open breaker refuses in `call`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = match self.extractor.extract(&req) {
            Some(key) => self.breakers.get_or_insert(&key),
            None => self.breakers.default.clone(),
        };
        super::service::call_through(breaker, &self.classifier, || self.inner.call(req))
    }
}

impl<S: Clone, K, X: Clone, C: Clone> Clone for PerKeyCircuitBreaker<S, K, X, C> {
    fn clone(&self) -> Self {
        PerKeyCircuitBreaker {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for PerKeyCircuitBreaker<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyCircuitBreaker")
            .field("inner", &self.inner)
            .field("keys", &self.breakers.len())
            .field("extractor", &std::any::type_name::<X>())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}

/// Reads and steers the breakers of a [`PerKeyCircuitBreakerLayer`] by key.
///
/// Cheap to clone. A key without a breaker of its own (never seen, or
/// forgotten while Closed) reads as `None`: its next call starts a fresh,
/// Closed breaker. Reading a state applies pending time-based transitions,
/// as [`CircuitBreakerHandle::state`] does.
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitState;
///
/// let layer = CircuitBreakerLayer::default().per_key(|host: &String| Some(host.clone()));
/// let handle = layer.handle();
/// // A health check can open a host's breaker before any traffic.
/// assert!(handle.force_open(&"db-1".to_string()));
/// assert_eq!(handle.state("db-1"), Some(CircuitState::ForcedOpen));
/// assert_eq!(handle.state("db-2"), None);
/// assert!(handle.reset("db-1"));
/// assert_eq!(handle.state("db-1"), Some(CircuitState::Closed));
/// assert_eq!(handle.len(), 1);
/// ```
pub struct PerKeyCircuitBreakerHandle<K> {
    breakers: Slot<Breakers<K>>,
}

impl<K> PerKeyCircuitBreakerHandle<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    /// The state of `key`'s breaker, or `None` when it has none.
    pub fn state<Q>(&self, key: &Q) -> Option<CircuitState>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.breakers.load().get(key).map(|b| b.state())
    }

    /// The state and window statistics of `key`'s breaker, or `None` when
    /// it has none.
    pub fn stats<Q>(&self, key: &Q) -> Option<Stats>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.breakers.load().get(key).map(|b| b.stats())
    }

    /// Opens `key`'s breaker until [`reset`](Self::reset) or
    /// [`force_closed`](Self::force_closed), creating it if needed (a
    /// forced breaker is never forgotten). `false` when the key has no
    /// breaker and none can be made, the store being full of breakers that
    /// cannot be forgotten.
    pub fn force_open(&self, key: &K) -> bool {
        self.force(key, CircuitState::ForcedOpen)
    }

    /// Closes `key`'s breaker until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open), creating it if needed; `false` as
    /// for [`force_open`](Self::force_open).
    pub fn force_closed(&self, key: &K) -> bool {
        self.force(key, CircuitState::ForcedClosed)
    }

    fn force(&self, key: &K, to: CircuitState) -> bool {
        match self.breakers.load().insert(key) {
            Some(breaker) => {
                breaker.force(to);
                true
            }
            None => false,
        }
    }

    /// Puts `key`'s breaker back to [`Closed`](CircuitState::Closed) with
    /// an empty window (it may then be forgotten); `false` when the key had
    /// no breaker.
    pub fn reset<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.breakers
            .load()
            .get(key)
            .map(|b| b.force(CircuitState::Closed))
            .is_some()
    }

    /// Forgets `key`'s breaker whatever its state (a host taken out of
    /// the pool, say); `false` when the key had none. Its next call starts
    /// a fresh, Closed breaker; calls in flight finish on the old one,
    /// which no longer counts.
    ///
    /// ```
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// let layer = CircuitBreakerLayer::default().per_key(|host: &String| Some(host.clone()));
    /// let handle = layer.handle();
    /// assert!(handle.force_open(&"db-1".to_string()));
    /// assert!(handle.remove("db-1"));
    /// assert_eq!(handle.state("db-1"), None);
    /// assert!(!handle.remove("db-1"));
    /// ```
    pub fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.breakers.load().remove(key)
    }
}

impl<K> PerKeyCircuitBreakerHandle<K> {
    /// The number of keys with a breaker of their own (the default breaker
    /// not counted); never more than [`max_keys`](Self::max_keys).
    pub fn len(&self) -> usize {
        self.breakers.load().len()
    }

    /// Whether no key has a breaker of its own.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most breakers the store holds (the layer's
    /// [`max_keys`](PerKeyCircuitBreakerLayer::max_keys), rounded down to
    /// a multiple of the shard count).
    pub fn max_keys(&self) -> usize {
        self.breakers.load().max_keys()
    }

    /// A handle on the shared default breaker, which serves requests
    /// without a key and new keys while the store is full.
    pub fn default_breaker(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::of(self.breakers.load().default.clone())
    }
}

impl<K> Clone for PerKeyCircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        PerKeyCircuitBreakerHandle {
            breakers: self.breakers.clone(),
        }
    }
}

impl<K> fmt::Debug for PerKeyCircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breakers = self.breakers.load();
        f.debug_struct("PerKeyCircuitBreakerHandle")
            .field("keys", &breakers.len())
            .field("max_keys", &breakers.max_keys())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// the store

/// A key's breaker.
struct Entry<K> {
    hash: u64,
    key: K,
    breaker: Arc<Breaker>,
    /// The shard's tick at its last call: the LRU order.
    used: u64,
}

impl<K> Entry<K> {
    /// Forgetting it loses only a Closed window: no call holds it (calls
    /// clone the `Arc` under the shard lock, so the count cannot rise while
    /// the lock is held) and it is Closed, not forced.
    fn evictable(&self) -> bool {
        Arc::strong_count(&self.breaker) == 1 && self.breaker.is_closed()
    }
}

struct Slots<K> {
    table: HashTable<Entry<K>>,
    tick: u64,
}

/// Cache-line aligned so shards do not share lines.
#[repr(align(128))]
struct Shard<K> {
    slots: Mutex<Slots<K>>,
}

struct Breakers<K> {
    shards: Box<[Shard<K>]>,
    hasher: DefaultHashBuilder,
    shard_cap: usize,
    mask: usize,
    /// Requests without a key, and new keys while the store is full.
    default: Arc<Breaker>,
}

impl<K> Breakers<K> {
    fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }
}

fn lock<K>(shard: &Shard<K>) -> MutexGuard<'_, Slots<K>> {
    // No code panics with the lock held; a poisoned table is consistent.
    shard.slots.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K> Breakers<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    fn new(
        config: CircuitBreakerConfig,
        observers: Observers,
        shadow: bool,
        max_keys: usize,
    ) -> Self {
        let max_keys = max_keys.max(1);
        // As the per-key store: a power of two of shards, each holding a
        // fair share (at least 64 keys) of `max_keys`.
        let wanted = (max_keys / 64).clamp(1, 64);
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        Breakers {
            shards: (0..shards)
                .map(|_| Shard {
                    slots: Mutex::new(Slots {
                        table: HashTable::new(),
                        tick: 0,
                    }),
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            shard_cap: max_keys / shards,
            mask: shards - 1,
            default: Arc::new(Breaker::new(config, observers, shadow)),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[crate::hash::shard_index(hash, self.mask)]
    }

    fn make(&self, key: &K) -> Breaker {
        let d = &self.default;
        let key = d
            .observers()
            .is_set()
            .then(|| Box::new(key.clone()) as Box<dyn EventKey + Send + Sync>);
        Breaker::keyed(
            d.config().clone(),
            d.observers().clone(),
            d.is_shadow(),
            key,
        )
    }

    /// `key`'s breaker, if it has one.
    fn get<Q>(&self, key: &Q) -> Option<Arc<Breaker>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let slots = lock(self.shard(hash));
        slots
            .table
            .find(hash, |s| s.key.borrow() == key)
            .map(|s| s.breaker.clone())
    }

    /// Forgets `key`'s breaker; `false` when it had none.
    fn remove<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hasher.hash_one(key);
        let mut slots = lock(self.shard(hash));
        match slots.table.find_entry(hash, |s| s.key.borrow() == key) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// `key`'s breaker, made if needed (forgetting another one if the shard
    /// is full); `None` when the shard is full of breakers that cannot be
    /// forgotten.
    fn insert(&self, key: &K) -> Option<Arc<Breaker>> {
        let hash = self.hasher.hash_one(key);
        let mut slots = lock(self.shard(hash));
        slots.tick += 1;
        let tick = slots.tick;
        if let Some(slot) = slots.table.find_mut(hash, |s| s.key == *key) {
            slot.used = tick;
            return Some(slot.breaker.clone());
        }
        if slots.table.len() >= self.shard_cap && !evict_one(&mut slots.table) {
            return None;
        }
        let breaker = Arc::new(self.make(key));
        slots.table.insert_unique(
            hash,
            Entry {
                hash,
                key: key.clone(),
                breaker: breaker.clone(),
                used: tick,
            },
            |s| s.hash,
        );
        Some(breaker)
    }

    /// The breaker a call with `key` goes through.
    #[inline]
    fn get_or_insert(&self, key: &K) -> Arc<Breaker> {
        match self.insert(key) {
            Some(breaker) => breaker,
            None => self.full(key),
        }
    }

    #[cold]
    fn full(&self, key: &K) -> Arc<Breaker> {
        tracing::debug!(
            target: "tower_sluice::circuit_breaker",
            key = ?key,
            max_keys = self.max_keys(),
            "per-key breakers full; the key shares the default breaker"
        );
        self.default.observers().emit(&Event::StoreFull {
            layer: LAYER,
            key: Some(key),
            max_keys: self.max_keys(),
            enforced: false,
        });
        self.default.clone()
    }
}

/// Forgets the least recently used breaker that can be forgotten; `false`
/// when there is none.
fn evict_one<K>(table: &mut HashTable<Entry<K>>) -> bool {
    let Some((hash, used)) = table
        .iter()
        .filter(|s| s.evictable())
        .min_by_key(|s| s.used)
        .map(|s| (s.hash, s.used))
    else {
        return false;
    };
    match table.find_entry(hash, |s| s.used == used) {
        Ok(entry) => {
            entry.remove();
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CircuitBreakerLayer;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        type X = fn(&u8) -> Option<u8>;
        ok::<PerKeyCircuitBreakerLayer<u8, X, super::super::ErrorsAreFailures>>();
        ok::<
            PerKeyCircuitBreaker<
                tower::util::BoxCloneSyncService<u8, u8, crate::BoxError>,
                u8,
                X,
                super::super::ErrorsAreFailures,
            >,
        >();
        ok::<PerKeyCircuitBreakerHandle<u8>>();
    }

    #[test]
    fn forgets_the_least_recently_used_closed_breaker() {
        let layer = CircuitBreakerLayer::default()
            .per_key(|k: &u32| Some(*k))
            .max_keys(3);
        let b = layer.breakers.get();
        assert_eq!(b.shards.len(), 1);
        for k in [1, 2, 3] {
            b.insert(&k).unwrap();
        }
        // 1 is used again; 2 is now the least recently used.
        b.insert(&1).unwrap();
        b.insert(&4).unwrap();
        assert!(b.get(&2).is_none());
        assert!(b.get(&1).is_some() && b.get(&3).is_some() && b.get(&4).is_some());
        // A breaker held by a call in flight is kept; the next LRU goes.
        let held = b.insert(&3).unwrap();
        b.insert(&1).unwrap();
        b.insert(&4).unwrap();
        b.insert(&5).unwrap();
        assert!(b.get(&3).is_some());
        assert!(b.get(&1).is_none());
        drop(held);
        // Forced breakers are kept; with nothing to forget, no insertion.
        let handle = layer.handle();
        for k in [3, 4, 5] {
            assert!(handle.force_closed(&k));
        }
        assert!(b.insert(&6).is_none());
        assert!(!handle.force_open(&6));
        assert_eq!(handle.len(), 3);
        assert!(handle.reset(&4));
        assert!(b.insert(&6).is_some());
        assert!(b.get(&4).is_none());
    }
}
