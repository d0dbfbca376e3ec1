//! [`Held`]: a response future's reference to its layer's shared state,
//! lent from a reference its thread keeps, so that a request that succeeds
//! at once takes and gives back a reference count without an atomic
//! operation.

use std::cell::Cell;
use std::sync::Arc;

use super::layer::Shared;

thread_local! {
    /// A reference to the shared state of the layer whose request this
    /// thread finished last, for the next request through that layer.
    static SPARE: Cell<Option<Arc<Shared>>> = const { Cell::new(None) };
}

/// A reference to a layer's shared state (`Some` until dropped).
///
/// Taken from this thread's spare reference when it is the layer's, and
/// given back to the spare of the thread that drops it: a run of requests
/// through one layer on one thread passes one reference along. The spare
/// keeps the shared state (settings, budget, clock) alive until the thread
/// ends or finishes a request through another layer. A layer with an
/// observer (the user's value, which may hold resources) takes and gives
/// back ordinary reference counts instead.
pub(crate) struct Held(Option<Arc<Shared>>);

impl Held {
    /// A reference to `shared`, the spare one if this thread has it.
    #[inline(always)]
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        let spare = SPARE
            .try_with(|s| match s.take() {
                Some(spare) if Arc::ptr_eq(&spare, shared) => Some(spare),
                other => {
                    s.set(other);
                    None
                }
            })
            .ok()
            .flatten();
        Held(Some(spare.unwrap_or_else(|| shared.clone())))
    }

    /// The shared state.
    #[inline]
    pub(crate) fn get(&self) -> &Shared {
        self.0.as_deref().expect("held until dropped")
    }
}

impl Drop for Held {
    /// Gives the reference to this thread's spare, by value (the compiler
    /// then sees no pointer into the future that held it, and may leave
    /// out the writes to a future dropped unread).
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            give_back(shared);
        }
    }
}

#[inline(never)]
fn give_back(shared: Arc<Shared>) {
    if shared.observers.is_set() {
        release(shared);
    } else {
        // The spare it replaces (another layer's) is released; if the
        // thread is ending, this one is.
        let _ = SPARE.try_with(move |s| {
            if let Some(other) = s.replace(Some(shared)) {
                release(other);
            }
        });
    }
}

#[inline(never)]
fn release(shared: Arc<Shared>) {
    drop(shared);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::observe::{Event, Observers};
    use crate::retry::Backoff;
    use crate::retry::layer::Settings;

    fn shared(observers: Observers) -> Arc<Shared> {
        Arc::new(Shared {
            settings: Settings {
                backoff: Backoff::default(),
                max_attempts: 3,
                max_retry_after: Duration::from_secs(60),
            },
            max_elapsed: None,
            budget: None,
            observers,
            clock: Clock::new(),
            streams: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Empties this thread's spare.
    fn clear() {
        SPARE.with(|s| drop(s.take()));
    }

    #[test]
    fn a_thread_passes_one_reference_along() {
        clear();
        let layer = shared(Observers::default());
        for _ in 0..3 {
            let held = Held::new(&layer);
            assert!(std::ptr::eq(held.get(), &*layer));
            assert_eq!(Arc::strong_count(&layer), 2);
            drop(held);
            // Kept as the thread's spare.
            assert_eq!(Arc::strong_count(&layer), 2);
        }
        // Two at once: the second is an ordinary reference count.
        let (a, b) = (Held::new(&layer), Held::new(&layer));
        assert_eq!(Arc::strong_count(&layer), 3);
        drop((a, b));
        assert_eq!(Arc::strong_count(&layer), 2);
        clear();
        assert_eq!(Arc::strong_count(&layer), 1);
    }

    #[test]
    fn another_layer_takes_the_spare_and_the_first_is_released() {
        clear();
        let (a, b) = (shared(Observers::default()), shared(Observers::default()));
        drop(Held::new(&a));
        assert_eq!(Arc::strong_count(&a), 2);
        let held = Held::new(&b);
        // `a`'s spare is left where it was while `b`'s request runs.
        assert_eq!(Arc::strong_count(&a), 2);
        drop(held);
        assert_eq!(Arc::strong_count(&a), 1);
        assert_eq!(Arc::strong_count(&b), 2);
        clear();
    }

    #[test]
    fn the_spare_is_released_when_its_thread_ends() {
        let layer = shared(Observers::default());
        let moved = layer.clone();
        std::thread::spawn(move || drop(Held::new(&moved)))
            .join()
            .unwrap();
        assert_eq!(Arc::strong_count(&layer), 1);
    }

    #[test]
    fn a_layer_with_an_observer_is_not_kept() {
        clear();
        let layer = shared(Observers::new(|_: &Event<'_>| {}, "retry"));
        drop(Held::new(&layer));
        assert_eq!(Arc::strong_count(&layer), 1);
    }
}
