//! [`MetricsObserver`]: events as `metrics` counters, gauges and histograms.

use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashMap};
use metrics::{Label, counter, gauge, histogram};

use super::{Event, EventKey, FailureAction, Observer};
use crate::classify::Outcome;
use crate::observe::words::CircuitState;
use crate::observe::words::GiveUpReason;
use crate::util::IgnorePoison;

/// An [`Observer`] that records every event through the
/// [`metrics`](https://docs.rs/metrics) facade, so any `metrics` exporter
/// (Prometheus, StatsD, OpenTelemetry, ...) publishes them. Feature
/// `metrics`.
///
/// | name | kind | labels | from |
/// |---|---|---|---|
/// | `sluice_requests_total` | counter | `layer`, `outcome` | every admission decision: `outcome` is `allowed`, `limited`, `shadow_limited` (shadow mode: let through), `in_flight_limited`, `store_full`, `too_large` (a cost above a quota's burst), `missing_key` (each with a `shadow_` twin, such as `shadow_missing_key`, for what shadow mode let through), `breaker_rejected`, `breaker_shadow_rejected`, `queue_full`, `queue_timed_out`, `dequeued` (sent after waiting in a queue), `sent` (sent by a queue at once); adaptive layers' refusals count as `limited` |
/// | `sluice_wait_seconds` | histogram | `layer` | time a request waited for its turn (rate limit, queue) |
/// | `sluice_latency_seconds` | histogram | `layer` | response time ([`Event::Completed`], [`Event::BreakerCall`]); every call is timed (the default [`Observer::latency_one_in`](super::Observer::latency_one_in)) |
/// | `sluice_breaker_state` | gauge | `layer` | 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed |
/// | `sluice_breaker_transitions_total` | counter | `layer`, `from`, `to` | state changes |
/// | `sluice_breaker_calls_total` | counter | `layer`, `outcome` (`success`, `failure`, `overloaded`, `ignored`) | classified calls |
/// | `sluice_queue_depth` | gauge | `layer` | requests waiting |
/// | `sluice_retries_total` | counter | `layer` | retries scheduled |
/// | `sluice_retry_gave_up_total` | counter | `layer`, `reason` | retry layers giving up |
/// | `sluice_retry_budget_exhausted_total` | counter | `layer` | retries refused by the budget |
/// | `sluice_backend_failures_total` | counter | `backend`, `action` (`allowed`, `refused`, `fallback`) | decisions a backend failed to make |
/// | `sluice_backend_up` | gauge | `backend` | 1 up, 0 down (set on changes) |
/// | `sluice_limit_changes_total` | counter | `layer` | adaptive per-key limits changed |
/// | `sluice_concurrency_limit` | gauge | `layer` | an adaptive concurrency layer's current limit |
///
/// `layer` is the event's layer name (`rate_limit`, `per_key`,
/// `circuit_breaker`, `queue`, `retry`) or the name given to
/// [`scope`](Self::scope).
///
/// # Keys and cardinality
///
/// Keys are **not** labels by default: a label per client IP would create
/// a time series per client. [`key_label`](Self::key_label) adds a `key`
/// label to `sluice_requests_total` for at most `max` distinct keys (the
/// first seen); every other key is labelled `key="other"`. Key label values
/// are the keys' `Debug` text (formatted once per key and cached).
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::MetricsObserver;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// let layer = PerKeyLayer::new(Quota::per_second(10), |req: &String| Some(req.clone()))
///     .observer(MetricsObserver::new().key_label(100));
/// # let _svc = tower::Layer::layer(&layer, tower::service_fn(|r: String| async move { Ok::<_, std::convert::Infallible>(r) }));
/// ```
pub struct MetricsObserver {
    scope: Option<&'static str>,
    key_cap: usize,
    keys: Mutex<HashMap<u64, String>>,
    hasher: DefaultHashBuilder,
}

impl MetricsObserver {
    /// Records through the global `metrics` recorder, keys not labelled.
    ///
    /// # Examples
    ///
    /// ```
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::MetricsObserver;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// // In a program: `PrometheusBuilder::new().install()` once at start-up. Here a
    /// // local recorder, to read what was recorded.
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// metrics::with_local_recorder(&recorder, || {
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async {
    ///         let svc = ServiceBuilder::new()
    ///             .layer(RateLimitLayer::new(Quota::per_minute(1)).reject().observer(MetricsObserver::new()))
    ///             .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    ///         let _ = svc.clone().oneshot(()).await;
    ///         let _ = svc.clone().oneshot(()).await;
    ///     });
    /// });
    /// let text = handle.render();
    /// assert!(text.contains(r#"sluice_requests_total{layer="rate_limit",outcome="allowed"} 1"#));
    /// assert!(text.contains(r#"sluice_requests_total{layer="rate_limit",outcome="limited"} 1"#));
    /// ```
    pub fn new() -> Self {
        MetricsObserver {
            scope: None,
            key_cap: 0,
            keys: Mutex::new(HashMap::new()),
            hasher: DefaultHashBuilder::default(),
        }
    }

    /// Label every metric with `layer="<name>"` instead of the event's
    /// layer (two breakers, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::MetricsObserver;
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// // Two breakers, told apart as layer="payments" and layer="search".
    /// let payments = CircuitBreakerLayer::default().observer(MetricsObserver::new().scope("payments"));
    /// let search = CircuitBreakerLayer::default().observer(MetricsObserver::new().scope("search"));
    /// # let _ = (payments, search);
    /// ```
    #[must_use]
    pub fn scope(mut self, name: &'static str) -> Self {
        self.scope = Some(name);
        self
    }

    /// Adds a `key` label to `sluice_requests_total`, for at most `max`
    /// distinct keys; the rest share `key="other"`. `0` (the default)
    /// means no key label.
    ///
    /// # Examples
    ///
    /// ```
    /// use metrics_exporter_prometheus::PrometheusBuilder;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::MetricsObserver;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// metrics::with_local_recorder(&recorder, || {
    ///     let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    ///     rt.block_on(async {
    ///         // A label for the first key only; the others are "other".
    ///         let svc = ServiceBuilder::new()
    ///             .layer(
    ///                 PerKeyLayer::new(Quota::per_minute(10), |user: &u64| Some(*user))
    ///                     .observer(MetricsObserver::new().key_label(1)),
    ///             )
    ///             .service(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    ///         for user in [1, 2, 3] {
    ///             svc.clone().oneshot(user).await.unwrap();
    ///         }
    ///     });
    /// });
    /// let text = handle.render();
    /// assert!(text.contains(r#"key="1""#));
    /// assert!(text.contains(r#"key="other""#));
    /// assert!(!text.contains(r#"key="2""#));
    /// ```
    #[must_use]
    pub fn key_label(mut self, max: usize) -> Self {
        self.key_cap = max;
        self
    }

    fn key_value(&self, key: &dyn EventKey) -> String {
        let mut h = self.hasher.build_hasher();
        let _ = write!(HashText(&mut h), "{key:?}");
        let hash = h.finish();
        let mut keys = self.keys.lock().ignore_poison();
        if let Some(v) = keys.get(&hash) {
            return v.clone();
        }
        if keys.len() >= self.key_cap {
            return "other".to_owned();
        }
        let text = format!("{key:?}");
        keys.insert(hash, text.clone());
        text
    }

    fn request(&self, layer: &'static str, key: Option<&dyn EventKey>, outcome: &'static str) {
        match key {
            Some(key) if self.key_cap > 0 => {
                let labels = [
                    Label::new("layer", layer),
                    Label::new("outcome", outcome),
                    Label::new("key", self.key_value(key)),
                ];
                counter!("sluice_requests_total", labels.iter()).increment(1);
            }
            _ => counter!("sluice_requests_total", "layer" => layer, "outcome" => outcome)
                .increment(1),
        }
    }
}

impl Default for MetricsObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsObserver")
            .field("scope", &self.scope)
            .field("key_label", &self.key_cap)
            .finish()
    }
}

struct HashText<'a, H>(&'a mut H);

impl<H: Hasher> fmt::Write for HashText<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

fn state_name(s: CircuitState) -> &'static str {
    match s {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
        CircuitState::ForcedOpen => "forced_open",
        CircuitState::ForcedClosed => "forced_closed",
    }
}

fn state_value(s: CircuitState) -> f64 {
    match s {
        CircuitState::Closed => 0.0,
        CircuitState::Open => 1.0,
        CircuitState::HalfOpen => 2.0,
        CircuitState::ForcedOpen => 3.0,
        CircuitState::ForcedClosed => 4.0,
    }
}

impl Observer for MetricsObserver {
    fn on_event(&self, event: &Event<'_>) {
        let layer = self.scope.unwrap_or_else(|| event.layer());
        match *event {
            Event::Allowed { .. }
            | Event::Limited { .. }
            | Event::InFlightLimited { .. }
            | Event::StoreFull { .. }
            | Event::TooLarge { .. }
            | Event::MissingKey { .. }
            | Event::AdaptiveRejected { .. }
            | Event::BreakerRejected { .. }
            | Event::QueueFull { .. } => self.decided(layer, event),
            Event::Waited { waited, .. } => record_wait(layer, waited),
            Event::Completed { latency, .. } => record_latency(layer, latency),
            Event::LimitChanged { .. } => {
                counter!("sluice_limit_changes_total", "layer" => layer).increment(1);
            }
            Event::ConcurrencyLimitChanged { new, .. } => {
                gauge!("sluice_concurrency_limit", "layer" => layer).set(f64::from(new));
            }
            Event::BreakerStateChanged { from, to, .. } => breaker_changed(layer, from, to),
            Event::BreakerCall {
                outcome, latency, ..
            } => breaker_call(layer, outcome, latency),
            Event::RetryScheduled { .. } => {
                counter!("sluice_retries_total", "layer" => layer).increment(1);
            }
            Event::RetryGaveUp { reason, .. } => gave_up(layer, reason),
            Event::RetryBudgetExhausted { .. } => {
                counter!("sluice_retry_budget_exhausted_total", "layer" => layer).increment(1);
            }
            Event::Queued { depth, .. } => queue_depth(layer, depth),
            Event::Dequeued {
                waited,
                depth,
                queued,
                ..
            } => self.dequeued(layer, waited, depth, queued),
            Event::QueueTimedOut { depth, .. } => {
                self.request(layer, None, "queue_timed_out");
                queue_depth(layer, depth);
            }
            Event::QueueClosed { .. } => {}
            Event::BackendFailure { action, .. } => backend_failure(layer, action),
            Event::BackendStateChanged { available, .. } => {
                gauge!("sluice_backend_up", "backend" => layer).set(if available {
                    1.0
                } else {
                    0.0
                });
            }
        }
    }
}

impl MetricsObserver {
    /// Counts an admission decision under its `outcome` label (and its
    /// key's, for the events whose key is the request's).
    fn decided(&self, layer: &'static str, event: &Event<'_>) {
        let (key, outcome) = match *event {
            Event::Allowed { .. } => (event.key(), "allowed"),
            Event::Limited { enforced, .. } => {
                (event.key(), either(enforced, "limited", "shadow_limited"))
            }
            Event::InFlightLimited { enforced, .. } => (
                event.key(),
                either(enforced, "in_flight_limited", "shadow_in_flight_limited"),
            ),
            Event::StoreFull { enforced, .. } => (
                event.key(),
                either(enforced, "store_full", "shadow_store_full"),
            ),
            Event::TooLarge { enforced, .. } => (
                event.key(),
                either(enforced, "too_large", "shadow_too_large"),
            ),
            Event::MissingKey { enforced, .. } => {
                (None, either(enforced, "missing_key", "shadow_missing_key"))
            }
            Event::AdaptiveRejected { enforced, .. } => {
                (None, either(enforced, "limited", "shadow_limited"))
            }
            Event::BreakerRejected { enforced, .. } => (
                None,
                either(enforced, "breaker_rejected", "breaker_shadow_rejected"),
            ),
            Event::QueueFull { .. } => (None, "queue_full"),
            _ => return,
        };
        self.request(layer, key, outcome);
    }

    /// A request leaving a queue: sent after waiting, or at once.
    fn dequeued(&self, layer: &'static str, waited: Duration, depth: usize, queued: bool) {
        if queued {
            self.request(layer, None, "dequeued");
            histogram!("sluice_wait_seconds", "layer" => layer).record(waited.as_secs_f64());
        } else {
            self.request(layer, None, "sent");
        }
        queue_depth(layer, depth);
    }
}

/// The label of a decision: `enforced`'s, or the one shadow mode let through.
fn either(enforced: bool, label: &'static str, shadow: &'static str) -> &'static str {
    if enforced { label } else { shadow }
}

fn record_wait(layer: &'static str, waited: Duration) {
    histogram!("sluice_wait_seconds", "layer" => layer).record(waited.as_secs_f64());
}

fn record_latency(layer: &'static str, latency: Option<Duration>) {
    if let Some(latency) = latency {
        histogram!("sluice_latency_seconds", "layer" => layer).record(latency.as_secs_f64());
    }
}

fn queue_depth(layer: &'static str, depth: usize) {
    gauge!("sluice_queue_depth", "layer" => layer).set(depth as f64);
}

fn breaker_changed(layer: &'static str, from: CircuitState, to: CircuitState) {
    gauge!("sluice_breaker_state", "layer" => layer).set(state_value(to));
    counter!(
        "sluice_breaker_transitions_total",
        "layer" => layer,
        "from" => state_name(from),
        "to" => state_name(to)
    )
    .increment(1);
}

fn breaker_call(layer: &'static str, outcome: Outcome, latency: Option<Duration>) {
    let outcome = match outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Overloaded => "overloaded",
        Outcome::Ignore => "ignored",
    };
    counter!("sluice_breaker_calls_total", "layer" => layer, "outcome" => outcome).increment(1);
    record_latency(layer, latency);
}

fn gave_up(layer: &'static str, reason: GiveUpReason) {
    let reason = match reason {
        GiveUpReason::MaxAttempts => "max_attempts",
        GiveUpReason::MaxElapsed => "max_elapsed",
        GiveUpReason::Pushback => "pushback",
        GiveUpReason::Budget => "budget",
        GiveUpReason::NotReplayable => "not_replayable",
    };
    counter!("sluice_retry_gave_up_total", "layer" => layer, "reason" => reason).increment(1);
}

fn backend_failure(layer: &'static str, action: FailureAction) {
    let action = match action {
        FailureAction::Allowed => "allowed",
        FailureAction::Refused => "refused",
        FailureAction::Fallback => "fallback",
    };
    counter!("sluice_backend_failures_total", "backend" => layer, "action" => action).increment(1);
}
