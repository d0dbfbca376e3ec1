use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Acquire, Admitted, Backend, Charged, Grant, Never, QuotaStates, Refund};
use crate::BoxError;
use crate::clock::Clock;
use crate::cost::Charge;
use crate::error::{RateLimited, TooManyInFlight, TooManyKeys};
use crate::gcra::{self, CellSet, Decision};
use crate::policy::Policy;
mod store;

use self::store::{Extra, Fresh, Full, KeyState, Store};

/// The in-memory backend: a bounded, sharded map from key to GCRA state.
///
/// Decisions are synchronous: a read lock on one shard and a
/// compare-exchange per quota, with no allocation for a known key. See
/// [`max_keys`](Self::new) for the memory bound.
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::Memory;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// // The default backend, with a bound of 50 000 keys instead of 100 000.
/// let layer = PerKeyLayer::new(Quota::per_minute(60), |ip: &std::net::IpAddr| Some(*ip))
///     .backend(Memory::<std::net::IpAddr>::new(50_000));
/// # let _ = layer;
/// ```
pub struct Memory<K> {
    /// Shared so that a delayed grant can give its slot back later.
    shared: Arc<Shared<K>>,
}

struct Shared<K> {
    clock: Clock,
    store: Store<K>,
}

/// What the in-memory store does with a new key when it already holds
/// `max_keys` keys and none of them is idle: for example during a flood of
/// unique keys taken from a header any client can set. Set with
/// [`Memory::full_store`] or [`PerKeyLayer::full_store`](crate::PerKeyLayer::full_store).
///
/// Idle keys (buckets full again, nothing in flight) make room first
/// either way: forgetting them changes no decision. Either way the store
/// never holds more than `max_keys` keys, and no request is admitted
/// without a limit.
///
/// # The trade
///
/// [`EvictNearestFull`](Self::EvictNearestFull), the default, keeps
/// serving new clients during a flood, and lets a key that is pushed out
/// regain what it owed. [`Refuse`](Self::Refuse) never forgets a debt, but
/// while the store is full of active keys, every new key is refused with
/// [`TooManyKeys`] (HTTP 429): whoever can send many unique keys locks out
/// every new client until its keys turn idle.
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::{FullStore, Memory};
///
/// // Keys are authenticated user ids: a full store refuses new users
/// // rather than forget any user's debt.
/// let store = Memory::<u64>::new(100_000).full_store(FullStore::Refuse);
/// assert_eq!(store.full_store_policy(), FullStore::Refuse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FullStore {
    /// A new key takes the place of the key nearest to full.
    ///
    /// The store is split into shards (up to 64), each holding its share of
    /// `max_keys`. A new key of a full shard looks at 8 keys of that shard
    /// (all of them in a shard of fewer; neighbours in its table, from a
    /// random place; keys with a request in flight are passed over, so
    /// in-flight caps hold) and takes the place of the one nearest to full:
    /// the least time until its buckets are full again, which is its debt
    /// (what it spent and has not earned back yet). An idle key, owing
    /// nothing, goes at once.
    ///
    /// What a key can gain: a key that is pushed out starts again, if it
    /// comes back, with full buckets, so it regains exactly its debt at
    /// that moment: at most one burst of each of its quotas (plus what its
    /// requests waiting for their turn had reserved, with
    /// [`max_wait`](crate::PerKeyLayer::max_wait)). And it is pushed out
    /// only if none of the other 7 keys looked at owed less, so:
    ///
    /// - the 7 keys of a shard that owe the most (all but one in a shard of
    ///   fewer than 8 keys) are never pushed out;
    /// - a flood of unique keys that spent one request each owes at most
    ///   one request's worth per key: when a flood key is among the 8
    ///   looked at, the key pushed out owed no more than that, so it
    ///   regains at most one request of each quota. A key over its limit
    ///   can lose its place only when all 8 keys looked at owe at least as
    ///   much: to push such keys out, a flood has to spend as much on its
    ///   own keys.
    ///
    /// When 8 keys without a request in flight cannot be found nearby (a
    /// shard whose keys nearly all have requests in flight), and none found
    /// is idle, the new key is refused as with [`Refuse`](Self::Refuse).
    #[default]
    EvictNearestFull,
    /// A new key is refused with [`TooManyKeys`] until a key of its shard
    /// turns idle; no key's debt is ever forgotten while it is active.
    Refuse,
}

/// A request's slot among its key's requests in flight; freed on drop.
///
/// It lives inside a [`Grant`](super::Grant) and the response future; it is
/// not made or used directly.
pub struct InFlight(Arc<Extra>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InFlight")
            .field(&self.0.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K: Hash + Eq + Clone> Memory<K> {
    /// A store for at most `max_keys` keys.
    ///
    /// Idle keys (their buckets full again, nothing in flight) are dropped
    /// before a shard grows, once idle for a second (a key used again
    /// within that second would only come straight back: a steady set of
    /// keys with a generous quota stays put instead of being dropped and
    /// re-inserted over and over), so memory follows the active keys. A
    /// shard that reaches its share of `max_keys` drops every idle key;
    /// when its keys are all active, a new key takes the place of the key
    /// nearest to full among a few (see [`full_store`](Self::full_store)
    /// for the trade, and the option to refuse new keys instead), never
    /// admitted without a limit. A key costs `size_of::<K>() + 9` bytes in its table slot (16 bytes
    /// for a `u64` key, plus one control byte), at hashbrown's load factor,
    /// plus whatever `K` owns on the heap; keys whose policy has several
    /// quotas or an in-flight cap also hold a shared block of about 64
    /// bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::Memory;
    ///
    /// let store = Memory::<u64>::new(100_000);
    /// assert!(store.is_empty());
    /// assert!(store.max_keys() <= 100_000); // rounded to whole shards
    /// ```
    pub fn new(max_keys: usize) -> Self {
        Memory {
            shared: Arc::new(Shared {
                clock: Clock::new(),
                store: Store::new(max_keys),
            }),
        }
    }

    /// What the store does with a new key when it holds `max_keys` keys
    /// that are all active: by default ([`FullStore::EvictNearestFull`]) it
    /// forgets the key nearest to full among 8, so new clients are served
    /// during a flood of unique keys, and the key forgotten regains at most
    /// its debt (at most one burst, and only when none of the 7 other keys
    /// looked at owed less); with [`FullStore::Refuse`] it refuses the new
    /// key with [`TooManyKeys`] and forgets no debt. Memory stays bounded
    /// by `max_keys` either way. See [`FullStore`] for the exact bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    /// use tower_sluice::backend::{Acquire, Backend, FullStore, Memory};
    /// use tower_sluice::error::TooManyKeys;
    /// use tower_sluice::per_key::Policy;
    ///
    /// let policy = Policy::new(Quota::per_day(1_000));
    /// for full in [FullStore::EvictNearestFull, FullStore::Refuse] {
    ///     let store = Memory::new(64).full_store(full);
    ///     for key in 0..64u64 {
    ///         let _ = store.acquire(&key, &policy, 1, Duration::ZERO);
    ///     }
    ///     // 64 active keys: a new one takes a place, or is refused.
    ///     let Acquire::Ready(new) = store.acquire(&64, &policy, 1, Duration::ZERO);
    ///     match full {
    ///         FullStore::Refuse => assert!(new.unwrap_err().is::<TooManyKeys>()),
    ///         _ => assert!(new.is_ok()),
    ///     }
    ///     assert!(store.len() <= 64);
    /// }
    /// ```
    #[must_use]
    pub fn full_store(self, full: FullStore) -> Self {
        self.set_full_store(full);
        self
    }

    /// As [`full_store`](Self::full_store), on a store already shared.
    pub(crate) fn set_full_store(&self, full: FullStore) {
        self.shared
            .store
            .set_evicts(full == FullStore::EvictNearestFull);
    }

    /// What the store does with a new key when it is full of active keys
    /// (see [`full_store`](Self::full_store)).
    pub fn full_store_policy(&self) -> FullStore {
        if self.shared.store.evicts() {
            FullStore::EvictNearestFull
        } else {
            FullStore::Refuse
        }
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shared.store.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys held at once: the `max_keys` given to
    /// [`new`](Self::new), rounded down to whole shards.
    pub fn max_keys(&self) -> usize {
        self.shared.store.max_keys()
    }

    /// Bytes allocated by the tables (not counting what keys own on the
    /// heap); the tables grow as keys arrive.
    pub fn table_bytes(&self) -> usize {
        self.shared.store.allocated_bytes()
    }

    /// Drops every idle key now (one shard at a time). Not needed for the
    /// memory bound, which holds on its own; useful to release memory after
    /// a burst of keys.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    /// use tower_sluice::backend::{Backend, Memory};
    /// use tower_sluice::per_key::Policy;
    ///
    /// let store = Memory::new(1_000);
    /// let policy = Policy::new(Quota::new(1, Duration::from_millis(10)));
    /// let _ = store.acquire(&"ann", &policy, 1, Duration::ZERO);
    /// std::thread::sleep(Duration::from_millis(20)); // ann's bucket is full again
    /// store.sweep();
    /// assert!(store.is_empty());
    /// ```
    pub fn sweep(&self) {
        self.shared.store.sweep_all(self.shared.clock.now());
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Memory<K> {
    /// The usage of each calendar quota of `key`'s policy (see
    /// [`PerKeyHandle::usage`](crate::per_key::PerKeyHandle::usage)).
    pub(crate) fn usage(&self, key: &K, policy: &Policy) -> Vec<crate::calendar::Usage> {
        let utc = self.shared.clock.utc();
        Backend::states(self, key, policy)
            .iter()
            .filter_map(|d| d.calendar_usage(utc))
            .collect()
    }

    /// [`Backend::settle`] for a policy of one quota: its one cell,
    /// reading the clock only for a debt (a refund never creates the key).
    /// A policy of requests has nothing to settle.
    fn settle_one(&self, key: &K, policy: &Policy, charged: Charged, true_cost: u32) {
        let p = policy.params(0);
        if !p.quota.unit_id().is_cost() {
            return;
        }
        // A calendar cell needs the clock's origin; a rolling one is read
        // in place.
        let at_utc;
        let p = match p.calendar() {
            Some(_) => {
                at_utc = p.at_utc(self.shared.clock.utc());
                &at_utc
            }
            None => p,
        };
        let debt = true_cost > charged.estimate;
        let now = if debt { self.shared.clock.now() } else { 0 };
        let _ = self.shared.store.with(key, policy, now, debt, |state| {
            let stamp = Some(charged.stamps[0]);
            gcra::settle_cell(p, state.first(), stamp, charged.estimate, true_cost, now);
        });
    }

    /// The address of the lock of `key`'s shard (see [`crate::limits`]).
    pub(crate) fn lock_addr(&self, key: &K) -> usize {
        self.shared.store.lock_addr(key)
    }

    /// Inserts `key` if it is unknown, charging nothing.
    pub(crate) fn insert(&self, key: &K, policy: &Policy) {
        let now = self.shared.clock.now();
        let _ = self.shared.store.with(key, policy, now, true, |_| ());
    }

    /// Lends `key`'s cells to `f` while its shard's lock is held (see
    /// [`crate::limits`]). `nested`: this thread already holds that lock,
    /// so it is only tried. `create`: insert an unknown key (otherwise `f`
    /// sees full buckets).
    pub(crate) fn visit(
        &self,
        key: &K,
        policy: &Policy,
        nested: bool,
        create: bool,
        mut f: impl FnMut(&dyn CellSet, u64),
    ) -> Result<(), super::Abort> {
        use super::Abort;
        let now = self.shared.clock.now();
        let utc = self.shared.clock.utc();
        let mut run = |state: &KeyState<'_>| f(&state.cells(policy, utc), now);
        if nested {
            return self
                .shared
                .store
                .try_with(key, policy, &mut run)
                .ok_or(Abort::Retry);
        }
        match self.shared.store.with(key, policy, now, create, &mut run) {
            Ok(Some(())) => Ok(()),
            Ok(None) => {
                run(&Fresh::for_policy(policy).state());
                Ok(())
            }
            Err(full) => Err(Abort::Full(TooManyKeys::new(
                self.shared.store.max_keys(),
                Duration::from_nanos(full.retry_after),
            ))),
        }
    }

    /// What [`acquire_now`](Backend::acquire_now) leaves: a request of a
    /// one-quota policy that waits, is denied, or finds the store full.
    #[cold]
    #[inline(never)]
    fn simple_rest(
        &self,
        key: &K,
        policy: &Policy,
        now: u64,
        charge: Charge,
        reserved: Result<Option<Reservation>, Full>,
    ) -> Result<Grant, BoxError> {
        match reserved {
            Ok(Some(reserved)) => {
                let verdict = single(policy.first_params(), now, charge, reserved);
                self.grant(key, policy, charge, verdict)
            }
            Ok(None) => unreachable!("a key is inserted when it is charged"),
            Err(full) => Err(self.full(full)),
        }
    }

    #[cold]
    fn full(&self, full: Full) -> BoxError {
        TooManyKeys::new(
            self.shared.store.max_keys(),
            Duration::from_nanos(full.retry_after),
        )
        .into()
    }

    #[inline(never)]
    fn decide(
        &self,
        key: &K,
        policy: &Policy,
        charge: Charge,
        max_wait: u64,
        consume: bool,
    ) -> Result<Grant, BoxError> {
        let now = self.shared.clock.now();
        // One quota and no cap took `acquire_now`'s path.
        let utc = self.shared.clock.utc();
        let decided = self.shared.store.with(key, policy, now, consume, |state| {
            verdict(state, policy, utc, now, charge, max_wait, consume)
        });
        let verdict = match decided {
            Ok(Some(v)) => v,
            // An unknown key, peeked: its buckets are full.
            Ok(None) => verdict(
                &Fresh::for_policy(policy).state(),
                policy,
                utc,
                now,
                charge,
                0,
                false,
            ),
            Err(full) => return Err(self.full(full)),
        };
        self.grant(key, policy, charge, verdict)
    }

    /// The grant (or error) of a verdict; `charge` is what a waiting request
    /// gives back if it is never sent.
    fn grant(
        &self,
        key: &K,
        policy: &Policy,
        charge: Charge,
        verdict: Verdict,
    ) -> Result<Grant, BoxError> {
        match verdict {
            Verdict::Granted(d, 0, permit, stamps) => Ok(Grant::new(d, Duration::ZERO)
                .with_in_flight(permit)
                .with_charged(Charged::new(charge.cost, stamps))),
            Verdict::Granted(d, wait, permit, stamps) => {
                // A request that waits for its turn may be dropped before
                // it: it then gives back what it charged (the rare path
                // allocates its refund, as it allocates its timer).
                let refund = Refund::new(MemoryRefund {
                    shared: self.shared.clone(),
                    key: key.clone(),
                    policy: policy.clone(),
                    stamps,
                    charge,
                });
                Ok(Grant::new(d, Duration::from_nanos(wait))
                    .with_in_flight(permit)
                    .with_refund(refund)
                    .with_charged(Charged::new(charge.cost, stamps)))
            }
            Verdict::Denied(d) => Err(RateLimited::from_decision(&d)
                .with_policy(policy.name_arc())
                .into()),
            Verdict::InFlight(limit) => Err(TooManyInFlight::new(limit, policy.name_arc()).into()),
        }
    }
}

/// What one cell's [`reserve`](gcra::Gcra::reserve) gave: `(tat, wait)`,
/// or the `max(tat, now)` of a denial.
type Reservation = Result<(u64, u64), u64>;

/// The verdict of a policy of one quota and no in-flight cap, from its
/// cell's reservation.
fn single(p: &gcra::Params, now: u64, charge: Charge, reserved: Reservation) -> Verdict {
    match reserved {
        Ok((tat, wait)) => {
            let mut stamps = [0; gcra::INLINE_CELLS];
            stamps[0] = tat;
            Verdict::Granted(Decision::allowed(p, now, tat), wait, None, stamps)
        }
        Err(base) => Verdict::Denied(Decision::denied(p, now, base, p.inc(charge))),
    }
}

enum Verdict {
    /// The decision, the wait, the in-flight slot, and the `tat` written
    /// into each cell (to refund a request that is never sent).
    Granted(Decision, u64, Option<InFlight>, [u64; gcra::INLINE_CELLS]),
    Denied(Decision),
    InFlight(u32),
}

/// Decides for one key's state (under its shard's lock).
#[inline]
fn verdict(
    state: &KeyState<'_>,
    policy: &Policy,
    utc: u64,
    now: u64,
    charge: Charge,
    max_wait: u64,
    consume: bool,
) -> Verdict {
    let cells = state.cells(policy, utc);
    // The in-flight slot first: a request refused for it consumes no quota.
    let mut permit = None;
    if let (Some(limit), Some(extra)) = (policy.in_flight_limit(), state.extra()) {
        if !consume {
            if extra.in_flight.load(Ordering::Acquire) >= limit {
                return Verdict::InFlight(limit);
            }
        } else if extra.in_flight.fetch_add(1, Ordering::Acquire) >= limit {
            extra.in_flight.fetch_sub(1, Ordering::Release);
            return Verdict::InFlight(limit);
        } else {
            permit = Some(InFlight(extra.clone()));
        }
    }
    if !consume {
        let d = gcra::peek_all(&cells, now, charge);
        return if d.is_allowed() {
            Verdict::Granted(d, 0, None, [0; gcra::INLINE_CELLS])
        } else {
            Verdict::Denied(d)
        };
    }
    match gcra::reserve_all(&cells, now, charge, max_wait) {
        Ok(r) => Verdict::Granted(r.decision(&cells), r.wait, permit, r.stamps),
        // Dropping the permit frees the slot.
        Err(d) => Verdict::Denied(d),
    }
}

/// What a delayed request charged its key, to give back if it is never
/// sent.
struct MemoryRefund<K> {
    shared: Arc<Shared<K>>,
    key: K,
    policy: Policy,
    stamps: [u64; gcra::INLINE_CELLS],
    charge: Charge,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> super::GiveBack for MemoryRefund<K> {
    fn give_back(self: Box<Self>) {
        let MemoryRefund {
            shared,
            key,
            policy,
            stamps,
            charge,
        } = *self;
        let now = shared.clock.now();
        // Each cell takes back this request's charge only if its `tat` is
        // still the one this request wrote: nothing admitted since relied
        // on it, so the bucket becomes exactly what it would have been
        // without the request, never fuller. An unknown key (forgotten,
        // so idle) has nothing to give back.
        let utc = shared.clock.utc();
        let _ = shared.store.with(&key, &policy, now, false, |state| {
            gcra::refund_all(&state.cells(&policy, utc), &stamps, charge);
        });
    }
}

impl<K> AsRef<Memory<K>> for Memory<K> {
    fn as_ref(&self) -> &Memory<K> {
        self
    }
}

impl<K> fmt::Debug for Memory<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("max_keys", &self.shared.store.max_keys())
            .field("evicts", &self.shared.store.evicts())
            .finish_non_exhaustive()
    }
}

impl<K> Backend<K> for Memory<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Future = Never;

    #[inline]
    fn acquire(&self, key: &K, policy: &Policy, cost: u32, max_wait: Duration) -> Acquire<Never> {
        match self.acquire_now(key, policy, cost, max_wait) {
            Ok(admitted) => Acquire::Ready(Ok(admitted
                .into_grant(policy)
                .with_charged(admitted.charged(cost)))),
            Err(acquired) => acquired,
        }
    }

    /// Answers a request of a policy of one quota and no in-flight cap,
    /// admitted to be sent now, without building a [`Grant`]; anything
    /// else as [`acquire`](Backend::acquire) does.
    // The common decision, inlined into the layer's call. Anything else (a
    // wait, a denial, a full store, several quotas) goes to `decide` or a
    // cold path, out of line.
    #[inline]
    fn acquire_now(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Admitted, Acquire<Never>> {
        // Zero (a layer that rejects) without the conversion.
        let max_wait = if max_wait.is_zero() {
            0
        } else {
            u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX)
        };
        let charge = Charge::cost(cost);
        if !policy.is_simple() {
            return Err(Acquire::Ready(
                self.decide(key, policy, charge, max_wait, true),
            ));
        }
        let now = self.shared.clock.now();
        let p = policy.first_params();
        let inc = p.inc(charge);
        let reserved = self.shared.store.with(key, policy, now, true, |state| {
            state.first().reserve(p.window, inc, now, max_wait)
        });
        match reserved {
            Ok(Some(Ok((tat, 0)))) => Ok(Admitted::new(now, tat)),
            other => Err(Acquire::Ready(
                self.simple_rest(key, policy, now, charge, other),
            )),
        }
    }

    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<Never> {
        Acquire::Ready(self.decide(key, policy, Charge::cost(cost), 0, false))
    }

    /// Settles in memory: one compare-exchange loop per quota that counts
    /// cost, under the key's shard's read lock. A debt on a key the store
    /// has forgotten since (idle, or pushed out) re-creates the key with
    /// the debt (unless the store is full of active keys: then it is lost,
    /// as the key's state was); a refund on a forgotten key does nothing
    /// (its buckets are full already).
    fn settle(&self, key: &K, policy: &Policy, charged: Charged, true_cost: u32) {
        if charged.estimate == true_cost {
            return;
        }
        if policy.len() == 1 {
            return self.settle_one(key, policy, charged, true_cost);
        }
        let now = self.shared.clock.now();
        let utc = self.shared.clock.utc();
        let debt = true_cost > charged.estimate;
        let _ = self.shared.store.with(key, policy, now, debt, |state| {
            gcra::settle_all(
                &state.cells(policy, utc),
                &charged.stamps,
                charged.estimate,
                true_cost,
                now,
            );
        });
    }

    fn states(&self, key: &K, policy: &Policy) -> QuotaStates {
        let now = self.shared.clock.now();
        let utc = self.shared.clock.utc();
        let read = |state: &KeyState<'_>| {
            let cells = state.cells(policy, utc);
            let mut out = QuotaStates::default();
            for i in 0..cells.len() {
                let (p, g) = cells.cell(i);
                let word = match p.calendar() {
                    Some(_) => g.tat(),
                    None => g.tat().max(now),
                };
                out.push(Decision::allowed(&p, now, word));
            }
            out
        };
        match self.shared.store.with(key, policy, now, false, read) {
            Ok(Some(states)) => states,
            _ => read(&Fresh::for_policy(policy).state()),
        }
    }
}
