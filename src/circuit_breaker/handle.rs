//! [`CircuitBreakerHandle`]: read and steer a breaker from outside.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::state::{Breaker, Stats};
use super::{CircuitBreakerConfig, CircuitState};

/// Reads and steers the breaker shared by a layer and all its services.
///
/// Cheap to clone. Reading the state applies pending time-based transitions
/// (an open breaker whose open duration has passed reads as
/// [`HalfOpen`](CircuitState::HalfOpen) even with no traffic).
///
/// Other signals can drive the breaker through it: a failed health check
/// can [`force_open`](Self::force_open), a deploy can
/// [`reset`](Self::reset).
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Arc<Breaker>,
}

impl CircuitBreakerHandle {
    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.breaker.state()
    }

    /// The state and the sliding window's statistics.
    pub fn stats(&self) -> Stats {
        self.breaker.stats()
    }

    /// How long until an [`Open`](CircuitState::Open) breaker admits trial
    /// calls; `None` in any other state.
    pub fn retry_after(&self) -> Option<Duration> {
        self.breaker.retry_after()
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreakerConfig {
        self.breaker.config()
    }

    /// Opens the breaker until [`reset`](Self::reset) or
    /// [`force_closed`](Self::force_closed): every call fails with
    /// [`CircuitOpen`](crate::CircuitOpen) (whose `retry_after` is the
    /// configured open duration, as a hint).
    pub fn force_open(&self) {
        self.breaker.force(CircuitState::ForcedOpen);
    }

    /// Closes the breaker until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open): every call passes, outcomes are
    /// recorded in the window, and nothing trips it.
    pub fn force_closed(&self) {
        self.breaker.force(CircuitState::ForcedClosed);
    }

    /// Back to [`Closed`](CircuitState::Closed) with an empty window and
    /// the first open duration.
    pub fn reset(&self) {
        self.breaker.force(CircuitState::Closed);
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
