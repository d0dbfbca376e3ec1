//! Per-layer figures: counters kept per thread, shared states, and the
//! pace that says whether a thread samples.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::snapshot::{LayerSnapshot, rate, secs};
use super::window::AtomicEwma;
use super::{Inner, LAYERS};
use crate::observe::slot::{self, SHARED};
use crate::observe::words::CircuitState;
use crate::util::IgnorePoison;

pub(super) const NO_STATE: u8 = u8::MAX;

pub(super) fn state_code(s: CircuitState) -> u8 {
    match s {
        CircuitState::Closed => 0,
        CircuitState::Open => 1,
        CircuitState::HalfOpen => 2,
        CircuitState::ForcedOpen => 3,
        CircuitState::ForcedClosed => 4,
    }
}

fn state_of(code: u8) -> Option<CircuitState> {
    Some(match code {
        0 => CircuitState::Closed,
        1 => CircuitState::Open,
        2 => CircuitState::HalfOpen,
        3 => CircuitState::ForcedOpen,
        4 => CircuitState::ForcedClosed,
        _ => return None,
    })
}

/// A layer's counters, indices into [`Counts`].
pub(super) mod count {
    pub(in crate::observe::monitor) const REQUESTS: usize = 0;
    pub(in crate::observe::monitor) const LIMITED: usize = 1;
    pub(in crate::observe::monitor) const SHADOW_LIMITED: usize = 2;
    pub(in crate::observe::monitor) const WAITED: usize = 3;
    pub(in crate::observe::monitor) const WAIT_NANOS: usize = 4;
    pub(in crate::observe::monitor) const RETRIES: usize = 5;
    pub(in crate::observe::monitor) const GAVE_UP: usize = 6;
    pub(in crate::observe::monitor) const BUDGET_EXHAUSTED: usize = 7;
    pub(in crate::observe::monitor) const QUEUED: usize = 8;
    pub(in crate::observe::monitor) const DEQUEUED: usize = 9;
    pub(in crate::observe::monitor) const QUEUE_FULL: usize = 10;
    pub(in crate::observe::monitor) const QUEUE_TIMED_OUT: usize = 11;
    pub(in crate::observe::monitor) const BREAKER_REJECTED: usize = 12;
    pub(in crate::observe::monitor) const BACKEND_FAILURES: usize = 13;
    pub(in crate::observe::monitor) const BACKEND_FALLBACKS: usize = 14;
    pub(in crate::observe::monitor) const COMPLETED: usize = 15;
    pub(in crate::observe::monitor) const FAILED: usize = 16;
    pub(in crate::observe::monitor) const N: usize = 17;
}

/// One thread's counters of a layer ([`slot`]). Only the owning thread
/// writes them (a relaxed load and store: no locked read-modify-write);
/// readers add up every thread's.
///
/// Beside them, the thread's pace through a per-key layer, which says
/// whether its admitted requests are sampled ([`Pace`]).
pub(super) struct Counts(pub(super) [AtomicU64; count::N], pub(super) Pace);

impl Default for Counts {
    fn default() -> Self {
        Counts(std::array::from_fn(|_| AtomicU64::new(0)), Pace::default())
    }
}

/// How many requests a thread admitted through a layer in the current span
/// of [`SPAN`] nanoseconds, measured at each followed request: a thread
/// that admitted [`BUSY`] or more in its last span samples them
/// ([`MonitorBuilder::sample_one_in`]), a quieter one follows every one.
/// Written by its thread only (threads past the 32nd share one, an
/// estimate).
#[derive(Default)]
pub(super) struct Pace {
    start: AtomicU64,
    admitted: AtomicU64,
    pub(super) sampling: AtomicBool,
}

/// The span over which a thread's pace is measured.
const SPAN: u64 = 100_000_000;
/// Admitted requests per [`SPAN`] from which a thread samples: 10 000 a
/// second.
const BUSY: u64 = 1_000;

impl Pace {
    /// Whether the thread samples.
    #[inline(always)]
    pub(super) fn sampling(&self) -> bool {
        self.sampling.load(Relaxed)
    }

    /// Counts a followed request standing for `weight` at `now`; a new span
    /// starts once the current one is over, sampling if the last was busy.
    #[inline]
    pub(super) fn followed(&self, now: u64, weight: u64) {
        let start = self.start.load(Relaxed);
        if now.wrapping_sub(start) >= SPAN {
            let busy = self.admitted.load(Relaxed) >= BUSY;
            if self.sampling.load(Relaxed) != busy {
                self.sampling.store(busy, Relaxed);
            }
            self.start.store(now, Relaxed);
            self.admitted.store(weight, Relaxed);
        } else {
            let admitted = self.admitted.load(Relaxed);
            self.admitted
                .store(admitted.saturating_add(weight), Relaxed);
        }
    }
}

/// This thread's counters of a layer.
#[derive(Clone, Copy)]
pub(super) struct Mine<'a> {
    pub(super) counts: &'a Counts,
    slot: usize,
}

impl Mine<'_> {
    /// This thread's pace through the layer.
    #[inline(always)]
    pub(super) fn pace(&self) -> &Pace {
        &self.counts.1
    }

    #[inline(always)]
    pub(super) fn add(&self, i: usize, n: u64) {
        slot::add(&self.counts.0[i], self.slot, n);
    }
}

/// Per-layer (or per-scope) figures: counters per thread, states shared.
pub(super) struct LayerStats {
    pub(super) name: &'static str,
    /// The address of another copy of `name`'s text, once seen.
    alias: AtomicUsize,
    /// Each thread's counters, by [`slot`], cache-line padded so threads
    /// never share a line.
    pub(super) counts: [CachePadded<Counts>; SHARED + 1],
    pub(super) queue_depth: AtomicU64,
    pub(super) has_queue: AtomicBool,
    pub(super) breaker_state: AtomicU8,
    pub(super) breaker_alerted: AtomicBool,
    pub(super) breaker_changes: AtomicU64,
    pub(super) backend_down: AtomicU8,
    pub(super) backend_alerted: AtomicBool,
    pub(super) latency: AtomicEwma,
}

impl LayerStats {
    pub(super) fn new(name: &'static str) -> Self {
        LayerStats {
            name,
            alias: AtomicUsize::new(0),
            counts: std::array::from_fn(|_| CachePadded::default()),
            queue_depth: AtomicU64::new(0),
            has_queue: AtomicBool::new(false),
            breaker_state: AtomicU8::new(NO_STATE),
            breaker_alerted: AtomicBool::new(false),
            breaker_changes: AtomicU64::new(0),
            backend_down: AtomicU8::new(NO_STATE),
            backend_alerted: AtomicBool::new(false),
            latency: AtomicEwma::default(),
        }
    }

    /// This thread's counters.
    #[inline(always)]
    pub(super) fn counts(&self) -> Mine<'_> {
        let slot = slot::slot();
        Mine {
            counts: &self.counts[slot],
            slot,
        }
    }

    /// This thread's pace through the layer.
    #[inline(always)]
    pub(super) fn pace(&self) -> &Pace {
        &self.counts[slot::slot()].1
    }

    /// Whether `name` is this layer's name: by address first (a name is
    /// usually one `&'static str`, or a few copies of it, one per module
    /// that reports it), by text the first time a copy is seen.
    #[inline(always)]
    pub(super) fn is(&self, name: &'static str) -> bool {
        let at = name.as_ptr() as usize;
        ((at == self.name.as_ptr() as usize || at == self.alias.load(Relaxed))
            && name.len() == self.name.len())
            || self.is_copy(name)
    }

    #[cold]
    fn is_copy(&self, name: &'static str) -> bool {
        let same = self.name == name;
        if same {
            self.alias.store(name.as_ptr() as usize, Relaxed);
        }
        same
    }

    pub(super) fn snapshot(&self) -> LayerSnapshot {
        let mut c = [0u64; count::N];
        for counts in self.counts.iter() {
            for (sum, a) in c.iter_mut().zip(&counts.0) {
                *sum = sum.wrapping_add(a.load(Relaxed));
            }
        }
        let requests = c[count::REQUESTS];
        let limited = c[count::LIMITED];
        let shadow_limited = c[count::SHADOW_LIMITED];
        LayerSnapshot {
            name: self.name.to_owned(),
            requests,
            allowed: requests.saturating_sub(limited),
            limited,
            shadow_limited,
            limited_rate: rate(limited + shadow_limited, requests),
            waited: c[count::WAITED],
            wait_total: Duration::from_nanos(c[count::WAIT_NANOS]),
            retries: c[count::RETRIES],
            gave_up: c[count::GAVE_UP],
            budget_exhausted: c[count::BUDGET_EXHAUSTED],
            queued: c[count::QUEUED],
            dequeued: c[count::DEQUEUED],
            queue_full: c[count::QUEUE_FULL],
            queue_timed_out: c[count::QUEUE_TIMED_OUT],
            queue_depth: self
                .has_queue
                .load(Relaxed)
                .then(|| self.queue_depth.load(Relaxed) as usize),
            breaker_state: state_of(self.breaker_state.load(Relaxed)),
            breaker_rejected: c[count::BREAKER_REJECTED],
            backend_failures: c[count::BACKEND_FAILURES],
            backend_fallbacks: c[count::BACKEND_FALLBACKS],
            backend_available: match self.backend_down.load(Relaxed) {
                0 => Some(true),
                1 => Some(false),
                _ => None,
            },
            completed: c[count::COMPLETED],
            failed: c[count::FAILED],
            latency_ewma: self.latency.get().map(secs),
        }
    }
}

impl Inner {
    /// `name`'s statistics, added if new.
    #[inline]
    pub(super) fn layer(&self, name: &'static str) -> &Arc<LayerStats> {
        for slot in self.layers.iter() {
            match slot.get() {
                Some(l) if l.is(name) => return l,
                Some(_) => {}
                None => return self.add_layer(name),
            }
        }
        self.layers[LAYERS - 1].get().expect("filled")
    }

    #[cold]
    fn add_layer(&self, name: &'static str) -> &Arc<LayerStats> {
        let _guard = self.layers_lock.lock().ignore_poison();
        for slot in self.layers.iter() {
            match slot.get() {
                Some(l) if l.name == name => return l,
                Some(_) => {}
                None => return slot.get_or_init(|| Arc::new(LayerStats::new(name))),
            }
        }
        self.layers[LAYERS - 1].get().expect("filled")
    }
}
