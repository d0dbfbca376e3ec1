//! `AimdLimit`: additive increase, multiplicative decrease on latency.

use super::*;

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
        let drop = sample.outcome == Outcome::Overloaded || sample.latency > self.slow;
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
}
