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
        let cost = self.extractor.cost(&req);
        // Each future is built where it is returned (a move of the future
        // is a copy of the inner one).
        match self
            .core
            .admit(&self.config, extracted.as_ref(), cost, &mut self.default)
        {
            Admission::Now {
                key,
                policy,
                admitted,
                row,
            } => {
                if let Some(settling) = &self.config.settle {
                    // Settling: the rare path, through a grant.
                    let grant = admitted
                        .into_grant(&policy)
                        .with_charged(admitted.charged(cost));
                    let pending = Pending::new(&self.core, settling, key, &policy, grant.charged());
                    pending.attach(&mut req);
                    return ResponseFuture::new(
                        Dispatch::granted(&mut self.inner, req, grant),
                        observe(&self.config, extracted, row),
                    )
                    .settling(Some(pending));
                }
                drop(policy);
                let observed = observe(&self.config, extracted, row);
                ResponseFuture::called(self.inner.call(req), observed)
            }
            Admission::Granted {
                grant,
                row,
                key,
                policy,
            } => {
                let settle = self.config.settle.as_ref().map(|settling| {
                    let pending = Pending::new(&self.core, settling, key, &policy, grant.charged());
                    pending.attach(&mut req);
                    pending
                });
                ResponseFuture::new(
                    Dispatch::granted(&mut self.inner, req, grant),
                    observe(&self.config, extracted, row),
                )
                .settling(settle)
            }
            Admission::Unlimited => ResponseFuture::new(
                Dispatch::call(&mut self.inner, req, None),
                observe(&self.config, extracted, RowHint::NONE),
            ),
            Admission::Deciding { decision, policy } => {
                let settle = match (&self.config.settle, extracted.as_ref()) {
                    (Some(settling), Some(key)) => {
                        let pending = Pending::deciding(&self.core, settling, key, &policy);
                        pending.attach(&mut req);
                        Some(pending)
                    }
                    _ => None,
                };
                ResponseFuture::new(
                    Dispatch::deciding(&mut self.inner, req, decision, self.config.shadow),
                    observe(&self.config, extracted, RowHint::NONE),
                )
                .settling(settle)
            }
            Admission::Denied { error, .. } => ResponseFuture::new(Dispatch::rejected(error), None),
        }
    }
}

/// What an observed request needs to report its completion; nothing
/// without an observer, or for a request a sampling monitor does not
/// follow.
#[inline]
fn observe<K>(config: &Arc<Config<K>>, key: Option<K>, row: RowHint) -> Option<Observed<K>> {
    if config.observers.is_set() && row.follows() {
        Some(Observed::new(key, config, row))
    } else {
        None
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
