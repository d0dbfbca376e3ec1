use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::{ResponseFuture, Retry};
use super::layer::Shared;
use super::{ClassifyRetry, CloneRequest, CloneRequests, DefaultRetry};
use crate::BoxError;

/// Retries failed requests with backoff and jitter.
///
/// Made by [`BackoffRetryLayer`](crate::BackoffRetryLayer); see the
/// [module docs](crate::retry). Clones share the retry budget.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::{BackoffRetry, BackoffRetryLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let svc = BackoffRetryLayer::default().layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n + 1) }));
/// let _typed: &BackoffRetry<_> = &svc;
/// assert_eq!(svc.oneshot(1).await?, 2);
/// # Ok(())
/// # }
/// ```
pub struct BackoffRetry<S, C = DefaultRetry, P = CloneRequests> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    requests: P,
}

impl<S, C, P> BackoffRetry<S, C, P> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C, requests: P) -> Self {
        BackoffRetry {
            inner,
            shared,
            classifier,
            requests,
        }
    }

    crate::inner_accessors!(layer: "tower_sluice::BackoffRetryLayer::default()");
}

impl<S, C, P, Req> Service<Req> for BackoffRetry<S, C, P>
where
    P: CloneRequest<Req> + Clone,
    S: Service<P::Request> + Clone,
    S::Error: Into<BoxError>,
    C: ClassifyRetry<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, P>;

    /// Passes the inner service's readiness through. Retries wait for the
    /// readiness of a clone of the inner service, inside the response
    /// future.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        let (req, saved) = self.requests.first(req);
        let retry = match saved {
            Some(saved) if shared.max_attempts > 1 => Some(Retry::new(
                self.inner.clone(),
                saved,
                self.classifier.clone(),
                self.requests.clone(),
                self.shared.clone(),
            )),
            _ => None,
        };
        ResponseFuture::new(self.inner.call(req), retry)
    }
}

impl<S: Clone, C: Clone, P: Clone> Clone for BackoffRetry<S, C, P> {
    fn clone(&self) -> Self {
        BackoffRetry::new(
            self.inner.clone(),
            self.shared.clone(),
            self.classifier.clone(),
            self.requests.clone(),
        )
    }
}

impl<S: fmt::Debug, C, P> fmt::Debug for BackoffRetry<S, C, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffRetry")
            .field("inner", &self.inner)
            .field("backoff", &self.shared.backoff)
            .field("max_attempts", &self.shared.max_attempts)
            .field("classifier", &std::any::type_name::<C>())
            .field("requests", &std::any::type_name::<P>())
            .finish()
    }
}
