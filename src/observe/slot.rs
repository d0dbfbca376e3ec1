//! Per-thread slots for counters that only their owner thread writes.
//!
//! Each thread that reports gets a small number of its own, reused when the
//! thread ends: counters indexed by it are written with a plain load and
//! store (no locked read-modify-write) and summed by readers. Beyond
//! [`SLOTS`] threads alive at once, the others share the last slot,
//! [`SHARED`], whose counters take atomic adds.

use crate::util::IgnorePoison;
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Threads with a slot of their own at once.
pub(super) const SLOTS: usize = 32;
/// The slot shared by every other thread (and by threads being torn down).
pub(super) const SHARED: usize = SLOTS;

const UNSET: usize = usize::MAX;

thread_local! {
    /// This thread's slot: read on every event (const, without a
    /// destructor, so reading it is one thread-local load).
    static SLOT: Cell<usize> = const { Cell::new(UNSET) };
    /// Gives the slot back when the thread ends.
    static GUARD: Guard = const { Guard };
}

/// Slots given back by ended threads, and the next never used.
static FREE: Mutex<(Vec<usize>, usize)> = Mutex::new((Vec::new(), 0));

/// This thread's slot, in `0..=SHARED`.
#[inline(always)]
pub(super) fn slot() -> usize {
    let slot = SLOT.with(Cell::get);
    if slot <= SHARED { slot } else { assign() }
}

#[cold]
fn assign() -> usize {
    let mut slot = {
        let mut free = FREE.lock().ignore_poison();
        match free.0.pop() {
            Some(slot) => slot,
            None if free.1 < SLOTS => {
                free.1 += 1;
                free.1 - 1
            }
            None => SHARED,
        }
    };
    // A thread whose thread-locals are being destroyed cannot register
    // the guard: it shares.
    if slot != SHARED && GUARD.try_with(|_| ()).is_err() {
        give_back(slot);
        slot = SHARED;
    }
    SLOT.with(|s| s.set(slot));
    slot
}

fn give_back(slot: usize) {
    FREE.lock().ignore_poison().0.push(slot);
}

struct Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        // Events reported later on this thread (by other thread-locals'
        // destructors) go to the shared slot.
        let slot = SLOT.with(|s| s.replace(SHARED));
        if slot < SHARED {
            give_back(slot);
        }
    }
}

/// Adds `n` to a counter of slot `slot`: a load and a store for a thread's
/// own slot, an atomic add for the shared one.
#[inline(always)]
pub(super) fn add(counter: &AtomicU64, slot: usize, n: u64) {
    if slot == SHARED {
        counter.fetch_add(n, Relaxed);
    } else {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_get_distinct_slots_and_give_them_back() {
        let mine = slot();
        assert!(mine <= SHARED);
        assert_eq!(slot(), mine, "stable for the thread");
        let others: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(slot))
            .map(|t| t.join().unwrap())
            .collect();
        // Each thread ended before the next began: its slot was reused,
        // and never this thread's.
        for s in others {
            assert!(s == SHARED || s != mine, "{s} {mine}");
        }
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = std::sync::Arc::new([(); SHARED + 1].map(|_| AtomicU64::new(0)));
        let threads: Vec<_> = (0..SLOTS + 8)
            .map(|_| {
                let c = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        let s = slot();
                        add(&c[s], s, 1);
                    }
                    // Stay alive until every thread has its slot.
                    std::thread::sleep(std::time::Duration::from_millis(50));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let total: u64 = counter.iter().map(|c| c.load(Relaxed)).sum();
        assert_eq!(total, 1000 * (SLOTS as u64 + 8));
    }
}
