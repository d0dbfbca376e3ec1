//! The service.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::super::future::ResponseFuture;
use super::PerKeyCircuitBreakerHandle;
use super::store::Breakers;
use crate::BoxError;
use crate::classify::Classify;
use crate::key::KeyExtractor;
use crate::slot::Slot;

/// Stops calling the inner service for keys (hosts) that fail, one breaker
/// per key.
///
/// Made by [`PerKeyCircuitBreakerLayer`](super::PerKeyCircuitBreakerLayer); see its docs. Clones share the
/// breakers.
pub struct PerKeyCircuitBreaker<S, K, X, C> {
    pub(super) inner: S,
    pub(super) extractor: X,
    pub(super) classifier: C,
    pub(super) breakers: Arc<Breakers<K>>,
}

impl<S, K, X, C> PerKeyCircuitBreaker<S, K, X, C> {
    /// A handle on the shared breakers.
    pub fn handle(&self) -> PerKeyCircuitBreakerHandle<K> {
        PerKeyCircuitBreakerHandle {
            breakers: Slot::from_arc(self.breakers.clone()),
        }
    }

    crate::inner_accessors!();
}

impl<S, K, X, C, Req> Service<Req> for PerKeyCircuitBreaker<S, K, X, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    /// Passes readiness through: an open breaker refuses in `call`.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = match self.extractor.extract(&req) {
            Some(key) => self.breakers.get_or_insert(&key),
            None => self.breakers.default.clone(),
        };
        super::super::service::call_through(breaker, &self.classifier, || self.inner.call(req))
    }
}

impl<S: Clone, K, X: Clone, C: Clone> Clone for PerKeyCircuitBreaker<S, K, X, C> {
    fn clone(&self) -> Self {
        PerKeyCircuitBreaker {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
            breakers: self.breakers.clone(),
        }
    }
}

impl<S: fmt::Debug, K, X, C> fmt::Debug for PerKeyCircuitBreaker<S, K, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyCircuitBreaker")
            .field("inner", &self.inner)
            .field("keys", &self.breakers.len())
            .field("extractor", &std::any::type_name::<X>())
            .field("classifier", &std::any::type_name::<C>())
            .finish()
    }
}
