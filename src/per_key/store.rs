//! The bounded, sharded store of per-key state.
//!
//! Keys hash to one of a fixed number of shards, each a `hashbrown` table
//! behind its own `RwLock`: a known key is a read lock and atomics, with no
//! global lock anywhere. A key's state is its GCRA `tat` (8 bytes) inline,
//! plus a shared block for policies with several quotas or an in-flight
//! cap.
//!
//! # Memory bound
//!
//! A key is *idle* when its buckets are full again and it has nothing in
//! flight: forgetting it changes no decision. Before a shard's table would
//! grow, and whenever a shard reaches its share of `max_keys`, the shard
//! drops its idle keys (only that shard is locked, for one pass over it).
//! So the store holds at most `max_keys` keys, and memory follows the keys
//! that are active, not every key ever seen. When a shard is full of keys
//! that are all still active, a new key is refused ([`Full`]) rather than
//! admitted without a limit or by forgetting another key's debt.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::policy::MAX_QUOTAS;
use crate::gcra::{CellSet, Gcra, Params};
use crate::per_key::Policy;

/// One key's state.
#[derive(Debug, Default)]
pub(crate) struct KeyState {
    first: Gcra,
    extra: Option<Arc<Extra>>,
}

/// State that only policies with several quotas or an in-flight cap need.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    cells: [Gcra; MAX_QUOTAS - 1],
    pub(crate) in_flight: AtomicU32,
}

impl KeyState {
    pub(crate) fn for_policy(policy: &Policy) -> Self {
        KeyState {
            first: Gcra::new(),
            extra: needs_extra(policy).then(Default::default),
        }
    }

    /// Whether forgetting this key would change no decision.
    fn is_idle(&self, now: u64) -> bool {
        self.first.tat() <= now
            && self.extra.as_ref().is_none_or(|e| {
                Arc::strong_count(e) == 1
                    && e.in_flight.load(Ordering::Relaxed) == 0
                    && e.cells.iter().all(|c| c.tat() <= now)
            })
    }

    /// Nanoseconds until the key is idle, counting buckets only.
    fn busy_for(&self, now: u64) -> u64 {
        let extra = self
            .extra
            .as_ref()
            .map_or(0, |e| e.cells.iter().map(Gcra::tat).max().unwrap_or(0));
        self.first.tat().max(extra).saturating_sub(now)
    }

    /// Whether this state can serve `policy` (its shape may have changed
    /// since the key was created).
    #[inline]
    pub(crate) fn fits(&self, policy: &Policy) -> bool {
        self.extra.is_some() || !needs_extra(policy)
    }

    pub(crate) fn extra(&self) -> Option<&Arc<Extra>> {
        self.extra.as_ref()
    }

    /// The cells of this state under `policy`.
    #[inline]
    pub(crate) fn cells<'a>(&'a self, policy: &'a Policy) -> KeyCells<'a> {
        KeyCells {
            state: self,
            policy,
        }
    }
}

fn needs_extra(policy: &Policy) -> bool {
    policy.len() > 1 || policy.in_flight_limit().is_some()
}

/// A key's cells paired with its policy's parameters.
pub(crate) struct KeyCells<'a> {
    state: &'a KeyState,
    policy: &'a Policy,
}

impl CellSet for KeyCells<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.policy.len()
    }

    #[inline]
    fn cell(&self, i: usize) -> (&Params, &Gcra) {
        let cell = match i {
            0 => &self.state.first,
            _ => {
                &self
                    .state
                    .extra
                    .as_ref()
                    .expect("state fits the policy")
                    .cells[i - 1]
            }
        };
        (self.policy.params(i), cell)
    }
}

struct Entry<K> {
    key: K,
    state: KeyState,
}

/// Cache-line aligned so shards do not share lines.
#[repr(align(128))]
struct Shard<K> {
    table: RwLock<HashTable<Entry<K>>>,
}

/// A new key was refused: its shard is full of keys that are all active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full {
    /// Nanoseconds until the first key of that shard turns idle.
    pub(crate) retry_after: u64,
}

pub(crate) struct Store<K> {
    shards: Box<[Shard<K>]>,
    hasher: DefaultHashBuilder,
    shard_cap: usize,
    mask: usize,
}

impl<K> Store<K> {
    /// The most keys the store will hold.
    pub(crate) fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }
}

impl<K: Hash + Eq> Store<K> {
    /// A store for at most `max_keys` keys (at least 1).
    pub(crate) fn new(max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        // Enough shards to keep contention low, few enough that each holds
        // a fair share (at least 64 keys) of `max_keys`: a power of two.
        let wanted = (max_keys / 64).clamp(1, 64);
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        Store {
            shards: (0..shards)
                .map(|_| Shard {
                    table: RwLock::new(HashTable::new()),
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            shard_cap: max_keys / shards,
            mask: shards - 1,
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        // Bits 40.. pick the shard; hashbrown uses the low bits for the
        // bucket and the top 7 for its tags, so they stay independent.
        &self.shards[(hash >> 40) as usize & self.mask]
    }

    /// Runs `f` on the key's state, creating it for `policy` if needed.
    /// `None` when `create` is false and the key is unknown.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        key: &K,
        policy: &Policy,
        now: u64,
        create: bool,
        f: impl FnOnce(&KeyState) -> R,
    ) -> Result<Option<R>, Full>
    where
        K: Clone,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        {
            let table = shard.table.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = table.find(hash, |e| e.key == *key) {
                if e.state.fits(policy) {
                    return Ok(Some(f(&e.state)));
                }
            } else if !create {
                return Ok(None);
            }
        }
        let mut table = shard.table.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = table.find_mut(hash, |e| e.key == *key) {
            if !e.state.fits(policy) {
                // The key's policy gained quotas or a cap: add the block,
                // keeping the debt of its first quota.
                e.state.extra = Some(Default::default());
            }
            return Ok(Some(f(&e.state)));
        }
        let hasher = &self.hasher;
        if table.len() >= self.shard_cap || table.len() == table.capacity() {
            // Forget idle keys before growing (or refusing).
            let busy = Self::sweep(&mut table, now, hasher);
            if table.len() >= self.shard_cap {
                return Err(Full { retry_after: busy });
            }
            if table.len() * 2 > table.capacity() {
                // Mostly active: grow now, so the next sweep is twice as
                // far away and sweeping stays O(1) per insert.
                let more = table.len().min(self.shard_cap - table.len());
                table.reserve(more, |e| hasher.hash_one(&e.key));
            }
        }
        let entry = table.insert_unique(
            hash,
            Entry {
                key: key.clone(),
                state: KeyState::for_policy(policy),
            },
            |e| hasher.hash_one(&e.key),
        );
        Ok(Some(f(&entry.get().state)))
    }

    /// Drops the idle keys of one shard; returns how long until the next
    /// remaining key turns idle.
    fn sweep(table: &mut HashTable<Entry<K>>, now: u64, hasher: &DefaultHashBuilder) -> u64 {
        let mut soonest = u64::MAX;
        table.retain(|e| {
            let idle = e.state.is_idle(now);
            if !idle {
                soonest = soonest.min(e.state.busy_for(now).max(1));
            }
            !idle
        });
        if table.capacity() > 2 * table.len() + 16 {
            table.shrink_to(table.len(), |e| hasher.hash_one(&e.key));
        }
        soonest
    }

    /// Drops idle keys from every shard, one shard at a time.
    pub(crate) fn sweep_all(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut table = shard.table.write().unwrap_or_else(|e| e.into_inner());
            Self::sweep(&mut table, now, &self.hasher);
        }
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.table.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Slots allocated now (each is one key's entry plus a control byte).
    pub(crate) fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.table.read().unwrap_or_else(|e| e.into_inner()).capacity())
            .sum()
    }

    /// Bytes of one entry in the table.
    pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry<K>>() + 1;
}
