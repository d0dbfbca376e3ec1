use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::KeyExtractor;
use super::core::Core;
use super::future::ResponseFuture;
use super::layer::{Config, OnMissing};
use crate::BoxError;
use crate::backend::{Acquire, Backend};
use crate::error::{MissingKey, RateLimited, TooManyInFlight, TooManyKeys};
use crate::observe::Event;

const LAYER: &str = "per_key";

/// Enforces per-key limits on the requests to the inner service.
///
/// Made by [`PerKeyLayer`](crate::PerKeyLayer); see the
/// [module docs](crate::per_key).
///
/// The inner service must be `Clone`: a request that waits for its turn
/// (with [`max_wait`](crate::PerKeyLayer::max_wait)) or for a remote
/// backend's decision takes the readied service with it and leaves a clone
/// in its place, as tower-http's async middleware do. axum, tonic, hyper
/// and reqwest services are all `Clone`. A request admitted at once is
/// called in place, with no clone.
pub struct PerKey<S, K, X, B> {
    inner: S,
    extractor: X,
    core: Arc<Core<K, B>>,
    config: Arc<Config<K>>,
    _key: PhantomData<fn() -> K>,
}

impl<S, K, X, B> PerKey<S, K, X, B> {
    pub(crate) fn new(
        inner: S,
        extractor: X,
        core: Arc<Core<K, B>>,
        config: Arc<Config<K>>,
    ) -> Self {
        PerKey {
            inner,
            extractor,
            core,
            config,
            _key: PhantomData,
        }
    }

    crate::inner_accessors!();
}

impl<S, K, X, B, Req> Service<Req> for PerKey<S, K, X, B>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, B::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let config = &*self.config;
        let extracted = self.extractor.extract(&req);
        let fallback;
        let key = match (&extracted, &config.on_missing) {
            (Some(key), _) => key,
            (None, OnMissing::Fallback(key)) => {
                fallback = key;
                fallback
            }
            (None, OnMissing::Allow) => return ResponseFuture::called(self.inner.call(req), None),
            (None, OnMissing::Reject) => {
                config.observers.emit(&Event::MissingKey { layer: LAYER });
                return ResponseFuture::failed(MissingKey.into());
            }
        };
        let policy = self.core.policies.resolve(key);
        match self.core.backend.acquire(key, &policy, 1, config.max_wait) {
            Acquire::Ready(Ok(mut grant)) => {
                let observers = &config.observers;
                if observers.is_set() {
                    observers.emit(&Event::Allowed {
                        layer: LAYER,
                        key: Some(key),
                        decision: grant.decision(),
                    });
                }
                let in_flight = grant.take_in_flight();
                if grant.wait().is_zero() {
                    return ResponseFuture::called(self.inner.call(req), in_flight);
                }
                observers.emit(&Event::Waited {
                    layer: LAYER,
                    key: Some(key),
                    waited: grant.wait(),
                });
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::delayed(tokio::time::sleep(grant.wait()), ready, req, in_flight)
            }
            Acquire::Ready(Err(error)) => {
                self.report(key, &error);
                ResponseFuture::failed(error)
            }
            Acquire::Pending(decision) => {
                let clone = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::deciding(decision, ready, req)
            }
        }
    }
}

impl<S, K, X, B> PerKey<S, K, X, B>
where
    K: fmt::Debug,
{
    fn report(&self, key: &K, error: &BoxError) {
        let observers = &self.config.observers;
        if let Some(error) = error.downcast_ref::<RateLimited>() {
            tracing::debug!(
                target: "tower_sluice::per_key",
                key = ?key,
                retry_after = ?error.retry_after(),
                "rate limited"
            );
            observers.emit(&Event::Limited {
                layer: LAYER,
                key: Some(key),
                error,
            });
        } else if let Some(e) = error.downcast_ref::<TooManyInFlight>() {
            observers.emit(&Event::InFlightLimited {
                layer: LAYER,
                key: Some(key),
                limit: e.limit(),
            });
        } else if let Some(e) = error.downcast_ref::<TooManyKeys>() {
            tracing::warn!(
                target: "tower_sluice::per_key",
                max_keys = e.max_keys(),
                "per-key store full of active keys; refusing new keys"
            );
            observers.emit(&Event::StoreFull {
                layer: LAYER,
                key: Some(key),
                max_keys: e.max_keys(),
            });
        }
    }
}

impl<S: Clone, K, X: Clone, B> Clone for PerKey<S, K, X, B> {
    fn clone(&self) -> Self {
        PerKey::new(
            self.inner.clone(),
            self.extractor.clone(),
            self.core.clone(),
            self.config.clone(),
        )
    }
}

impl<S: fmt::Debug, K, X, B: fmt::Debug> fmt::Debug for PerKey<S, K, X, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKey")
            .field("inner", &self.inner)
            .field("extractor", &std::any::type_name::<X>())
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
