//! [`PerKeyCircuitBreakerLayer`]: one breaker per key (per upstream host),
//! in a bounded, sharded store.

mod handle;
mod layer;
mod service;
mod store;

pub use handle::PerKeyCircuitBreakerHandle;
pub use layer::PerKeyCircuitBreakerLayer;
pub use service::PerKeyCircuitBreaker;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::circuit_breaker::CircuitBreakerLayer;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        type X = fn(&u8) -> Option<u8>;
        ok::<PerKeyCircuitBreakerLayer<u8, X, crate::classify::ErrorsAreFailures>>();
        ok::<
            PerKeyCircuitBreaker<
                tower::util::BoxCloneSyncService<u8, u8, crate::BoxError>,
                u8,
                X,
                crate::classify::ErrorsAreFailures,
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
