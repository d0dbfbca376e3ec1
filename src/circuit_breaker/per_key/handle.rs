//! The handle: read, force and forget a key's breaker.

use std::borrow::Borrow;
use std::fmt;
use std::hash::Hash;

use super::super::state::Stats;
use super::super::{CircuitBreakerHandle, CircuitState};
use super::store::Breakers;
use crate::slot::Slot;

/// Reads and steers the breakers of a [`PerKeyCircuitBreakerLayer`](super::PerKeyCircuitBreakerLayer) by key.
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
    pub(super) breakers: Slot<Breakers<K>>,
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

    pub(super) fn force(&self, key: &K, to: CircuitState) -> bool {
        match self.breakers.load().insert(key) {
            Some(breaker) => {
                breaker.force(to);
                true
            }
            None => false,
        }
    }

    /// Puts `key`'s breaker back to [`Closed`](crate::circuit_breaker::CircuitState::Closed) with
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
    /// [`max_keys`](super::PerKeyCircuitBreakerLayer::max_keys), rounded down to
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
