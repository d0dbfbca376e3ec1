//! What each event does to a layer's figures and to its key's row.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::Inner;
use super::bound::RowHint;
use super::counters::{LayerStats, NO_STATE, count, state_code};
use super::table::{CHUNK, KeyRow};
use crate::classify::Outcome;
use crate::observe::words::CircuitState;
use crate::observe::{Event, EventKey, FailureAction};

/// What a keyed event does to its key's row.
#[derive(Clone, Copy)]
enum KeyUpdate {
    Request { limited: bool, shadow: bool },
    Waited(u64),
    Completed { latency: Option<u64>, success: bool },
    Retry,
    GaveUp,
}

impl Inner {
    #[inline]
    pub(super) fn observe(&self, event: &Event<'_>, scope: Option<&'static str>) {
        let name = scope.unwrap_or_else(|| event.layer());
        self.observe_in(self.layer(name), name, event);
    }

    /// Counts `event` in `l`, the stats of `name`. The unkeyed events
    /// layers report for every request are kept short (inlined into a
    /// layer's bound observer); the rest go to `apply`.
    #[inline(always)]
    pub(super) fn observe_in(&self, l: &LayerStats, name: &'static str, event: &Event<'_>) {
        use count::*;
        match *event {
            Event::Allowed { key: None, .. } => l.counts().add(REQUESTS, 1),
            Event::Dequeued {
                depth,
                queued: false,
                ..
            } => {
                l.counts().add(REQUESTS, 1);
                if !l.has_queue.load(Relaxed) {
                    l.has_queue.store(true, Relaxed);
                }
                if l.queue_depth.load(Relaxed) != depth as u64 {
                    l.queue_depth.store(depth as u64, Relaxed);
                }
            }
            Event::BreakerCall {
                outcome, latency, ..
            } => self.count_breaker_call(l, outcome, latency),
            _ => self.apply(l, name, event),
        }
    }

    /// Counts a completed request in `l` (its latency, if timed, in
    /// nanoseconds).
    #[inline(always)]
    pub(super) fn count_completed(
        &self,
        l: &LayerStats,
        latency: Option<u64>,
        success: bool,
        weight: u64,
    ) {
        let c = l.counts();
        c.add(count::COMPLETED, weight);
        if !success {
            c.add(count::FAILED, weight);
        }
        if let Some(n) = latency {
            l.latency.add(n as f64, self.alpha);
        }
    }

    /// Counts a call through a breaker in `l`: a request and its
    /// completion, and the breaker shown Closed until a state change says
    /// otherwise.
    #[inline(always)]
    pub(super) fn count_breaker_call(
        &self,
        l: &LayerStats,
        outcome: Outcome,
        latency: Option<Duration>,
    ) {
        let c = l.counts();
        c.add(count::REQUESTS, 1);
        c.add(count::COMPLETED, 1);
        if outcome == Outcome::Failure {
            c.add(count::FAILED, 1);
        }
        if let Some(latency) = latency {
            l.latency
                .add(crate::headers::saturating_nanos(latency) as f64, self.alpha);
        }
        if l.breaker_state.load(Relaxed) == NO_STATE {
            l.breaker_state
                .store(state_code(CircuitState::Closed), Relaxed);
        }
    }

    /// Counts `event` in `l`, the stats of `name`, and a keyed event in
    /// its key's row: a dispatch over the kinds of event.
    #[inline(never)]
    pub(super) fn apply(&self, l: &LayerStats, name: &'static str, event: &Event<'_>) {
        let keyed = match *event {
            Event::Allowed { .. }
            | Event::Limited { .. }
            | Event::InFlightLimited { .. }
            | Event::StoreFull { .. }
            | Event::TooLarge { .. }
            | Event::MissingKey { .. }
            | Event::AdaptiveRejected { .. }
            | Event::BreakerRejected { .. } => count_decision(l, event),
            Event::Waited { waited, .. } => count_wait(l, waited),
            Event::Completed {
                latency, success, ..
            } => {
                let latency = latency.map(crate::headers::saturating_nanos);
                self.count_completed(l, latency, success, 1);
                Some(KeyUpdate::Completed { latency, success })
            }
            // Limit changes are reported, not counted.
            Event::LimitChanged { .. } | Event::ConcurrencyLimitChanged { .. } => None,
            Event::BreakerStateChanged { from, to, .. } => {
                self.breaker_changed(l, from, to);
                None
            }
            // `observe_in` counts these without calling `apply`.
            Event::BreakerCall {
                outcome, latency, ..
            } => {
                self.count_breaker_call(l, outcome, latency);
                None
            }
            Event::RetryScheduled { .. }
            | Event::RetryGaveUp { .. }
            | Event::RetryBudgetExhausted { .. } => count_retry(l, event),
            Event::Queued { .. }
            | Event::Dequeued { .. }
            | Event::QueueFull { .. }
            | Event::QueueTimedOut { .. }
            | Event::QueueClosed { .. } => {
                count_queue(l, event);
                None
            }
            Event::BackendFailure { action, .. } => {
                self.backend_failure(l, action);
                None
            }
            Event::BackendStateChanged { available, .. } => {
                self.backend_changed(l, available);
                None
            }
        };
        if let (Some(update), Some(key)) = (keyed, event.key()) {
            self.update_key(name, key, update);
        }
    }

    /// A breaker's new state, and its alerts.
    #[inline]
    fn breaker_changed(&self, l: &LayerStats, from: CircuitState, to: CircuitState) {
        l.breaker_state.store(state_code(to), Relaxed);
        l.breaker_changes.fetch_add(1, Relaxed);
        self.breaker_alerts(l, from, to);
    }

    /// A decision a backend failed to make, and its alert on a fallback.
    #[inline]
    fn backend_failure(&self, l: &LayerStats, action: FailureAction) {
        let c = l.counts();
        c.add(count::BACKEND_FAILURES, 1);
        if action == FailureAction::Fallback {
            c.add(count::BACKEND_FALLBACKS, 1);
            self.backend_alert(l, action);
        }
    }

    /// A backend's new health: an alert when it goes down, re-armed when
    /// it comes back.
    #[inline]
    fn backend_changed(&self, l: &LayerStats, available: bool) {
        l.backend_down.store(u8::from(!available), Relaxed);
        if available {
            l.backend_alerted.store(false, Relaxed);
        } else {
            self.backend_alert(l, FailureAction::Fallback);
        }
    }

    fn update_key(&self, scope: &'static str, key: &dyn EventKey, update: KeyUpdate) {
        // 0 marks a free way.
        let hash = key.key_hash().max(1);
        let add = |a: &AtomicU64, n: u64| {
            a.fetch_add(n, Relaxed);
        };
        match update {
            KeyUpdate::Request { limited, shadow } => {
                self.request(scope, hash, key, limited, shadow);
            }
            KeyUpdate::Waited(n) => {
                let row = self.row(hash, key, 0);
                add(&row.waited, 1);
                add(&row.wait_nanos, n);
            }
            KeyUpdate::Completed { latency, success } => {
                self.completed(self.row(hash, key, 0), latency, success, 1);
            }
            KeyUpdate::Retry => add(&self.row(hash, key, 0).retries, 1),
            KeyUpdate::GaveUp => add(&self.row(hash, key, 0).gave_up, 1),
        }
    }

    /// Counts an admitted request of `key` (hash `hash`, any value) that
    /// stands for `weight` requests in its row, made if new, and returns
    /// where the row is for the request's completion.
    ///
    #[inline(always)]
    pub(super) fn follow(
        &self,
        scope: &'static str,
        hash: u64,
        key: &dyn EventKey,
        weight: u32,
        now: u64,
    ) -> RowHint {
        // 0 marks a free way.
        let hash = hash.max(1);
        let row = self.request_at(scope, hash, key, u64::from(weight), false, false, now);
        RowHint {
            hash,
            at: self.home(hash).0 * CHUNK + row.at,
            weight,
        }
    }

    /// Counts a request of `key` (hash `hash`) in its row, made if new.
    #[inline(always)]
    pub(super) fn request(
        &self,
        scope: &'static str,
        hash: u64,
        key: &dyn EventKey,
        limited: bool,
        shadow: bool,
    ) -> KeyRow<'_> {
        // Only requests move the window (and the recency that eviction
        // uses).
        self.request_at(scope, hash, key, 1, limited, shadow, self.clock.now())
    }

    /// [`request`](Self::request) standing for `weight` requests, at `now`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn request_at(
        &self,
        scope: &'static str,
        hash: u64,
        key: &dyn EventKey,
        weight: u64,
        limited: bool,
        shadow: bool,
        now: u64,
    ) -> KeyRow<'_> {
        let add = |a: &AtomicU64| {
            a.fetch_add(1, Relaxed);
        };
        let row = self.row(hash, key, now);
        if row.hot.last_seen.load(Relaxed) != now {
            row.hot.last_seen.store(now, Relaxed);
        }
        row.roll(now, self.window);
        row.hot.requests.fetch_add(weight, Relaxed);
        if limited {
            add(&row.hot.limited);
        }
        if shadow {
            add(&row.hot.shadow_limited);
        }
        if let Some(alerts) = &self.alerts {
            self.rate_alerts(alerts, scope, &row, now);
        }
        row
    }

    /// Counts a completion in `row`.
    #[inline]
    pub(super) fn completed(
        &self,
        row: KeyRow<'_>,
        latency: Option<u64>,
        success: bool,
        weight: u64,
    ) {
        row.hot.completed.fetch_add(weight, Relaxed);
        if !success {
            row.hot.failed.fetch_add(weight, Relaxed);
        }
        if let Some(n) = latency {
            row.latency.add(n as f64, self.alpha);
        }
    }
}

/// Counts an admission decision in `l`: a request, and a limited (or
/// shadow-limited) one unless it was allowed; returns what it does to its
/// key's row, for the decisions made for a key.
#[inline]
fn count_decision(l: &LayerStats, event: &Event<'_>) -> Option<KeyUpdate> {
    use count::*;
    let (limited, keyed) = match *event {
        Event::Allowed { .. } => (None, true),
        Event::Limited { enforced, .. }
        | Event::InFlightLimited { enforced, .. }
        | Event::StoreFull { enforced, .. }
        | Event::TooLarge { enforced, .. } => (Some(enforced), true),
        Event::MissingKey { enforced, .. }
        | Event::AdaptiveRejected { enforced, .. }
        | Event::BreakerRejected { enforced, .. } => (Some(enforced), false),
        _ => return None,
    };
    let c = l.counts();
    c.add(REQUESTS, 1);
    if let Event::BreakerRejected { .. } = event {
        c.add(BREAKER_REJECTED, 1);
    }
    if let Some(enforced) = limited {
        c.add(if enforced { LIMITED } else { SHADOW_LIMITED }, 1);
    }
    keyed.then_some(KeyUpdate::Request {
        limited: limited == Some(true),
        shadow: limited == Some(false),
    })
}

/// Counts a request's wait in `l`; returns what it does to its key's row.
#[inline]
fn count_wait(l: &LayerStats, waited: Duration) -> Option<KeyUpdate> {
    let c = l.counts();
    c.add(count::WAITED, 1);
    c.add(count::WAIT_NANOS, crate::headers::saturating_nanos(waited));
    Some(KeyUpdate::Waited(crate::headers::saturating_nanos(waited)))
}

/// Counts a retry layer's event in `l`; returns what it does to its key's
/// row.
#[inline]
fn count_retry(l: &LayerStats, event: &Event<'_>) -> Option<KeyUpdate> {
    let (counter, keyed) = match *event {
        Event::RetryScheduled { .. } => (count::RETRIES, Some(KeyUpdate::Retry)),
        Event::RetryGaveUp { .. } => (count::GAVE_UP, Some(KeyUpdate::GaveUp)),
        Event::RetryBudgetExhausted { .. } => (count::BUDGET_EXHAUSTED, None),
        _ => return None,
    };
    l.counts().add(counter, 1);
    keyed
}

/// Counts a queue's event in `l`, and the queue's depth.
#[inline]
fn count_queue(l: &LayerStats, event: &Event<'_>) {
    use count::*;
    let c = l.counts();
    let one = |i: usize| c.add(i, 1);
    match *event {
        Event::Queued { depth, .. } => {
            one(QUEUED);
            l.has_queue.store(true, Relaxed);
            l.queue_depth.store(depth as u64, Relaxed);
        }
        Event::Dequeued {
            waited,
            depth,
            queued,
            ..
        } => {
            one(REQUESTS);
            if queued {
                one(DEQUEUED);
                one(WAITED);
                c.add(WAIT_NANOS, crate::headers::saturating_nanos(waited));
            }
            if !l.has_queue.load(Relaxed) {
                l.has_queue.store(true, Relaxed);
            }
            if l.queue_depth.load(Relaxed) != depth as u64 {
                l.queue_depth.store(depth as u64, Relaxed);
            }
        }
        Event::QueueFull { .. } => {
            one(REQUESTS);
            one(LIMITED);
            one(QUEUE_FULL);
            l.has_queue.store(true, Relaxed);
        }
        Event::QueueTimedOut { depth, .. } => {
            one(REQUESTS);
            one(LIMITED);
            one(QUEUE_TIMED_OUT);
            l.has_queue.store(true, Relaxed);
            l.queue_depth.store(depth as u64, Relaxed);
        }
        _ => {}
    }
}
