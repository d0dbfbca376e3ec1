//! `ConfigError`: an invalid setting of a layer, found when it is built.

use std::fmt;

/// An invalid setting of a layer, found when it is built; the message
/// names the layer and the field (the builder method's name).
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
///
/// let err = CircuitBreakerLayer::builder().minimum_calls(0).build().unwrap_err();
/// assert_eq!(err.field(), "minimum_calls");
/// assert_eq!(err.to_string(), "invalid circuit breaker minimum_calls: must be at least 1");
///
/// use std::time::Duration;
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::Backoff;
///
/// let err = BackoffRetryLayer::try_new(Backoff::exponential(Duration::ZERO)).unwrap_err();
/// assert_eq!(err.field(), "base");
/// assert_eq!(err.to_string(), "invalid retry base: must be above zero");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    pub(crate) fn new(layer: &'static str, field: &'static str, reason: &'static str) -> Self {
        ConfigError {
            layer,
            field,
            reason,
        }
    }

    /// The name of the invalid setting (the builder method's name).
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {} {}: {}", self.layer, self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
