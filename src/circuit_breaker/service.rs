use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::CircuitBreakerHandle;
use super::future::{Call, ResponseFuture};
use super::state::Breaker;
use crate::BoxError;
use crate::classify::{Classify, ErrorsAreFailures};

/// Stops calling the inner service while it fails.
///
/// Made by [`CircuitBreakerLayer`](crate::CircuitBreakerLayer); see the
/// [module docs](crate::circuit_breaker). Clones share the breaker.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
/// use tower_sluice::circuit_breaker::CircuitState;
/// use tower_sluice::{CircuitBreaker, CircuitBreakerLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let layer = CircuitBreakerLayer::builder().consecutive_failures(1).build().unwrap();
/// let handle = layer.handle();
/// let mut svc: CircuitBreaker<_> = layer.layer(service_fn(|fail: bool| async move {
///     if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
/// }));
/// let mut clone = svc.clone();
/// assert!(svc.ready().await.unwrap().call(true).await.is_err());
/// // The clone shares the breaker: it is open for both.
/// assert_eq!(handle.state(), CircuitState::Open);
/// assert!(clone.ready().await.unwrap().call(false).await.is_err());
/// # }
/// ```
pub struct CircuitBreaker<S, C = ErrorsAreFailures> {
    inner: S,
    breaker: Arc<Breaker>,
    classifier: C,
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn new(inner: S, breaker: Arc<Breaker>, classifier: C) -> Self {
        CircuitBreaker {
            inner,
            breaker,
            classifier,
        }
    }

    /// A handle on the shared breaker.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let svc = CircuitBreakerLayer::builder()
    ///     .consecutive_failures(1)
    ///     .build()?
    ///     .layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// let handle = svc.handle();
    /// svc.oneshot(()).await.unwrap_err();
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// # Ok(())
    /// # }
    /// ```
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::of(self.breaker.clone())
    }

    crate::inner_accessors!();
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Passes readiness through: an open breaker refuses in `call`, so the
    /// service suits routers that never wait for `poll_ready`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        call_through(&self.breaker, &self.classifier, || self.inner.call(req))
    }
}

/// A breaker as a call borrows it (the plain service: cloned only when the
/// call is admitted) or owns it (a per-key breaker, already cloned out of
/// its store).
pub(super) trait BreakerRef {
    fn breaker(&self) -> &Breaker;
    fn into_arc(self) -> Arc<Breaker>;
}

impl BreakerRef for &Arc<Breaker> {
    #[inline]
    fn breaker(&self) -> &Breaker {
        self
    }
    #[inline]
    fn into_arc(self) -> Arc<Breaker> {
        self.clone()
    }
}

impl BreakerRef for Arc<Breaker> {
    #[inline]
    fn breaker(&self) -> &Breaker {
        self
    }
    #[inline]
    fn into_arc(self) -> Arc<Breaker> {
        self
    }
}

/// One call through `breaker`: sent with a guard that records its outcome,
/// sent unguarded when a shadow breaker would have refused it, or refused.
#[inline]
pub(super) fn call_through<F, C: Clone>(
    breaker: impl BreakerRef,
    classifier: &C,
    call: impl FnOnce() -> F,
) -> ResponseFuture<F, C> {
    match breaker.breaker().acquire() {
        Ok(permit) => {
            let guard = Call::new(breaker.into_arc(), permit, classifier.clone());
            ResponseFuture::called(call(), guard)
        }
        Err(_) if breaker.breaker().is_shadow() => ResponseFuture::without_track(call()),
        Err(error) => ResponseFuture::refused(error.into()),
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker::new(
            self.inner.clone(),
            self.breaker.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.breaker.state())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}
