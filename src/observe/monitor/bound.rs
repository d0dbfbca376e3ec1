//! A monitor bound to the layer it is given to: the short paths a layer
//! inlines where it reports.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::counters::{LayerStats, count};
use super::{Monitor, Scoped};
use crate::classify::Outcome;
use crate::headers::saturating_nanos as nanos;
use crate::observe::{Event, EventKey, one_in};

/// Where a bound monitor counted a keyed request: the key's hash and its
/// row, so that the request's completion is counted there without hashing
/// the key or probing for its row. The row is checked first (its hash
/// read again): if it was given to another key meanwhile, the completion
/// looks the key up as any keyed event does. [`NONE`](Self::NONE) for a
/// request counted elsewhere (or not at all).
///
/// It also says whether the request is followed at all: a bound monitor
/// that samples keyed requests ([`MonitorBuilder::sample_one_in`]) follows
/// about one in `n` to its completion, counted `weight` (`n`) times, and
/// returns [`SKIP`](Self::SKIP) for the others: their completion is not
/// reported.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowHint {
    /// The key's hash; 0 = no hint.
    pub(super) hash: u64,
    /// The row's index in the key table.
    pub(super) at: usize,
    /// How many requests this one stands for (0: not followed).
    pub(super) weight: u32,
}

impl RowHint {
    /// Followed, counted once, no row known.
    pub(crate) const NONE: RowHint = RowHint {
        hash: 0,
        at: 0,
        weight: 1,
    };
    /// Not followed: its completion is not reported.
    pub(crate) const SKIP: RowHint = RowHint {
        hash: 0,
        at: 0,
        weight: 0,
    };

    /// Whether the request's completion is reported.
    #[inline]
    pub(crate) fn follows(&self) -> bool {
        self.weight != 0
    }

    /// Whether the request was drawn by a sampling monitor (and is timed).
    #[inline]
    pub(crate) fn sampled(&self) -> bool {
        self.weight > 1
    }
}

/// A [`Monitor`] (or a [`Scoped`] one) as one layer holds it: events go
/// straight to the monitor (no dynamic call), and the layer's statistics
/// are looked up once, when the monitor is given to the layer, instead of
/// by name per event: the bound monitor keeps them (a reference count), so
/// that counting an event is one pointer away from this thread's counters.
#[derive(Clone)]
pub(crate) struct Bound {
    monitor: Monitor,
    scope: Option<&'static str>,
    /// The statistics of the layer's name (or of the scope).
    layer: Arc<LayerStats>,
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("monitor", &self.monitor)
            .field("scope", &self.scope)
            .field("layer", &self.layer.name)
            .finish()
    }
}

impl Monitor {
    /// This monitor, bound to the layer it is given to, whose events carry
    /// `layer` as their name.
    pub(crate) fn bind(&self, layer: &'static str) -> Bound {
        Bound {
            monitor: self.clone(),
            scope: None,
            layer: self.inner.layer(layer).clone(),
        }
    }
}

impl Scoped {
    /// This scoped observer, bound to the layer it is given to (whose
    /// events count under the scope's name).
    pub(crate) fn bind(&self, _layer: &'static str) -> Bound {
        Bound {
            scope: Some(self.name),
            ..self.monitor.bind(self.name)
        }
    }
}

impl Bound {
    /// Counts `event`, as [`Observer::on_event`] of the monitor (or scope).
    ///
    /// Inlined into each place a layer reports, where the event's variant
    /// and layer name are known: what is left is the short path of that
    /// one event.
    #[inline(always)]
    pub(crate) fn observe(&self, event: &Event<'_>) {
        let name = self.scope.unwrap_or_else(|| event.layer());
        self.monitor.inner.observe_in(self.stats(name), name, event);
    }

    /// Counts an unkeyed [`Event::Allowed`] from `layer`, as
    /// [`observe`](Self::observe) would (it reads nothing else of it).
    #[inline(always)]
    pub(crate) fn allowed(&self, layer: &'static str) {
        let name = self.scope.unwrap_or(layer);
        self.hot(name).counts().add(count::REQUESTS, 1);
    }

    /// Counts a keyed [`Event::Allowed`] from `layer` in the layer's
    /// figures (exactly) and draws whether to follow it: returns how many
    /// requests it stands for if it is to be followed
    /// ([`follow_key`](Self::follow_key)), 0 if not.
    ///
    /// Inlined where the per-key layer reports an admission: a request a
    /// sampling monitor does not follow costs the layer's count and a draw.
    #[inline(always)]
    pub(crate) fn keyed_allowed(&self, layer: &'static str) -> u32 {
        let name = self.scope.unwrap_or(layer);
        let mine = self.hot(name).counts();
        mine.add(count::REQUESTS, 1);
        match self.monitor.inner.sample_one_in {
            0 | 1 => 1,
            _ if !mine.pace().sampling() => 1,
            n if one_in(n) => n,
            _ => 0,
        }
    }

    /// Counts a request that [`keyed_allowed`](Self::keyed_allowed) chose
    /// to follow, standing for `weight` requests, in its key's row, and
    /// returns where the row is, for [`completed`](Self::completed).
    ///
    /// Inlined into the per-key layer's one call out of line for a
    /// followed admission, with the key's hash and its row.
    #[inline(always)]
    pub(crate) fn follow_key<K: EventKey>(
        &self,
        layer: &'static str,
        key: &K,
        weight: u32,
    ) -> RowHint {
        let name = self.scope.unwrap_or(layer);
        let inner = &*self.monitor.inner;
        let now = inner.clock.now();
        if inner.sample_one_in > 1 {
            self.hot(name).pace().followed(now, u64::from(weight));
        }
        inner.follow(name, key.key_hash(), key, weight, now)
    }

    /// Counts an [`Event::Completed`] from `layer`, as
    /// [`observe`](Self::observe) would, in the key's row found by `row`
    /// (from [`follow_key`](Self::follow_key)) if it is still the key's,
    /// else in the key's row found (or made) by its hash.
    ///
    /// Inlined, as [`follow_key`](Self::follow_key), into the per-key
    /// layer's one call out of line for a completion report.
    #[inline(always)]
    pub(crate) fn completed(
        &self,
        layer: &'static str,
        key: Option<&dyn EventKey>,
        row: RowHint,
        latency: Option<Duration>,
        success: bool,
    ) {
        if !row.follows() {
            return;
        }
        let name = self.scope.unwrap_or(layer);
        let inner = &*self.monitor.inner;
        let latency = latency.map(nanos);
        let weight = u64::from(row.weight);
        inner.count_completed(self.hot(name), latency, success, weight);
        if let Some(key) = key {
            let found = match inner.row_at(row) {
                Some(found) => found,
                None => inner.row_of(key),
            };
            inner.completed(found, latency, success, weight);
        }
    }

    /// Counts an [`Event::BreakerCall`] from `layer`, as
    /// [`observe`](Self::observe) would (it reads nothing else of it).
    #[inline(always)]
    pub(crate) fn breaker_call(
        &self,
        layer: &'static str,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let name = self.scope.unwrap_or(layer);
        let stats = self.hot(name);
        self.monitor
            .inner
            .count_breaker_call(stats, outcome, latency);
        if latency.is_some() {
            self.timed(stats);
        }
    }

    /// Whether the layer should time this call: every call while the
    /// thread is quiet for it, about one in
    /// [`MonitorBuilder::sample_one_in`] once it is busy.
    #[inline(always)]
    pub(crate) fn time_call(&self) -> bool {
        match self.monitor.inner.sample_one_in {
            0 => false,
            1 => true,
            n => !self.layer.pace().sampling() || one_in(n),
        }
    }

    /// Measures the thread's pace at a timed call of a layer whose calls
    /// are not followed otherwise (a breaker's): it stands for one call
    /// while the thread is quiet, for `n` once it samples.
    #[inline(never)]
    pub(super) fn timed(&self, stats: &LayerStats) {
        let inner = &*self.monitor.inner;
        let n = inner.sample_one_in;
        if n > 1 {
            let pace = stats.pace();
            let weight = if pace.sampling() { n } else { 1 };
            pace.followed(inner.clock.now(), u64::from(weight));
        }
    }

    /// The layer's statistics, for the events it reports on every request:
    /// they carry the name it was bound with (checked in debug builds).
    #[inline(always)]
    pub(super) fn hot(&self, name: &'static str) -> &LayerStats {
        debug_assert!(
            self.scope.is_some() || self.layer.is(name),
            "{name} reported through a monitor bound to {}",
            self.layer.name
        );
        &self.layer
    }

    /// The statistics of `name`: the layer's (or the scope's); an unscoped
    /// event of another name, if any, looks its own up.
    #[inline(always)]
    pub(super) fn stats(&self, name: &'static str) -> &LayerStats {
        if self.scope.is_some() || self.layer.is(name) {
            &self.layer
        } else {
            self.other(name)
        }
    }

    #[cold]
    pub(super) fn other(&self, name: &'static str) -> &LayerStats {
        self.monitor.inner.layer(name)
    }
}
