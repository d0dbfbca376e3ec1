//! [`CircuitBreakerConfig`], its builder and [`ConfigError`].

use std::time::Duration;

use super::CircuitBreakerLayer;
use crate::error::ConfigError;

/// Which calls a breaker judges by.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::SlidingWindow;
///
/// // Judge the last 100 calls, however old.
/// let by_count = CircuitBreakerLayer::builder().window(SlidingWindow::Count(100)).build()?;
/// // Judge the calls of the last minute, in 6 buckets of 10 s.
/// let by_time = CircuitBreakerLayer::builder()
///     .window(SlidingWindow::Time { size: Duration::from_secs(60), buckets: 6 })
///     .build()?;
/// assert_eq!(by_count.handle().config().window(), SlidingWindow::Count(100));
/// # let _ = by_time;
/// # Ok::<(), tower_sluice::error::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` recorded calls.
    Count(u32),
    /// The calls of the last `size`, kept in `buckets` buckets of
    /// `size / buckets` each (constant memory, O(1) recording). A bucket is
    /// forgotten as a whole once it is `size` old.
    ///
    /// Buckets of at least 10 ticks of the kernel's coarse clock (40 ms
    /// with 4 ms ticks) are picked on that cheaper clock, so their
    /// boundaries move by up to one tick; see
    /// [Clocks](super#clocks).
    Time {
        /// The span of the window.
        size: Duration,
        /// How many buckets it is split into.
        buckets: u32,
    },
}

/// How the breaker decides to open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Trip {
    /// Failure and slow-call rates over a window.
    Rate,
    /// `n` failures in a row.
    Consecutive(u32),
}

/// Validated settings of a circuit breaker.
///
/// Made by [`CircuitBreakerConfig::builder`] (or
/// [`CircuitBreakerLayer::builder`]); [`Default`] gives the defaults listed
/// in the [module docs](super#defaults).
///
/// # Examples
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitBreakerConfig;
///
/// let config = CircuitBreakerConfig::builder().failure_rate_threshold(20.0).into_config()?;
/// assert_eq!(config.failure_rate_threshold(), 20.0);
/// assert_eq!(config.minimum_calls(), CircuitBreakerConfig::default().minimum_calls());
/// // One configuration, two independent breakers.
/// let (orders, payments) = (CircuitBreakerLayer::new(config.clone()), CircuitBreakerLayer::new(config));
/// # let _ = (orders, payments);
/// # Ok::<(), tower_sluice::error::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) minimum_calls: u32,
    pub(crate) window: SlidingWindow,
    pub(crate) trip: Trip,
    pub(crate) open_duration: Duration,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_jitter: f64,
    pub(crate) permitted_calls_in_half_open: u32,
    pub(crate) half_open_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration: None,
            minimum_calls: 20,
            window: SlidingWindow::Time {
                size: Duration::from_secs(30),
                buckets: 10,
            },
            trip: Trip::Rate,
            open_duration: Duration::from_secs(5),
            max_open_duration: Duration::from_secs(60),
            open_jitter: 0.1,
            permitted_calls_in_half_open: 3,
            half_open_timeout: Duration::from_secs(10),
        }
    }
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::circuit_breaker::CircuitBreakerConfig;
    ///
    /// let config = CircuitBreakerConfig::builder().minimum_calls(50).into_config()?;
    /// assert_eq!(config.minimum_calls(), 50);
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            config: CircuitBreakerConfig::default(),
        }
    }

    /// The failure rate, in percent, at or above which the breaker opens.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// The sliding window.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }

    /// Calls the window must hold before the breaker judges.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The first open duration.
    pub fn open_duration(&self) -> Duration {
        self.open_duration
    }

    /// Trial calls admitted at once in half-open.
    pub fn permitted_calls_in_half_open(&self) -> u32 {
        self.permitted_calls_in_half_open
    }

    /// The open duration after `reopened` failed rounds of trials in a row:
    /// `open_duration * 2^reopened`, capped at `max_open_duration`.
    pub(crate) fn open_for(&self, reopened: u32) -> Duration {
        let factor = 1u32.checked_shl(reopened.min(31)).unwrap_or(u32::MAX);
        self.open_duration
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.max_open_duration)
    }

    /// `minimum_calls`, bounded by a count window's size (a window of 10
    /// can never hold 20 calls).
    pub(crate) fn effective_minimum(&self) -> u32 {
        match self.window {
            SlidingWindow::Count(n) => self.minimum_calls.min(n),
            SlidingWindow::Time { .. } => self.minimum_calls,
        }
    }
}

/// Builds a [`CircuitBreakerConfig`] or a [`CircuitBreakerLayer`];
/// [`build`](Self::build) checks every field and names the bad one.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::SlidingWindow;
/// use tower_sluice::error::ConfigError;
///
/// let layer = CircuitBreakerLayer::builder()
///     .failure_rate_threshold(25.0)
///     .window(SlidingWindow::Count(50))
///     .minimum_calls(10)
///     .slow_call_duration(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// # let _ = layer;
///
/// let err = CircuitBreakerLayer::builder().failure_rate_threshold(0.0).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate_threshold");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerBuilder {
    /// Opens when this percentage of the window's calls failed, or more
    /// (in `(0, 100]`; default 50).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::{CircuitState, SlidingWindow};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .failure_rate_threshold(25.0)
    ///     .window(SlidingWindow::Count(4))
    ///     .minimum_calls(4)
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|fail: bool| async move {
    ///     if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
    /// }));
    /// for fail in [false, false, false, true] {
    ///     let _ = svc.clone().oneshot(fail).await;
    /// }
    /// // 1 failure in 4 calls: 25%.
    /// assert_eq!(handle.state(), CircuitState::Open);
    ///
    /// let err = CircuitBreakerLayer::builder().failure_rate_threshold(150.0).build().unwrap_err();
    /// assert_eq!(err.field(), "failure_rate_threshold");
    /// # Ok(())
    /// # }
    /// ```
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate_threshold = percent;
        self
    }

    /// Opens when this percentage of the window's calls were slow, or more
    /// (in `(0, 100]`; default 100). Only with
    /// [`slow_call_duration`](Self::slow_call_duration).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// // Open when half the calls take 2 s or more, even if they succeed.
    /// let layer = CircuitBreakerLayer::builder()
    ///     .slow_call_duration(Duration::from_secs(2))
    ///     .slow_call_rate_threshold(50.0)
    ///     .build()?;
    /// # let _ = layer;
    ///
    /// let err = CircuitBreakerLayer::builder().slow_call_rate_threshold(0.0).build().unwrap_err();
    /// assert_eq!(err.field(), "slow_call_rate_threshold");
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.config.slow_call_rate_threshold = percent;
        self
    }

    /// Calls that take at least this long are slow, and count against the
    /// breaker even when they succeed (default: slow calls not tracked).
    ///
    /// A duration of at least 100 ticks of the kernel's coarse clock
    /// (400 ms with 4 ms ticks) is timed on that cheaper clock, within one
    /// tick; a shorter one on the precise clock. See
    /// [Clocks](super#clocks).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .slow_call_duration(Duration::from_secs(2))
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|secs: u64| async move {
    ///     tokio::time::sleep(Duration::from_secs(secs)).await;
    ///     Ok::<_, BoxError>(())
    /// }));
    /// svc.clone().oneshot(1).await?;
    /// svc.clone().oneshot(3).await?;
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!((handle.stats().calls, handle.stats().slow_calls), (2, 1));
    /// # let _ = handle;
    ///
    /// let err = CircuitBreakerLayer::builder().slow_call_duration(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "slow_call_duration");
    /// # Ok(())
    /// # }
    /// ```
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration = Some(duration);
        self
    }

    /// Calls the window must hold before any judgement (at least 1;
    /// default 20). A count window smaller than this judges when full.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder().minimum_calls(3).build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// svc.clone().oneshot(()).await.unwrap_err();
    /// svc.clone().oneshot(()).await.unwrap_err();
    /// // 100% failures, but too few calls to judge.
    /// assert_eq!(handle.state(), CircuitState::Closed);
    /// svc.clone().oneshot(()).await.unwrap_err();
    /// assert_eq!(handle.state(), CircuitState::Open);
    ///
    /// let err = CircuitBreakerLayer::builder().minimum_calls(0).build().unwrap_err();
    /// assert_eq!(err.field(), "minimum_calls");
    /// # Ok(())
    /// # }
    /// ```
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// The sliding window (default: the last 30 s in 10 buckets).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::SlidingWindow;
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .window(SlidingWindow::Time { size: Duration::from_secs(10), buckets: 5 })
    ///     .build()?;
    /// # let _ = layer;
    ///
    /// let err = CircuitBreakerLayer::builder().window(SlidingWindow::Count(0)).build().unwrap_err();
    /// assert_eq!(err.field(), "window");
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.config.window = window;
        self
    }

    /// The classic breaker: open after `n` failures in a row, instead of
    /// judging rates over a window. In this mode slow calls (with
    /// [`slow_call_duration`](Self::slow_call_duration)) count as failures
    /// and a success resets the count.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder().consecutive_failures(2).build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|fail: bool| async move {
    ///     if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
    /// }));
    /// for fail in [true, false, true] {
    ///     let _ = svc.clone().oneshot(fail).await;
    /// }
    /// // The success in between reset the count.
    /// assert_eq!(handle.state(), CircuitState::Closed);
    /// svc.clone().oneshot(true).await.unwrap_err();
    /// assert_eq!(handle.state(), CircuitState::Open);
    ///
    /// let err = CircuitBreakerLayer::builder().consecutive_failures(0).build().unwrap_err();
    /// assert_eq!(err.field(), "consecutive_failures");
    /// # Ok(())
    /// # }
    /// ```
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.trip = Trip::Consecutive(n);
        self
    }

    /// How long the breaker stays open the first time (default 5 s). Each
    /// failed round of half-open trials doubles it, up to
    /// [`max_open_duration`](Self::max_open_duration); closing resets it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(1)
    ///     .open_duration(Duration::from_secs(2))
    ///     .open_jitter(0.0)
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// svc.oneshot(()).await.unwrap_err();
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// tokio::time::sleep(Duration::from_secs(2)).await;
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(handle.state(), CircuitState::HalfOpen);
    ///
    /// let err = CircuitBreakerLayer::builder().open_duration(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "open_duration");
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// The cap of the growing open duration (default 60 s; at least
    /// `open_duration`). Set it equal to `open_duration` for a fixed one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// // Always 10 s open, however often the trials fail.
    /// let fixed = CircuitBreakerLayer::builder()
    ///     .open_duration(Duration::from_secs(10))
    ///     .max_open_duration(Duration::from_secs(10))
    ///     .build()?;
    /// # let _ = fixed;
    ///
    /// // Below the (default 5 s) open duration:
    /// let err = CircuitBreakerLayer::builder()
    ///     .max_open_duration(Duration::from_secs(1))
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "max_open_duration");
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn max_open_duration(mut self, duration: Duration) -> Self {
        self.config.max_open_duration = duration;
        self
    }

    /// Shortens each open duration by a random part of up to this fraction
    /// (in `[0, 1)`; default 0.1, so 5 s becomes 4.5 to 5 s), so that many
    /// clients cut off by one outage do not all probe it at the same
    /// instant. Set 0 for exact durations (in tests, say).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(1)
    ///     .open_duration(Duration::from_secs(10))
    ///     .open_jitter(0.5)
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// svc.oneshot(()).await.unwrap_err();
    /// // Open for 5 to 10 s.
    /// let wait = handle.retry_after().unwrap();
    /// assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(10), "{wait:?}");
    ///
    /// let err = CircuitBreakerLayer::builder().open_jitter(1.0).build().unwrap_err();
    /// assert_eq!(err.field(), "open_jitter");
    /// # Ok(())
    /// # }
    /// ```
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.config.open_jitter = fraction;
        self
    }

    /// Trial calls let through at once in half-open (at least 1; default
    /// 3). Calls beyond them fail with [`CircuitOpen`](crate::CircuitOpen).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::circuit_breaker::CircuitState;
    /// use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(1)
    ///     .open_duration(Duration::from_secs(1))
    ///     .open_jitter(0.0)
    ///     .permitted_calls_in_half_open(1)
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|ms: u64| async move {
    ///     if ms == 0 {
    ///         return Err::<(), BoxError>("down".into());
    ///     }
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     Ok(())
    /// }));
    /// svc.clone().oneshot(0).await.unwrap_err();
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// // One trial at a time: the second call is refused.
    /// let (trial, extra) = tokio::join!(svc.clone().oneshot(100), svc.clone().oneshot(100));
    /// # #[cfg(feature = "test-util")]
    /// assert!(trial.is_ok() && extra.unwrap_err().is::<CircuitOpen>());
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(handle.state(), CircuitState::Closed);
    /// # let _ = handle;
    ///
    /// let err = CircuitBreakerLayer::builder().permitted_calls_in_half_open(0).build().unwrap_err();
    /// assert_eq!(err.field(), "permitted_calls_in_half_open");
    /// # Ok(())
    /// # }
    /// ```
    pub fn permitted_calls_in_half_open(mut self, n: u32) -> Self {
        self.config.permitted_calls_in_half_open = n;
        self
    }

    /// How long half-open waits for its trials (default 10 s). When it
    /// passes, the breaker judges the trials that completed, and opens
    /// again if none did, so trials that never complete cannot leave it
    /// stuck half-open.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(1)
    ///     .open_duration(Duration::from_secs(1))
    ///     .open_jitter(0.0)
    ///     .half_open_timeout(Duration::from_secs(5))
    ///     .build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// svc.oneshot(()).await.unwrap_err();
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(handle.state(), CircuitState::HalfOpen);
    /// // No trial completed within 5 s: open again.
    /// tokio::time::sleep(Duration::from_secs(5)).await;
    /// assert_eq!(handle.state(), CircuitState::Open);
    ///
    /// let err = CircuitBreakerLayer::builder().half_open_timeout(Duration::ZERO).build().unwrap_err();
    /// assert_eq!(err.field(), "half_open_timeout");
    /// # Ok(())
    /// # }
    /// ```
    pub fn half_open_timeout(mut self, duration: Duration) -> Self {
        self.config.half_open_timeout = duration;
        self
    }

    /// The validated configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`], naming the first invalid field.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::circuit_breaker::CircuitBreakerConfig;
    ///
    /// let config = CircuitBreakerConfig::builder().minimum_calls(10).into_config()?;
    /// assert_eq!(config.minimum_calls(), 10);
    ///
    /// let err = CircuitBreakerConfig::builder()
    ///     .failure_rate_threshold(0.0)
    ///     .minimum_calls(0)
    ///     .into_config()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "failure_rate_threshold"); // the first bad field
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn into_config(self) -> Result<CircuitBreakerConfig, ConfigError> {
        let c = self.config;
        let percent = |v: f64| v > 0.0 && v <= 100.0;
        if !percent(c.failure_rate_threshold) {
            return Err(invalid(
                "failure_rate_threshold",
                "must be a percentage in (0, 100]",
            ));
        }
        if !percent(c.slow_call_rate_threshold) {
            return Err(invalid(
                "slow_call_rate_threshold",
                "must be a percentage in (0, 100]",
            ));
        }
        if c.slow_call_duration == Some(Duration::ZERO) {
            return Err(invalid(
                "slow_call_duration",
                "must be above zero (every call would be slow)",
            ));
        }
        if c.minimum_calls == 0 {
            return Err(invalid("minimum_calls", "must be at least 1"));
        }
        match c.window {
            SlidingWindow::Count(0) => {
                return Err(invalid("window", "a count window needs at least 1 call"));
            }
            SlidingWindow::Time { size, buckets } => {
                if buckets == 0 {
                    return Err(invalid("window", "a time window needs at least 1 bucket"));
                }
                if size.as_nanos() < u128::from(buckets) {
                    return Err(invalid(
                        "window",
                        "a time window's size must be at least 1 ns per bucket",
                    ));
                }
            }
            SlidingWindow::Count(_) => {}
        }
        if c.trip == Trip::Consecutive(0) {
            return Err(invalid("consecutive_failures", "must be at least 1"));
        }
        if c.open_duration.is_zero() {
            return Err(invalid("open_duration", "must be above zero"));
        }
        if c.max_open_duration < c.open_duration {
            return Err(invalid(
                "max_open_duration",
                "must be at least open_duration",
            ));
        }
        if !(0.0..1.0).contains(&c.open_jitter) {
            return Err(invalid("open_jitter", "must be a fraction in [0, 1)"));
        }
        if c.permitted_calls_in_half_open == 0 {
            return Err(invalid(
                "permitted_calls_in_half_open",
                "must be at least 1",
            ));
        }
        if c.half_open_timeout.is_zero() {
            return Err(invalid("half_open_timeout", "must be above zero"));
        }
        Ok(c)
    }

    /// The layer.
    ///
    /// # Errors
    ///
    /// [`ConfigError`], naming the first invalid field.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder().permitted_calls_in_half_open(5).build()?;
    /// assert_eq!(layer.handle().config().permitted_calls_in_half_open(), 5);
    /// # Ok::<(), tower_sluice::error::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.into_config().map(CircuitBreakerLayer::new)
    }
}

/// A [`ConfigError`] of this layer.
pub(crate) fn invalid(field: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::new("circuit breaker", field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_duration_doubles_up_to_the_cap() {
        let c = CircuitBreakerConfig::default();
        let secs: Vec<u64> = (0..6).map(|n| c.open_for(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 60, 60]);
        assert_eq!(c.open_for(200), Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_field() {
        let b = CircuitBreakerConfig::builder;
        let field = |r: Result<CircuitBreakerConfig, ConfigError>| r.unwrap_err().field();
        assert_eq!(
            field(b().failure_rate_threshold(100.5).into_config()),
            "failure_rate_threshold"
        );
        assert_eq!(
            field(b().failure_rate_threshold(f64::NAN).into_config()),
            "failure_rate_threshold"
        );
        assert_eq!(
            field(b().slow_call_rate_threshold(0.0).into_config()),
            "slow_call_rate_threshold"
        );
        assert_eq!(
            field(b().window(SlidingWindow::Count(0)).into_config()),
            "window"
        );
        assert_eq!(
            field(
                b().window(SlidingWindow::Time {
                    size: Duration::from_secs(1),
                    buckets: 0
                })
                .into_config()
            ),
            "window"
        );
        assert_eq!(
            field(b().consecutive_failures(0).into_config()),
            "consecutive_failures"
        );
        assert_eq!(
            field(b().open_duration(Duration::ZERO).into_config()),
            "open_duration"
        );
        assert_eq!(
            field(b().max_open_duration(Duration::from_secs(1)).into_config()),
            "max_open_duration"
        );
        assert_eq!(field(b().open_jitter(1.0).into_config()), "open_jitter");
        assert_eq!(field(b().open_jitter(-0.1).into_config()), "open_jitter");
        assert_eq!(
            field(b().permitted_calls_in_half_open(0).into_config()),
            "permitted_calls_in_half_open"
        );
        assert_eq!(
            field(b().half_open_timeout(Duration::ZERO).into_config()),
            "half_open_timeout"
        );
        assert!(b().into_config().is_ok());
    }
}
