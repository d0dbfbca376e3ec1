//! `GradientLimit`: a gradient on latency against a probed no-load latency.

use super::*;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now_ms: u64, latency_ms: u64, in_flight: u32) -> Sample {
        Sample {
            started: Duration::from_millis(now_ms - latency_ms),
            now: Duration::from_millis(now_ms),
            latency: Duration::from_millis(latency_ms),
            in_flight,
            outcome: Outcome::Success,
        }
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
