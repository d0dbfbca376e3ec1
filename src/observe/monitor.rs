//! [`Monitor`]: per-key and per-layer statistics from the event stream.

use std::fmt::{self, Write as _};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use hashbrown::HashMap;

use super::alert::{Alert, AlertRule, Alerts, Callback, RuleKind};
use super::{Event, EventKey, FailureAction, Observer};
use crate::circuit_breaker::{CircuitState, Outcome};
use crate::clock::{Clock, CoarseClock};

const SHARDS: usize = 16;
/// Distinct layer or scope names a monitor tracks; events from more are
/// counted under the last slot.
const LAYERS: usize = 32;

/// A built-in [`Observer`] keeping statistics per key and per layer: requests,
/// limited requests and the limited rate (over the whole run and over a
/// sliding window), waits, retries, an EWMA of response time, the last state
/// of each circuit breaker, queue depth and backend health; with
/// [`AlertRule`]s that call you when a threshold is crossed.
///
/// `Monitor` is a cheap handle (`Clone` shares the statistics): pass a clone
/// to each layer's `.observer(..)`, keep one to read
/// [`snapshot`](Self::snapshot).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::observe::{AlertRule, Monitor};
/// use tower_sluice::{CircuitBreakerLayer, PerKeyLayer, Quota};
///
/// let monitor = Monitor::builder()
///     .smoothing(0.2)
///     .window(Duration::from_secs(60))
///     .max_keys(50_000)
///     .alert(AlertRule::limited_rate(0.2).min_requests(50), |alert| {
///         eprintln!("ALERT {alert}");
///     })
///     .alert(AlertRule::breaker_opened(), |alert| eprintln!("ALERT {alert}"))
///     .build();
/// let per_key = PerKeyLayer::<String, _>::new(Quota::per_second(10), |req: &String| Some(req.clone()))
///     .observer(monitor.clone());
/// let breaker = CircuitBreakerLayer::default().observer(monitor.scoped("upstream"));
/// # let _svc = tower::Layer::layer(&per_key, tower::service_fn(|r: String| async move { Ok::<_, std::convert::Infallible>(r) }));
/// # let _ = breaker;
/// let snapshot = monitor.snapshot();
/// assert!(snapshot.keys.is_empty());
/// ```
///
/// # What is counted
///
/// - Per **layer** (named by the event's layer, or by [`scoped`](Self::scoped)):
///   every event. `requests` counts admission decisions (allowed, limited,
///   refused by a breaker, a queue or a full store, and completed breaker
///   calls); a request that passes two reporting layers counts once in each,
///   and [`Snapshot::totals`] adds the layers up.
/// - Per **key** (events that carry one: the per-key layer and backends):
///   requests, limited, shadow-limited, waits, completions and failures, and
///   response time ([`Event::Completed`]).
/// - **Limited rate** = (limited + shadow-limited) / requests, so that a limit
///   launched in shadow mode shows the rate it would have refused. The
///   *recent* rate is over the configured [`window`](MonitorBuilder::window),
///   estimated from two fixed buckets (the previous one weighted by how much
///   of it is still inside the window), as sliding-window counters do.
/// - **Response time**: an exponentially weighted moving average of
///   [`Event::Completed`] latencies (per key and per layer) and of
///   [`Event::BreakerCall`] latencies (per layer), with smoothing α
///   (`ewma += α (sample − ewma)`, default 0.1).
///
/// # Memory and cost
///
/// Keys are identified by their [`EventKey::key_hash`] (a 64-bit hash of
/// the key's `Hash`, computed without formatting: two keys whose hashes
/// collide would share a row, vanishingly rarely); a row shows the key's
/// `Debug` text, taken once when the row is made. The key table is a bounded map: at most
/// [`max_keys`](MonitorBuilder::max_keys) rows (default 10 000, split over 16
/// shards); a new key in a full shard evicts that shard's least recently
/// seen key ([`Snapshot::evicted_keys`] counts them). A row is about 150
/// bytes plus the key's text, so the default bound is a few MB at most. The
/// request path takes one uncontended shard lock per keyed event, atomics
/// for per-layer figures, and never allocates except to add a new key.
///
/// # Alerts
///
/// Rules are evaluated as events arrive (no timer): a key's rule is checked
/// when that key's figures change, a breaker rule when a breaker changes
/// state, a backend rule on backend failures. Firing only queues the alert
/// (a bounded channel; if 1024 alerts are already waiting, new ones are
/// dropped and counted): callbacks run on a dedicated thread, one at a time,
/// under `catch_unwind`, so a slow or panicking callback never blocks or
/// breaks a request.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

/// Configures a [`Monitor`]; made by [`Monitor::builder`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::observe::{AlertRule, Monitor};
///
/// let monitor = Monitor::builder()
///     .window(Duration::from_secs(300))
///     .max_keys(50_000)
///     .alert(AlertRule::breaker_opened(), |alert| eprintln!("ALERT {alert}"))
///     .build();
/// assert_eq!(monitor.snapshot().tracked_keys_max, 50_000);
/// ```
#[must_use]
pub struct MonitorBuilder {
    smoothing: f64,
    window: Duration,
    max_keys: usize,
    rules: Vec<(AlertRule, Callback)>,
}

impl fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("smoothing", &self.smoothing)
            .field("window", &self.window)
            .field("max_keys", &self.max_keys)
            .field(
                "rules",
                &self.rules.iter().map(|r| &r.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl MonitorBuilder {
    /// The EWMA smoothing factor α for response times, in `(0, 1]`
    /// (default 0.1): higher follows changes faster. Out-of-range values
    /// are clamped.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::Monitor;
    ///
    /// // Response times that follow the last few requests closely.
    /// let monitor = Monitor::builder().smoothing(0.5).build();
    /// # let _ = monitor;
    /// ```
    pub fn smoothing(mut self, alpha: f64) -> Self {
        self.smoothing = if alpha.is_nan() {
            0.1
        } else {
            alpha.clamp(f64::MIN_POSITIVE, 1.0)
        };
        self
    }

    /// The window of the recent limited rate, which alert rules judge
    /// (default one minute; at least a millisecond).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::observe::{AlertRule, Monitor};
    ///
    /// // Judge the limited rate over the last 5 minutes, not the last one.
    /// let monitor = Monitor::builder()
    ///     .window(Duration::from_secs(300))
    ///     .alert(AlertRule::limited_rate(0.2), |alert| eprintln!("{alert}"))
    ///     .build();
    /// # let _ = monitor;
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window.max(Duration::from_millis(1));
        self
    }

    /// At most this many keys are tracked (default 10 000; at least 16).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::Monitor;
    ///
    /// let monitor = Monitor::builder().max_keys(100_000).build();
    /// assert_eq!(monitor.snapshot().tracked_keys_max, 100_000);
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys.max(SHARDS);
        self
    }

    /// Calls `callback` when `rule` fires (on the alert thread; see
    /// [`Monitor`]'s `# Alerts`). At most 64 rules per monitor; later
    /// ones are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::{Alert, AlertRule, Monitor};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let fired = Arc::new(Mutex::new(Vec::new()));
    /// let log = fired.clone();
    /// let monitor = Monitor::builder()
    ///     .alert(AlertRule::limited_rate(0.5).min_requests(4), move |alert: &Alert| {
    ///         log.lock().unwrap().push(alert.to_string());
    ///     })
    ///     .build();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(2), |user: &&str| Some(user.to_string())).observer(monitor.clone()))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// for _ in 0..5 {
    ///     let _ = svc.clone().oneshot("ann").await;
    /// }
    /// assert!(monitor.flush_alerts(Duration::from_secs(5)));
    /// // Once, at the 4th request (2 of 4 limited), not again at the 5th.
    /// assert_eq!(fired.lock().unwrap().len(), 1);
    /// assert!(fired.lock().unwrap()[0].contains(r#"key "ann" limited 50.0%"#));
    /// # }
    /// ```
    pub fn alert(
        mut self,
        rule: AlertRule,
        callback: impl Fn(&Alert) + Send + Sync + 'static,
    ) -> Self {
        if self.rules.len() < 64 {
            self.rules.push((rule, Arc::new(callback)));
        }
        self
    }

    /// The monitor. Starts the alert thread if there are rules.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::Monitor;
    ///
    /// let monitor = Monitor::builder().max_keys(1_000).build();
    /// // Cheap clones that share the figures: one per layer.
    /// let for_the_layer = monitor.clone();
    /// # let _ = for_the_layer;
    /// ```
    pub fn build(self) -> Monitor {
        let per_shard = self.max_keys.div_ceil(SHARDS);
        Monitor {
            inner: Arc::new(Inner {
                alpha: self.smoothing,
                window: u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX),
                per_shard,
                max_keys: per_shard * SHARDS,
                clock: WindowClock::for_window(self.window),
                shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
                layers: (0..LAYERS).map(|_| OnceLock::new()).collect(),
                layers_lock: Mutex::new(()),
                evicted: AtomicU64::new(0),
                alerts: Alerts::start(self.rules),
            }),
        }
    }
}

struct Inner {
    alpha: f64,
    window: u64,
    per_shard: usize,
    max_keys: usize,
    clock: WindowClock,
    shards: Box<[Mutex<Shard>]>,
    /// Filled in order; lookups scan the filled prefix without a lock.
    layers: Box<[OnceLock<LayerStats>]>,
    layers_lock: Mutex<()>,
    evicted: AtomicU64,
    alerts: Option<Alerts>,
}

/// The time the recent-rate windows and key recency read: the kernel's
/// coarse clock (a few ns cheaper per keyed request; ms resolution) when the
/// window is at least 100 of its ticks, else the precise clock.
enum WindowClock {
    Coarse(CoarseClock),
    Precise(Clock),
}

impl WindowClock {
    fn for_window(window: Duration) -> Self {
        let tick = CoarseClock::resolution();
        if window.as_nanos() >= u128::from(tick) * 100 {
            WindowClock::Coarse(CoarseClock::new())
        } else {
            WindowClock::Precise(Clock::new())
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        match self {
            WindowClock::Coarse(c) => c.now(),
            WindowClock::Precise(c) => c.now(),
        }
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, KeyRow, IdentityHash>,
}

/// The map's keys are already hashes.
#[derive(Default, Clone, Copy)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
struct Window {
    bucket: u64,
    requests: u64,
    limited: u64,
    prev_requests: u64,
    prev_limited: u64,
}

impl Window {
    fn roll(&mut self, now: u64, width: u64) {
        let bucket = now / width;
        if bucket == self.bucket {
            return;
        }
        if bucket == self.bucket + 1 {
            self.prev_requests = self.requests;
            self.prev_limited = self.limited;
        } else {
            self.prev_requests = 0;
            self.prev_limited = 0;
        }
        self.requests = 0;
        self.limited = 0;
        self.bucket = bucket;
    }

    /// (requests, limited) over the last `width`, estimated.
    fn recent(&self, now: u64, width: u64) -> (f64, f64) {
        let bucket = now / width;
        let (cur_r, cur_l, prev_r, prev_l) = if bucket == self.bucket {
            (
                self.requests,
                self.limited,
                self.prev_requests,
                self.prev_limited,
            )
        } else if bucket == self.bucket + 1 {
            (0, 0, self.requests, self.limited)
        } else {
            (0, 0, 0, 0)
        };
        let into = (now % width) as f64 / width as f64;
        let w = 1.0 - into;
        (
            cur_r as f64 + prev_r as f64 * w,
            cur_l as f64 + prev_l as f64 * w,
        )
    }
}

struct KeyRow {
    name: Box<str>,
    requests: u64,
    limited: u64,
    shadow_limited: u64,
    waited: u64,
    wait_nanos: u64,
    completed: u64,
    failed: u64,
    retries: u64,
    gave_up: u64,
    latency: Ewma,
    window: Window,
    last_seen: u64,
    /// One bit per rate rule that has fired for this key.
    fired: u64,
}

#[derive(Default, Clone, Copy)]
struct Ewma(Option<f64>);

impl Ewma {
    fn add(&mut self, sample: f64, alpha: f64) {
        self.0 = Some(match self.0 {
            None => sample,
            Some(v) => v + alpha * (sample - v),
        });
    }
}

/// An EWMA in an atomic (f64 bits; `u64::MAX` = no sample yet).
struct AtomicEwma(AtomicU64);

impl AtomicEwma {
    fn new() -> Self {
        AtomicEwma(AtomicU64::new(u64::MAX))
    }

    fn add(&self, sample: f64, alpha: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            let next = if bits == u64::MAX {
                sample
            } else {
                let v = f64::from_bits(bits);
                v + alpha * (sample - v)
            };
            Some(next.to_bits())
        });
    }

    fn get(&self) -> Option<f64> {
        let bits = self.0.load(Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }
}

const NO_STATE: u8 = u8::MAX;

fn state_code(s: CircuitState) -> u8 {
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

/// Per-layer (or per-scope) figures, all atomics.
struct LayerStats {
    name: &'static str,
    requests: AtomicU64,
    limited: AtomicU64,
    shadow_limited: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    retries: AtomicU64,
    gave_up: AtomicU64,
    budget_exhausted: AtomicU64,
    queued: AtomicU64,
    dequeued: AtomicU64,
    queue_full: AtomicU64,
    queue_timed_out: AtomicU64,
    queue_depth: AtomicU64,
    has_queue: AtomicBool,
    breaker_state: AtomicU8,
    breaker_alerted: AtomicBool,
    breaker_rejected: AtomicU64,
    breaker_changes: AtomicU64,
    backend_failures: AtomicU64,
    backend_fallbacks: AtomicU64,
    backend_down: AtomicU8,
    backend_alerted: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    latency: AtomicEwma,
}

impl LayerStats {
    fn new(name: &'static str) -> Self {
        let z = || AtomicU64::new(0);
        LayerStats {
            name,
            requests: z(),
            limited: z(),
            shadow_limited: z(),
            waited: z(),
            wait_nanos: z(),
            retries: z(),
            gave_up: z(),
            budget_exhausted: z(),
            queued: z(),
            dequeued: z(),
            queue_full: z(),
            queue_timed_out: z(),
            queue_depth: z(),
            has_queue: AtomicBool::new(false),
            breaker_state: AtomicU8::new(NO_STATE),
            breaker_alerted: AtomicBool::new(false),
            breaker_rejected: z(),
            breaker_changes: z(),
            backend_failures: z(),
            backend_fallbacks: z(),
            backend_down: AtomicU8::new(NO_STATE),
            backend_alerted: AtomicBool::new(false),
            completed: z(),
            failed: z(),
            latency: AtomicEwma::new(),
        }
    }

    fn snapshot(&self) -> LayerSnapshot {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let requests = g(&self.requests);
        let limited = g(&self.limited);
        let shadow_limited = g(&self.shadow_limited);
        LayerSnapshot {
            name: self.name.to_owned(),
            requests,
            allowed: requests.saturating_sub(limited),
            limited,
            shadow_limited,
            limited_rate: rate(limited + shadow_limited, requests),
            waited: g(&self.waited),
            wait_total: Duration::from_nanos(g(&self.wait_nanos)),
            retries: g(&self.retries),
            gave_up: g(&self.gave_up),
            budget_exhausted: g(&self.budget_exhausted),
            queued: g(&self.queued),
            dequeued: g(&self.dequeued),
            queue_full: g(&self.queue_full),
            queue_timed_out: g(&self.queue_timed_out),
            queue_depth: self
                .has_queue
                .load(Relaxed)
                .then(|| g(&self.queue_depth) as usize),
            breaker_state: state_of(self.breaker_state.load(Relaxed)),
            breaker_rejected: g(&self.breaker_rejected),
            backend_failures: g(&self.backend_failures),
            backend_fallbacks: g(&self.backend_fallbacks),
            backend_available: match self.backend_down.load(Relaxed) {
                0 => Some(true),
                1 => Some(false),
                _ => None,
            },
            completed: g(&self.completed),
            failed: g(&self.failed),
            latency_ewma: self.latency.get().map(secs),
        }
    }
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn secs(nanos: f64) -> Duration {
    Duration::from_nanos(nanos.max(0.0) as u64)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What a keyed event does to its key's row.
#[derive(Clone, Copy)]
enum KeyUpdate {
    Request { limited: bool, shadow: bool },
    Waited(u64),
    Completed { latency: u64, success: bool },
    Retry,
    GaveUp,
}

impl Monitor {
    /// A monitor with the defaults (smoothing 0.1, a one-minute window,
    /// 10 000 keys, no alert rules).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string())).observer(monitor.clone()))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// for user in ["ann", "ann", "bob"] {
    ///     let _ = svc.clone().oneshot(user).await;
    /// }
    /// let per_key = monitor.snapshot().layer("per_key").unwrap().clone();
    /// assert_eq!((per_key.requests, per_key.allowed, per_key.limited), (3, 2, 1));
    /// # }
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configure smoothing, window, key bound and alert rules.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::observe::{AlertRule, Monitor};
    ///
    /// let monitor = Monitor::builder()
    ///     .window(Duration::from_secs(60))
    ///     .alert(AlertRule::limited_rate(0.2).min_requests(50), |alert| eprintln!("ALERT {alert}"))
    ///     .build();
    /// # let _ = monitor;
    /// ```
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder {
            smoothing: 0.1,
            window: Duration::from_secs(60),
            max_keys: 10_000,
            rules: Vec::new(),
        }
    }

    /// An observer feeding this monitor under `name` instead of the
    /// event's layer name: give each of two circuit breakers (or queues)
    /// its own scope and their states stay apart in the snapshot.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Two upstreams, two rate limits, one monitor: scopes keep them apart.
    /// let monitor = Monitor::new();
    /// let service = || service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
    /// let github = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_hour(1)).reject().observer(monitor.scoped("github")))
    ///     .service(service());
    /// let stripe = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(100)).reject().observer(monitor.scoped("stripe")))
    ///     .service(service());
    /// let _ = github.clone().oneshot(()).await;
    /// let _ = github.clone().oneshot(()).await;
    /// let _ = stripe.clone().oneshot(()).await;
    /// let snapshot = monitor.snapshot();
    /// assert_eq!(snapshot.layer("github").unwrap().limited, 1);
    /// assert_eq!(snapshot.layer("stripe").unwrap().limited, 0);
    /// assert!(snapshot.layer("rate_limit").is_none());
    /// # }
    /// ```
    pub fn scoped(&self, name: &'static str) -> Scoped {
        Scoped {
            monitor: self.clone(),
            name,
        }
    }

    /// Every figure now: per layer (scope), per key (sorted by limited
    /// requests, then requests, most first), breaker states and totals.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string())).observer(monitor.clone()))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// for user in ["ann", "ann", "bob"] {
    ///     let _ = svc.clone().oneshot(user).await;
    /// }
    /// let snapshot = monitor.snapshot();
    /// assert_eq!(snapshot.totals.requests, 3);
    /// // Keys, most limited first, by their `Debug` text.
    /// let keys: Vec<&str> = snapshot.keys.iter().map(|k| k.key.as_str()).collect();
    /// assert_eq!(keys, [r#""ann""#, r#""bob""#]);
    /// # }
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut keys = Vec::new();
        for shard in inner.shards.iter() {
            let shard = lock(shard);
            keys.extend(shard.map.values().map(|row| inner.key_snapshot(row, now)));
        }
        keys.sort_by(|a, b| {
            (b.limited + b.shadow_limited, b.requests, &a.key).cmp(&(
                a.limited + a.shadow_limited,
                a.requests,
                &b.key,
            ))
        });
        let layers: Vec<LayerSnapshot> = inner
            .layers
            .iter()
            .map_while(|slot| slot.get().map(LayerStats::snapshot))
            .collect();
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
            inner.alerts.as_ref().map_or((0, 0, 0), |a| a.counts());
        Snapshot {
            totals,
            layers,
            keys,
            breakers,
            tracked_keys_max: inner.max_keys,
            evicted_keys: inner.evicted.load(Relaxed),
            alerts_fired,
            alerts_dropped,
            alert_panics,
        }
    }

    /// The figures of one key, found by its [`key_hash`](EventKey::key_hash):
    /// pass a key of the type the layer reports (a `&str` finds a `String`
    /// key).
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
    ///     .layer(PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string())).observer(monitor.clone()))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// let _ = svc.clone().oneshot("ann").await;
    /// let _ = svc.clone().oneshot("ann").await;
    /// // The key as the layer knows it (a `String`; a `&str` hashes the same).
    /// let ann = monitor.key(&"ann").unwrap();
    /// assert_eq!((ann.requests, ann.limited, ann.limited_rate), (2, 1, 0.5));
    /// assert!(monitor.key(&"bob").is_none());
    /// # }
    /// ```
    pub fn key(&self, key: &dyn EventKey) -> Option<KeySnapshot> {
        let inner = &self.inner;
        let hash = key.key_hash();
        let shard = lock(&inner.shards[shard_of(hash)]);
        shard
            .map
            .get(&hash)
            .map(|row| inner.key_snapshot(row, inner.clock.now()))
    }

    /// The keys with the most limited requests (shadow ones included),
    /// at most `n`.
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
    ///     .layer(PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string())).observer(monitor.clone()))
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// for user in ["ann", "ann", "ann", "bob", "bob", "cid"] {
    ///     let _ = svc.clone().oneshot(user).await;
    /// }
    /// // Who hits the limit most? "cid" was never limited, so it is not listed.
    /// let top: Vec<(String, u64)> = monitor.top_limited(10).into_iter().map(|k| (k.key, k.limited)).collect();
    /// assert_eq!(top, [(r#""ann""#.to_string(), 2), (r#""bob""#.to_string(), 1)]);
    /// # }
    /// ```
    pub fn top_limited(&self, n: usize) -> Vec<KeySnapshot> {
        let mut keys = self.snapshot().keys;
        keys.retain(|k| k.limited + k.shadow_limited > 0);
        keys.truncate(n);
        keys
    }

    /// Blocks until the alerts fired so far have been handed to their
    /// callbacks (or `timeout` passes); returns whether they all were. For
    /// tests and shutdown; never call it on the request path.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::{AlertRule, Monitor};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let opened = Arc::new(AtomicUsize::new(0));
    /// let count = opened.clone();
    /// let monitor = Monitor::builder()
    ///     .alert(AlertRule::breaker_opened(), move |_| {
    ///         count.fetch_add(1, Ordering::Relaxed);
    ///     })
    ///     .build();
    /// let breaker = CircuitBreakerLayer::default().observer(monitor.clone());
    /// breaker.handle().force_open();
    /// // Callbacks run on the alert thread: wait for them before checking.
    /// assert!(monitor.flush_alerts(Duration::from_secs(5)));
    /// assert_eq!(opened.load(Ordering::Relaxed), 1);
    /// # }
    /// ```
    pub fn flush_alerts(&self, timeout: Duration) -> bool {
        self.inner.alerts.as_ref().is_none_or(|a| a.flush(timeout))
    }

    fn observe(&self, event: &Event<'_>, scope: Option<&'static str>) {
        self.inner.observe(event, scope);
    }
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for Monitor {
    #[inline]
    fn on_event(&self, event: &Event<'_>) {
        self.observe(event, None);
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("smoothing", &self.inner.alpha)
            .field("window", &Duration::from_nanos(self.inner.window))
            .field("max_keys", &self.inner.max_keys)
            .finish_non_exhaustive()
    }
}

/// A [`Monitor`] observer under a scope name; made by
/// [`Monitor::scoped`].
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Monitor, Scoped};
/// use tower_sluice::CircuitBreakerLayer;
///
/// let monitor = Monitor::new();
/// let upstream: Scoped = monitor.scoped("upstream");
/// let breaker = CircuitBreakerLayer::default().observer(upstream);
/// breaker.handle().force_open();
/// let snapshot = monitor.snapshot();
/// assert_eq!(snapshot.breakers[0].name, "upstream");
/// ```
#[derive(Clone)]
pub struct Scoped {
    monitor: Monitor,
    name: &'static str,
}

impl Observer for Scoped {
    #[inline]
    fn on_event(&self, event: &Event<'_>) {
        self.monitor.observe(event, Some(self.name));
    }
}

impl fmt::Debug for Scoped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped").field("name", &self.name).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn shard_of(hash: u64) -> usize {
    (hash >> 60) as usize % SHARDS
}

impl Inner {
    #[inline]
    fn layer(&self, name: &'static str) -> &LayerStats {
        for slot in self.layers.iter() {
            match slot.get() {
                Some(l) if std::ptr::eq(l.name, name) || l.name == name => return l,
                Some(_) => {}
                None => return self.add_layer(name),
            }
        }
        self.layers[LAYERS - 1].get().expect("filled")
    }

    #[cold]
    fn add_layer(&self, name: &'static str) -> &LayerStats {
        let _guard = lock(&self.layers_lock);
        for slot in self.layers.iter() {
            match slot.get() {
                Some(l) if l.name == name => return l,
                Some(_) => {}
                None => return slot.get_or_init(|| LayerStats::new(name)),
            }
        }
        self.layers[LAYERS - 1].get().expect("filled")
    }

    fn key_snapshot(&self, row: &KeyRow, now: u64) -> KeySnapshot {
        let (recent_requests, recent_limited) = row.window.recent(now, self.window);
        KeySnapshot {
            key: row.name.to_string(),
            requests: row.requests,
            limited: row.limited,
            shadow_limited: row.shadow_limited,
            limited_rate: rate(row.limited + row.shadow_limited, row.requests),
            recent_requests,
            recent_limited_rate: if recent_requests > 0.0 {
                recent_limited / recent_requests
            } else {
                0.0
            },
            waited: row.waited,
            wait_total: Duration::from_nanos(row.wait_nanos),
            completed: row.completed,
            failed: row.failed,
            latency_ewma: row.latency.0.map(secs),
            retries: row.retries,
            gave_up: row.gave_up,
            alerting: self.alerting(row, now),
        }
    }

    /// Whether a rate rule that fired for `row` is still above its re-arm
    /// level now: a key that went quiet reads as recovered without waiting
    /// for its next request (which is when the rule itself re-arms).
    fn alerting(&self, row: &KeyRow, now: u64) -> bool {
        let Some(alerts) = self.alerts.as_ref().filter(|_| row.fired != 0) else {
            return false;
        };
        let (requests, limited) = row.window.recent(now, self.window);
        let rate = if requests > 0.0 {
            limited / requests
        } else {
            0.0
        };
        alerts.rules().iter().enumerate().any(|(i, rule)| {
            row.fired & (1 << i) != 0
                && matches!(rule.kind, RuleKind::LimitedRate { rearm_below, .. } if rate >= rearm_below)
        })
    }

    fn observe(&self, event: &Event<'_>, scope: Option<&'static str>) {
        let name = scope.unwrap_or_else(|| event.layer());
        let l = self.layer(name);
        self.apply(l, name, event);
    }

    #[inline]
    fn apply(&self, l: &LayerStats, name: &'static str, event: &Event<'_>) {
        let one = |a: &AtomicU64| {
            a.fetch_add(1, Relaxed);
        };
        let mut keyed = None;
        match *event {
            Event::Allowed { .. } => {
                one(&l.requests);
                keyed = Some(KeyUpdate::Request {
                    limited: false,
                    shadow: false,
                });
            }
            Event::Limited { enforced, .. } => {
                one(&l.requests);
                if enforced {
                    one(&l.limited);
                } else {
                    one(&l.shadow_limited);
                }
                keyed = Some(KeyUpdate::Request {
                    limited: enforced,
                    shadow: !enforced,
                });
            }
            Event::InFlightLimited { .. } | Event::StoreFull { .. } => {
                one(&l.requests);
                one(&l.limited);
                keyed = Some(KeyUpdate::Request {
                    limited: true,
                    shadow: false,
                });
            }
            Event::MissingKey { .. } => {
                one(&l.requests);
                one(&l.limited);
            }
            Event::Waited { waited, .. } => {
                one(&l.waited);
                l.wait_nanos.fetch_add(nanos(waited), Relaxed);
                keyed = Some(KeyUpdate::Waited(nanos(waited)));
            }
            Event::Completed {
                latency, success, ..
            } => {
                one(&l.completed);
                if !success {
                    one(&l.failed);
                }
                l.latency.add(nanos(latency) as f64, self.alpha);
                keyed = Some(KeyUpdate::Completed {
                    latency: nanos(latency),
                    success,
                });
            }
            Event::AdaptiveRejected { enforced, .. } => {
                one(&l.requests);
                if enforced {
                    one(&l.limited);
                } else {
                    one(&l.shadow_limited);
                }
            }
            // Limit changes are reported, not counted.
            Event::LimitChanged { .. } | Event::ConcurrencyLimitChanged { .. } => {}
            Event::BreakerStateChanged { from, to, .. } => {
                l.breaker_state.store(state_code(to), Relaxed);
                one(&l.breaker_changes);
                self.breaker_alerts(l, from, to);
            }
            Event::BreakerRejected { enforced, .. } => {
                one(&l.requests);
                one(&l.breaker_rejected);
                if enforced {
                    one(&l.limited);
                } else {
                    one(&l.shadow_limited);
                }
            }
            Event::BreakerCall {
                outcome, latency, ..
            } => {
                one(&l.requests);
                one(&l.completed);
                if outcome == Outcome::Failure {
                    one(&l.failed);
                }
                l.latency.add(nanos(latency) as f64, self.alpha);
                if l.breaker_state.load(Relaxed) == NO_STATE {
                    l.breaker_state
                        .store(state_code(CircuitState::Closed), Relaxed);
                }
            }
            Event::RetryScheduled { .. } => {
                one(&l.retries);
                keyed = Some(KeyUpdate::Retry);
            }
            Event::RetryGaveUp { .. } => {
                one(&l.gave_up);
                keyed = Some(KeyUpdate::GaveUp);
            }
            Event::RetryBudgetExhausted { .. } => one(&l.budget_exhausted),
            Event::Queued { depth, .. } => {
                one(&l.queued);
                l.has_queue.store(true, Relaxed);
                l.queue_depth.store(depth as u64, Relaxed);
            }
            Event::Dequeued {
                waited,
                depth,
                queued,
                ..
            } => {
                one(&l.requests);
                if queued {
                    one(&l.dequeued);
                    one(&l.waited);
                    l.wait_nanos.fetch_add(nanos(waited), Relaxed);
                }
                l.has_queue.store(true, Relaxed);
                l.queue_depth.store(depth as u64, Relaxed);
            }
            Event::QueueFull { .. } => {
                one(&l.requests);
                one(&l.limited);
                one(&l.queue_full);
                l.has_queue.store(true, Relaxed);
            }
            Event::QueueTimedOut { depth, .. } => {
                one(&l.requests);
                one(&l.limited);
                one(&l.queue_timed_out);
                l.has_queue.store(true, Relaxed);
                l.queue_depth.store(depth as u64, Relaxed);
            }
            Event::QueueClosed { .. } => {}
            Event::BackendFailure { action, .. } => {
                one(&l.backend_failures);
                if action == FailureAction::Fallback {
                    one(&l.backend_fallbacks);
                    self.backend_alert(l, action);
                }
            }
            Event::BackendStateChanged { available, .. } => {
                l.backend_down.store(u8::from(!available), Relaxed);
                if available {
                    l.backend_alerted.store(false, Relaxed);
                } else {
                    self.backend_alert(l, FailureAction::Fallback);
                }
            }
        }
        if let (Some(update), Some(key)) = (keyed, event.key()) {
            self.update_key(name, key, update);
        }
    }

    fn update_key(&self, scope: &'static str, key: &dyn EventKey, update: KeyUpdate) {
        let hash = key.key_hash();
        let request = matches!(update, KeyUpdate::Request { .. });
        // Only requests move the window (and the recency that eviction uses).
        let now = if request { self.clock.now() } else { 0 };
        let mut shard = lock(&self.shards[shard_of(hash)]);
        if !shard.map.contains_key(&hash) {
            if shard.map.len() >= self.per_shard {
                let oldest = shard
                    .map
                    .iter()
                    .min_by_key(|(_, row)| row.last_seen)
                    .map(|(h, _)| *h);
                if let Some(h) = oldest {
                    shard.map.remove(&h);
                    self.evicted.fetch_add(1, Relaxed);
                }
            }
            let mut name = String::new();
            let _ = write!(name, "{key:?}");
            shard.map.insert(
                hash,
                KeyRow {
                    name: name.into_boxed_str(),
                    requests: 0,
                    limited: 0,
                    shadow_limited: 0,
                    waited: 0,
                    wait_nanos: 0,
                    completed: 0,
                    failed: 0,
                    retries: 0,
                    gave_up: 0,
                    latency: Ewma::default(),
                    window: Window {
                        bucket: now / self.window,
                        ..Window::default()
                    },
                    last_seen: now,
                    fired: 0,
                },
            );
        }
        let row = shard.map.get_mut(&hash).expect("inserted above");
        if request {
            row.last_seen = now;
        }
        match update {
            KeyUpdate::Request { limited, shadow } => {
                row.requests += 1;
                row.limited += u64::from(limited);
                row.shadow_limited += u64::from(shadow);
                row.window.roll(now, self.window);
                row.window.requests += 1;
                row.window.limited += u64::from(limited || shadow);
                if let Some(alerts) = &self.alerts {
                    self.rate_alerts(alerts, scope, row, now);
                }
            }
            KeyUpdate::Waited(n) => {
                row.waited += 1;
                row.wait_nanos += n;
            }
            KeyUpdate::Completed { latency, success } => {
                row.completed += 1;
                row.failed += u64::from(!success);
                row.latency.add(latency as f64, self.alpha);
            }
            KeyUpdate::Retry => row.retries += 1,
            KeyUpdate::GaveUp => row.gave_up += 1,
        }
    }

    fn rate_alerts(&self, alerts: &Alerts, scope: &'static str, row: &mut KeyRow, now: u64) {
        let (requests, limited) = row.window.recent(now, self.window);
        let rate = if requests > 0.0 {
            limited / requests
        } else {
            0.0
        };
        for (i, rule) in alerts.rules().iter().enumerate() {
            let RuleKind::LimitedRate {
                threshold,
                rearm_below,
                min_requests,
            } = rule.kind
            else {
                continue;
            };
            let bit = 1u64 << i;
            if row.fired & bit == 0 {
                if requests >= min_requests as f64 && rate >= threshold {
                    row.fired |= bit;
                    alerts.fire(
                        i,
                        Alert::LimitedRate {
                            scope,
                            key: row.name.to_string(),
                            rate,
                            requests: requests.round() as u64,
                            window: Duration::from_nanos(self.window),
                        },
                    );
                }
            } else if rate < rearm_below {
                row.fired &= !bit;
            }
        }
    }

    fn breaker_alerts(&self, l: &LayerStats, from: CircuitState, to: CircuitState) {
        let Some(alerts) = &self.alerts else { return };
        match to {
            CircuitState::Open | CircuitState::ForcedOpen => {
                if !l.breaker_alerted.swap(true, Relaxed) {
                    for (i, rule) in alerts.rules().iter().enumerate() {
                        if let RuleKind::BreakerOpened = rule.kind {
                            alerts.fire(
                                i,
                                Alert::BreakerOpened {
                                    scope: l.name,
                                    from,
                                    forced: to == CircuitState::ForcedOpen,
                                },
                            );
                        }
                    }
                }
            }
            CircuitState::Closed | CircuitState::ForcedClosed => {
                l.breaker_alerted.store(false, Relaxed);
            }
            CircuitState::HalfOpen => {}
        }
    }

    fn backend_alert(&self, l: &LayerStats, action: FailureAction) {
        let Some(alerts) = &self.alerts else { return };
        if l.backend_alerted.swap(true, Relaxed) {
            return;
        }
        for (i, rule) in alerts.rules().iter().enumerate() {
            if let RuleKind::BackendFallback = rule.kind {
                alerts.fire(
                    i,
                    Alert::BackendFallback {
                        backend: l.name,
                        action,
                    },
                );
            }
        }
    }
}

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
    /// Per layer or scope, in the order they first reported.
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
    /// Completed calls with a measured latency.
    pub completed: u64,
    /// Of those, failures (errors, or a breaker's failure verdict).
    pub failed: u64,
    /// EWMA of the latency of completed calls.
    pub latency_ewma: Option<Duration>,
}

impl LayerSnapshot {
    fn add(&mut self, o: &LayerSnapshot) {
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
    /// EWMA of response time ([`Event::Completed`]).
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
