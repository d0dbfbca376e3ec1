//! How a layer holds its observer and reports to it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::monitor::{self, Monitor, RowHint, Scoped};
use super::{Event, EventKey, Observer};
use crate::classify::Outcome;
use crate::gcra::Decision;

/// Whole milliseconds, for `tracing` fields.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An optional, shared observer, as the layers hold it, with how often it
/// wants a call timed ([`Observer::latency_one_in`](crate::observe::Observer::latency_one_in), asked once).
///
/// A [`Monitor`](crate::observe::Monitor) or [`Scoped`](crate::observe::Scoped) monitor is held as itself and bound to the
/// layer (no dynamic call, the layer's statistics found once); any other
/// observer (a [`Fanout`](crate::observe::Fanout) holding a monitor included) behind
/// `Arc<dyn Observer>`.
#[derive(Clone, Default)]
pub(crate) struct Observers {
    kind: Kind,
    one_in: u32,
}

#[derive(Clone, Default)]
enum Kind {
    #[default]
    None,
    Monitor(monitor::Bound),
    Dyn(Arc<dyn Observer>),
}

impl Observers {
    /// `observer`, for a layer whose events carry `layer` as their layer
    /// (or backend) name: a [`Monitor`](crate::observe::Monitor) is bound to that name's figures.
    pub(crate) fn new(observer: impl Observer, layer: &'static str) -> Self {
        let one_in = observer.latency_one_in();
        let any: &dyn std::any::Any = &observer;
        let kind = if let Some(m) = any.downcast_ref::<Monitor>() {
            Kind::Monitor(m.bind(layer))
        } else if let Some(s) = any.downcast_ref::<Scoped>() {
            Kind::Monitor(s.bind(layer))
        } else {
            Kind::Dyn(Arc::new(observer))
        };
        Observers { kind, one_in }
    }

    /// Whether anyone is listening (so callers can skip building events).
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        !matches!(self.kind, Kind::None)
    }

    /// Whether to time this call: for about one call in
    /// [`latency_one_in`](Observer::latency_one_in), at random; never
    /// without an observer. A bound [`Monitor`](crate::observe::Monitor) has every call timed while
    /// the thread is quiet for the layer (see
    /// [`MonitorBuilder::sample_one_in`](super::MonitorBuilder::sample_one_in)).
    #[inline]
    pub(crate) fn time_this_call(&self) -> bool {
        match (&self.kind, self.one_in) {
            (Kind::None, _) => false,
            (Kind::Monitor(m), _) => m.time_call(),
            (Kind::Dyn(_), 0) => false,
            (Kind::Dyn(_), 1) => true,
            (Kind::Dyn(_), n) => one_in(n),
        }
    }

    /// Reports [`Event::Allowed`] of an unkeyed layer, building its
    /// decision only for an observer that reads it (a bound [`Monitor`](crate::observe::Monitor)
    /// only counts the request).
    #[inline]
    pub(crate) fn emit_allowed(&self, layer: &'static str, decision: impl FnOnce() -> Decision) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.allowed(layer),
            Kind::Dyn(o) => o.on_event(&Event::Allowed {
                layer,
                key: None,
                decision: &decision(),
            }),
        }
    }

    /// Starts reporting [`Event::Allowed`] of a keyed layer: a bound
    /// [`Monitor`](crate::observe::Monitor) counts it for the layer and draws whether to follow it
    /// (0: not followed; else the number of requests it stands for), and
    /// the rest of the report, [`emit_keyed_allowed`](Self::emit_keyed_allowed),
    /// is only needed for a followed request. Other observers: 1 (every
    /// request reported as an event).
    #[inline]
    pub(crate) fn keyed_allowed_weight(&self, layer: &'static str) -> u32 {
        match &self.kind {
            Kind::Monitor(m) => m.keyed_allowed(layer),
            Kind::None | Kind::Dyn(_) => 1,
        }
    }

    /// Reports [`Event::Allowed`] of a keyed layer, for a request
    /// [`keyed_allowed_weight`](Self::keyed_allowed_weight) weighed as
    /// `weight` (0: not followed). A bound [`Monitor`](crate::observe::Monitor) returns where it
    /// counted the key, for [`emit_completed`](Self::emit_completed), or
    /// [`RowHint::SKIP`] for a request it does not follow; other observers
    /// [`RowHint::NONE`].
    ///
    /// Generic over the key's type so that a bound [`Monitor`](crate::observe::Monitor) hashes it
    /// with a direct call.
    #[inline]
    pub(crate) fn emit_keyed_allowed<K: EventKey>(
        &self,
        layer: &'static str,
        key: &K,
        decision: &Decision,
        weight: u32,
    ) -> RowHint {
        match &self.kind {
            Kind::None => RowHint::NONE,
            Kind::Monitor(_) if weight == 0 => RowHint::SKIP,
            Kind::Monitor(m) => m.follow_key(layer, key, weight),
            Kind::Dyn(o) => {
                o.on_event(&Event::Allowed {
                    layer,
                    key: Some(key),
                    decision,
                });
                RowHint::NONE
            }
        }
    }

    /// Reports [`Event::Completed`]; `row` is what
    /// [`emit_keyed_allowed`](Self::emit_keyed_allowed) returned for the
    /// request (a bound [`Monitor`](crate::observe::Monitor) counts it there without looking the key
    /// up), or [`RowHint::NONE`].
    #[inline]
    pub(crate) fn emit_completed(
        &self,
        layer: &'static str,
        key: Option<&dyn EventKey>,
        row: RowHint,
        latency: Option<Duration>,
        success: bool,
    ) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.completed(layer, key, row, latency, success),
            Kind::Dyn(o) => o.on_event(&Event::Completed {
                layer,
                key,
                latency,
                success,
            }),
        }
    }

    /// Reports [`Event::BreakerCall`], building the event only for an
    /// observer that reads it (a bound [`Monitor`](crate::observe::Monitor) counts the call and its
    /// latency).
    #[inline]
    pub(crate) fn emit_breaker_call(
        &self,
        layer: &'static str,
        key: Option<&dyn EventKey>,
        outcome: Outcome,
        slow: bool,
        counted: bool,
        latency: Option<Duration>,
    ) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.breaker_call(layer, outcome, latency),
            Kind::Dyn(o) => o.on_event(&Event::BreakerCall {
                layer,
                key,
                outcome,
                slow,
                counted,
                latency,
            }),
        }
    }

    #[inline]
    pub(crate) fn emit(&self, event: &Event<'_>) {
        match &self.kind {
            Kind::None => {}
            Kind::Monitor(m) => m.observe(event),
            Kind::Dyn(o) => o.on_event(event),
        }
    }
}

impl fmt::Debug for Observers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_set() { "Some(..)" } else { "None" })
    }
}

/// `true` with probability about `1 / n` (`n >= 1`), from the crate's
/// per-thread generator: independent draws, so layers that share a thread
/// never fall into step with one another (a shared countdown would time
/// only the first of two layers on every request).
#[inline]
pub(crate) fn one_in(n: u32) -> bool {
    crate::util::rng::one_in(n)
}
