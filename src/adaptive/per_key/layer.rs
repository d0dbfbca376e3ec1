//! The layer of `adaptive::per_key`: configuration and `Layer`.

use super::*;

/// Teaches an [`AdaptivePolicy`] each response's success and latency, per
/// key. Made by [`AdaptivePolicy::feedback_layer`].
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder};
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::AdaptivePolicy;
///
/// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
/// let key = |req: &String| Some(req.clone());
/// let svc = ServiceBuilder::new()
///     .layer(policy.per_key_layer(key))
///     .layer(policy.feedback_layer(key)) // inside the limit: sees admitted requests only
///     .service(service_fn(|_: String| async { Ok::<_, BoxError>(()) }));
/// # let _ = svc;
/// ```
pub struct KeyFeedbackLayer<K, X, C = DefaultFeedback> {
    pub(super) policy: AdaptivePolicy,
    pub(super) extractor: X,
    pub(super) classify: C,
    pub(super) _key: PhantomData<fn() -> K>,
}

impl<K, X, C> KeyFeedbackLayer<K, X, C> {
    /// Reads responses with `classify`, any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// results (`Result<Response, BoxError>`): [`Outcome::Success`] counts as a
    /// success, [`Failure`](Outcome::Failure) and
    /// [`Overloaded`](Outcome::Overloaded) as failures,
    /// [`Ignore`](Outcome::Ignore) not at all. For HTTP servers, a closure
    /// on the status, such as 5xx as failures.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{BoxError, Quota};
    /// use tower_sluice::adaptive::AdaptivePolicy;
    /// use tower_sluice::classify::Outcome;
    ///
    /// // Responses are status codes; 5xx count against the key, 4xx not at all.
    /// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    /// let learn = policy
    ///     .feedback_layer(|req: &(String, u16)| Some(req.0.clone()))
    ///     .classify(|r: &Result<u16, BoxError>| match r {
    ///         Ok(500..) | Err(_) => Outcome::Failure,
    ///         Ok(400..) => Outcome::Ignore,
    ///         Ok(_) => Outcome::Success,
    ///     });
    /// # let _ = learn;
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> KeyFeedbackLayer<K, X, C2> {
        KeyFeedbackLayer {
            policy: self.policy,
            extractor: self.extractor,
            classify,
            _key: PhantomData,
        }
    }
}

impl<K, X: Clone, C: Clone> Clone for KeyFeedbackLayer<K, X, C> {
    fn clone(&self) -> Self {
        KeyFeedbackLayer {
            policy: self.policy.clone(),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
            _key: PhantomData,
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
            _key: PhantomData,
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
