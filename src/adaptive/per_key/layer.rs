//! The layer of `adaptive::per_key`: configuration and `Layer`.

use super::*;

/// Teaches an [`AdaptivePolicy`] each response's success and latency, per
/// key. Made by [`AdaptivePolicy::feedback_layer`].
pub struct KeyFeedbackLayer<K, X, C = DefaultFeedback> {
    pub(super) policy: AdaptivePolicy<K>,
    pub(super) extractor: X,
    pub(super) classify: C,
}

impl<K, X, C> KeyFeedbackLayer<K, X, C> {
    /// Reads responses with `classify`: [`Signal::Success`] counts as a
    /// success, [`Failure`](Signal::Failure) and
    /// [`Overloaded`](Signal::Overloaded) as failures,
    /// [`Ignore`](Signal::Ignore) not at all. For HTTP servers, a closure
    /// on the status, such as 5xx as failures.
    pub fn classify<C2>(self, classify: C2) -> KeyFeedbackLayer<K, X, C2> {
        KeyFeedbackLayer {
            policy: self.policy,
            extractor: self.extractor,
            classify,
        }
    }
}

impl<K, X: Clone, C: Clone> Clone for KeyFeedbackLayer<K, X, C> {
    fn clone(&self) -> Self {
        KeyFeedbackLayer {
            policy: self.policy.clone(),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, K, X: Clone, C: Clone> Layer<S> for KeyFeedbackLayer<K, X, C> {
    type Service = KeyFeedback<S, K, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyFeedback {
            inner,
            policy: self.policy.clone(),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<K, X, C> fmt::Debug for KeyFeedbackLayer<K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFeedbackLayer")
            .field("policy", &self.policy)
            .field("extractor", &std::any::type_name::<X>())
            .finish_non_exhaustive()
    }
}
