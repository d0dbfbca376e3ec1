use std::fmt;
use std::sync::Arc;

use tower_layer::Layer;

use super::state::Breaker;
use super::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, CircuitBreakerHandle,
    ErrorsAreFailures,
};
use crate::observe::{Observer, Observers};

/// Wraps services in a [`CircuitBreaker`] shared by every service the layer
/// makes and all their clones.
///
/// See the [module docs](crate::circuit_breaker).
///
/// # Sharing
///
/// The layer owns one breaker: every service it wraps, every clone, and
/// every [`handle`](Self::handle) see the same state. Two layers made by two
/// calls to [`new`](Self::new) are independent.
pub struct CircuitBreakerLayer<C = ErrorsAreFailures> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker with a validated `config` and the default classifier
    /// (errors are failures).
    pub fn new(config: CircuitBreakerConfig) -> Self {
        CircuitBreakerLayer {
            breaker: Arc::new(Breaker::new(config, Observers::default())),
            classifier: ErrorsAreFailures,
        }
    }

    /// A builder starting from the defaults; its
    /// [`build`](CircuitBreakerBuilder::build) names any invalid field.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerConfig::builder()
    }
}

impl Default for CircuitBreakerLayer {
    /// The [default configuration](crate::circuit_breaker#defaults).
    fn default() -> Self {
        Self::new(CircuitBreakerConfig::default())
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Decides which outcomes count as failures with `classifier` (a
    /// [`Classify`](super::Classify) or a closure).
    #[must_use]
    pub fn classify<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// Reports state changes, refusals and call outcomes to `observer`.
    ///
    /// This makes a new breaker (same configuration, fresh state): call it
    /// before [`handle`](Self::handle) and before wrapping services.
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        CircuitBreakerLayer {
            breaker: Arc::new(Breaker::new(
                self.breaker.config().clone(),
                Observers::new(observer),
            )),
            classifier: self.classifier,
        }
    }

    /// A handle on the shared breaker: state, stats, force open or closed,
    /// reset.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle {
            breaker: self.breaker.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> CircuitBreaker<S, C> {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("config", self.breaker.config())
            .field("state", &self.breaker.state())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}
