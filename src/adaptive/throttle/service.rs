//! The service of `adaptive::throttle` and what its requests record.

use super::*;

/// Throttles requests locally. Made by [`AdaptiveThrottleLayer`]; see the
/// [module docs](crate::adaptive).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveThrottle, AdaptiveThrottleLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let client = AdaptiveThrottleLayer::new().layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let _typed: &AdaptiveThrottle<_, _, _> = &client;
/// assert_eq!(client.oneshot(3).await?, 3);
/// # Ok(())
/// # }
/// ```
pub struct AdaptiveThrottle<S, P, C> {
    pub(super) inner: S,
    pub(super) core: Arc<Core>,
    pub(super) criticality: P,
    pub(super) classify: C,
}

impl<S, P, C> AdaptiveThrottle<S, P, C> {
    crate::inner_accessors!();
}

/// The record an [`AdaptiveThrottle`] request keeps until its response.
///
/// It appears in [`AdaptiveThrottle`]'s `Future` type; it is not made or
/// used directly.
pub struct ThrottleTrack<C> {
    core: Arc<Core>,
    classify: C,
}

impl<C, Res> Track<Res> for ThrottleTrack<C>
where
    C: Classify<Res, BoxError>,
{
    fn complete(&mut self, result: &Result<Res, BoxError>) {
        if matches!(
            self.classify.classify(result),
            Outcome::Success | Outcome::Ignore
        ) {
            self.core.accepted();
        }
    }
}

impl<C> fmt::Debug for ThrottleTrack<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleTrack").finish_non_exhaustive()
    }
}

impl<S, P, C, Req> Service<Req> for AdaptiveThrottle<S, P, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: CriticalityOf<Req>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ThrottleTrack<C>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let class = self.criticality.criticality(&req);
        match self.core.admit(class) {
            Ok(()) => {
                let track = ThrottleTrack {
                    core: self.core.clone(),
                    classify: self.classify.clone(),
                };
                ResponseFuture::called(self.inner.call(req), track)
            }
            Err(p) => {
                let error = Throttled::new(p);
                let enforced = !self.core.shadow;
                self.core.observers.emit(&Event::AdaptiveRejected {
                    layer: LAYER,
                    error: &error,
                    enforced,
                });
                if enforced {
                    return ResponseFuture::refused(error.into());
                }
                let track = ThrottleTrack {
                    core: self.core.clone(),
                    classify: self.classify.clone(),
                };
                ResponseFuture::called(self.inner.call(req), track)
            }
        }
    }
}

impl<S: Clone, P: Clone, C: Clone> Clone for AdaptiveThrottle<S, P, C> {
    fn clone(&self) -> Self {
        AdaptiveThrottle {
            inner: self.inner.clone(),
            core: self.core.clone(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, P, C> fmt::Debug for AdaptiveThrottle<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
