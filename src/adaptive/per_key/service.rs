//! The service of `adaptive::per_key` and what its requests record.

use super::*;

/// Records each response in an [`AdaptivePolicy`]. Made by
/// [`KeyFeedbackLayer`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::{AdaptivePolicy, KeyFeedback};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
/// let svc = policy
///     .feedback_layer(|user: &&str| Some(user.to_string()))
///     .layer(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
/// let _typed: &KeyFeedback<_, _, _, _> = &svc;
/// svc.oneshot("ann").await?;
/// assert_eq!(policy.stats(&"ann".to_string()).unwrap().samples, 1);
/// # let _ = Duration::ZERO;
/// # Ok(())
/// # }
/// ```
pub struct KeyFeedback<S, K, X, C> {
    pub(super) inner: S,
    pub(super) policy: AdaptivePolicy,
    pub(super) extractor: X,
    pub(super) classify: C,
    pub(super) _key: PhantomData<fn() -> K>,
}

impl<S, K, X, C> KeyFeedback<S, K, X, C> {
    crate::inner_accessors!();
}

/// The record a [`KeyFeedback`] request keeps until its response.
///
/// It appears in [`KeyFeedback`]'s `Future` type; it is not made or used
/// directly.
pub struct KeyTrack<K, C> {
    policy: AdaptivePolicy,
    key: Option<K>,
    classify: C,
    started: u64,
}

impl<K, C, Res> Track<Res> for KeyTrack<K, C>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Classify<Res, BoxError>,
{
    fn complete(&mut self, result: &Result<Res, BoxError>) {
        let Some(key) = &self.key else { return };
        let success = match self.classify.classify(result) {
            Outcome::Success => true,
            Outcome::Failure | Outcome::Overloaded => false,
            Outcome::Ignore => return,
        };
        let latency = self
            .policy
            .shared
            .load()
            .clock
            .now()
            .saturating_sub(self.started);
        self.policy
            .record(key, success, Duration::from_nanos(latency));
    }
}

impl<K: fmt::Debug, C> fmt::Debug for KeyTrack<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyTrack")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<S, K, X, C, Req> Service<Req> for KeyFeedback<S, K, X, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, KeyTrack<K, C>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let track = KeyTrack {
            policy: self.policy.clone(),
            key: self.extractor.extract(&req),
            classify: self.classify.clone(),
            started: self.policy.shared.load().clock.now(),
        };
        ResponseFuture::called(self.inner.call(req), track)
    }
}

impl<S: Clone, K, X: Clone, C: Clone> Clone for KeyFeedback<S, K, X, C> {
    fn clone(&self) -> Self {
        KeyFeedback {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            extractor: self.extractor.clone(),
            classify: self.classify.clone(),
            _key: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for KeyFeedback<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFeedback")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}
