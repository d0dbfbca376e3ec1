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
//! grow, the shard drops the keys idle for at least [`IDLE_GRACE`]; when a
//! shard reaches its share of `max_keys`, it drops every idle key (only
//! that shard is locked, for one pass over it). So the store holds at most
//! `max_keys` keys, and memory follows the keys that are active, not every
//! key ever seen. When a shard is full of keys that are all still active,
//! a new key either takes the place of the key nearest to full among
//! [`EVICTION_SAMPLES`] of the shard (the default, see
//! [`make_room`](Store::make_room)), or is refused ([`Full`]); never is it
//! admitted without a limit.
//!
//! The grace keeps a steady set of keys whose buckets refill between their
//! requests (a generous quota) from churning: dropped at every sweep, each
//! would come straight back, paying an insert under the write lock, and
//! the table would never grow to hold them.
//!
//! # The crate's other key tables
//!
//! Every per-key table in the crate picks its shard the same way
//! ([`crate::hash::shard_index`]), and this store is the one that holds
//! limits. Three others keep their own table, because what they may forget
//! differs from what this one may:
//!
//! * per-key circuit breakers (`circuit_breaker::per_key`): an entry is a
//!   shared breaker that calls hold while they run, and an open breaker
//!   must never be forgotten (that would close it); eviction is least
//!   recently used among closed breakers nobody holds, where this store
//!   forgets by a key's debt;
//! * adaptive per-key statistics (`adaptive::per_key`): moving averages
//!   that are worth keeping only for active keys; two generations per
//!   shard, the older dropped whole, cost nothing per request and lose
//!   nothing a limit depends on (the limit itself lives here);
//! * the monitor's key rows (`observe::monitor`): fixed-size rows updated
//!   without a lock on the request path, evicted by recency in a small
//!   set, where a lost row loses figures, never a limit.

use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use hashbrown::{DefaultHashBuilder, HashTable};

use crate::gcra::{CellSet, Gcra, Params};
use crate::policy::MAX_QUOTAS;
use crate::policy::Policy;
use crate::util::IgnorePoison;

/// How long a key must have been idle before a sweep made to avoid growing
/// a table forgets it (a full shard forgets every idle key at once).
pub(crate) const IDLE_GRACE: u64 = 1_000_000_000;

/// How many keys a full shard looks at to choose the one a new key
/// replaces (the one nearest to full).
pub(crate) const EVICTION_SAMPLES: usize = 8;

/// How many buckets a full shard probes at most for those keys (they are
/// skipped only when they have requests in flight): beyond, it refuses.
const EVICTION_PROBES: usize = 64 * EVICTION_SAMPLES;

/// One key's state, borrowed from the store: its first quota's cell, and
/// the block of the other quotas and the in-flight count when its policy
/// needs one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyState<'a> {
    first: &'a Gcra,
    extra: Option<&'a Arc<Extra>>,
}

/// State that only policies with several quotas or an in-flight cap need.
#[derive(Debug, Default)]
pub(crate) struct Extra {
    cells: [Gcra; MAX_QUOTAS - 1],
    pub(crate) in_flight: AtomicU32,
}

impl Extra {
    /// Whether forgetting this block would change no decision, and its
    /// buckets have been full since `since` at least.
    fn is_idle(self: &Arc<Self>, since: u64) -> bool {
        self.is_free() && self.cells.iter().all(|c| c.tat() <= since)
    }

    /// Whether no request holds this block (none in flight): forgetting it
    /// loosens no in-flight cap.
    fn is_free(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && self.in_flight.load(Ordering::Relaxed) == 0
    }

    fn busy_for(&self, now: u64) -> u64 {
        let tat = self.cells.iter().map(Gcra::tat).max().unwrap_or(0);
        tat.saturating_sub(now)
    }
}

/// The state of a key the store does not hold: full buckets.
#[derive(Debug)]
pub(crate) struct Fresh {
    first: Gcra,
    extra: Option<Arc<Extra>>,
}

impl Fresh {
    pub(crate) fn for_policy(policy: &Policy) -> Self {
        Fresh {
            first: Gcra::new(),
            extra: needs_extra(policy).then(Default::default),
        }
    }

    pub(crate) fn state(&self) -> KeyState<'_> {
        KeyState {
            first: &self.first,
            extra: self.extra.as_ref(),
        }
    }
}

impl<'a> KeyState<'a> {
    /// Nanoseconds until the key is idle, counting buckets only.
    fn busy_for(&self, now: u64) -> u64 {
        let extra = self.extra.map_or(0, |e| e.busy_for(now));
        self.first.tat().saturating_sub(now).max(extra)
    }

    #[inline]
    pub(crate) fn first(&self) -> &'a Gcra {
        self.first
    }

    #[inline]
    pub(crate) fn extra(&self) -> Option<&'a Arc<Extra>> {
        self.extra
    }

    /// The cells of this state under `policy`, on a clock whose origin is
    /// `utc` nanoseconds after the epoch (for calendar quotas).
    #[inline]
    pub(crate) fn cells(&self, policy: &'a Policy, utc: u64) -> KeyCells<'a> {
        KeyCells {
            state: *self,
            policy,
            utc,
        }
    }
}

#[inline]
fn needs_extra(policy: &Policy) -> bool {
    policy.len() > 1 || policy.in_flight_limit().is_some()
}

/// A key's cells paired with its policy's parameters.
pub(crate) struct KeyCells<'a> {
    state: KeyState<'a>,
    policy: &'a Policy,
    utc: u64,
}

impl CellSet for KeyCells<'_> {
    #[inline]
    fn len(&self) -> usize {
        self.policy.len()
    }

    #[inline]
    fn cell(&self, i: usize) -> (Params, &Gcra) {
        let cell = match i {
            0 => self.state.first,
            _ => &self.state.extra.expect("state fits the policy").cells[i - 1],
        };
        (self.policy.params(i).at_utc(self.utc), cell)
    }
}

/// A key and its first quota's cell: 16 bytes for a `u64` key.
struct Entry<K> {
    key: K,
    first: Gcra,
}

/// A key's other quotas and in-flight count, for policies that need them.
struct ExtraEntry<K> {
    key: K,
    extra: Arc<Extra>,
}

/// One shard's keys: every key in `main`; keys whose policy has several
/// quotas or an in-flight cap also in `extra`. Each table is evicted on its
/// own: forgetting an idle cell changes no decision, whatever the other
/// table holds for the key.
struct Tables<K> {
    main: HashTable<Entry<K>>,
    extra: HashTable<ExtraEntry<K>>,
}

/// Cache-line aligned so shards do not share lines.
#[repr(align(128))]
struct Shard<K> {
    tables: RwLock<Tables<K>>,
    /// No key of this shard can be idle before this time (clock ns), so
    /// sweeping earlier frees nothing. Written under the write lock.
    idle_at: AtomicU64,
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
    /// A new key of a full shard replaces the key nearest to full (else it
    /// is refused).
    evict: AtomicBool,
}

impl<K> Store<K> {
    /// The most keys the store will hold.
    pub(crate) fn max_keys(&self) -> usize {
        self.shard_cap * self.shards.len()
    }

    /// Whether a new key of a full shard replaces the key nearest to full
    /// (`true`, the default) or is refused.
    pub(crate) fn evicts(&self) -> bool {
        self.evict.load(Ordering::Relaxed)
    }

    /// See [`evicts`](Self::evicts).
    pub(crate) fn set_evicts(&self, evict: bool) {
        self.evict.store(evict, Ordering::Relaxed);
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
                    tables: RwLock::new(Tables {
                        main: HashTable::new(),
                        extra: HashTable::new(),
                    }),
                    idle_at: AtomicU64::new(0),
                })
                .collect(),
            hasher: DefaultHashBuilder::default(),
            shard_cap: max_keys / shards,
            mask: shards - 1,
            evict: AtomicBool::new(true),
        }
    }

    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[crate::hash::shard_index(hash, self.mask)]
    }

    /// Runs `f` on the key's state, creating it for `policy` if needed.
    /// `None` when `create` is false and the key is unknown.
    ///
    /// A known key is the hot path (a read lock, one probe, `f`), kept
    /// small so that it stays in the instruction cache of a busy server;
    /// inserting, sweeping and refusing are [`insert`](Self::insert),
    /// except a new key of a shard that is full and cannot have an idle
    /// key yet: refused under the same read lock.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        key: &K,
        policy: &Policy,
        now: u64,
        create: bool,
        f: impl FnOnce(&KeyState<'_>) -> R,
    ) -> Result<Option<R>, Full>
    where
        K: Clone,
    {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard(hash);
        let extra = needs_extra(policy);
        {
            let tables = shard.tables.read().ignore_poison();
            if let Some(e) = tables.main.find(hash, |e| e.key == *key) {
                if !extra {
                    return Ok(Some(f(&KeyState {
                        first: &e.first,
                        extra: None,
                    })));
                }
                if let Some(x) = tables.extra.find(hash, |x| x.key == *key) {
                    return Ok(Some(f(&KeyState {
                        first: &e.first,
                        extra: Some(&x.extra),
                    })));
                }
            } else if !create {
                return Ok(None);
            } else if tables.main.len() >= self.shard_cap && !self.evicts() {
                // Full, and no key can have turned idle since the last
                // sweep: refuse without the write lock or another sweep.
                let idle_at = shard.idle_at.load(Ordering::Relaxed);
                if now < idle_at {
                    return Err(Full {
                        retry_after: idle_at - now,
                    });
                }
            }
        }
        self.insert(hash, key, policy, now, f)
    }

    /// The rest of [`with`](Self::with): a key (or its block) to insert,
    /// under the shard's write lock, sweeping idle keys before the table
    /// grows and refusing when the shard is full of active keys.
    #[cold]
    #[inline(never)]
    fn insert<R>(
        &self,
        hash: u64,
        key: &K,
        policy: &Policy,
        now: u64,
        f: impl FnOnce(&KeyState<'_>) -> R,
    ) -> Result<Option<R>, Full>
    where
        K: Clone,
    {
        let shard = self.shard(hash);
        let extra = needs_extra(policy);
        let mut guard = shard.tables.write().ignore_poison();
        let tables = &mut *guard;
        let hasher = &self.hasher;
        let known = tables.main.find(hash, |e| e.key == *key).is_some();
        // No room for the key (or its block) within `max_keys`.
        let full = |t: &Tables<K>| {
            (!known && t.main.len() >= self.shard_cap) || (extra && t.extra.len() >= self.shard_cap)
        };
        let grows = |t: &Tables<K>| {
            (!known && t.main.len() == t.main.capacity())
                || (extra && t.extra.len() == t.extra.capacity())
        };
        // Full: the key nearest to full among a few gives its place (when
        // the store evicts), with no sweep: during a flood of new keys a
        // sweep would run at nearly every insert, as keys keep turning idle.
        let made_room = full(tables)
            && self.evicts()
            && Self::make_room(
                tables,
                hash ^ now,
                now,
                !known && tables.main.len() >= self.shard_cap,
                extra,
                self.shard_cap,
                hasher,
            );
        let is_full = full(tables);
        if is_full || (!made_room && grows(tables)) {
            // Forget idle keys before refusing (all of them) or growing
            // (those idle for a while: the others would be back soon),
            // unless none can be idle yet.
            if now >= shard.idle_at.load(Ordering::Relaxed) {
                let grace = if is_full { 0 } else { IDLE_GRACE };
                let busy = Self::sweep(tables, now, grace, hasher);
                shard
                    .idle_at
                    .store(now.saturating_add(busy), Ordering::Relaxed);
            }
            if full(tables) {
                let idle_at = shard.idle_at.load(Ordering::Relaxed);
                return Err(Full {
                    retry_after: idle_at.saturating_sub(now).max(1),
                });
            }
            // Mostly active: grow now, so the next sweep is twice as far
            // away and sweeping stays O(1) per insert.
            let (main, extras) = (&mut tables.main, &mut tables.extra);
            if main.len() * 2 > main.capacity() {
                let more = main.len().min(self.shard_cap - main.len());
                main.reserve(more, |e| hasher.hash_one(&e.key));
            }
            if extra && extras.len() * 2 > extras.capacity() {
                let more = extras.len().min(self.shard_cap - extras.len());
                extras.reserve(more, |x| hasher.hash_one(&x.key));
            }
        }
        let first = &find_or_insert(
            &mut tables.main,
            hash,
            key,
            hasher,
            |e| &e.key,
            || Entry {
                key: key.clone(),
                first: Gcra::new(),
            },
        )
        .first;
        let block = if extra {
            // The key's policy has several quotas or a cap (perhaps since a
            // change of policy): its block, kept or new. The first quota
            // keeps its debt either way.
            let x = find_or_insert(
                &mut tables.extra,
                hash,
                key,
                hasher,
                |x| &x.key,
                || ExtraEntry {
                    key: key.clone(),
                    extra: Default::default(),
                },
            );
            Some(&x.extra)
        } else {
            None
        };
        let state = KeyState {
            first,
            extra: block,
        };
        let out = f(&state);
        // A new key may turn idle before every other key of the shard.
        shard
            .idle_at
            .fetch_min(now.saturating_add(state.busy_for(now)), Ordering::Relaxed);
        Ok(Some(out))
    }

    /// The address of the lock of `key`'s shard: several keys' states are
    /// held at once (see [`crate::limits`]) by taking their shards' locks
    /// in this order.
    pub(crate) fn lock_addr(&self, key: &K) -> usize {
        std::ptr::from_ref(&self.shard(self.hasher.hash_one(key)).tables) as usize
    }

    /// Runs `f` on the state of a key the store holds, for a caller that
    /// already holds a read lock of the key's shard: never blocks (a
    /// recursive read could wait for a queued writer that waits for the
    /// caller) and never inserts. `None` when the lock is not free to take
    /// or the key (or its block) is not held.
    pub(crate) fn try_with<R>(
        &self,
        key: &K,
        policy: &Policy,
        f: impl FnOnce(&KeyState<'_>) -> R,
    ) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        let tables = match self.shard(hash).tables.try_read() {
            Ok(tables) => tables,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        let e = tables.main.find(hash, |e| e.key == *key)?;
        let extra = if needs_extra(policy) {
            Some(&tables.extra.find(hash, |x| x.key == *key)?.extra)
        } else {
            None
        };
        Some(f(&KeyState {
            first: &e.first,
            extra,
        }))
    }

    /// Forgets keys of a full shard to make room for one more key
    /// (`main`: in the main table; `extra`: a block too, if that table is
    /// full). Each is the key nearest to full (the least time until its
    /// buckets are full again) among [`EVICTION_SAMPLES`] keys with nothing
    /// in flight (all of a table holding fewer), found in neighbouring
    /// buckets from a place `seed` picks; when fewer are found within
    /// [`EVICTION_PROBES`] buckets, none is forgotten unless one found is
    /// idle. The key forgotten owed no more than any other key looked at,
    /// and regains what it owed: at most one burst of each quota. Returns
    /// whether there is room now.
    #[cold]
    #[inline(never)]
    fn make_room(
        tables: &mut Tables<K>,
        seed: u64,
        now: u64,
        main: bool,
        extra: bool,
        cap: usize,
        hasher: &DefaultHashBuilder,
    ) -> bool {
        let seed = crate::hash::spread(seed);
        if main {
            let victim = {
                let (main, blocks) = (&tables.main, &tables.extra);
                pick(main, seed, |e| {
                    let debt = e.first.tat().saturating_sub(now);
                    if blocks.is_empty() {
                        return Some(debt);
                    }
                    let hash = hasher.hash_one(&e.key);
                    match blocks.find(hash, |x| x.key == e.key) {
                        None => Some(debt),
                        Some(x) if x.extra.is_free() => Some(debt.max(x.extra.busy_for(now))),
                        Some(_) => None,
                    }
                })
            };
            let Some(i) = victim else { return false };
            let Ok(entry) = tables.main.get_bucket_entry(i) else {
                return false;
            };
            let (gone, _) = entry.remove();
            let hash = hasher.hash_one(&gone.key);
            if let Ok(x) = tables.extra.find_entry(hash, |x| x.key == gone.key) {
                x.remove();
            }
            renew_if_worn(&mut tables.main, |e| hasher.hash_one(&e.key));
        }
        if extra && tables.extra.len() >= cap {
            let victim = {
                let (main, blocks) = (&tables.main, &tables.extra);
                pick(blocks, seed.rotate_left(32), |x| {
                    if !x.extra.is_free() {
                        return None;
                    }
                    let hash = hasher.hash_one(&x.key);
                    let first = main
                        .find(hash, |e| e.key == x.key)
                        .map_or(0, |e| e.first.tat().saturating_sub(now));
                    Some(first.max(x.extra.busy_for(now)))
                })
            };
            let Some(i) = victim else { return false };
            let Ok(entry) = tables.extra.get_bucket_entry(i) else {
                return false;
            };
            let (gone, _) = entry.remove();
            let hash = hasher.hash_one(&gone.key);
            if let Ok(e) = tables.main.find_entry(hash, |e| e.key == gone.key) {
                e.remove();
            }
        }
        renew_if_worn(&mut tables.extra, |x| hasher.hash_one(&x.key));
        true
    }

    /// Drops the cells of one shard idle for at least `grace`; returns how
    /// long until the next remaining one turns idle (0 if one already is).
    fn sweep(tables: &mut Tables<K>, now: u64, grace: u64, hasher: &DefaultHashBuilder) -> u64 {
        let since = now.saturating_sub(grace);
        let mut soonest = u64::MAX;
        tables.main.retain(|e| {
            let tat = e.first.tat();
            let keep = tat > since;
            if keep {
                soonest = soonest.min(tat.saturating_sub(now));
            }
            keep
        });
        tables.extra.retain(|x| {
            let idle = x.extra.is_idle(since);
            if !idle {
                // In flight but full buckets: may turn idle at any time.
                soonest = soonest.min(x.extra.busy_for(now).max(1));
            }
            !idle
        });
        let main = &mut tables.main;
        if main.capacity() > 2 * main.len() + 16 {
            main.shrink_to(main.len(), |e| hasher.hash_one(&e.key));
        }
        let extra = &mut tables.extra;
        if extra.capacity() > 2 * extra.len() + 16 {
            extra.shrink_to(extra.len(), |x| hasher.hash_one(&x.key));
        }
        soonest
    }

    /// Drops idle keys from every shard, one shard at a time.
    pub(crate) fn sweep_all(&self, now: u64) {
        for shard in self.shards.iter() {
            let mut tables = shard.tables.write().ignore_poison();
            let busy = Self::sweep(&mut tables, now, 0, &self.hasher);
            shard
                .idle_at
                .store(now.saturating_add(busy), Ordering::Relaxed);
        }
    }

    /// Keys held now.
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.tables.read().ignore_poison().main.len())
            .sum()
    }

    /// Bytes the tables have allocated now, plus the blocks of keys with
    /// several quotas or an in-flight cap (not what keys own on the heap).
    pub(crate) fn allocated_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let t = s.tables.read().ignore_poison();
                t.main.allocation_size()
                    + t.extra.allocation_size()
                    + t.extra.len() * std::mem::size_of::<(usize, usize, Extra)>()
            })
            .sum()
    }
}

/// The bucket of the entry with the least debt (by `debt`, `None` for an
/// entry that must stay) among the first [`EVICTION_SAMPLES`] entries that
/// may go (every entry of a smaller table), probing at most
/// [`EVICTION_PROBES`] buckets from one `seed` picks. `None` when too few
/// were found, unless one found owes nothing.
fn pick<T>(table: &HashTable<T>, seed: u64, debt: impl Fn(&T) -> Option<u64>) -> Option<usize> {
    let buckets = table.num_buckets();
    let wanted = EVICTION_SAMPLES.min(table.len());
    if buckets == 0 || wanted == 0 {
        return None;
    }
    // A power of two.
    let mask = buckets - 1;
    let start = seed as usize & mask;
    let mut best: Option<(u64, usize)> = None;
    let mut seen = 0;
    for step in 0..buckets.min(EVICTION_PROBES) {
        let i = (start + step) & mask;
        let Some(d) = table.get_bucket(i).and_then(&debt) else {
            continue;
        };
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, i));
            if d == 0 {
                // Idle: none can be nearer to full.
                break;
            }
        }
        seen += 1;
        if seen == wanted {
            break;
        }
    }
    match best {
        Some((d, i)) if d == 0 || seen == wanted => Some(i),
        _ => None,
    }
}

/// Rebuilds `table` at its size when removals have left it no room to
/// insert without growing (a removal may leave a tombstone that takes a
/// slot until the table is rebuilt; hashbrown would rebuild a table more
/// than half full at twice the size). One pass over the table, after as
/// many removals as the table had spare slots.
#[cold]
fn renew_if_worn<T>(table: &mut HashTable<T>, hash: impl Fn(&T) -> u64) {
    if table.capacity() > table.len() {
        return;
    }
    let mut fresh = HashTable::with_capacity(table.len() + 1);
    for entry in table.drain() {
        fresh.insert_unique(hash(&entry), entry, &hash);
    }
    *table = fresh;
}

/// The entry of `key` in `table`, inserted with `make` when missing.
#[inline]
fn find_or_insert<'t, K: Hash + Eq, T>(
    table: &'t mut HashTable<T>,
    hash: u64,
    key: &K,
    hasher: &DefaultHashBuilder,
    key_of: impl Fn(&T) -> &K,
    make: impl FnOnce() -> T,
) -> &'t mut T {
    match table.entry(hash, |e| key_of(e) == key, |e| hasher.hash_one(key_of(e))) {
        hashbrown::hash_table::Entry::Occupied(e) => e.into_mut(),
        hashbrown::hash_table::Entry::Vacant(v) => v.insert(make()).into_mut(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::quota::Quota;

    /// Keys spread evenly over the shards, IPv4 addresses of one range
    /// included, whatever the hasher's random seed: 1 000 keys over 16
    /// shards (62.5 each on average, at most about 95 in 1 000 stores if
    /// spread at random) never put 110 in one, let alone the 125 that
    /// would fill it and refuse keys long before `max_keys`.
    #[test]
    fn keys_spread_evenly_over_shards() {
        let policy = Policy::new(Quota::per_hour(1_000_000_000));
        // Kept alive, so that each store is built at another address (the
        // hasher's seed may depend on it).
        let mut stores = Vec::new();
        for _ in 0..1_000 {
            stores.push(Store::<IpAddr>::new(2_000));
            let store = stores.last().unwrap();
            assert_eq!(store.shards.len(), 16);
            for i in 0..1_000u32 {
                let ip = IpAddr::V4(Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8));
                // Busy for an hour, so that no sweep forgets it.
                let inserted = store.with(&ip, &policy, 0, true, |state| {
                    state.first().claim();
                    state.first().release(3_600_000_000_000);
                });
                assert!(matches!(inserted, Ok(Some(()))), "key {i} refused");
            }
            let most = store
                .shards
                .iter()
                .map(|s| s.tables.read().unwrap().main.len())
                .max();
            assert!(most < Some(110), "{most:?} keys in one shard");
        }
    }
}
