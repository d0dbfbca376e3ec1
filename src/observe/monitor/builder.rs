//! [`MonitorBuilder`]: a monitor's settings and alert rules.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::table::CHUNK;
use super::{Inner, Monitor};
use crate::clock::BucketClock;
#[cfg(doc)]
use crate::observe::Observer;
use crate::observe::alert::{Alert, AlertRule, Alerts, Callback};

/// The least `max_keys`.
const MIN_KEYS: usize = 16;

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
    pub(super) smoothing: f64,
    pub(super) window: Duration,
    pub(super) max_keys: usize,
    pub(super) sample_one_in: u32,
    pub(super) rules: Vec<(AlertRule, Callback)>,
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
                clock: BucketClock::for_buckets(crate::headers::saturating_nanos(self.window), 100),
                chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
                layers: std::array::from_fn(|_| OnceLock::new()),
                layers_lock: Mutex::new(()),
                evicted: AtomicU64::new(0),
                alerts: Alerts::start(self.rules),
            }),
        }
    }
}
