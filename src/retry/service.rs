use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::future::{ResponseFuture, Retry};
use super::layer::Shared;
use super::{CloneRequest, CloneRequests, DefaultRetry};
use crate::BoxError;
use crate::classify::Classify;
use crate::key::KeyExtractor;
use crate::key::NoKey;

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
pub struct BackoffRetry<S, C = DefaultRetry, P = CloneRequests, X = NoKey> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    requests: P,
    keys: X,
}

impl<S, C, P, X> BackoffRetry<S, C, P, X> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C, requests: P, keys: X) -> Self {
        BackoffRetry {
            inner,
            shared,
            classifier,
            requests,
            keys,
        }
    }

    crate::inner_accessors!(layer: "tower_sluice::BackoffRetryLayer::default()");
}

impl<S, C, P, X, Req> Service<Req> for BackoffRetry<S, C, P, X>
where
    P: CloneRequest<Req> + Clone,
    S: Service<P::Request> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    X: KeyExtractor<P::Request> + Clone,
    X::Key: fmt::Debug + std::hash::Hash + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, P, X>;

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
                self.keys.clone(),
                self.shared.clone(),
            )),
            _ => None,
        };
        ResponseFuture::new(self.inner.call(req), retry)
    }
}

impl<S: Clone, C: Clone, P: Clone, X: Clone> Clone for BackoffRetry<S, C, P, X> {
    fn clone(&self) -> Self {
        BackoffRetry::new(
            self.inner.clone(),
            self.shared.clone(),
            self.classifier.clone(),
            self.requests.clone(),
            self.keys.clone(),
        )
    }
}

impl<S: fmt::Debug, C, P, X> fmt::Debug for BackoffRetry<S, C, P, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffRetry")
            .field("inner", &self.inner)
            .field("backoff", &self.shared.backoff)
            .field("max_attempts", &self.shared.max_attempts)
            .field("classifier", &std::any::type_name::<C>())
            .field("requests", &std::any::type_name::<P>())
            .field("keys", &std::any::type_name::<X>())
            .finish()
    }
}
