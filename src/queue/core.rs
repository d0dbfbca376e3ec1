//! The state every service of one [`QueueLayer`](super::QueueLayer)
//! shares: the waiting list (one FIFO per priority class over one slab),
//! the in-flight count and the pacer.
//!
//! There is no worker task. A request is sent by its own caller: `call`
//! sends it at once when nobody waits and there is room; otherwise it joins
//! the queue, and the response future of the request whose turn it is (the
//! *next* waiter) drives the inner service's `poll_ready` and `call` itself.
//! Whoever changes who is next (a dispatch, a cancellation, a timeout, a
//! completed call freeing a slot) wakes the new next waiter.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_service::Service;

use crate::BoxError;
use crate::calendar;
use crate::clock::Clock;
use crate::cost::Charge;
use crate::error::{ExceedsBurst, QueueClosed};
use crate::gcra::{Gcra, Params};
use crate::observe::{Event, Observers};
use crate::quota::Quota;
use crate::util::IgnorePoison;

pub(crate) const LAYER: &str = "queue";

/// What a [`QueueLayer`](super::QueueLayer) was configured with.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) capacity: usize,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) concurrency: Option<usize>,
    pub(crate) pace: Option<Quota>,
    pub(crate) oldest_every: u32,
    pub(crate) max_per_key: Option<usize>,
}

impl Config {
    pub(crate) fn new(capacity: usize) -> Self {
        Config {
            capacity,
            max_wait: None,
            concurrency: None,
            pace: None,
            oldest_every: super::DEFAULT_OLDEST_EVERY,
            max_per_key: None,
        }
    }
}

/// Counters, kept under the lock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub(crate) dispatched: u64,
    pub(crate) queued: u64,
    pub(crate) rejected_full: u64,
    pub(crate) timed_out: u64,
    pub(crate) cancelled: u64,
    pub(crate) failed: u64,
}

/// The inner service of one `layer()` call, shared by its clones.
pub(crate) struct InnerCell<S> {
    svc: Mutex<S>,
    /// Set once when the service fails in `poll_ready`.
    pub(crate) failed: OnceLock<QueueClosed>,
}

impl<S> InnerCell<S> {
    pub(crate) fn new(svc: S) -> Self {
        InnerCell {
            svc: Mutex::new(svc),
            failed: OnceLock::new(),
        }
    }

    pub(crate) fn into_inner(self) -> S {
        self.svc.into_inner().ignore_poison()
    }
}

/// A waiter's place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    idx: u32,
    generation: u32,
}

const NIL: u32 = u32::MAX;

struct Node {
    prev: u32,
    next: u32,
    generation: u32,
    class: u8,
    used: bool,
    /// Arrival order, for the anti-starvation turn.
    seq: u64,
    /// The per-key bucket, when a per-key bound is set.
    key_hash: Option<u64>,
    /// What the pacer charges the waiter when it is sent.
    units: u32,
    waker: Option<Waker>,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
    /// The pacer's charges of the list's waiters, summed.
    units: u64,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
    units: 0,
};

pub(crate) struct State {
    nodes: Vec<Node>,
    /// Free slots, linked through `next`.
    free: u32,
    /// One FIFO per class, indexed by class.
    lists: Vec<List>,
    /// Which classes have waiters.
    nonempty: [u64; 4],
    len: usize,
    seq: u64,
    /// Dispatches from the queue, for the anti-starvation turn.
    turns: u64,
    /// Waiters per key, when a per-key bound is set.
    per_key: hashbrown::HashMap<u64, usize>,
    pub(crate) counters: Counters,
}

impl State {
    fn new() -> Self {
        State {
            nodes: Vec::new(),
            free: NIL,
            lists: Vec::new(),
            nonempty: [0; 4],
            len: 0,
            seq: 0,
            turns: 0,
            per_key: hashbrown::HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, class: u8, key_hash: Option<u64>, units: u32) -> Key {
        let seq = self.seq;
        self.seq += 1;
        let idx = if self.free != NIL {
            let idx = self.free;
            let node = &mut self.nodes[idx as usize];
            self.free = node.next;
            node.generation = node.generation.wrapping_add(1);
            node.class = class;
            node.used = true;
            node.seq = seq;
            node.key_hash = key_hash;
            node.units = units;
            node.waker = None;
            idx
        } else {
            let idx = u32::try_from(self.nodes.len()).expect("queue larger than u32::MAX");
            self.nodes.push(Node {
                prev: NIL,
                next: NIL,
                generation: 0,
                class,
                used: true,
                seq,
                key_hash,
                units,
                waker: None,
            });
            idx
        };
        let c = usize::from(class);
        if self.lists.len() <= c {
            self.lists.resize(c + 1, EMPTY);
        }
        let list = &mut self.lists[c];
        let tail = list.tail;
        list.tail = idx;
        if tail == NIL {
            list.head = idx;
        }
        list.len += 1;
        list.units += u64::from(units);
        let node = &mut self.nodes[idx as usize];
        node.prev = tail;
        node.next = NIL;
        if tail != NIL {
            self.nodes[tail as usize].next = idx;
        }
        self.nonempty[c / 64] |= 1 << (c % 64);
        self.len += 1;
        if let Some(h) = key_hash {
            *self.per_key.entry(h).or_insert(0) += 1;
        }
        Key {
            idx,
            generation: self.nodes[idx as usize].generation,
        }
    }

    fn contains(&self, key: Key) -> bool {
        self.nodes
            .get(key.idx as usize)
            .is_some_and(|n| n.used && n.generation == key.generation)
    }

    fn unlink(&mut self, key: Key) {
        debug_assert!(self.contains(key));
        let (prev, next, class, key_hash, units) = {
            let n = &mut self.nodes[key.idx as usize];
            n.used = false;
            n.waker = None;
            (n.prev, n.next, n.class, n.key_hash.take(), n.units)
        };
        let c = usize::from(class);
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            self.lists[c].head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            self.lists[c].tail = prev;
        }
        self.lists[c].len -= 1;
        self.lists[c].units -= u64::from(units);
        if self.lists[c].len == 0 {
            self.nonempty[c / 64] &= !(1 << (c % 64));
        }
        self.len -= 1;
        self.nodes[key.idx as usize].next = self.free;
        self.free = key.idx;
        if let Some(h) = key_hash
            && let hashbrown::hash_map::Entry::Occupied(mut e) = self.per_key.entry(h)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }

    fn highest_class(&self) -> Option<usize> {
        (0..4).rev().find_map(|w| {
            let bits = self.nonempty[w];
            (bits != 0).then(|| w * 64 + 63 - bits.leading_zeros() as usize)
        })
    }

    /// The waiter whose turn it is: the head of the highest class, except
    /// that every `oldest_every`-th dispatch goes to the oldest waiter.
    pub(crate) fn next(&self, oldest_every: u32) -> Option<Key> {
        let top = self.highest_class()?;
        let mut idx = self.lists[top].head;
        if oldest_every > 0 && (self.turns + 1).is_multiple_of(u64::from(oldest_every)) {
            for (w, &word) in self.nonempty.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    let c = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    let head = self.lists[c].head;
                    if self.nodes[head as usize].seq < self.nodes[idx as usize].seq {
                        idx = head;
                    }
                }
            }
        }
        Some(Key {
            idx,
            generation: self.nodes[idx as usize].generation,
        })
    }

    /// The pacer's charges of the waiters that would go before a new
    /// request of `class` (those of its class and higher ones).
    fn units_ahead(&self, class: u8) -> u64 {
        self.lists
            .iter()
            .skip(usize::from(class))
            .map(|l| l.units)
            .sum()
    }

    /// What the pacer charges a waiter when it is sent.
    pub(crate) fn units_of(&self, key: Key) -> u32 {
        self.nodes[key.idx as usize].units
    }

    fn set_waker(&mut self, key: Key, waker: &Waker) {
        let slot = &mut self.nodes[key.idx as usize].waker;
        match slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }

    fn take_waker(&mut self, key: Key) -> Option<Waker> {
        self.nodes[key.idx as usize].waker.take()
    }

    fn take_all_wakers(&mut self) -> Vec<Waker> {
        self.nodes
            .iter_mut()
            .filter(|n| n.used)
            .filter_map(|n| n.waker.take())
            .collect()
    }
}

/// The pacer: a GCRA cell touched only under the queue's lock. A calendar
/// quota paces by its windows: its allowance goes at once, then requests
/// wait for the next window.
struct Pacer {
    clock: Clock,
    params: Params,
    gcra: Gcra,
}

impl Pacer {
    fn new(quota: Quota) -> Self {
        let clock = Clock::new();
        Pacer {
            params: Params::new(quota).at_utc(clock.utc()),
            clock,
            gcra: Gcra::new(),
        }
    }

    /// Nanoseconds until `units` more could all have gone.
    fn wait(&self, now: u64, units: u64) -> u64 {
        match self.params.calendar() {
            Some(_) => {
                let count = u32::try_from(units).unwrap_or(u32::MAX);
                calendar::wait(&self.gcra, &self.params, count, now).0
            }
            None => {
                let inc = self.params.emission.saturating_mul(units);
                self.gcra.wait(self.params.window, inc, now).0
            }
        }
    }

    /// Charges `units` at `now`, which [`wait`](Self::wait) allowed.
    fn admit(&self, now: u64, units: u32) -> bool {
        match self.params.calendar() {
            Some(_) => calendar::try_admit(&self.gcra, &self.params, units, now).is_ok(),
            None => {
                let inc = self.params.emission * u64::from(units);
                self.gcra.try_admit(self.params.window, inc, now).is_ok()
            }
        }
    }
}

/// The pacer's charge for a request of `cost`: nothing for cost 0, else 1
/// to a pace of requests, `cost` to a pace of a unit of cost.
fn charge_of(cost: u32) -> Charge {
    match cost {
        0 => Charge::n(0),
        cost => Charge::cost(cost),
    }
}

/// The outcome of trying to send a request now.
pub(crate) enum Attempt<F> {
    /// Sent: the inner service's future. A slot was taken.
    Sent(F),
    /// Every concurrency slot is taken: a completing call wakes the next
    /// waiter.
    Busy,
    /// The pacer allows the next dispatch in this many nanoseconds.
    PaceIn(u64),
    /// The inner service is not ready; it wakes the caller.
    NotReady,
    /// The inner service failed in `poll_ready`.
    Failed(QueueClosed),
}

/// The shared state of one layer.
pub(crate) struct Core {
    pub(crate) config: Config,
    limit: usize,
    state: Mutex<State>,
    in_flight: AtomicUsize,
    /// Mirrors `State::len`, for lock-free reads.
    depth: AtomicUsize,
    pacer: Option<Pacer>,
    hasher: hashbrown::DefaultHashBuilder,
    pub(crate) observers: Observers,
}

impl Core {
    pub(crate) fn new(config: Config, observers: Observers) -> Self {
        Core {
            limit: config.concurrency.unwrap_or(usize::MAX),
            pacer: config.pace.map(Pacer::new),
            config,
            state: Mutex::new(State::new()),
            in_flight: AtomicUsize::new(0),
            depth: AtomicUsize::new(0),
            hasher: hashbrown::DefaultHashBuilder::default(),
            observers,
        }
    }

    #[inline]
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().ignore_poison()
    }

    pub(crate) fn hasher(&self) -> &hashbrown::DefaultHashBuilder {
        &self.hasher
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth.load(SeqCst)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(SeqCst)
    }

    /// The key's waiters, when a per-key bound is set.
    pub(crate) fn queued_for(&self, st: &State, key_hash: u64) -> usize {
        st.per_key.get(&key_hash).copied().unwrap_or(0)
    }

    pub(crate) fn next(&self, st: &State) -> Option<Key> {
        st.next(self.config.oldest_every)
    }

    /// What the pacer charges a request of `cost` (0 without pacing), or
    /// the error of a cost that could never pass its burst.
    #[inline]
    pub(crate) fn pace_units(&self, cost: u32) -> Result<u32, ExceedsBurst> {
        match &self.pacer {
            None => Ok(0),
            Some(p) => {
                let units = p.params.units(charge_of(cost));
                if units > p.params.quota.burst() {
                    return Err(ExceedsBurst::new(units, p.params.quota));
                }
                Ok(units)
            }
        }
    }

    /// Adds a waiter at the back of its class; the pacer will charge it
    /// `units`.
    pub(crate) fn push(&self, st: &mut State, class: u8, key_hash: Option<u64>, units: u32) -> Key {
        let key = st.push(class, key_hash, units);
        st.counters.queued += 1;
        self.depth.store(st.len, SeqCst);
        key
    }

    /// Removes a waiter; returns the waker of the next waiter if the removed
    /// one was next (so the new next one can take its turn).
    pub(crate) fn remove(&self, st: &mut State, key: Key) -> Option<Waker> {
        let was_next = self.next(st) == Some(key);
        st.unlink(key);
        self.depth.store(st.len, SeqCst);
        if was_next { self.next_waker(st) } else { None }
    }

    /// Removes a waiter that was just sent; returns the next waiter's waker.
    pub(crate) fn remove_sent(&self, st: &mut State, key: Key) -> Option<Waker> {
        st.unlink(key);
        st.turns += 1;
        self.depth.store(st.len, SeqCst);
        self.next_waker(st)
    }

    fn next_waker(&self, st: &mut State) -> Option<Waker> {
        let next = self.next(st)?;
        st.take_waker(next)
    }

    pub(crate) fn set_waker(&self, st: &mut State, key: Key, waker: &Waker) {
        st.set_waker(key, waker);
    }

    /// Whether the waiter is still queued (it always is until it leaves
    /// through its own future).
    pub(crate) fn contains(&self, st: &State, key: Key) -> bool {
        st.contains(key)
    }

    /// The predicted wait of a new request of `class` that the pacer
    /// charges `units`, from the pacer (a lower bound: it ignores
    /// concurrency and the inner service), in nanoseconds; 0 without
    /// pacing.
    pub(crate) fn predicted_wait(&self, st: &State, class: u8, units: u32) -> u64 {
        match &self.pacer {
            Some(p) if units > 0 => {
                let units = st.units_ahead(class).saturating_add(u64::from(units));
                p.wait(p.clock.now(), units)
            }
            _ => 0,
        }
    }

    /// Tries to send `req`, which the pacer charges `units`, through
    /// `inner` now. Called under the lock, only for the next waiter or
    /// when nobody waits, so dispatches are in queue order and a single
    /// caller at a time polls the inner service.
    pub(crate) fn try_send<S, Req>(
        &self,
        st: &mut State,
        inner: &InnerCell<S>,
        cx: &mut Context<'_>,
        req: &mut Option<Req>,
        units: u32,
    ) -> Attempt<S::Future>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        if self.in_flight.load(SeqCst) >= self.limit {
            return Attempt::Busy;
        }
        let now = match &self.pacer {
            // A request the pacer charges nothing is not paced.
            Some(p) if units > 0 => {
                let now = p.clock.now();
                let wait = p.wait(now, u64::from(units));
                if wait > 0 {
                    return Attempt::PaceIn(wait);
                }
                Some(now)
            }
            _ => None,
        };
        if let Some(closed) = inner.failed.get() {
            return Attempt::Failed(closed.clone());
        }
        let mut svc = inner.svc.lock().ignore_poison();
        match svc.poll_ready(cx) {
            Poll::Pending => Attempt::NotReady,
            Poll::Ready(Err(e)) => {
                let closed = inner
                    .failed
                    .get_or_init(|| QueueClosed::new(e.into()))
                    .clone();
                Attempt::Failed(closed)
            }
            Poll::Ready(Ok(())) => {
                if let (Some(p), Some(now)) = (&self.pacer, now) {
                    let admitted = p.admit(now, units);
                    debug_assert!(admitted, "the pacer admits what it just allowed");
                }
                self.in_flight.fetch_add(1, SeqCst);
                st.counters.dispatched += 1;
                let req = req.take().expect("request sent twice");
                Attempt::Sent(svc.call(req))
            }
        }
    }

    /// Reports a failed inner service and wakes every waiter, so that those
    /// waiting on it fail at once.
    pub(crate) fn fail(&self, closed: &QueueClosed) {
        let wakers = self.lock().take_all_wakers();
        tracing::error!(
            target: "tower_sluice::queue",
            error = %closed.cause(),
            "the service behind the queue failed in poll_ready; its queued requests fail"
        );
        self.observers.emit(&Event::QueueClosed {
            layer: LAYER,
            error: closed,
        });
        for w in wakers {
            w.wake();
        }
    }

    /// A call finished or was dropped: frees its slot and, if a waiter may
    /// have been held back by the concurrency cap, wakes the next one.
    pub(crate) fn release(&self) {
        let prev = self.in_flight.fetch_sub(1, SeqCst);
        if prev >= self.limit && self.depth.load(SeqCst) > 0 {
            let waker = {
                let mut st = self.lock();
                self.next_waker(&mut st)
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("depth", &self.depth())
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Frees a concurrency slot when dropped (the response future completed or
/// was dropped).
pub(crate) struct InFlight {
    core: std::sync::Arc<Core>,
}

impl InFlight {
    pub(crate) fn new(core: std::sync::Arc<Core>) -> Self {
        InFlight { core }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.core.release();
    }
}
