//! What an adaptive concurrency algorithm is: the `ConcurrencyAlgorithm` trait,
//! the `Sample` it learns from, and the bounds the built-in algorithms keep.

use super::*;

/// One completed request, as a [`ConcurrencyAlgorithm`] sees it. Made by
/// the layer; [`Sample::new`] makes one to unit-test an algorithm.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{ConcurrencyAlgorithm, Sample};
/// use tower_sluice::classify::Outcome;
///
/// /// Halves the limit on any overload, else keeps it.
/// struct HalveOnOverload(u32);
/// impl ConcurrencyAlgorithm for HalveOnOverload {
///     fn initial_limit(&self) -> u32 {
///         self.0
///     }
///     fn update(&mut self, sample: &Sample) -> u32 {
///         if sample.outcome == Outcome::Overloaded {
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
    pub outcome: Outcome,
}

impl Sample {
    /// A request sent at `started` and answered at `now` (both measured
    /// from the same origin, as the layer measures from its creation),
    /// with `in_flight` requests in flight when it was sent (itself
    /// included), that went as `outcome`. `latency` is `now - started`
    /// (zero if `now` is earlier).
    ///
    /// The layer makes samples itself; this is for unit-testing a
    /// [`ConcurrencyAlgorithm`] by feeding it a history.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::adaptive::{ConcurrencyAlgorithm, Sample};
    /// use tower_sluice::classify::Outcome;
    ///
    /// /// Halves the limit on any overload, else keeps it.
    /// struct HalveOnOverload(u32);
    /// impl ConcurrencyAlgorithm for HalveOnOverload {
    ///     fn initial_limit(&self) -> u32 {
    ///         self.0
    ///     }
    ///     fn update(&mut self, sample: &Sample) -> u32 {
    ///         if sample.outcome == Outcome::Overloaded {
    ///             self.0 = (self.0 / 2).max(1);
    ///         }
    ///         self.0
    ///     }
    /// }
    ///
    /// let ms = Duration::from_millis;
    /// let mut algorithm = HalveOnOverload(8);
    /// let ok = Sample::new(ms(0), ms(40), 3, Outcome::Success);
    /// assert_eq!(ok.latency, ms(40));
    /// assert_eq!(algorithm.update(&ok), 8);
    /// let overloaded = Sample::new(ms(10), ms(60), 4, Outcome::Overloaded);
    /// assert_eq!(algorithm.update(&overloaded), 4);
    /// ```
    pub fn new(started: Duration, now: Duration, in_flight: u32, outcome: Outcome) -> Self {
        Sample {
            started,
            now,
            latency: now.saturating_sub(started),
            in_flight,
            outcome,
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

/// The lowest, highest and initial limit of an algorithm, kept consistent:
/// `1 <= min <= initial <= max`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) min: u32,
    pub(super) max: u32,
    pub(super) initial: u32,
}

impl Bounds {
    pub(super) const DEFAULT: Bounds = Bounds {
        min: 1,
        max: 1000,
        initial: 20,
    };

    pub(super) fn set_min(&mut self, min: u32) {
        self.min = min.max(1);
        self.max = self.max.max(self.min);
    }

    pub(super) fn set_max(&mut self, max: u32) {
        self.max = max.max(self.min);
    }

    /// Sets `initial` within the bounds and returns it.
    pub(super) fn set_initial(&mut self, initial: u32) -> u32 {
        self.initial = initial.clamp(self.min, self.max);
        self.initial
    }
}
