use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::core::{Admission, Core, DefaultCache};
use super::future::{Dispatch, Observed, ResponseFuture};
use super::layer::Config;
use super::settle::Pending;
use crate::BoxError;
use crate::backend::Backend;
use crate::key::KeyExtractor;
use crate::observe::RowHint;

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
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::{PerKey, PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // Odd and even numbers: two keys, one request a minute each.
/// let layer = PerKeyLayer::new(Quota::per_minute(1), |n: &u32| Some(n % 2));
/// let svc: PerKey<_, u32, _, _> = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// assert_eq!(svc.clone().oneshot(1).await?, 1);
/// // 3 is odd too: another clone, the same bucket, refused.
/// assert!(svc.clone().oneshot(3).await.is_err());
/// assert_eq!(svc.clone().oneshot(2).await?, 2);
/// # Ok(())
/// # }
/// ```
pub struct PerKey<S, K, X, B> {
    inner: S,
    extractor: X,
    core: Arc<Core<K, B>>,
    config: Arc<Config<K>>,
    default: DefaultCache,
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
            default: core.policies.cache(),
            core,
            config,
            _key: PhantomData,
        }
    }

    crate::inner_accessors!(layer: "tower_sluice::PerKeyLayer::new(tower_sluice::Quota::per_second(10), |n: &u32| Some(*n))");
}

impl<S, K, X, B, Req> Service<Req> for PerKey<S, K, X, B>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    Req: 'static,
    X: KeyExtractor<Req, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, B::Future, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let extracted = self.extractor.extract(&req);
        let mut row = RowHint::NONE;
        let mut settle = None;
        let dispatch = match self.core.admit(
            &self.config,
            extracted.as_ref(),
            self.extractor.cost(&req),
            &mut self.default,
        ) {
            Admission::Granted {
                grant,
                row: at,
                key,
                policy,
            } => {
                row = at;
                if let Some(settling) = &self.config.settle {
                    let pending = Pending::new(&self.core, settling, key, &policy, grant.charged());
                    pending.attach(&mut req);
                    settle = Some(pending);
                }
                Dispatch::granted(&mut self.inner, req, grant)
            }
            Admission::Unlimited => Dispatch::call(&mut self.inner, req, None),
            Admission::Deciding { decision, policy } => {
                if let (Some(settling), Some(key)) = (&self.config.settle, extracted.as_ref()) {
                    let pending = Pending::deciding(&self.core, settling, key, &policy);
                    pending.attach(&mut req);
                    settle = Some(pending);
                }
                Dispatch::deciding(&mut self.inner, req, decision, self.config.shadow)
            }
            Admission::Denied { error, .. } => Dispatch::rejected(error),
        };
        // A sampling monitor follows only some admitted requests.
        let observed = if self.config.observers.is_set() && row.follows() {
            Some(Observed::new(extracted, &self.config, row))
        } else {
            None
        };
        ResponseFuture::new(dispatch, observed).settling(settle)
    }
}

impl<S: Clone, K, X: Clone, B> Clone for PerKey<S, K, X, B> {
    fn clone(&self) -> Self {
        PerKey {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            core: self.core.clone(),
            config: self.config.clone(),
            default: self.default.clone(),
            _key: PhantomData,
        }
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
