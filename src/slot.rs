//! [`Slot`]: the shared state of a layer, which a layer's setters replace and
//! its handles follow.
//!
//! A layer, its clones and its handles share one slot. Services take the
//! state in the slot when they are made (`Layer::layer`), so the hot path
//! never reads the slot. A setter builds a new state from the current one
//! and stores it in the slot: a handle taken before the setter reads the
//! new state, which is the one the services made afterwards use. Nothing
//! panics, whoever else holds the slot.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

pub(crate) struct Slot<T>(Arc<ArcSwap<T>>);

impl<T> Slot<T> {
    pub(crate) fn new(value: T) -> Self {
        Slot(Arc::new(ArcSwap::from_pointee(value)))
    }

    /// A slot of its own around `value` (a service's handle: never replaced).
    pub(crate) fn from_arc(value: Arc<T>) -> Self {
        Slot(Arc::new(ArcSwap::new(value)))
    }

    /// The current state, for a service being made.
    pub(crate) fn get(&self) -> Arc<T> {
        self.0.load_full()
    }

    /// The current state, for a short read (a handle's getter).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.0.load()
    }

    /// Replaces the state with `rebuild(&current)`, edited by `edit`.
    pub(crate) fn replace(&self, rebuild: impl FnOnce(&T) -> T, edit: impl FnOnce(&mut T)) {
        let mut next = rebuild(&self.0.load());
        edit(&mut next);
        self.0.store(Arc::new(next));
    }
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<T: fmt::Debug> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self.0.load(), f)
    }
}
