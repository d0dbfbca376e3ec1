//! [`Monitor`]: per-key and per-layer statistics from the event stream.
//!
//! The monitor's parts, one idea a file:
//! - `builder`: [`MonitorBuilder`], its settings;
//! - `table`: the bounded key table (rows, lookup, claim and eviction);
//! - `window`: the recent window's buckets and the EWMA;
//! - `counters`: per-layer figures, counted per thread, and the pace that
//!   decides sampling;
//! - `bound`: a monitor bound to one layer, the request path's short cuts;
//! - `apply`: what each event does to the figures;
//! - `alerts`: evaluating the alert rules as events arrive;
//! - `snapshot`: the figures as plain data.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[cfg(doc)]
use super::alert::AlertRule;
use super::alert::Alerts;
use super::{Event, EventKey, Observer};
use crate::clock::BucketClock;

mod alerts;
mod apply;
mod bound;
mod builder;
mod counters;
mod snapshot;
mod table;
mod window;

pub(crate) use bound::{Bound, RowHint};
pub use builder::MonitorBuilder;
pub use snapshot::{BreakerSnapshot, KeySnapshot, LayerSnapshot, Snapshot};

use counters::LayerStats;
use table::Chunk;

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
/// let per_key = PerKeyLayer::new(Quota::per_second(10), |req: &String| Some(req.clone()))
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
///   response time ([`Event::Completed`]). Under load a per-key layer's
///   **admitted** requests are **sampled**: a thread that admitted 10 000
///   or more a second through the layer (measured over spans of 100 ms)
///   follows about one in 32 ([`sample_one_in`](MonitorBuilder::sample_one_in)),
///   drawn at random, into its key's row and to its completion, and counts
///   it 32 times; the others only count for the layer. A quieter thread
///   follows every request. So under load a key's `requests`, `completed`
///   and `failed` are estimates (unbiased; a key with `m` admitted requests
///   is off by about `5.6 √m`, 4 % at 25 000) and a key with few requests
///   may not be seen until one is drawn, while its `limited`,
///   `shadow_limited`, waits and retries, and every per-layer request and
///   limited count, stay exact. The layer's `completed` and `failed` are
///   the followed requests', weighted alike. Following every request costs
///   about as much again as the per-key layer itself, sampling keeps a
///   `Monitor` within 10 % of it; `sample_one_in(1)` follows every request
///   whatever the load (exact figures). Through a [`Fanout`](super::Fanout)
///   or an observer of your own, the monitor gets and counts every event.
/// - **Limited rate** = (limited + shadow-limited) / requests, so that a limit
///   launched in shadow mode shows the rate it would have refused. The
///   *recent* rate is over the configured [`window`](MonitorBuilder::window),
///   estimated from two fixed buckets (the previous one weighted by how much
///   of it is still inside the window), as sliding-window counters do.
/// - **Response time**: an exponentially weighted moving average of
///   [`Event::Completed`] latencies (per key and per layer) and of
///   [`Event::BreakerCall`] latencies (per layer), with smoothing α
///   (`ewma += α (sample − ewma)`, default 0.1), over **timed** calls
///   only: a layer times every call while its thread is quiet, and about
///   one call in 32, chosen at random, once the thread is busy
///   ([`sample_one_in`](MonitorBuilder::sample_one_in); timing a call
///   costs two precise clock reads); a sampling per-key layer times the
///   requests it follows. Use `sample_one_in(1)` for an exact average of
///   every call whatever the load.
///
/// # Memory and cost
///
/// Keys are identified by their [`EventKey::key_hash`] (a 64-bit hash of
/// the key's `Hash`, computed without formatting: two keys whose hashes
/// collide would share a row, vanishingly rarely); a row shows the key's
/// `Debug` text, taken once when the row is made.
///
/// The key table is bounded: exactly [`max_keys`](MonitorBuilder::max_keys)
/// rows (default 10 000), allocated 64 at a time when first used. A key
/// lives within 8 rows of a home row picked by its hash; a new key whose 8
/// rows are all taken evicts the least recently seen of them
/// ([`Snapshot::evicted_keys`] counts them), so a key may be evicted before
/// the table is full. A row is 168 bytes plus the key's text: the default
/// bound is under 2 MB, 100 000 keys about 17 MB.
///
/// The request path takes no lock: a keyed event finds its row by reading
/// the row hashes (the hash and the figures every request touches share a
/// cache line) and updates it with atomic adds; per-layer figures are kept
/// per thread (each of the first 32 threads alive at once writes its own
/// cache-padded counters with a plain load and store; more threads share
/// one set of atomics), summed by [`snapshot`](Monitor::snapshot). Only a
/// new key takes a lock (of its 64 rows) and allocates (its text). An
/// event racing with the eviction of its own key's row may be counted for
/// the key that takes the row over.
///
/// A `Monitor` (or a [`scoped`](Self::scoped) one) given to a layer's
/// `.observer(..)` is bound to that layer: the layer calls it directly (no
/// dynamic call, the short path of each event inlined where it is
/// reported) and keeps its figures, found once, when it is given to the
/// layer; a per-key layer's followed request has its key hashed and looked
/// up once, its completion counted in the row its admission found (looked
/// up again only if that row was given to another key meanwhile). Inside a
/// [`Fanout`](super::Fanout) or an observer of your own it is reached
/// through `dyn Observer` and finds the layer's figures by name per event,
/// a few nanoseconds more.
///
/// # Alerts
///
/// Rules are evaluated as events arrive (no timer): a key's rate rule is
/// checked on each of that key's admission decisions that the monitor
/// counts in its row (every limited one, and every allowed one it follows:
/// all of them on a quiet thread), from the key's own row (no cross-thread
/// sums), a breaker rule when a
/// breaker changes state, a backend rule on backend failures. A rule fires
/// once per crossing even when several threads see it at once. Firing only queues the alert
/// (a bounded channel; if 1024 alerts are already waiting, new ones are
/// dropped and counted): callbacks run on a dedicated thread, one at a time,
/// under `catch_unwind`, so a slow or panicking callback never blocks or
/// breaks a request.
#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    alpha: f64,
    window: u64,
    sample_one_in: u32,
    max_keys: usize,
    /// The time the recent-rate windows and key recency read.
    clock: BucketClock,
    /// The key table: `max_keys` rows, in chunks of [`CHUNK`] allocated on
    /// first use.
    chunks: Box<[OnceLock<Chunk>]>,
    /// Filled in order; lookups scan the filled prefix without a lock.
    layers: [OnceLock<Arc<LayerStats>>; LAYERS],
    layers_lock: Mutex<()>,
    evicted: AtomicU64,
    alerts: Option<Alerts>,
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
            sample_one_in: 32,
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
        self.inner.snapshot()
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
        inner
            .find(key.key_hash().max(1))
            .map(|row| inner.key_snapshot(&row, inner.clock.now()))
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

    /// One call in [`MonitorBuilder::sample_one_in`] (32 by default). A
    /// monitor given directly to a layer decides for itself: every call
    /// while the thread is quiet for the layer, one in `n` once it is busy.
    fn latency_one_in(&self) -> u32 {
        self.inner.sample_one_in
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("smoothing", &self.inner.alpha)
            .field("window", &Duration::from_nanos(self.inner.window))
            .field("max_keys", &self.inner.max_keys)
            .field("sample_one_in", &self.inner.sample_one_in)
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

    fn latency_one_in(&self) -> u32 {
        self.monitor.latency_one_in()
    }
}

impl fmt::Debug for Scoped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped").field("name", &self.name).finish()
    }
}

#[cfg(test)]
mod tests;
