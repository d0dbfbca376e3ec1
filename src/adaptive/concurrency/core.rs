//! The limiter shared by a layer, its services and its handle: the limit, the
//! requests in flight, the waiting services and the slots.

use super::*;

pub(super) struct Core {
    pub(super) clock: Clock,
    pub(super) limit: AtomicU32,
    pub(super) in_flight: AtomicU32,
    /// Shared with the cores a setter makes from this one (the algorithm
    /// is not `Clone`).
    pub(super) algorithm: Arc<Mutex<Box<dyn ConcurrencyAlgorithm>>>,
    pub(super) observers: Observers,
    /// Services waiting for a slot (`wait` mode), by id.
    pub(super) waiters: Mutex<Waiters>,
    pub(super) has_waiters: AtomicBool,
}

#[derive(Default)]
pub(super) struct Waiters {
    next_id: u64,
    list: Vec<(u64, Waker)>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core with the same algorithm, limit and observer, and nothing in
    /// flight, for a setter to edit.
    pub(super) fn fresh(&self) -> Core {
        Core {
            clock: self.clock.clone(),
            limit: AtomicU32::new(self.limit.load(Ordering::Acquire)),
            in_flight: AtomicU32::new(0),
            algorithm: self.algorithm.clone(),
            observers: self.observers.clone(),
            waiters: Mutex::new(Waiters::default()),
            has_waiters: AtomicBool::new(false),
        }
    }

    pub(super) fn try_acquire(self: &Arc<Self>) -> Result<Slot, u32> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            let limit = self.limit.load(Ordering::Relaxed);
            if current >= limit {
                return Err(limit);
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Slot {
                        core: self.clone(),
                        in_flight: current + 1,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// A slot past the limit (shadow mode).
    pub(super) fn force_acquire(self: &Arc<Self>) -> Slot {
        Slot {
            core: self.clone(),
            in_flight: self.in_flight.fetch_add(1, Ordering::AcqRel) + 1,
        }
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().ignore_poison()
    }

    /// Registers (or refreshes) a waiting service's waker; returns its id.
    pub(super) fn register(&self, id: Option<u64>, waker: &Waker) -> u64 {
        let mut w = self.waiters();
        if let Some(id) = id
            && let Some((_, old)) = w.list.iter_mut().find(|(i, _)| *i == id)
        {
            old.clone_from(waker);
            return id;
        }
        w.next_id += 1;
        let id = w.next_id;
        w.list.push((id, waker.clone()));
        self.has_waiters.store(true, Ordering::Release);
        id
    }

    fn unregister(&self, id: u64) {
        let mut w = self.waiters();
        w.list.retain(|(i, _)| *i != id);
        self.has_waiters
            .store(!w.list.is_empty(), Ordering::Release);
    }

    /// Wakes up to `n` waiting services (they take a slot or wait again).
    fn wake(&self, n: usize) {
        if !self.has_waiters.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.waiters();
        let n = n.min(w.list.len());
        for (_, waker) in w.list.drain(..n) {
            waker.wake();
        }
        self.has_waiters
            .store(!w.list.is_empty(), Ordering::Release);
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake(1);
    }

    pub(super) fn sample(&self, started: u64, in_flight: u32, outcome: Outcome) {
        let now = self.clock.now();
        let sample = Sample::new(
            Duration::from_nanos(started),
            Duration::from_nanos(now),
            in_flight,
            outcome,
        );
        let new = {
            let mut algorithm = self.algorithm.lock().ignore_poison();
            algorithm.update(&sample).max(1)
        };
        let old = self.limit.swap(new, Ordering::AcqRel);
        if old != new {
            if new > old {
                self.wake((new - old) as usize);
            }
            tracing::trace!(target: "tower_sluice::adaptive", old, new, "concurrency limit changed");
            self.observers.emit(&Event::ConcurrencyLimitChanged {
                layer: LAYER,
                old,
                new,
            });
        }
    }
}

/// A slot of the limit, given back when dropped.
pub(super) struct Slot {
    pub(super) core: Arc<Core>,
    pub(super) in_flight: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.core.release();
    }
}

/// A waiting service's registration, removed when dropped.
pub(super) struct Waiting {
    pub(super) core: Arc<Core>,
    pub(super) id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.core.unregister(self.id);
    }
}
