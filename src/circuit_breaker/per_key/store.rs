//! The store: a bounded, sharded table of breakers, least recently used
//! evicted first (never an open one).
//!
//! It picks shards as every key table of the crate does, but keeps its own
//! table: its entries are shared breakers that running calls hold, and an
//! open one must never be forgotten (see `backend::memory::store` for the
//! crate's key tables and why they differ).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex, MutexGuard};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::super::CircuitBreakerConfig;
use super::super::state::{Breaker, LAYER};
use crate::observe::{Event, EventKey, Observers};
use crate::util::IgnorePoison;

/// A key's breaker.
pub(super) struct Entry<K> {
    pub(super) hash: u64,
    pub(super) key: K,
    pub(super) breaker: Arc<Breaker>,
    /// The shard's tick at its last call: the LRU order.
    pub(super) used: u64,
}

impl<K> Entry<K> {
    /// Forgetting it loses only a Closed window: no call holds it (calls
    /// clone the `Arc` under the shard lock, so the count cannot rise while
    /// the lock is held) and it is Closed, not forced.
    pub(super) fn evictable(&self) -> bool {
        Arc::strong_count(&self.breaker) == 1 && self.breaker.is_closed()
    }
}

pub(super) struct Slots<K> {
    pub(super) table: HashTable<Entry<K>>,
    pub(super) tick: u64,
}

/// Cache-line aligned so shards do not share lines.
#[repr(align(128))]
pub(super) struct Shard<K> {
    pub(super) slots: Mutex<Slots<K>>,
}

pub(super) struct Breakers<K> {
    pub(super) shards: Box<[Shard<K>]>,
    pub(super) hasher: DefaultHashBuilder,
    pub(super) shard_cap: usize,
    pub(super) mask: usize,
    /// Requests without a key, and new keys while the store is full.
    pub(super) default: Arc<Breaker>,
}

impl<K> Breakers<K> {
    pub(super) fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }
}

pub(super) fn lock<K>(shard: &Shard<K>) -> MutexGuard<'_, Slots<K>> {
    // No code panics with the lock held; a poisoned table is consistent.
    shard.slots.lock().ignore_poison()
}

impl<K> Breakers<K>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
{
    pub(super) fn new(
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
    pub(super) fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[crate::hash::shard_index(hash, self.mask)]
    }

    pub(super) fn make(&self, key: &K) -> Breaker {
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
    pub(super) fn get<Q>(&self, key: &Q) -> Option<Arc<Breaker>>
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
    pub(super) fn remove<Q>(&self, key: &Q) -> bool
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
    pub(super) fn insert(&self, key: &K) -> Option<Arc<Breaker>> {
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
    pub(super) fn get_or_insert(&self, key: &K) -> Arc<Breaker> {
        match self.insert(key) {
            Some(breaker) => breaker,
            None => self.full(key),
        }
    }

    #[cold]
    pub(super) fn full(&self, key: &K) -> Arc<Breaker> {
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
pub(super) fn evict_one<K>(table: &mut HashTable<Entry<K>>) -> bool {
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
