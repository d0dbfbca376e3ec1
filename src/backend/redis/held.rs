//! Settlements waiting to be sent to Redis, never on a request's path: a
//! settlement waits, held per key, for its key's next decision to carry it
//! (applied by the decision script, before it decides) or for its delay to
//! run out; then one task of the backend sends the due ones in batches.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Weak;
use std::sync::atomic::{AtomicI64, AtomicUsize};

use hashbrown::{DefaultHashBuilder, HashTable};

use super::health::slot;
use super::settle::{BATCH, Item, SettleArgs, settle_args};
use super::*;
use crate::backend::Origin;

/// The most settlements held or queued; more are dropped and counted.
pub(super) const QUEUE: usize = 65_536;

/// The most settlements sent at once (in batches), so that the last batch
/// of a round is answered well within the deadline: the rest wait for the
/// next round.
const ROUND: usize = 16 * BATCH;

/// The most settlements one key holds apart (debts that cannot merge): a
/// key with more is sent at once, so that a decision never carries many.
const PER_KEY: usize = 8;

/// A key's settlements waiting to be sent, in the order they were made.
pub(super) struct Held {
    key: Vec<u8>,
    hash: u64,
    /// The key's Cluster slot (0 off Cluster: one batch for all).
    slot: u16,
    groups: Groups,
    /// A lower bound of the key's TAT once the last group is applied
    /// (Redis time, us; 0: unknown), for merging debts exactly.
    floor: u64,
    /// Its entry in [`State::order`].
    seq: u64,
}

/// Each settlement's arguments and how many settlements it stands for
/// (more than 1 once debts merged), in order; the first inline, as most
/// keys hold one.
struct Groups {
    first: (SettleArgs, u64),
    rest: Vec<(SettleArgs, u64)>,
}

impl Groups {
    fn iter(&self) -> impl Iterator<Item = &(SettleArgs, u64)> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    fn last_mut(&mut self) -> &mut (SettleArgs, u64) {
        self.rest.last_mut().unwrap_or(&mut self.first)
    }

    fn len(&self) -> usize {
        1 + self.rest.len()
    }
}

impl Held {
    fn new(key: Vec<u8>, hash: u64, slot: u16, seq: u64, args: SettleArgs) -> Self {
        Held {
            key,
            hash,
            slot,
            floor: floor(&args),
            groups: Groups {
                first: (args, 1),
                rest: Vec::new(),
            },
            seq,
        }
    }

    /// What a decision on `key` carries for `groups`, settled in turn
    /// (for tests).
    #[cfg(all(test, feature = "test-util"))]
    pub(super) fn carrying(
        key: &[u8],
        groups: impl IntoIterator<Item = SettleArgs>,
    ) -> Option<Held> {
        let mut groups = groups.into_iter();
        let mut held = Held::new(key.to_vec(), 0, 0, 0, groups.next()?);
        for args in groups {
            held.push(args);
        }
        Some(held)
    }

    /// The settlements this stands for.
    pub(super) fn count(&self) -> u64 {
        self.groups.iter().map(|g| g.1).sum()
    }

    /// How many arguments [`write`](Self::write) adds.
    pub(super) fn len(&self) -> usize {
        self.groups.iter().map(|g| g.0.len()).sum()
    }

    /// The emission interval (us), debt (units) and how long before `now`
    /// (this process' clock, ns) it was found (us), when all this holds is one debt of a policy of
    /// one rolling quota of cost.
    pub(super) fn lone_debt(&self, now: u64) -> Option<(u64, u64, u64)> {
        if !self.groups.rest.is_empty() {
            return None;
        }
        let args = &self.groups.first.0;
        let [t, extra, _, _] = args.short_debt()?;
        Some((t, extra, args.ago(now)))
    }

    /// Adds every group's arguments to `cmd`, in order, sent at `now`
    /// (as [`SettleArgs::write`]).
    pub(super) fn write(&self, cmd: &mut redis::Cmd, now: u64) {
        for (args, _) in self.groups.iter() {
            args.write(cmd, now);
        }
    }

    /// Adds `args`, found after every group held: merged into the last
    /// group when both are debts of one rolling quota of cost and the key
    /// is known to be in debt when `args` was found, so that applying the
    /// sum at the first one's time is what applying both in turn would do;
    /// kept apart otherwise.
    fn push(&mut self, args: SettleArgs) {
        let (last, count) = self.groups.last_mut();
        if let Some([t, extra, _, at]) = args.short_debt()
            && let Some([t0, _, _, at0]) = last.short_debt()
            && t0 == t
            && ((at0 == 0 && at == 0) || (at0 > 0 && self.floor >= at))
        {
            last.add_debt(extra);
            *count += 1;
            self.floor = self.floor.saturating_add(extra.saturating_mul(t));
            return;
        }
        self.floor = floor(&args);
        self.groups.rest.push((args, 1));
    }
}

/// A lower bound of a key's TAT once `args` is applied, when it is a debt
/// of a policy of one rolling quota of cost with its time known (the TAT
/// its decision wrote, or when the debt was found, moved by the debt); 0
/// otherwise.
fn floor(args: &SettleArgs) -> u64 {
    match args.short_debt() {
        Some([t, extra, stamp, at]) if at > 0 => {
            stamp.max(at).saturating_add(extra.saturating_mul(t))
        }
        _ => 0,
    }
}

/// The settlements waiting, and the task that sends them.
pub(super) struct Settler {
    state: Mutex<State>,
    /// Keys in [`State::held`], read without the lock.
    held_keys: AtomicUsize,
    hasher: DefaultHashBuilder,
    /// Wakes the task: a settlement is due, or may be soon.
    wake: tokio::sync::Notify,
    /// Wakes [`RedisBackend::flush_settlements`]: the task is idle.
    idle: tokio::sync::Notify,
    /// Redis' time minus this process' (us), from the last decision's
    /// reply; [`UNKNOWN`] before the first.
    offset: AtomicI64,
}

const UNKNOWN: i64 = i64::MIN;

impl Default for Settler {
    fn default() -> Self {
        Settler {
            state: Mutex::default(),
            held_keys: AtomicUsize::new(0),
            hasher: DefaultHashBuilder::default(),
            wake: tokio::sync::Notify::new(),
            idle: tokio::sync::Notify::new(),
            offset: AtomicI64::new(UNKNOWN),
        }
    }
}

#[derive(Default)]
struct State {
    /// Settlements held per key until their key's next decision carries
    /// them or they are due.
    held: HashTable<Held>,
    /// When each key held is due, oldest first: `(due, hash, seq)`; an
    /// entry whose key was carried meanwhile is skipped.
    order: VecDeque<(u64, u64, u64)>,
    /// Keys held that are due now (no delay, or a key holding too many):
    /// `(hash, seq)`, as in `order`.
    ready: VecDeque<(u64, u64)>,
    next_seq: u64,
    /// Settlements held or ready (not yet sent).
    waiting: usize,
    /// Everything held is due now ([`RedisBackend::flush_settlements`]).
    flushing: bool,
    /// A round is out.
    sending: bool,
    /// A task runs to send what is due.
    running: bool,
    /// The backend is gone: the task ends.
    closed: bool,
}

impl State {
    fn is_idle(&self) -> bool {
        self.held.is_empty() && !self.sending
    }

    /// Removes the key held under `hash` that `is` picks, if any.
    fn remove(&mut self, hash: u64, is: impl FnMut(&Held) -> bool) -> Option<Held> {
        let held = self.held.find_entry(hash, is).ok()?.remove().0;
        self.waiting -= held.groups.len();
        Some(held)
    }
}

impl Settler {
    /// Ends the task (the backend is dropped).
    pub(super) fn close(&self) {
        self.state.lock().ignore_poison().closed = true;
        self.wake.notify_one();
    }

    /// Notes Redis' time, `redis_us`, from a reply that came at `local`
    /// (this process' clock, ns).
    pub(super) fn saw_redis_time(&self, redis_us: i64, local: u64) {
        let local_us = i64::try_from(local / 1_000).unwrap_or(i64::MAX);
        self.offset
            .store(redis_us.saturating_sub(local_us), Ordering::Relaxed);
    }

    /// Redis' time at `local` (this process' clock, ns), in microseconds,
    /// as the last decision's reply tells; 0 before any.
    pub(super) fn redis_time(&self, local: u64) -> u64 {
        let offset = self.offset.load(Ordering::Relaxed);
        if offset == UNKNOWN {
            return 0;
        }
        let local_us = i64::try_from(local / 1_000).unwrap_or(i64::MAX);
        u64::try_from(local_us.saturating_add(offset)).unwrap_or(0)
    }

    /// Takes what `key` holds, for its decision to carry.
    pub(super) fn take(&self, key: &[u8]) -> Option<Held> {
        if self.held_keys.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let hash = self.hasher.hash_one(key);
        let mut state = self.state.lock().ignore_poison();
        let held = state.remove(hash, |h| h.key == key)?;
        self.held_keys.store(state.held.len(), Ordering::Relaxed);
        Some(held)
    }
}

impl RedisBackend {
    /// Sends every settlement held now, without waiting for its delay or
    /// for its key's next decision, and returns once Redis has answered
    /// for all of them (applied or dropped, as [`RedisStats`] counts).
    /// Call it before a process exits, so that no settlement it holds is
    /// lost with it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), redis::RedisError> {
    /// use tower_sluice::backend::redis::RedisBackend;
    ///
    /// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
    /// // ... serve, settling requests at their true cost ...
    /// backend.flush_settlements().await;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn flush_settlements(&self) {
        let settler = &self.inner.settler;
        loop {
            let mut idle = std::pin::pin!(settler.idle.notified());
            idle.as_mut().enable();
            let start = {
                let mut state = settler.state.lock().ignore_poison();
                if state.is_idle() {
                    return;
                }
                state.flushing = true;
                match claim_task(&mut state) {
                    Ok(start) => start,
                    Err(()) => return,
                }
            };
            if let Some(runtime) = start {
                self.start_task(runtime);
            }
            settler.wake.notify_one();
            idle.await;
        }
    }

    /// Holds the settlement of a request for `key` (the Redis key), to be
    /// sent in the background: the caller never waits for it. It is
    /// carried by the key's next decision from this backend, or sent with
    /// other due settlements once [`settle_delay`](Self::settle_delay) has
    /// passed. A grant Redis did not charge is not settled on Redis: the
    /// fallback's grants settle in the fallback, a grant let through
    /// without a charge is skipped ([`RedisStats::settles_skipped`]).
    /// Dropped and counted ([`RedisStats::settles_dropped`]) when the key's
    /// node is known to be down, when [`QUEUE`] settlements wait already,
    /// when there is no tokio runtime to send it from, or when its batch
    /// (or the decision carrying it) fails or misses the deadline; never
    /// retried (it may have run).
    pub(super) fn send_settle(
        &self,
        key: Vec<u8>,
        policy: &Policy,
        charged: Charged,
        true_cost: u32,
    ) {
        let inner = &self.inner;
        if charged.estimate == true_cost || policy.quotas().all(|q| q.counts_requests()) {
            return;
        }
        match charged.origin {
            Origin::Nowhere => {
                inner.stats.settles_skipped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Origin::Fallback => {
                // Charged in the fallback's cells (its stamps): settled there.
                let fallback = inner.fallback_policy(policy);
                inner.fallback.settle(&key, &fallback, charged, true_cost);
                inner
                    .stats
                    .settled_in_fallback
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Origin::Store => {}
        }
        // The warm fallback counted this request too: keep it in step. Its
        // stamps are Redis', not the fallback's, so the fallback takes the
        // debt and gives nothing back (a refund needs its own stamp).
        if inner.failure_is_fallback() && true_cost > charged.estimate {
            let fallback = inner.fallback_policy(policy);
            let local = Charged::new(charged.estimate, Default::default());
            inner.fallback.settle(&key, &fallback, local, true_cost);
        }
        let dropped = || {
            inner.stats.settles_dropped.fetch_add(1, Ordering::Relaxed);
        };
        if key.len() > inner.max_key_len {
            return dropped();
        }
        if !inner.nodes.of(&key).is_up() {
            return dropped();
        }
        let settler = &inner.settler;
        let now = inner.clock.now();
        let args = settle_args(policy, charged, true_cost, (settler.redis_time(now), now));
        let hash = settler.hasher.hash_one(&key[..]);
        let mut state = settler.state.lock().ignore_poison();
        if state.waiting >= QUEUE {
            drop(state);
            return dropped();
        }
        let Ok(start) = claim_task(&mut state) else {
            drop(state);
            return dropped();
        };
        let wake = self.hold(&mut state, key, hash, args, now);
        drop(state);
        if let Some(runtime) = start {
            self.start_task(runtime);
        }
        if wake {
            settler.wake.notify_one();
        }
    }

    /// Holds `args` for `key` (hashed `hash`), found at `now`: merged into
    /// what the key holds, or held anew until its delay has passed. True
    /// when the task must look again (something is due, or due sooner than
    /// what it sleeps for).
    fn hold(&self, state: &mut State, key: Vec<u8>, hash: u64, args: SettleArgs, now: u64) -> bool {
        let inner = &self.inner;
        if let Some(held) = state.held.find_mut(hash, |h| h.key == key) {
            let groups = held.groups.len();
            held.push(args);
            if held.groups.len() == groups {
                return false;
            }
            state.waiting += 1;
            if held.groups.len() == PER_KEY {
                state.ready.push_back((hash, held.seq));
                return true;
            }
            return false;
        }
        let slot = if inner.nodes.learned_at().is_some() {
            slot(&key)
        } else {
            0
        };
        let seq = state.next_seq;
        state.next_seq += 1;
        let held = Held::new(key, hash, slot, seq, args);
        state.waiting += 1;
        state.held.insert_unique(hash, held, |h| h.hash);
        inner
            .settler
            .held_keys
            .store(state.held.len(), Ordering::Relaxed);
        if inner.settle_delay == 0 {
            state.ready.push_back((hash, seq));
            return true;
        }
        // The task sleeps until the first due, which is earlier unless
        // this is the first.
        let first = state.order.is_empty();
        state
            .order
            .push_back((now.saturating_add(inner.settle_delay), hash, seq));
        first
    }

    /// Starts the task that sends settlements on `runtime` (claimed with
    /// [`claim_task`]). However it ends, even dropped before it ever ran,
    /// the next settlement starts another.
    fn start_task(&self, runtime: tokio::runtime::Handle) {
        let ended = Ended(self.inner.settler.clone());
        let inner = Arc::downgrade(&self.inner);
        let settler = self.inner.settler.clone();
        drop(runtime.spawn(async move {
            let _ended = ended;
            settle_task(inner, settler).await;
        }));
    }
}

/// Claims the task that sends settlements when none runs: the runtime to
/// start it on once the state's lock is released (`None`: one runs), or an
/// error when there is no tokio runtime.
fn claim_task(state: &mut State) -> Result<Option<tokio::runtime::Handle>, ()> {
    if state.running {
        return Ok(None);
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(drop)?;
    state.running = true;
    Ok(Some(runtime))
}

/// Marks the task ended when dropped (with the task's future, however it
/// ends), and wakes a flush waiting for it.
struct Ended(Arc<Settler>);

impl Drop for Ended {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().ignore_poison();
        state.running = false;
        state.sending = false;
        drop(state);
        self.0.idle.notify_waiters();
    }
}

/// Sends the due settlements until the backend is dropped: takes those due
/// now or within an eighth of the delay (at most [`ROUND`] of them, oldest
/// first), sends them in batches (all at once, pipelined), waits for their
/// answers, and again; sleeps until the next is due. While a round is out,
/// new settlements gather for the next, so batches grow with the load.
async fn settle_task(inner: Weak<Inner>, settler: Arc<Settler>) {
    let mut round: Vec<Held> = Vec::new();
    loop {
        let sleep = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let mut state = settler.state.lock().ignore_poison();
            if state.closed {
                return;
            }
            let state = &mut *state;
            let now = inner.clock.now();
            let mut settlements = 0;
            while settlements < ROUND {
                let Some((hash, seq)) = state.ready.pop_front() else {
                    break;
                };
                if let Some(held) = state.remove(hash, |h| h.seq == seq) {
                    settlements += held.groups.len();
                    round.push(held);
                }
            }
            // Those due within an eighth of the delay go with those due
            // now: fewer, fuller batches, each a little early at most.
            let soon = now.saturating_add(inner.settle_delay / 8);
            while settlements < ROUND {
                let Some(&(due, hash, seq)) = state.order.front() else {
                    break;
                };
                if due > soon && !state.flushing {
                    break;
                }
                state.order.pop_front();
                if let Some(held) = state.remove(hash, |h| h.seq == seq) {
                    settlements += held.groups.len();
                    round.push(held);
                }
            }
            settler.held_keys.store(state.held.len(), Ordering::Relaxed);
            state.sending = !round.is_empty();
            if state.is_idle() {
                state.flushing = false;
                settler.idle.notify_waiters();
            }
            state
                .order
                .front()
                .map(|&(due, _, _)| due.saturating_sub(now))
        };
        if round.is_empty() {
            match sleep {
                Some(ns) => {
                    let _ = tokio::time::timeout(
                        Duration::from_nanos(ns.max(1)),
                        settler.wake.notified(),
                    )
                    .await;
                }
                None => settler.wake.notified().await,
            }
            continue;
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        send_round(&inner, &mut round).await;
        drop(inner);
        round.clear();
        settler.state.lock().ignore_poison().sending = false;
    }
}

/// Sends `round`, sorted by slot and key (stable: a key held twice, sent
/// at once then held again, keeps its order).
async fn send_round(inner: &Arc<Inner>, round: &mut [Held]) {
    round.sort_by(|a, b| (a.slot, &a.key).cmp(&(b.slot, &b.key)));
    let items: Vec<Item<'_>> = round
        .iter()
        .flat_map(|h| {
            h.groups.iter().map(move |(args, count)| Item {
                key: &h.key,
                slot: h.slot,
                args,
                count: *count,
            })
        })
        .collect();
    inner.send_batches(&items, inner.clock.now()).await;
}

impl Inner {
    /// Whether the failure policy keeps a warm fallback.
    fn failure_is_fallback(&self) -> bool {
        matches!(self.failure, FailurePolicy::Fallback { .. })
    }
}
