//! [`Snapshot`] and its parts: a monitor's figures as plain data.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::time::Duration;

use super::Inner;
use super::table::KeyRow;
#[cfg(doc)]
use super::{Monitor, MonitorBuilder};
#[cfg(doc)]
use crate::observe::Event;
use crate::observe::words::CircuitState;
#[cfg(feature = "serde")]
fn ser_state<S: serde::Serializer>(s: &CircuitState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(match s {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
        CircuitState::ForcedOpen => "forced_open",
        CircuitState::ForcedClosed => "forced_closed",
    })
}

#[cfg(feature = "serde")]
fn ser_state_opt<S: serde::Serializer>(
    s: &Option<CircuitState>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser_state(s, ser),
        None => ser.serialize_none(),
    }
}

/// Everything a [`Monitor`] knows, as plain data (serialisable with the
/// `serde` feature; durations as `{secs, nanos}`, breaker states as
/// `"closed"`, `"open"`, `"half_open"`, ...).
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::Monitor;
/// use tower_sluice::CircuitBreakerLayer;
///
/// let monitor = Monitor::new();
/// let breaker = CircuitBreakerLayer::default().observer(monitor.clone());
/// breaker.handle().force_open();
/// let snapshot = monitor.snapshot();
/// assert_eq!(snapshot.breakers.len(), 1);
/// assert!(snapshot.keys.is_empty());
/// assert_eq!(snapshot.evicted_keys, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// Every layer added up.
    pub totals: LayerSnapshot,
    /// Per layer or scope that has reported anything, in the order they
    /// were given the monitor (two layers of one name share a figure).
    pub layers: Vec<LayerSnapshot>,
    /// Per key, most limited first.
    pub keys: Vec<KeySnapshot>,
    /// The last state of each breaker (by scope name).
    pub breakers: Vec<BreakerSnapshot>,
    /// The bound on tracked keys.
    pub tracked_keys_max: usize,
    /// Keys evicted to stay within the bound.
    pub evicted_keys: u64,
    /// Alerts fired (queued for their callbacks).
    pub alerts_fired: u64,
    /// Alerts dropped because the alert queue was full.
    pub alerts_dropped: u64,
    /// Alert callbacks that panicked (caught).
    pub alert_panics: u64,
}

impl Snapshot {
    /// The figures of a layer or scope.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// # use tower_sluice::observe::Monitor;
    /// # use tower_sluice::{Quota, RateLimitLayer};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_minute(1)).reject().observer(monitor.clone()))
    ///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// let _ = svc.clone().oneshot(()).await;
    /// let _ = svc.clone().oneshot(()).await;
    /// let snapshot = monitor.snapshot();
    /// let rate_limit = snapshot.layer("rate_limit").unwrap();
    /// assert_eq!(rate_limit.limited_rate, 0.5);
    /// assert!(snapshot.layer("queue").is_none(), "no queue reported");
    /// # }
    /// ```
    pub fn layer(&self, name: &str) -> Option<&LayerSnapshot> {
        self.layers.iter().find(|l| l.name == name)
    }

    /// The figures of a key, by the key itself (matched on its `Debug`
    /// text).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// # use tower_sluice::observe::Monitor;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(10), |user: &u64| Some(*user)).observer(monitor.clone()))
    ///     .service(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    /// let _ = svc.clone().oneshot(42).await;
    /// let snapshot = monitor.snapshot();
    /// assert_eq!(snapshot.key(&42u64).unwrap().requests, 1);
    /// assert_eq!(snapshot.key(&42u64).unwrap().completed, 1);
    /// # }
    /// ```
    pub fn key(&self, key: &dyn fmt::Debug) -> Option<&KeySnapshot> {
        let text = format!("{key:?}");
        self.keys.iter().find(|k| k.key == text)
    }
}

/// One layer's (or scope's) figures in a [`Snapshot`].
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{LayerSnapshot, Monitor};
///
/// // A line for a status page.
/// fn line(layer: &LayerSnapshot) -> String {
///     format!("{}: {} requests, {:.1}% limited", layer.name, layer.requests, layer.limited_rate * 100.0)
/// }
/// let monitor = Monitor::new();
/// assert_eq!(line(&monitor.snapshot().totals), "total: 0 requests, 0.0% limited");
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct LayerSnapshot {
    /// The layer name (`"rate_limit"`, `"per_key"`, `"circuit_breaker"`,
    /// `"queue"`, `"retry"`, `"redis"`) or the scope's.
    pub name: String,
    /// Admission decisions: allowed + limited (see [`Monitor`]).
    pub requests: u64,
    /// Let through (shadow-limited ones included).
    pub allowed: u64,
    /// Refused: rate limited, too many in flight, store full, breaker open,
    /// queue full or timed out.
    pub limited: u64,
    /// Would have been refused, let through by shadow mode.
    pub shadow_limited: u64,
    /// (limited + shadow_limited) / requests.
    pub limited_rate: f64,
    /// Requests that waited for their turn (rate limit wait, queue).
    pub waited: u64,
    /// Their waits added up.
    pub wait_total: Duration,
    /// Retries scheduled.
    pub retries: u64,
    /// Retry layers that gave up.
    pub gave_up: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Requests that joined a queue.
    pub queued: u64,
    /// Requests that left a queue for the service.
    pub dequeued: u64,
    /// Requests refused by a full queue.
    pub queue_full: u64,
    /// Requests that timed out in a queue (or were refused up front).
    pub queue_timed_out: u64,
    /// The queue's depth at its last event (queues only).
    pub queue_depth: Option<usize>,
    /// The breaker's last state (breakers only).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_state_opt"))]
    pub breaker_state: Option<CircuitState>,
    /// Calls a breaker refused (or would have, in shadow mode).
    pub breaker_rejected: u64,
    /// Decisions a backend failed to make.
    pub backend_failures: u64,
    /// Of those, decided by the local fallback.
    pub backend_fallbacks: u64,
    /// The backend's health at its last change (backends only).
    pub backend_available: Option<bool>,
    /// Completed calls (timed or not).
    pub completed: u64,
    /// Of those, failures (errors, or a breaker's failure verdict).
    pub failed: u64,
    /// EWMA of the latency of the timed completed calls (see
    /// [`MonitorBuilder::sample_one_in`]).
    pub latency_ewma: Option<Duration>,
}

impl LayerSnapshot {
    pub(super) fn add(&mut self, o: &LayerSnapshot) {
        self.requests += o.requests;
        self.allowed += o.allowed;
        self.limited += o.limited;
        self.shadow_limited += o.shadow_limited;
        self.limited_rate = rate(self.limited + self.shadow_limited, self.requests);
        self.waited += o.waited;
        self.wait_total += o.wait_total;
        self.retries += o.retries;
        self.gave_up += o.gave_up;
        self.budget_exhausted += o.budget_exhausted;
        self.queued += o.queued;
        self.dequeued += o.dequeued;
        self.queue_full += o.queue_full;
        self.queue_timed_out += o.queue_timed_out;
        if let Some(d) = o.queue_depth {
            self.queue_depth = Some(self.queue_depth.unwrap_or(0) + d);
        }
        self.breaker_rejected += o.breaker_rejected;
        self.backend_failures += o.backend_failures;
        self.backend_fallbacks += o.backend_fallbacks;
        self.completed += o.completed;
        self.failed += o.failed;
        if let Some(l) = o.latency_ewma {
            // The heaviest layer's figure stands for the total.
            self.latency_ewma = Some(self.latency_ewma.map_or(l, |m| m.max(l)));
        }
    }
}

/// One key's figures in a [`Snapshot`].
///
/// # Examples
///
/// ```
/// # use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// # use tower_sluice::observe::Monitor;
/// # use tower_sluice::{PerKeyLayer, Quota};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let monitor = Monitor::new();
/// let svc = ServiceBuilder::new()
///     .layer(PerKeyLayer::new(Quota::per_minute(10), |user: &u64| Some(*user)).observer(monitor.clone()))
///     .service(service_fn(|n: u64| async move {
///         if n == 7 { Err::<(), BoxError>("boom".into()) } else { Ok(()) }
///     }));
/// let _ = svc.clone().oneshot(7).await;
/// let _ = svc.clone().oneshot(7).await;
/// let key = monitor.key(&7u64).unwrap();
/// assert_eq!(key.key, "7");
/// assert_eq!((key.completed, key.failed), (2, 2));
/// // Both timed: a quiet thread times every call.
/// assert!(key.latency_ewma.is_some());
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct KeySnapshot {
    /// The key's `Debug` text (a `String` key shows with its quotes).
    pub key: String,
    /// Admission decisions for the key.
    pub requests: u64,
    /// Refused.
    pub limited: u64,
    /// Would have been refused (shadow mode).
    pub shadow_limited: u64,
    /// (limited + shadow_limited) / requests, over the whole run.
    pub limited_rate: f64,
    /// Requests over the recent window (estimated, see [`Monitor`]).
    pub recent_requests: f64,
    /// The limited rate over the recent window: what rate alerts judge.
    pub recent_limited_rate: f64,
    /// Requests that waited for their turn.
    pub waited: u64,
    /// Their waits added up.
    pub wait_total: Duration,
    /// Requests completed by the inner service.
    pub completed: u64,
    /// Of those, errors.
    pub failed: u64,
    /// EWMA of response time ([`Event::Completed`], timed calls only: see
    /// [`MonitorBuilder::sample_one_in`]).
    pub latency_ewma: Option<Duration>,
    /// Retries scheduled for the key's requests (by a retry layer given
    /// the key with [`BackoffRetryLayer::key`](crate::BackoffRetryLayer::key)).
    pub retries: u64,
    /// Requests of the key whose retries gave up.
    pub gave_up: u64,
    /// Whether a limited-rate alert has fired for the key and its recent
    /// limited rate is still at or above the rule's re-arm level (a key
    /// that went quiet reads `false` once its recent rate has fallen).
    pub alerting: bool,
}

/// A breaker's last state in a [`Snapshot`].
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::Monitor;
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitState;
///
/// let monitor = Monitor::new();
/// let breaker = CircuitBreakerLayer::default().observer(monitor.scoped("payments"));
/// breaker.handle().force_open();
/// let snapshot = monitor.snapshot();
/// let open: Vec<&str> = snapshot
///     .breakers
///     .iter()
///     .filter(|b| b.state != CircuitState::Closed)
///     .map(|b| b.name.as_str())
///     .collect();
/// assert_eq!(open, ["payments"]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The breaker's layer or scope name.
    pub name: String,
    /// Its state at its last event.
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_state"))]
    pub state: CircuitState,
}

pub(super) fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

pub(super) fn secs(nanos: f64) -> Duration {
    Duration::from_nanos(nanos.max(0.0) as u64)
}

impl Inner {
    /// Every figure now (see [`Monitor::snapshot`]).
    pub(super) fn snapshot(&self) -> Snapshot {
        let keys = self.key_snapshots(self.clock.now());
        let layers = self.layer_snapshots();
        let breakers = layers
            .iter()
            .filter_map(|l| {
                l.breaker_state.map(|state| BreakerSnapshot {
                    name: l.name.clone(),
                    state,
                })
            })
            .collect();
        let mut totals = LayerSnapshot {
            name: "total".to_owned(),
            ..LayerSnapshot::default()
        };
        for l in &layers {
            totals.add(l);
        }
        let (alerts_fired, alerts_dropped, alert_panics) =
            self.alerts.as_ref().map_or((0, 0, 0), |a| a.counts());
        Snapshot {
            totals,
            layers,
            keys,
            breakers,
            tracked_keys_max: self.max_keys,
            evicted_keys: self.evicted.load(Relaxed),
            alerts_fired,
            alerts_dropped,
            alert_panics,
        }
    }

    /// Every tracked key's figures, most limited first (then most
    /// requests, then by name).
    fn key_snapshots(&self, now: u64) -> Vec<KeySnapshot> {
        let mut keys = Vec::new();
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for i in 0..chunk.hot.len() {
                if chunk.hot[i].hash.load(Acquire) != 0 {
                    keys.push(self.key_snapshot(&chunk.row(i), now));
                }
            }
        }
        keys.sort_by(|a, b| {
            (b.limited + b.shadow_limited, b.requests, &a.key).cmp(&(
                a.limited + a.shadow_limited,
                a.requests,
                &b.key,
            ))
        });
        keys
    }

    /// The figures of each layer that has reported anything, in the order
    /// they were added.
    fn layer_snapshots(&self) -> Vec<LayerSnapshot> {
        self.layers
            .iter()
            .map_while(|slot| slot.get().map(|l| l.snapshot()))
            // Layers given the monitor that have reported nothing yet.
            .filter(|l| {
                *l != LayerSnapshot {
                    name: l.name.clone(),
                    ..LayerSnapshot::default()
                }
            })
            .collect()
    }
    pub(super) fn key_snapshot(&self, row: &KeyRow<'_>, now: u64) -> KeySnapshot {
        let (recent_requests, recent_limited) = row.recent(now, self.window);
        let requests = row.hot.requests.load(Relaxed);
        let limited = row.hot.limited.load(Relaxed);
        let shadow_limited = row.hot.shadow_limited.load(Relaxed);
        KeySnapshot {
            key: row.name(),
            requests,
            limited,
            shadow_limited,
            limited_rate: rate(limited + shadow_limited, requests),
            recent_requests,
            recent_limited_rate: if recent_requests > 0.0 {
                recent_limited / recent_requests
            } else {
                0.0
            },
            waited: row.waited.load(Relaxed),
            wait_total: Duration::from_nanos(row.wait_nanos.load(Relaxed)),
            completed: row.hot.completed.load(Relaxed),
            failed: row.hot.failed.load(Relaxed),
            latency_ewma: row.latency.get().map(secs),
            retries: row.retries.load(Relaxed),
            gave_up: row.gave_up.load(Relaxed),
            alerting: self.alerting(row, now),
        }
    }
}
