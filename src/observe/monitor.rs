//! [`Monitor`]: per-key and per-layer statistics from the event stream.

use std::fmt::{self, Write as _};
use std::sync::atomic::{
    AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::alert::{Alert, AlertRule, Alerts, Callback, RuleKind};
use super::slot::{self, SHARED};
use super::{Event, EventKey, FailureAction, Observer};
use crate::classify::Outcome;
use crate::clock::BucketClock;
use crate::observe::words::CircuitState;

/// The least `max_keys`.
const MIN_KEYS: usize = 16;
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
    sample_one_in: u32,
    rules: Vec<(AlertRule, Callback)>,
}

impl fmt::Debug for MonitorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MonitorBuilder")
            .field("smoothing", &self.smoothing)
            .field("window", &self.window)
            .field("max_keys", &self.max_keys)
            .field("sample_one_in", &self.sample_one_in)
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
        self.max_keys = max_keys.max(MIN_KEYS);
        self
    }

    /// On a busy thread (10 000 or more requests a second through a
    /// layer), sample about one request in `n` (default 32): only those
    /// are timed for the response-time EWMAs and, of a per-key layer's
    /// admitted requests, only those are followed into their key's row and
    /// to their completion, each counted `n` times (see [`Monitor`]'s
    /// `# What is counted`). A quiet thread follows and times every
    /// request. `1` follows and times every
    /// request whatever the load: exact figures, at several times the cost
    /// under load; `0` follows every request and times none. Layers read
    /// the precise clock only for timed calls (see
    /// [`Observer::latency_one_in`]).
    ///
    /// On tokio's paused clock (tests), a thread's pace follows that clock:
    /// 1 000 admitted requests within 100 ms of it (a burst without
    /// `advance`, say) make the thread busy once the clock moves on. Tests
    /// that check per-key figures after such bursts set `sample_one_in(1)`.
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
    /// // Every request followed and timed: exact figures, for tests or low
    /// // traffic.
    /// let monitor = Monitor::builder().sample_one_in(1).build();
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(10), |user: &u64| Some(*user)).observer(monitor.clone()))
    ///     .service(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(42).await.unwrap();
    /// let key = monitor.key(&42u64).unwrap();
    /// assert_eq!((key.requests, key.completed), (1, 1));
    /// assert!(key.latency_ewma.is_some());
    /// # }
    /// ```
    pub fn sample_one_in(mut self, n: u32) -> Self {
        self.sample_one_in = n;
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
        let chunks = self.max_keys.div_ceil(CHUNK);
        Monitor {
            inner: Arc::new(Inner {
                alpha: self.smoothing,
                window: u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX),
                sample_one_in: self.sample_one_in,
                max_keys: self.max_keys,
                // The kernel's coarse clock (a few ns cheaper per keyed
                // request) when the window is at least 100 of its ticks.
                clock: BucketClock::for_buckets(nanos(self.window), 100),
                chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
                layers: std::array::from_fn(|_| OnceLock::new()),
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

/// Rows of the key table allocated together, on first use.
const CHUNK: usize = 64;
/// A key lives within this many rows of its home row (in its chunk,
/// wrapping around), and a new key whose rows are all taken evicts the
/// least recently seen of them.
const PROBE: usize = 8;

/// Rows of the key table. Lookups read the hashes without a lock; adding a
/// key (or evicting one) takes `claim`. Rows are never removed, only
/// replaced: a lookup may stop at the first free row.
struct Chunk {
    hot: Box<[Hot]>,
    cold: Box<[Cold]>,
    claim: Mutex<()>,
}

impl Chunk {
    fn new(len: usize) -> Self {
        Chunk {
            hot: (0..len).map(|_| Hot::default()).collect(),
            cold: (0..len).map(|_| Cold::default()).collect(),
            claim: Mutex::new(()),
        }
    }

    #[inline]
    fn row(&self, i: usize) -> KeyRow<'_> {
        KeyRow {
            hot: &self.hot[i],
            cold: &self.cold[i],
            at: i,
        }
    }

    /// The rows a key whose home is `home` may live in.
    #[inline]
    fn probe(&self, home: usize) -> impl Iterator<Item = usize> {
        let len = self.hot.len();
        (home..home + PROBE.min(len)).map(move |i| if i >= len { i - len } else { i })
    }

    #[inline]
    fn find(&self, home: usize, hash: u64) -> Option<KeyRow<'_>> {
        for i in self.probe(home) {
            match self.hot[i].hash.load(Acquire) {
                h if h == hash => return Some(self.row(i)),
                0 => return None,
                _ => {}
            }
        }
        None
    }
}

/// A key's figures, all atomics, so events update them without a lock:
/// what every request and completion touches in one cache line (`hot`),
/// the rest apart (`cold`, also reached through `Deref`).
///
/// The recent window is kept as two fixed buckets, from the totals: the
/// current bucket's counts are the totals minus their values when it
/// started (`base_*`), the previous bucket's are kept (`prev_*`).
#[derive(Clone, Copy)]
struct KeyRow<'a> {
    hot: &'a Hot,
    cold: &'a Cold,
    /// Its index in its chunk.
    at: usize,
}

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
    hash: u64,
    /// The row's index in the key table.
    at: usize,
    /// How many requests this one stands for (0: not followed).
    weight: u32,
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

impl std::ops::Deref for KeyRow<'_> {
    type Target = Cold;
    fn deref(&self) -> &Cold {
        self.cold
    }
}

#[derive(Default)]
#[repr(align(64))]
struct Hot {
    /// The key's hash; 0 = free.
    hash: AtomicU64,
    requests: AtomicU64,
    limited: AtomicU64,
    shadow_limited: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    last_seen: AtomicU64,
    /// When the current bucket of the recent window ends (the start of the
    /// next one; saturated at `u64::MAX`): a request compares it with the
    /// time, no division.
    bucket_end: AtomicU64,
}

#[derive(Default)]
struct Cold {
    /// The key's `Debug` text, written when the row is claimed.
    name: Mutex<Box<str>>,
    /// Of the timed completions.
    latency: AtomicEwma,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    retries: AtomicU64,
    gave_up: AtomicU64,
    /// One bit per rate rule that has fired for this key.
    fired: AtomicU64,
    base_requests: AtomicU64,
    base_limited: AtomicU64,
    prev_requests: AtomicU64,
    prev_limited: AtomicU64,
}

impl KeyRow<'_> {
    /// Makes the row `name`'s, all figures zero (under the chunk's
    /// `claim`, the hash cleared).
    fn reset(&self, name: Box<str>, now: u64, width: u64) {
        *lock(&self.name) = name;
        for a in [
            &self.hot.requests,
            &self.hot.limited,
            &self.hot.shadow_limited,
            &self.waited,
            &self.wait_nanos,
            &self.hot.completed,
            &self.hot.failed,
            &self.retries,
            &self.gave_up,
            &self.fired,
            &self.base_requests,
            &self.base_limited,
            &self.prev_requests,
            &self.prev_limited,
        ] {
            a.store(0, Relaxed);
        }
        self.latency.0.store(u64::MAX, Relaxed);
        self.hot.last_seen.store(now, Relaxed);
        self.hot
            .bucket_end
            .store(bucket_end(now / width, width), Relaxed);
    }

    fn name(&self) -> String {
        lock(&self.name).to_string()
    }

    /// Limited and shadow-limited requests, over the whole run.
    #[inline]
    fn all_limited(&self) -> u64 {
        self.hot.limited.load(Relaxed) + self.hot.shadow_limited.load(Relaxed)
    }

    /// Starts a new bucket if `now` is past the current one. One thread
    /// moves the bucket; requests counted while it does may land in either
    /// bucket (the window is an estimate).
    #[inline]
    fn roll(&self, now: u64, width: u64) {
        let end = self.hot.bucket_end.load(Relaxed);
        if now >= end {
            self.roll_over(now, width, end);
        }
    }

    #[cold]
    fn roll_over(&self, now: u64, width: u64, end: u64) {
        let bucket = now / width;
        let current = bucket_of(end, width);
        if bucket <= current
            || self
                .hot
                .bucket_end
                .compare_exchange(end, bucket_end(bucket, width), Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let requests = self.hot.requests.load(Relaxed);
        let limited = self.all_limited();
        let (prev_r, prev_l) = if bucket == current + 1 {
            (
                requests.saturating_sub(self.base_requests.load(Relaxed)),
                limited.saturating_sub(self.base_limited.load(Relaxed)),
            )
        } else {
            (0, 0)
        };
        self.prev_requests.store(prev_r, Relaxed);
        self.prev_limited.store(prev_l, Relaxed);
        self.base_requests.store(requests, Relaxed);
        self.base_limited.store(limited, Relaxed);
    }

    /// (requests, limited) over the last `width`, estimated: the current
    /// bucket plus the previous one weighted by how much of it is still
    /// inside the window.
    fn recent(&self, now: u64, width: u64) -> (f64, f64) {
        let bucket = now / width;
        let current = bucket_of(self.hot.bucket_end.load(Relaxed), width);
        let cur_r = self
            .hot
            .requests
            .load(Relaxed)
            .saturating_sub(self.base_requests.load(Relaxed));
        let cur_l = self
            .all_limited()
            .saturating_sub(self.base_limited.load(Relaxed));
        let (cur_r, cur_l, prev_r, prev_l) = if bucket <= current {
            (
                cur_r,
                cur_l,
                self.prev_requests.load(Relaxed),
                self.prev_limited.load(Relaxed),
            )
        } else if bucket == current + 1 {
            (0, 0, cur_r, cur_l)
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

/// The end of bucket `bucket` of `width` nanoseconds (saturated).
#[inline]
fn bucket_end(bucket: u64, width: u64) -> u64 {
    bucket.saturating_add(1).saturating_mul(width)
}

/// The bucket whose end is `end`: the one before `end / width` for an
/// exact end, the one `end` falls in for an end saturated at `u64::MAX`
/// (a bucket that ends past the clock's range, which only a width of
/// centuries makes).
#[inline]
fn bucket_of(end: u64, width: u64) -> u64 {
    if end.is_multiple_of(width) {
        (end / width).saturating_sub(1)
    } else {
        end / width
    }
}

/// An EWMA in an atomic (f64 bits; `u64::MAX` = no sample yet).
struct AtomicEwma(AtomicU64);

impl Default for AtomicEwma {
    fn default() -> Self {
        AtomicEwma(AtomicU64::new(u64::MAX))
    }
}

impl AtomicEwma {
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

/// A layer's counters, indices into [`Counts`].
mod count {
    pub(super) const REQUESTS: usize = 0;
    pub(super) const LIMITED: usize = 1;
    pub(super) const SHADOW_LIMITED: usize = 2;
    pub(super) const WAITED: usize = 3;
    pub(super) const WAIT_NANOS: usize = 4;
    pub(super) const RETRIES: usize = 5;
    pub(super) const GAVE_UP: usize = 6;
    pub(super) const BUDGET_EXHAUSTED: usize = 7;
    pub(super) const QUEUED: usize = 8;
    pub(super) const DEQUEUED: usize = 9;
    pub(super) const QUEUE_FULL: usize = 10;
    pub(super) const QUEUE_TIMED_OUT: usize = 11;
    pub(super) const BREAKER_REJECTED: usize = 12;
    pub(super) const BACKEND_FAILURES: usize = 13;
    pub(super) const BACKEND_FALLBACKS: usize = 14;
    pub(super) const COMPLETED: usize = 15;
    pub(super) const FAILED: usize = 16;
    pub(super) const N: usize = 17;
}

/// One thread's counters of a layer ([`slot`]). Only the owning thread
/// writes them (a relaxed load and store: no locked read-modify-write);
/// readers add up every thread's.
///
/// Beside them, the thread's pace through a per-key layer, which says
/// whether its admitted requests are sampled ([`Pace`]).
struct Counts([AtomicU64; count::N], Pace);

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
struct Pace {
    start: AtomicU64,
    admitted: AtomicU64,
    sampling: AtomicBool,
}

/// The span over which a thread's pace is measured.
const SPAN: u64 = 100_000_000;
/// Admitted requests per [`SPAN`] from which a thread samples: 10 000 a
/// second.
const BUSY: u64 = 1_000;

impl Pace {
    /// Whether the thread samples.
    #[inline(always)]
    fn sampling(&self) -> bool {
        self.sampling.load(Relaxed)
    }

    /// Counts a followed request standing for `weight` at `now`; a new span
    /// starts once the current one is over, sampling if the last was busy.
    #[inline]
    fn followed(&self, now: u64, weight: u64) {
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
struct Mine<'a> {
    counts: &'a Counts,
    slot: usize,
}

impl Mine<'_> {
    /// This thread's pace through the layer.
    #[inline(always)]
    fn pace(&self) -> &Pace {
        &self.counts.1
    }

    #[inline(always)]
    fn add(&self, i: usize, n: u64) {
        slot::add(&self.counts.0[i], self.slot, n);
    }
}

/// Per-layer (or per-scope) figures: counters per thread, states shared.
struct LayerStats {
    name: &'static str,
    /// The address of another copy of `name`'s text, once seen.
    alias: AtomicUsize,
    /// Each thread's counters, by [`slot`], cache-line padded so threads
    /// never share a line.
    counts: [CachePadded<Counts>; SHARED + 1],
    queue_depth: AtomicU64,
    has_queue: AtomicBool,
    breaker_state: AtomicU8,
    breaker_alerted: AtomicBool,
    breaker_changes: AtomicU64,
    backend_down: AtomicU8,
    backend_alerted: AtomicBool,
    latency: AtomicEwma,
}

impl LayerStats {
    fn new(name: &'static str) -> Self {
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
    fn counts(&self) -> Mine<'_> {
        let slot = slot::slot();
        Mine {
            counts: &self.counts[slot],
            slot,
        }
    }

    /// This thread's pace through the layer.
    #[inline(always)]
    fn pace(&self) -> &Pace {
        &self.counts[slot::slot()].1
    }

    /// Whether `name` is this layer's name: by address first (a name is
    /// usually one `&'static str`, or a few copies of it, one per module
    /// that reports it), by text the first time a copy is seen.
    #[inline(always)]
    fn is(&self, name: &'static str) -> bool {
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

    fn snapshot(&self) -> LayerSnapshot {
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
    Completed { latency: Option<u64>, success: bool },
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
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut keys = Vec::new();
        for chunk in inner.chunks.iter().filter_map(OnceLock::get) {
            for i in 0..chunk.hot.len() {
                if chunk.hot[i].hash.load(Acquire) != 0 {
                    keys.push(inner.key_snapshot(&chunk.row(i), now));
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
        let layers: Vec<LayerSnapshot> = inner
            .layers
            .iter()
            .map_while(|slot| slot.get().map(|l| l.snapshot()))
            // Layers given the monitor that have reported nothing yet.
            .filter(|l| {
                *l != LayerSnapshot {
                    name: l.name.clone(),
                    ..LayerSnapshot::default()
                }
            })
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
            n if super::one_in(n) => n,
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
            n => !self.layer.pace().sampling() || super::one_in(n),
        }
    }

    /// Measures the thread's pace at a timed call of a layer whose calls
    /// are not followed otherwise (a breaker's): it stands for one call
    /// while the thread is quiet, for `n` once it samples.
    #[inline(never)]
    fn timed(&self, stats: &LayerStats) {
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
    fn hot(&self, name: &'static str) -> &LayerStats {
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
    fn stats(&self, name: &'static str) -> &LayerStats {
        if self.scope.is_some() || self.layer.is(name) {
            &self.layer
        } else {
            self.other(name)
        }
    }

    #[cold]
    fn other(&self, name: &'static str) -> &LayerStats {
        self.monitor.inner.layer(name)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// `name`'s statistics, added if new.
    #[inline]
    fn layer(&self, name: &'static str) -> &Arc<LayerStats> {
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
        let _guard = lock(&self.layers_lock);
        for slot in self.layers.iter() {
            match slot.get() {
                Some(l) if l.name == name => return l,
                Some(_) => {}
                None => return slot.get_or_init(|| Arc::new(LayerStats::new(name))),
            }
        }
        self.layers[LAYERS - 1].get().expect("filled")
    }

    /// The chunk a key hash belongs to, and its home row there (from the
    /// hash's high bits, scaled to `max_keys`).
    #[inline]
    fn home(&self, hash: u64) -> (usize, usize) {
        let spread = crate::hash::spread(hash);
        let row = ((u128::from(spread) * self.max_keys as u128) >> 64) as usize;
        (row / CHUNK, row % CHUNK)
    }

    /// The row of a key hash, if the key is tracked.
    fn find(&self, hash: u64) -> Option<KeyRow<'_>> {
        let (chunk, home) = self.home(hash);
        self.chunks[chunk].get()?.find(home, hash)
    }

    /// The row of `key` (hash `hash`), made if new: in a free row near its
    /// home, or in place of the least recently seen key there.
    #[inline(always)]
    fn row(&self, hash: u64, key: &dyn EventKey, now: u64) -> KeyRow<'_> {
        let (chunk, home) = self.home(hash);
        let chunk = match self.chunks[chunk].get() {
            Some(c) => c,
            None => self.new_chunk(chunk),
        };
        match chunk.find(home, hash) {
            Some(row) => row,
            None => self.claim(chunk, home, hash, key, now),
        }
    }

    #[cold]
    fn new_chunk(&self, i: usize) -> &Chunk {
        self.chunks[i].get_or_init(|| {
            // The last chunk holds what is left of `max_keys`.
            Chunk::new(self.max_keys.saturating_sub(i * CHUNK).clamp(1, CHUNK))
        })
    }

    #[cold]
    fn claim<'a>(
        &self,
        chunk: &'a Chunk,
        home: usize,
        hash: u64,
        key: &dyn EventKey,
        now: u64,
    ) -> KeyRow<'a> {
        let _guard = lock(&chunk.claim);
        if let Some(row) = chunk.find(home, hash) {
            // Added by another thread meanwhile.
            return row;
        }
        let i = match chunk
            .probe(home)
            .find(|&i| chunk.hot[i].hash.load(Relaxed) == 0)
        {
            Some(i) => i,
            None => {
                let i = chunk
                    .probe(home)
                    .min_by_key(|&i| chunk.hot[i].last_seen.load(Relaxed))
                    .expect("a chunk has rows");
                // Lookups of the old key miss from here on.
                chunk.hot[i].hash.store(0, Release);
                self.evicted.fetch_add(1, Relaxed);
                i
            }
        };
        let mut name = String::new();
        let _ = write!(name, "{key:?}");
        let row = chunk.row(i);
        row.reset(name.into_boxed_str(), now, self.window);
        row.hot.hash.store(hash, Release);
        row
    }

    fn key_snapshot(&self, row: &KeyRow<'_>, now: u64) -> KeySnapshot {
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

    /// Whether a rate rule that fired for `row` is still above its re-arm
    /// level now: a key that went quiet reads as recovered without waiting
    /// for its next request (which is when the rule itself re-arms).
    fn alerting(&self, row: &KeyRow<'_>, now: u64) -> bool {
        let fired = row.fired.load(Relaxed);
        let Some(alerts) = self.alerts.as_ref().filter(|_| fired != 0) else {
            return false;
        };
        let (requests, limited) = row.recent(now, self.window);
        let rate = if requests > 0.0 {
            limited / requests
        } else {
            0.0
        };
        alerts.rules().iter().enumerate().any(|(i, rule)| {
            fired & (1 << i) != 0
                && matches!(rule.kind, RuleKind::LimitedRate { rearm_below, .. } if rate >= rearm_below)
        })
    }

    #[inline]
    fn observe(&self, event: &Event<'_>, scope: Option<&'static str>) {
        let name = scope.unwrap_or_else(|| event.layer());
        self.observe_in(self.layer(name), name, event);
    }

    /// Counts `event` in `l`, the stats of `name`. The unkeyed events
    /// layers report for every request are kept short (inlined into a
    /// layer's bound observer); the rest go to `apply`.
    #[inline(always)]
    fn observe_in(&self, l: &LayerStats, name: &'static str, event: &Event<'_>) {
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
    fn count_completed(&self, l: &LayerStats, latency: Option<u64>, success: bool, weight: u64) {
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
    fn count_breaker_call(&self, l: &LayerStats, outcome: Outcome, latency: Option<Duration>) {
        let c = l.counts();
        c.add(count::REQUESTS, 1);
        c.add(count::COMPLETED, 1);
        if outcome == Outcome::Failure {
            c.add(count::FAILED, 1);
        }
        if let Some(latency) = latency {
            l.latency.add(nanos(latency) as f64, self.alpha);
        }
        if l.breaker_state.load(Relaxed) == NO_STATE {
            l.breaker_state
                .store(state_code(CircuitState::Closed), Relaxed);
        }
    }

    #[inline(never)]
    fn apply(&self, l: &LayerStats, name: &'static str, event: &Event<'_>) {
        use count::*;
        let c = l.counts();
        let one = |i: usize| c.add(i, 1);
        let mut keyed = None;
        match *event {
            Event::Allowed { .. } => {
                one(REQUESTS);
                keyed = Some(KeyUpdate::Request {
                    limited: false,
                    shadow: false,
                });
            }
            Event::Limited { enforced, .. } => {
                one(REQUESTS);
                one(if enforced { LIMITED } else { SHADOW_LIMITED });
                keyed = Some(KeyUpdate::Request {
                    limited: enforced,
                    shadow: !enforced,
                });
            }
            Event::InFlightLimited { enforced, .. } | Event::StoreFull { enforced, .. } => {
                one(REQUESTS);
                one(if enforced { LIMITED } else { SHADOW_LIMITED });
                keyed = Some(KeyUpdate::Request {
                    limited: enforced,
                    shadow: !enforced,
                });
            }
            Event::MissingKey { enforced, .. } => {
                one(REQUESTS);
                one(if enforced { LIMITED } else { SHADOW_LIMITED });
            }
            Event::Waited { waited, .. } => {
                one(WAITED);
                c.add(WAIT_NANOS, nanos(waited));
                keyed = Some(KeyUpdate::Waited(nanos(waited)));
            }
            Event::Completed {
                latency, success, ..
            } => {
                let latency = latency.map(nanos);
                self.count_completed(l, latency, success, 1);
                keyed = Some(KeyUpdate::Completed { latency, success });
            }
            Event::AdaptiveRejected { enforced, .. } => {
                one(REQUESTS);
                one(if enforced { LIMITED } else { SHADOW_LIMITED });
            }
            // Limit changes are reported, not counted.
            Event::LimitChanged { .. } | Event::ConcurrencyLimitChanged { .. } => {}
            Event::BreakerStateChanged { from, to, .. } => {
                l.breaker_state.store(state_code(to), Relaxed);
                l.breaker_changes.fetch_add(1, Relaxed);
                self.breaker_alerts(l, from, to);
            }
            Event::BreakerRejected { enforced, .. } => {
                one(REQUESTS);
                one(BREAKER_REJECTED);
                one(if enforced { LIMITED } else { SHADOW_LIMITED });
            }
            // `observe_in` counts these without calling `apply`.
            Event::BreakerCall {
                outcome, latency, ..
            } => self.count_breaker_call(l, outcome, latency),
            Event::RetryScheduled { .. } => {
                one(RETRIES);
                keyed = Some(KeyUpdate::Retry);
            }
            Event::RetryGaveUp { .. } => {
                one(GAVE_UP);
                keyed = Some(KeyUpdate::GaveUp);
            }
            Event::RetryBudgetExhausted { .. } => one(BUDGET_EXHAUSTED),
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
                    c.add(WAIT_NANOS, nanos(waited));
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
            Event::QueueClosed { .. } => {}
            Event::BackendFailure { action, .. } => {
                one(BACKEND_FAILURES);
                if action == FailureAction::Fallback {
                    one(BACKEND_FALLBACKS);
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
    fn follow(
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
    fn request(
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
    fn completed(&self, row: KeyRow<'_>, latency: Option<u64>, success: bool, weight: u64) {
        row.hot.completed.fetch_add(weight, Relaxed);
        if !success {
            row.hot.failed.fetch_add(weight, Relaxed);
        }
        if let Some(n) = latency {
            row.latency.add(n as f64, self.alpha);
        }
    }

    /// The row of `key`, made if new, for an event other than a request.
    #[cold]
    fn row_of(&self, key: &dyn EventKey) -> KeyRow<'_> {
        self.row(key.key_hash().max(1), key, 0)
    }

    /// The row `hint` names, if it still holds the key it was found for.
    #[inline]
    fn row_at(&self, hint: RowHint) -> Option<KeyRow<'_>> {
        if hint.hash == 0 {
            return None;
        }
        let chunk = self.chunks.get(hint.at / CHUNK)?.get()?;
        let i = hint.at % CHUNK;
        let hot = chunk.hot.get(i)?;
        (hot.hash.load(Acquire) == hint.hash).then(|| chunk.row(i))
    }

    fn rate_alerts(&self, alerts: &Alerts, scope: &'static str, row: &KeyRow<'_>, now: u64) {
        let (requests, limited) = row.recent(now, self.window);
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
            if row.fired.load(Relaxed) & bit == 0 {
                // The bit is set by one thread only: the rule fires once.
                if requests >= min_requests as f64
                    && rate >= threshold
                    && row.fired.fetch_or(bit, Relaxed) & bit == 0
                {
                    alerts.fire(
                        i,
                        Alert::LimitedRate {
                            scope,
                            key: row.name(),
                            rate,
                            requests: requests.round() as u64,
                            window: Duration::from_nanos(self.window),
                        },
                    );
                }
            } else if rate < rearm_below {
                row.fired.fetch_and(!bit, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Observers;

    fn dequeued(layer: &'static str) -> Event<'static> {
        Event::Dequeued {
            layer,
            waited: Duration::ZERO,
            depth: 0,
            queued: false,
        }
    }

    /// A monitor bound to a layer counts each event under its own layer
    /// name (or the scope), also when one layer reports under two names,
    /// and a layer shows in the snapshot only once it has reported.
    #[test]
    fn a_bound_monitor_counts_by_name_or_scope() {
        let monitor = Monitor::new();
        let bound = Observers::new(monitor.clone(), "queue");
        let scoped = Observers::new(monitor.scoped("upstream"), "queue");
        assert!(monitor.snapshot().layers.is_empty(), "nothing reported yet");
        for name in ["queue", "queue", "other", "queue"] {
            bound.emit(&dequeued(name));
        }
        // Another copy of the name's text is the same layer.
        bound.emit(&dequeued(String::from("queue").leak()));
        bound.emit(&Event::MissingKey {
            layer: "other",
            enforced: true,
        });
        scoped.emit(&dequeued("queue"));
        scoped.emit(&Event::MissingKey {
            layer: "per_key",
            enforced: true,
        });
        let rate = Observers::new(monitor.clone(), "rate_limit");
        rate.emit_allowed("rate_limit", || unreachable!("a monitor only counts"));
        let snapshot = monitor.snapshot();
        let names: Vec<&str> = snapshot.layers.iter().map(|l| l.name.as_str()).collect();
        // In the order they were bound (or, another name, first reported).
        assert_eq!(names, ["queue", "upstream", "other", "rate_limit"]);
        let requests = |name| snapshot.layer(name).unwrap().requests;
        assert_eq!(requests("queue"), 4);
        assert_eq!(requests("other"), 2);
        assert_eq!(snapshot.layer("other").unwrap().limited, 1);
        assert_eq!(requests("upstream"), 2);
        assert_eq!(requests("rate_limit"), 1);
        // Clones of a bound observer keep counting in the same figures.
        bound.clone().emit(&dequeued("queue"));
        assert_eq!(monitor.snapshot().layer("queue").unwrap().requests, 5);
    }

    /// Reports a per-key admission as the per-key layer does.
    fn admit(o: &Observers, key: &u64, decision: &crate::gcra::Decision) -> RowHint {
        let weight = o.keyed_allowed_weight("per_key");
        o.emit_keyed_allowed("per_key", key, decision, weight)
    }

    /// A completion is counted in the row its admission found while that
    /// row is still the key's; once another key has taken it over, the key
    /// is looked up again (and, evicted, made anew), as an unbound
    /// monitor's completion would be.
    #[test]
    fn a_completion_uses_the_admission_row_until_it_is_taken_over() {
        let monitor = Monitor::builder().sample_one_in(1).build();
        let bound = Observers::new(monitor.clone(), "per_key");
        let decision = crate::gcra::Decision::allowed(
            &crate::gcra::Params::new(crate::quota::Quota::per_second(1)),
            0,
            0,
        );
        let (a, b) = (1u64, 2u64);
        let at_a = admit(&bound, &a, &decision);
        assert_ne!(at_a.hash, 0, "a bound monitor says where it counted");
        let ms = Some(Duration::from_millis(5));
        bound.emit_completed("per_key", Some(&a), at_a, ms, true);
        let key = |k: &u64| monitor.key(k);
        let row = key(&a).unwrap();
        assert_eq!((row.requests, row.completed, row.failed), (1, 1, 0));
        assert_eq!(row.latency_ewma, ms);
        // `b` takes `a`'s row over (as a claim does; its figures are not
        // reset here, to tell them apart): `a`'s hint no longer matches.
        let chunk = monitor.inner.chunks[at_a.at / CHUNK].get().unwrap();
        let taken = &chunk.hot[at_a.at % CHUNK];
        taken.hash.store(b.key_hash().max(1), Release);
        bound.emit_completed("per_key", Some(&a), at_a, None, false);
        let (completed, failed) = (taken.completed.load(Relaxed), taken.failed.load(Relaxed));
        assert_eq!((completed, failed), (1, 0), "not counted in b's row");
        let row = key(&a).unwrap();
        assert_eq!(
            (row.requests, row.completed, row.failed),
            (0, 1, 1),
            "a, made anew"
        );
        let layer = monitor.snapshot().layer("per_key").unwrap().clone();
        assert_eq!((layer.requests, layer.completed, layer.failed), (1, 2, 1));
        // Other observers get the events, and no hint.
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let other = Observers::new(
            move |_: &Event<'_>| {
                counter.fetch_add(1, Relaxed);
            },
            "per_key",
        );
        let hint = admit(&other, &a, &decision);
        assert_eq!(hint.hash, 0);
        other.emit_completed("per_key", Some(&a), hint, None, true);
        assert_eq!(seen.load(Relaxed), 2);
    }

    /// The recent window moves by bucket: a request inside the current
    /// bucket leaves it, the first one past its end starts the next (the
    /// last bucket kept, weighted by how much of it is still inside the
    /// window), one further on drops both.
    #[test]
    fn the_recent_window_rolls_at_the_end_of_its_bucket() {
        let chunk = Chunk::new(1);
        let row = chunk.row(0);
        let width = 1_000;
        row.reset("k".into(), 2_500, width);
        assert_eq!(row.hot.bucket_end.load(Relaxed), 3_000);
        let request = |now: u64, limited: bool| {
            row.roll(now, width);
            row.hot.requests.fetch_add(1, Relaxed);
            if limited {
                row.hot.limited.fetch_add(1, Relaxed);
            }
        };
        request(2_500, true);
        request(2_999, false);
        assert_eq!(row.recent(2_999, width), (2.0, 1.0));
        // The next bucket: the last one's counts, three quarters inside.
        request(3_250, false);
        assert_eq!(row.hot.bucket_end.load(Relaxed), 4_000);
        assert_eq!(row.recent(3_250, width), (1.0 + 2.0 * 0.75, 0.75));
        // Read (not rolled) a bucket on: the current one becomes the last.
        assert_eq!(row.recent(4_500, width), (0.5, 0.0));
        // Two buckets on: nothing recent, the totals stay.
        request(5_000, false);
        assert_eq!(row.hot.bucket_end.load(Relaxed), 6_000);
        assert_eq!(row.recent(5_000, width), (1.0, 0.0));
        assert_eq!(row.hot.requests.load(Relaxed), 4);
        // A window too wide to end: one bucket, for ever.
        row.reset("k".into(), 7, u64::MAX);
        assert_eq!(row.hot.bucket_end.load(Relaxed), u64::MAX);
        row.roll(u64::MAX - 1, u64::MAX);
        row.hot.requests.fetch_add(1, Relaxed);
        assert_eq!(row.recent(u64::MAX - 1, u64::MAX), (1.0, 0.0));
        // A bucket whose end is past the clock's range: its end saturates,
        // and it is still the current bucket.
        let half = 1 << 63;
        row.reset("k".into(), half + 5, half);
        assert_eq!(row.hot.bucket_end.load(Relaxed), u64::MAX);
        assert_eq!(bucket_of(u64::MAX, half), 1);
        row.roll(half + 9, half);
        row.hot.requests.fetch_add(1, Relaxed);
        assert_eq!(row.recent(half + 9, half), (1.0, 0.0));
    }

    /// A bound monitor counts a breaker call (reported without building
    /// the event) as a monitor given the event does: requests,
    /// completions, failures, latency and the breaker shown Closed.
    #[test]
    fn a_bound_breaker_call_counts_as_the_event() {
        let (bound_to, given) = (Monitor::new(), Monitor::new());
        let bound = Observers::new(bound_to.clone(), "circuit_breaker");
        let calls = [
            (Outcome::Success, None),
            (Outcome::Failure, Some(Duration::from_millis(4))),
            (Outcome::Success, Some(Duration::from_millis(2))),
            (Outcome::Ignore, None),
        ];
        for (outcome, latency) in calls {
            bound.emit_breaker_call("circuit_breaker", None, outcome, false, true, latency);
            given.on_event(&Event::BreakerCall {
                layer: "circuit_breaker",
                key: None,
                outcome,
                slow: false,
                counted: true,
                latency,
            });
        }
        let (a, b) = (bound_to.snapshot(), given.snapshot());
        assert_eq!(a, b);
        let l = a.layer("circuit_breaker").unwrap();
        assert_eq!((l.requests, l.completed, l.failed), (4, 4, 1));
        assert_eq!(l.breaker_state, Some(CircuitState::Closed));
        assert!(l.latency_ewma.is_some());
    }

    #[test]
    fn a_row_is_168_bytes() {
        assert_eq!(std::mem::size_of::<Hot>(), 64);
        assert_eq!(
            std::mem::size_of::<Hot>() + std::mem::size_of::<Cold>(),
            168
        );
    }

    /// Counts stay exact when threads report at once (per-thread layer
    /// counters, atomic key rows).
    #[test]
    fn counts_from_many_threads_are_exact() {
        let monitor = Monitor::builder().sample_one_in(1).build();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = monitor.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let key = i % 8;
                        m.on_event(&Event::Completed {
                            layer: "per_key",
                            key: Some(&key),
                            latency: Some(Duration::from_millis(t + 1)),
                            success: (i / 8) % 10 != 0,
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let snap = monitor.snapshot();
        let layer = snap.layer("per_key").unwrap();
        assert_eq!((layer.completed, layer.failed), (40_000, 4_000));
        assert_eq!(snap.keys.len(), 8);
        for k in &snap.keys {
            assert_eq!((k.completed, k.failed), (5_000, 500), "{k:?}");
            let ms = k.latency_ewma.unwrap().as_secs_f64() * 1000.0;
            assert!((1.0..=4.0).contains(&ms), "{ms}");
        }
    }

    /// A new key whose rows are all taken evicts the least recently seen
    /// of them; the table never holds more than `max_keys`.
    #[test]
    fn the_key_table_holds_max_keys() {
        let monitor = Monitor::builder().max_keys(100).build();
        for i in 0..1_000u64 {
            monitor.on_event(&Event::Completed {
                layer: "per_key",
                key: Some(&i),
                latency: None,
                success: true,
            });
        }
        let snap = monitor.snapshot();
        assert_eq!(snap.tracked_keys_max, 100);
        assert!(snap.keys.len() <= 100);
        assert_eq!(snap.keys.len() as u64 + snap.evicted_keys, 1_000);
        assert!(monitor.key(&999u64).is_some(), "the newest key is kept");
    }
}
