//! Alert rules on a [`Monitor`](super::Monitor), and the thread that runs
//! their callbacks.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::FailureAction;
use crate::observe::words::CircuitState;
use crate::util::IgnorePoison;

/// Alerts waiting for their callbacks beyond this are dropped (and counted).
const QUEUE: usize = 1024;

/// When a [`Monitor`](super::Monitor) should call you. Add rules with
/// [`MonitorBuilder::alert`](super::MonitorBuilder::alert).
///
/// Each rule fires **once** when its condition starts to hold, and re-arms
/// when it stops holding (with hysteresis for rates), so a flapping key does
/// not page anyone twice a second.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Alert, AlertRule, Monitor};
///
/// let monitor = Monitor::builder()
///     // 20% of a key's requests limited over the window (1 min by default),
///     // once it has made at least 100; re-armed under 10%.
///     .alert(
///         AlertRule::limited_rate(0.2).min_requests(100).rearm_below(0.1),
///         |alert: &Alert| eprintln!("{alert}"),
///     )
///     .alert(AlertRule::breaker_opened(), |alert| eprintln!("{alert}"))
///     .alert(AlertRule::backend_fallback(), |alert| eprintln!("{alert}"))
///     .build();
/// # let _ = monitor;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    pub(crate) kind: RuleKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RuleKind {
    LimitedRate {
        threshold: f64,
        rearm_below: f64,
        min_requests: u64,
    },
    BreakerOpened,
    BackendFallback,
}

impl AlertRule {
    /// Fires when a key's limited rate over the monitor's
    /// [`window`](super::MonitorBuilder::window) (shadow-mode "would have
    /// limited" included) reaches `threshold` (a fraction: 0.2 is 20%),
    /// once the key has made [`min_requests`](Self::min_requests) in the
    /// window (default 20). Re-arms for that key when its rate falls under
    /// [`rearm_below`](Self::rearm_below) (default: half the threshold).
    ///
    /// Checked for a key each time one of its requests is decided.
    ///
    /// # Examples
    ///
    /// See [`MonitorBuilder::alert`](super::MonitorBuilder::alert) for one that fires.
    ///
    /// ```
    /// use tower_sluice::observe::{AlertRule, Monitor};
    ///
    /// // A key with a quarter of its requests refused over the window.
    /// let monitor = Monitor::builder()
    ///     .alert(AlertRule::limited_rate(0.25), |alert| eprintln!("{alert}"))
    ///     .build();
    /// # let _ = monitor;
    /// ```
    pub fn limited_rate(threshold: f64) -> Self {
        let threshold = if threshold.is_nan() {
            1.0
        } else {
            threshold.clamp(0.0, 1.0)
        };
        AlertRule {
            kind: RuleKind::LimitedRate {
                threshold,
                rearm_below: threshold / 2.0,
                min_requests: 20,
            },
        }
    }

    /// The least number of requests in the window before a rate rule may
    /// fire (ignored by other rules).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::AlertRule;
    ///
    /// // Ignore keys that made fewer than 100 requests in the window: 1 refused
    /// // of 2 is not news.
    /// let rule = AlertRule::limited_rate(0.2).min_requests(100);
    /// # let _ = rule;
    /// ```
    #[must_use]
    pub fn min_requests(mut self, n: u64) -> Self {
        if let RuleKind::LimitedRate { min_requests, .. } = &mut self.kind {
            *min_requests = n;
        }
        self
    }

    /// Re-arm a rate rule when the rate falls under `rate` (clamped to the
    /// threshold at most; ignored by other rules).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::AlertRule;
    ///
    /// // Fire at 20%; fire again for the same key only after it fell under 5%.
    /// let rule = AlertRule::limited_rate(0.2).rearm_below(0.05);
    /// # let _ = rule;
    /// ```
    #[must_use]
    pub fn rearm_below(mut self, rate: f64) -> Self {
        if let RuleKind::LimitedRate {
            threshold,
            rearm_below,
            ..
        } = &mut self.kind
        {
            *rearm_below = if rate.is_nan() {
                *threshold
            } else {
                rate.min(*threshold)
            };
        }
        self
    }

    /// Fires when a circuit breaker opens (or is forced open); re-arms for
    /// that breaker when it closes again, so a breaker going
    /// open → half-open → open alerts once.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use tower_sluice::observe::{AlertRule, Monitor};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// let fired = Arc::new(Mutex::new(Vec::new()));
    /// let log = fired.clone();
    /// let monitor = Monitor::builder()
    ///     .alert(AlertRule::breaker_opened(), move |alert| log.lock().unwrap().push(alert.to_string()))
    ///     .build();
    /// let breaker = CircuitBreakerLayer::default().observer(monitor.scoped("payments"));
    /// breaker.handle().force_open();
    /// monitor.flush_alerts(Duration::from_secs(5));
    /// assert_eq!(*fired.lock().unwrap(), ["payments: circuit breaker forced open (was Closed)"]);
    /// ```
    pub fn breaker_opened() -> Self {
        AlertRule {
            kind: RuleKind::BreakerOpened,
        }
    }

    /// Fires when a limiter backend (Redis) goes down or first decides by
    /// its fallback; re-arms when the backend comes back.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Alert, AlertRule, Monitor};
    ///
    /// // Page someone when Redis is down and limits are decided locally.
    /// let monitor = Monitor::builder()
    ///     .alert(AlertRule::backend_fallback(), |alert: &Alert| {
    ///         if let Alert::BackendFallback { backend, action, .. } = alert {
    ///             eprintln!("{backend} is failing; requests are {action:?}");
    ///         }
    ///     })
    ///     .build();
    /// # let _ = monitor;
    /// ```
    pub fn backend_fallback() -> Self {
        AlertRule {
            kind: RuleKind::BackendFallback,
        }
    }
}

/// What fired; handed to the rule's callback.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Alert, AlertRule, Monitor};
///
/// fn page(alert: &Alert) {
///     match alert {
///         Alert::LimitedRate { key, rate, .. } => {
///             eprintln!("{key} is refused {:.0}% of the time", rate * 100.0)
///         }
///         Alert::BreakerOpened { scope, .. } => eprintln!("{scope} is cut off"),
///         other => eprintln!("{other}"),
///     }
/// }
/// let monitor = Monitor::builder()
///     .alert(AlertRule::limited_rate(0.2), page)
///     .alert(AlertRule::breaker_opened(), page)
///     .build();
/// # let _ = monitor;
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Alert {
    /// A key's limited rate crossed a rule's threshold.
    #[non_exhaustive]
    LimitedRate {
        /// The layer or scope that limits it.
        scope: &'static str,
        /// The key's `Debug` text.
        key: String,
        /// Its limited rate over the window (0 to 1).
        rate: f64,
        /// Its requests over the window (estimated, rounded).
        requests: u64,
        /// The window.
        window: Duration,
    },
    /// A circuit breaker opened.
    #[non_exhaustive]
    BreakerOpened {
        /// The breaker's layer or scope name.
        scope: &'static str,
        /// The state it left.
        from: CircuitState,
        /// Forced open through its handle.
        forced: bool,
    },
    /// A limiter backend went down, or decided by its fallback.
    #[non_exhaustive]
    BackendFallback {
        /// The backend (`"redis"`) or scope name.
        backend: &'static str,
        /// What its failure policy does now.
        action: FailureAction,
    },
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Alert::LimitedRate {
                scope,
                key,
                rate,
                requests,
                window,
            } => write!(
                f,
                "{scope}: key {key} limited {:.1}% of {requests} requests over {window:?}",
                rate * 100.0
            ),
            Alert::BreakerOpened {
                scope,
                from,
                forced,
            } => write!(
                f,
                "{scope}: circuit breaker {} (was {from:?})",
                if *forced { "forced open" } else { "opened" }
            ),
            Alert::BackendFallback { backend, action } => {
                write!(f, "{backend}: backend failing, requests {action:?}")
            }
        }
    }
}

pub(crate) type Callback = Arc<dyn Fn(&Alert) + Send + Sync>;

/// The rules of a monitor and the queue to their thread.
pub(crate) struct Alerts {
    rules: Vec<AlertRule>,
    tx: SyncSender<(usize, Alert)>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    fired: AtomicU64,
    dropped: AtomicU64,
    panics: AtomicU64,
    /// Alerts handed to callbacks (or dropped), for `flush`.
    done: Mutex<u64>,
    done_cv: Condvar,
}

impl Alerts {
    /// Starts the alert thread; `None` without rules (or if the thread
    /// cannot be spawned, which is reported through `tracing`).
    pub(crate) fn start(rules: Vec<(AlertRule, Callback)>) -> Option<Self> {
        if rules.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::sync_channel::<(usize, Alert)>(QUEUE);
        let counts = Arc::new(Counts::default());
        let callbacks: Vec<Callback> = rules.iter().map(|r| r.1.clone()).collect();
        let thread_counts = counts.clone();
        let spawned = std::thread::Builder::new()
            .name("sluice-alerts".into())
            .spawn(move || {
                // Ends when the monitor (the only sender) is dropped.
                for (rule, alert) in rx {
                    let callback = &callbacks[rule];
                    if catch_unwind(AssertUnwindSafe(|| callback(&alert))).is_err() {
                        thread_counts.panics.fetch_add(1, Relaxed);
                        tracing::error!(
                            target: "tower_sluice::observe",
                            %alert,
                            "alert callback panicked"
                        );
                    }
                    thread_counts.finished(1);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(target: "tower_sluice::observe", error = %e, "cannot start the alert thread; alerts disabled");
            return None;
        }
        Some(Alerts {
            rules: rules.into_iter().map(|r| r.0).collect(),
            tx,
            counts,
        })
    }

    pub(crate) fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// Queues `alert` for rule `rule`'s callback; never blocks.
    pub(crate) fn fire(&self, rule: usize, alert: Alert) {
        tracing::warn!(target: "tower_sluice::observe", %alert, "alert");
        self.counts.fired.fetch_add(1, Relaxed);
        match self.tx.try_send((rule, alert)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counts.dropped.fetch_add(1, Relaxed);
                self.counts.finished(1);
            }
        }
    }

    /// (fired, dropped, panicked)
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let c = &self.counts;
        (
            c.fired.load(Relaxed),
            c.dropped.load(Relaxed),
            c.panics.load(Relaxed),
        )
    }

    pub(crate) fn flush(&self, timeout: Duration) -> bool {
        let target = self.counts.fired.load(Relaxed);
        let deadline = Instant::now() + timeout;
        let mut done = self.counts.done.lock().ignore_poison();
        while *done < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            done = self
                .counts
                .done_cv
                .wait_timeout(done, left)
                .ignore_poison()
                .0;
        }
        true
    }
}

impl Counts {
    fn finished(&self, n: u64) {
        let mut done = self.done.lock().ignore_poison();
        *done += n;
        self.done_cv.notify_all();
    }
}
