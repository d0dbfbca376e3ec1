//! [`AdaptiveConcurrencyLayer`]: a limit on requests in flight that follows
//! latency, with the algorithms [`AimdLimit`] and [`GradientLimit`].

mod layer;
mod service;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::classify::{ClassifyFeedback, DefaultFeedback, Signal};
use super::future::{ResponseFuture, Track};
use crate::BoxError;
use crate::clock::Clock;
use crate::error::ConcurrencyLimited;
use crate::observe::{Event, Observer, Observers};
use crate::slot::Slot as Shared;
use crate::util::IgnorePoison;
use crate::util::rng::SharedRng;

const LAYER: &str = "adaptive_concurrency";

pub use layer::*;
pub use service::*;

/// What a service does at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Reject,
    Wait,
    Shadow,
}

/// One completed request, as a [`ConcurrencyAlgorithm`] sees it. Made by
/// the layer; [`Sample::new`] makes one to unit-test an algorithm.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{ConcurrencyAlgorithm, Sample, Signal};
///
/// /// Halves the limit on any overload, else keeps it.
/// struct HalveOnOverload(u32);
/// impl ConcurrencyAlgorithm for HalveOnOverload {
///     fn initial_limit(&self) -> u32 {
///         self.0
///     }
///     fn update(&mut self, sample: &Sample) -> u32 {
///         if sample.signal == Signal::Overloaded {
///             self.0 = (self.0 / 2).max(1);
///         }
///         self.0
///     }
/// }
/// # let _ = HalveOnOverload(8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// When the request was sent, since the layer was created.
    pub started: Duration,
    /// When its response arrived, since the layer was created.
    pub now: Duration,
    /// `now - started`.
    pub latency: Duration,
    /// Requests in flight when it was sent, itself included.
    pub in_flight: u32,
    /// How it went.
    pub signal: Signal,
}

impl Sample {
    /// A request sent at `started` and answered at `now` (both measured
    /// from the same origin, as the layer measures from its creation),
    /// with `in_flight` requests in flight when it was sent (itself
    /// included), that went as `signal`. `latency` is `now - started`
    /// (zero if `now` is earlier).
    ///
    /// The layer makes samples itself; this is for unit-testing a
    /// [`ConcurrencyAlgorithm`] by feeding it a history.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::adaptive::{ConcurrencyAlgorithm, Sample, Signal};
    ///
    /// /// Halves the limit on any overload, else keeps it.
    /// struct HalveOnOverload(u32);
    /// impl ConcurrencyAlgorithm for HalveOnOverload {
    ///     fn initial_limit(&self) -> u32 {
    ///         self.0
    ///     }
    ///     fn update(&mut self, sample: &Sample) -> u32 {
    ///         if sample.signal == Signal::Overloaded {
    ///             self.0 = (self.0 / 2).max(1);
    ///         }
    ///         self.0
    ///     }
    /// }
    ///
    /// let ms = Duration::from_millis;
    /// let mut algorithm = HalveOnOverload(8);
    /// let ok = Sample::new(ms(0), ms(40), 3, Signal::Success);
    /// assert_eq!(ok.latency, ms(40));
    /// assert_eq!(algorithm.update(&ok), 8);
    /// let overloaded = Sample::new(ms(10), ms(60), 4, Signal::Overloaded);
    /// assert_eq!(algorithm.update(&overloaded), 4);
    /// ```
    pub fn new(started: Duration, now: Duration, in_flight: u32, signal: Signal) -> Self {
        Sample {
            started,
            now,
            latency: now.saturating_sub(started),
            in_flight,
            signal,
        }
    }
}

/// Computes a limit on requests in flight from completed requests.
///
/// Implemented by [`AimdLimit`] and [`GradientLimit`]; implement it for
/// another algorithm. Called under a lock, once per completed request.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, ConcurrencyAlgorithm, Sample};
///
/// /// A fixed limit that drops to 1 while responses are slower than 1 s.
/// struct Guarded { limit: u32 }
/// impl ConcurrencyAlgorithm for Guarded {
///     fn initial_limit(&self) -> u32 {
///         self.limit
///     }
///     fn update(&mut self, sample: &Sample) -> u32 {
///         if sample.latency > Duration::from_secs(1) { 1 } else { self.limit }
///     }
/// }
///
/// let layer = AdaptiveConcurrencyLayer::new(Guarded { limit: 32 });
/// assert_eq!(layer.handle().limit(), 32);
/// ```
pub trait ConcurrencyAlgorithm: Send + 'static {
    /// The limit to start with.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_sluice::adaptive::{AimdLimit, ConcurrencyAlgorithm};
    ///
    /// assert_eq!(AimdLimit::new(Duration::from_millis(100)).initial(8).initial_limit(), 8);
    /// ```
    fn initial_limit(&self) -> u32;

    /// The new limit after `sample` (the layer keeps it at least 1).
    ///
    /// See the [`Sample`] example: the layer calls `update` once per completed
    /// request and applies the limit it returns.
    fn update(&mut self, sample: &Sample) -> u32;
}

/// Additive increase, multiplicative decrease on latency: the limit grows
/// by about one per round trip while at least half of it is used, and is
/// cut (×0.9 by default) when a response is slower than
/// [`slow`](Self::slow) or reports an overload. Responses to requests sent
/// before a cut do not cut again.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
///
/// let layer = AdaptiveConcurrencyLayer::new(
///     AimdLimit::new(Duration::from_millis(250)).min(4).initial(20).max(500),
/// );
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct AimdLimit {
    bounds: Bounds,
    backoff: f64,
    slow: Duration,
    limit: f64,
    last_cut: Option<Duration>,
}

impl AimdLimit {
    /// Cuts when a response takes longer than `slow`. Limits: min 1,
    /// initial 20, max 1000.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_sluice::adaptive::{AimdLimit, ConcurrencyAlgorithm};
    ///
    /// // Responses over 300 ms mean the service is past its knee.
    /// let limit = AimdLimit::new(Duration::from_millis(300));
    /// assert_eq!(limit.initial_limit(), 20);
    /// ```
    pub fn new(slow: Duration) -> Self {
        AimdLimit {
            bounds: Bounds::DEFAULT,
            backoff: 0.9,
            slow,
            limit: 20.0,
            last_cut: None,
        }
    }

    /// The lowest limit (default 1, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::AimdLimit;
    /// let limit = AimdLimit::new(Duration::from_millis(300)).min(4);
    /// # let _ = limit;
    /// ```
    pub fn min(mut self, min: u32) -> Self {
        self.bounds.set_min(min);
        let initial = self.bounds.initial;
        self.initial(initial)
    }

    /// The highest limit (default 1000, at least `min`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{AimdLimit, ConcurrencyAlgorithm};
    /// // `initial` is kept within min and max.
    /// let limit = AimdLimit::new(Duration::from_millis(300)).max(10);
    /// assert_eq!(limit.initial_limit(), 10);
    /// ```
    pub fn max(mut self, max: u32) -> Self {
        self.bounds.set_max(max);
        let initial = self.bounds.initial;
        self.initial(initial)
    }

    /// The limit to start with (default 20, within min and max).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{AimdLimit, ConcurrencyAlgorithm};
    /// assert_eq!(AimdLimit::new(Duration::from_millis(300)).initial(50).initial_limit(), 50);
    /// ```
    pub fn initial(mut self, initial: u32) -> Self {
        self.limit = f64::from(self.bounds.set_initial(initial));
        self
    }

    /// The factor of a cut (default 0.9), clamped to `0.1..=0.99`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::AimdLimit;
    /// // Halve the limit on a slow response instead of taking 10% off.
    /// let limit = AimdLimit::new(Duration::from_millis(300)).backoff(0.5);
    /// # let _ = limit;
    /// ```
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = if factor.is_nan() {
            0.9
        } else {
            factor.clamp(0.1, 0.99)
        };
        self
    }

    /// The latency above which a response counts as a drop.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::AimdLimit;
    /// let limit = AimdLimit::new(Duration::from_millis(300)).slow(Duration::from_millis(150));
    /// # let _ = limit;
    /// ```
    pub fn slow(mut self, slow: Duration) -> Self {
        self.slow = slow;
        self
    }
}

impl ConcurrencyAlgorithm for AimdLimit {
    fn initial_limit(&self) -> u32 {
        self.bounds.initial
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        let drop = sample.signal == Signal::Overloaded || sample.latency > self.slow;
        if drop {
            if self.last_cut.is_none_or(|at| sample.started >= at) {
                self.limit = (self.limit * self.backoff).max(f64::from(self.bounds.min));
                self.last_cut = Some(sample.now);
            }
        } else if f64::from(sample.in_flight) * 2.0 >= self.limit {
            self.limit = (self.limit + 1.0 / self.limit).min(f64::from(self.bounds.max));
        }
        self.limit as u32
    }
}

/// A gradient on latency, in the manner of Envoy's adaptive concurrency
/// filter (itself after Netflix's Gradient2), without Gradient2's upward
/// drift.
///
/// The no-load latency (`min_rtt`) is measured by a *probe*: the limit
/// drops to [`probe_limit`](Self::probe_limit) until
/// [`probe_samples`](Self::probe_samples) responses have arrived, and the
/// fastest is kept. Probes run at start and then every
/// [`probe_interval`](Self::probe_interval), jittered by ±15% so that many
/// instances do not probe at once. Between probes, every
/// [`window`](Self::window) the mean latency of the window's responses
/// gives
///
/// ```text
/// gradient  = clamp(min_rtt × (1 + buffer) / mean_latency, 0.5, 2)
/// new limit = gradient × limit + 1
/// ```
///
/// (growing only while at least half the limit was used). Gradient2
/// compares with a long-term average of latency, which itself rises under
/// sustained overload, so its limit drifts upward; here the reference only
/// comes from probes at low concurrency (or a faster response), so it
/// cannot drift with load. With a service whose latency grows past a
/// concurrency knee `K`, the limit settles near `(1 + buffer) × K + 1`.
#[derive(Debug)]
#[must_use]
pub struct GradientLimit {
    bounds: Bounds,
    buffer: f64,
    window: Duration,
    probe_interval: Duration,
    probe_limit: u32,
    probe_samples: u32,
    jitter: f64,
    rng: SharedRng,
    limit: f64,
    min_rtt: Option<Duration>,
    sum: Duration,
    count: u32,
    max_in_flight: u32,
    window_start: Option<Duration>,
    probe: Option<Probe>,
    next_probe: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    seen: u32,
    fastest: Option<Duration>,
    resume: f64,
}

impl Default for GradientLimit {
    fn default() -> Self {
        GradientLimit::new()
    }
}

impl GradientLimit {
    /// Limits min 1, initial 20, max 1000; buffer 10%; window 100 ms;
    /// probes every 60 s (±15%) at a limit of 3 for 25 responses.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    ///
    /// let layer = AdaptiveConcurrencyLayer::new(GradientLimit::new());
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        GradientLimit {
            bounds: Bounds::DEFAULT,
            buffer: 0.1,
            window: Duration::from_millis(100),
            probe_interval: Duration::from_secs(60),
            probe_limit: 3,
            probe_samples: 25,
            jitter: 0.15,
            rng: SharedRng::from_entropy(),
            limit: 20.0,
            min_rtt: None,
            sum: Duration::ZERO,
            count: 0,
            max_in_flight: 0,
            window_start: None,
            probe: Some(Probe {
                seen: 0,
                fastest: None,
                resume: 20.0,
            }),
            next_probe: Duration::ZERO,
        }
    }

    /// The lowest limit (default 1, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().min(2).max(200);
    /// # let _ = limit;
    /// ```
    pub fn min(mut self, min: u32) -> Self {
        self.bounds.set_min(min);
        let initial = self.bounds.initial;
        self.initial(initial)
    }

    /// The highest limit (default 1000, at least `min`).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{ConcurrencyAlgorithm, GradientLimit};
    /// let limit = GradientLimit::new().max(10);
    /// assert!(limit.initial_limit() <= 10);
    /// ```
    pub fn max(mut self, max: u32) -> Self {
        self.bounds.set_max(max);
        let initial = self.bounds.initial;
        self.initial(initial)
    }

    /// The limit to return to after the first probe (default 20, within
    /// min and max).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().initial(64);
    /// # let _ = limit;
    /// ```
    pub fn initial(mut self, initial: u32) -> Self {
        self.limit = f64::from(self.bounds.set_initial(initial));
        if let Some(p) = &mut self.probe {
            p.resume = self.limit;
        }
        self
    }

    /// How much slower than `min_rtt` the mean may be before the limit
    /// shrinks, as a fraction (default 0.1), clamped to `0..=2`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// // Tolerate a mean latency up to 50% above the no-load latency.
    /// let limit = GradientLimit::new().buffer(0.5);
    /// # let _ = limit;
    /// ```
    pub fn buffer(mut self, buffer: f64) -> Self {
        self.buffer = if buffer.is_nan() {
            0.1
        } else {
            buffer.clamp(0.0, 2.0)
        };
        self
    }

    /// How often the limit is recomputed (default 100 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().window(Duration::from_millis(500));
    /// # let _ = limit;
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How often `min_rtt` is measured again (default 60 s, ±15%;
    /// `Duration::MAX` measures it once, at start).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::GradientLimit;
    /// // Re-measure the no-load latency every 5 minutes.
    /// let limit = GradientLimit::new()
    ///     .probe_interval(Duration::from_secs(300))
    ///     .probe_limit(2)
    ///     .probe_samples(50);
    /// # let _ = limit;
    /// ```
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// The limit while probing (default 3, within min and max).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().probe_limit(1);
    /// # let _ = limit;
    /// ```
    pub fn probe_limit(mut self, limit: u32) -> Self {
        self.probe_limit = limit.max(1);
        self
    }

    /// Responses a probe waits for (default 25, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().probe_samples(100);
    /// # let _ = limit;
    /// ```
    pub fn probe_samples(mut self, n: u32) -> Self {
        self.probe_samples = n.max(1);
        self
    }

    /// Seeds the probe jitter, for reproducible tests.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// let limit = GradientLimit::new().seed(42);
    /// # let _ = limit;
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = SharedRng::new(seed);
        self
    }

    /// The no-load latency measured by the last probe (or a faster
    /// response since).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::GradientLimit;
    /// assert_eq!(GradientLimit::new().min_rtt(), None); // nothing measured yet
    /// ```
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    fn clamp(&self, limit: f64) -> f64 {
        limit.clamp(f64::from(self.bounds.min), f64::from(self.bounds.max))
    }

    fn probe_limit_now(&self) -> u32 {
        self.probe_limit.clamp(self.bounds.min, self.bounds.max)
    }
}

impl ConcurrencyAlgorithm for GradientLimit {
    fn initial_limit(&self) -> u32 {
        if self.probe.is_some() {
            self.probe_limit_now()
        } else {
            self.bounds.initial
        }
    }

    fn update(&mut self, s: &Sample) -> u32 {
        if let Some(p) = &mut self.probe {
            p.seen += 1;
            p.fastest = Some(p.fastest.map_or(s.latency, |f| f.min(s.latency)));
            if p.seen < self.probe_samples {
                return self.probe_limit_now();
            }
            let (fastest, resume) = (p.fastest, p.resume);
            self.min_rtt = fastest;
            self.limit = self.clamp(resume);
            self.probe = None;
            let jitter = 1.0 + self.jitter * (2.0 * self.rng.next_f64() - 1.0);
            let wait = Duration::try_from_secs_f64(self.probe_interval.as_secs_f64() * jitter)
                .unwrap_or(Duration::MAX);
            self.next_probe = s.now.saturating_add(wait);
            self.window_start = None;
            return self.limit as u32;
        }
        if s.now >= self.next_probe {
            self.probe = Some(Probe {
                seen: 0,
                fastest: None,
                resume: self.limit,
            });
            return self.probe_limit_now();
        }
        let min_rtt = match self.min_rtt {
            Some(m) if m <= s.latency => m,
            _ => {
                self.min_rtt = Some(s.latency);
                s.latency
            }
        };
        let start = *self.window_start.get_or_insert(s.now);
        self.sum += s.latency;
        self.count += 1;
        self.max_in_flight = self.max_in_flight.max(s.in_flight);
        if s.now.saturating_sub(start) < self.window {
            return self.limit as u32;
        }
        let mean = self.sum.as_secs_f64() / f64::from(self.count);
        let mut gradient = if mean > 0.0 {
            (min_rtt.as_secs_f64() * (1.0 + self.buffer) / mean).clamp(0.5, 2.0)
        } else {
            2.0
        };
        let used = f64::from(self.max_in_flight) * 2.0 >= self.limit;
        if !used {
            gradient = gradient.min(1.0);
        }
        let headroom = if used { 1.0 } else { 0.0 };
        self.limit = self.clamp(gradient * self.limit + headroom);
        self.sum = Duration::ZERO;
        self.count = 0;
        self.max_in_flight = 0;
        self.window_start = Some(s.now);
        self.limit as u32
    }
}

struct Core {
    clock: Clock,
    limit: AtomicU32,
    in_flight: AtomicU32,
    /// Shared with the cores a setter makes from this one (the algorithm
    /// is not `Clone`).
    algorithm: Arc<Mutex<Box<dyn ConcurrencyAlgorithm>>>,
    observers: Observers,
    /// Services waiting for a slot (`wait` mode), by id.
    waiters: Mutex<Waiters>,
    has_waiters: AtomicBool,
}

#[derive(Default)]
struct Waiters {
    next_id: u64,
    list: Vec<(u64, Waker)>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("limit", &self.limit.load(Ordering::Relaxed))
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core with the same algorithm, limit and observer, and nothing in
    /// flight, for a setter to edit.
    fn fresh(&self) -> Core {
        Core {
            clock: self.clock.clone(),
            limit: AtomicU32::new(self.limit.load(Ordering::Acquire)),
            in_flight: AtomicU32::new(0),
            algorithm: self.algorithm.clone(),
            observers: self.observers.clone(),
            waiters: Mutex::new(Waiters::default()),
            has_waiters: AtomicBool::new(false),
        }
    }

    fn try_acquire(self: &Arc<Self>) -> Result<Slot, u32> {
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            let limit = self.limit.load(Ordering::Relaxed);
            if current >= limit {
                return Err(limit);
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Ok(Slot {
                        core: self.clone(),
                        in_flight: current + 1,
                    });
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// A slot past the limit (shadow mode).
    fn force_acquire(self: &Arc<Self>) -> Slot {
        Slot {
            core: self.clone(),
            in_flight: self.in_flight.fetch_add(1, Ordering::AcqRel) + 1,
        }
    }

    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().ignore_poison()
    }

    /// Registers (or refreshes) a waiting service's waker; returns its id.
    fn register(&self, id: Option<u64>, waker: &Waker) -> u64 {
        let mut w = self.waiters();
        if let Some(id) = id
            && let Some((_, old)) = w.list.iter_mut().find(|(i, _)| *i == id)
        {
            old.clone_from(waker);
            return id;
        }
        w.next_id += 1;
        let id = w.next_id;
        w.list.push((id, waker.clone()));
        self.has_waiters.store(true, Ordering::Release);
        id
    }

    fn unregister(&self, id: u64) {
        let mut w = self.waiters();
        w.list.retain(|(i, _)| *i != id);
        self.has_waiters
            .store(!w.list.is_empty(), Ordering::Release);
    }

    /// Wakes up to `n` waiting services (they take a slot or wait again).
    fn wake(&self, n: usize) {
        if !self.has_waiters.load(Ordering::Acquire) {
            return;
        }
        let mut w = self.waiters();
        let n = n.min(w.list.len());
        for (_, waker) in w.list.drain(..n) {
            waker.wake();
        }
        self.has_waiters
            .store(!w.list.is_empty(), Ordering::Release);
    }

    fn release(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wake(1);
    }

    fn sample(&self, started: u64, in_flight: u32, signal: Signal) {
        let now = self.clock.now();
        let sample = Sample::new(
            Duration::from_nanos(started),
            Duration::from_nanos(now),
            in_flight,
            signal,
        );
        let new = {
            let mut algorithm = self.algorithm.lock().ignore_poison();
            algorithm.update(&sample).max(1)
        };
        let old = self.limit.swap(new, Ordering::AcqRel);
        if old != new {
            if new > old {
                self.wake((new - old) as usize);
            }
            tracing::trace!(target: "tower_sluice::adaptive", old, new, "concurrency limit changed");
            self.observers.emit(&Event::ConcurrencyLimitChanged {
                layer: LAYER,
                old,
                new,
            });
        }
    }
}

/// A slot of the limit, given back when dropped.
struct Slot {
    core: Arc<Core>,
    in_flight: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.core.release();
    }
}

/// A waiting service's registration, removed when dropped.
struct Waiting {
    core: Arc<Core>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.core.unregister(self.id);
    }
}

/// Reads an [`AdaptiveConcurrencyLayer`]'s limit. Cheap to clone.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(10));
/// let handle = layer.handle();
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let pending = svc.ready().await?.call(1);
/// assert_eq!((handle.limit(), handle.in_flight()), (10, 1));
/// pending.await?;
/// assert_eq!(handle.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ConcurrencyHandle {
    core: Shared<Core>,
}

impl ConcurrencyHandle {
    /// The current limit on requests in flight.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, AimdLimit};
    /// let layer = AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(16));
    /// assert_eq!(layer.handle().limit(), 16);
    /// ```
    pub fn limit(&self) -> u32 {
        self.core.load().limit.load(Ordering::Acquire)
    }

    /// Requests in flight now (and slots held by readied services).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{AdaptiveConcurrencyLayer, GradientLimit};
    /// assert_eq!(AdaptiveConcurrencyLayer::new(GradientLimit::new()).handle().in_flight(), 0);
    /// ```
    pub fn in_flight(&self) -> u32 {
        self.core.load().in_flight.load(Ordering::Acquire)
    }
}

impl fmt::Debug for ConcurrencyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyHandle")
            .field("core", &self.core)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now_ms: u64, latency_ms: u64, in_flight: u32) -> Sample {
        Sample {
            started: Duration::from_millis(now_ms - latency_ms),
            now: Duration::from_millis(now_ms),
            latency: Duration::from_millis(latency_ms),
            in_flight,
            signal: Signal::Success,
        }
    }

    #[test]
    fn aimd_grows_when_used_and_cuts_once_per_episode() {
        let mut a = AimdLimit::new(Duration::from_millis(100)).initial(10);
        // 10 fast responses at full use: +1/limit each, about +1.
        for i in 0..10 {
            a.update(&sample(10 + i, 10, 10));
        }
        assert_eq!(a.update(&sample(30, 10, 10)), 11);
        // Unused: no growth.
        let before = a.limit;
        a.update(&sample(31, 10, 1));
        assert_eq!(a.limit, before);
        // A slow response cuts; another sent before the cut does not.
        assert_eq!(a.update(&sample(200, 150, 10)), 9);
        assert_eq!(a.update(&sample(201, 150, 10)), 9);
        // One sent after the cut does.
        assert_eq!(a.update(&sample(400, 150, 10)), 8);
    }

    #[test]
    fn a_probe_interval_of_max_does_not_overflow() {
        let mut g = GradientLimit::new()
            .probe_samples(1)
            .probe_interval(Duration::MAX)
            .seed(2);
        assert_eq!(g.update(&sample(10, 10, 1)), 20);
        assert_eq!(g.update(&sample(1_000_000, 10, 1)), 20);
    }

    #[test]
    fn gradient_probes_then_follows_latency() {
        let mut g = GradientLimit::new().initial(10).probe_samples(2).seed(1);
        assert_eq!(g.initial_limit(), 3);
        assert_eq!(g.update(&sample(10, 10, 3)), 3);
        assert_eq!(g.update(&sample(12, 10, 3)), 10);
        assert_eq!(g.min_rtt(), Some(Duration::from_millis(10)));
        // Latency twice min_rtt over a window: gradient 1.1 / 2 = 0.55.
        g.update(&sample(20, 20, 10));
        let l = g.update(&sample(130, 20, 10));
        assert_eq!(l, (0.55f64 * 10.0 + 1.0) as u32);
    }
}

/// The lowest, highest and initial limit of an algorithm, kept consistent:
/// `1 <= min <= initial <= max`.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    initial: u32,
}

impl Bounds {
    const DEFAULT: Bounds = Bounds {
        min: 1,
        max: 1000,
        initial: 20,
    };

    fn set_min(&mut self, min: u32) {
        self.min = min.max(1);
        self.max = self.max.max(self.min);
    }

    fn set_max(&mut self, max: u32) {
        self.max = max.max(self.min);
    }

    /// Sets `initial` within the bounds and returns it.
    fn set_initial(&mut self, initial: u32) -> u32 {
        self.initial = initial.clamp(self.min, self.max);
        self.initial
    }
}
