use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::core::{self, Admission, Core, Decided, DefaultCache, Resolved, key_for};
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

    fn call(&mut self, req: Req) -> Self::Future {
        let extracted = self.extractor.extract(&req);
        let cost = self.extractor.cost(&req);
        let config = &self.config;
        let (policy, decided) = match key_for(config, extracted.as_ref(), cost) {
            Err(undecided) => (None, Decided::Undecided(undecided)),
            Ok(key) => {
                let policy = self.core.policies.resolve_with(key, &mut self.default);
                match self.core.acquire(config, key, &policy, cost) {
                    // Admitted at once, nobody following it, nothing to
                    // settle: the inner future alone, built where it is
                    // returned.
                    Ok((_, row)) if !row.follows() && config.settle.is_none() => {
                        return ResponseFuture::called(self.inner.call(req));
                    }
                    Ok((admitted, row)) => (Some(policy), Decided::Now(admitted, row)),
                    Err(rest) => (Some(policy), Decided::Rest(rest)),
                }
            }
        };
        let inner = &mut self.inner;
        dispatch(
            inner, &self.core, config, req, extracted, cost, policy, decided,
        )
    }
}

/// The future of every request but the common one (admitted at once,
/// nobody following it, nothing to settle): observed, settled, waiting,
/// being decided, undecided or denied. Out of line: the common request's
/// call stays small.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn dispatch<S, K, B, Req>(
    inner: &mut S,
    core: &Arc<Core<K, B>>,
    config: &Arc<Config<K>>,
    mut req: Req,
    extracted: Option<K>,
    cost: u32,
    policy: Option<Resolved<'_>>,
    decided: Decided<B::Future>,
) -> ResponseFuture<S, Req, B::Future, K>
where
    S: Service<Req> + Clone,
    Req: 'static,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    match core::decided(config, extracted.as_ref(), policy, decided) {
        Admission::Now {
            key,
            policy,
            admitted,
            row,
        } => {
            if let Some(settling) = &config.settle {
                let grant = admitted
                    .into_grant(&policy)
                    .with_charged(admitted.charged(cost));
                let pending = Pending::new(core, settling, key, &policy, grant.charged());
                pending.attach(&mut req);
                drop(policy);
                let observed = observe(config, extracted, row);
                return ResponseFuture::dispatch(
                    Dispatch::granted(inner, req, grant),
                    observed,
                    Some(pending),
                );
            }
            drop(policy);
            let observed = observe(config, extracted, row);
            ResponseFuture::held(inner.call(req), None, observed)
        }
        Admission::Granted {
            mut grant,
            row,
            key,
            policy,
        } => {
            let settle = config.settle.as_ref().map(|settling| {
                let pending = Pending::new(core, settling, key, &policy, grant.charged());
                pending.attach(&mut req);
                pending
            });
            drop(policy);
            let observed = observe(config, extracted, row);
            if settle.is_none() && grant.wait().is_zero() {
                let in_flight = grant.take_in_flight();
                return ResponseFuture::held(inner.call(req), in_flight, observed);
            }
            ResponseFuture::dispatch(Dispatch::granted(inner, req, grant), observed, settle)
        }
        Admission::Unlimited => {
            let observed = observe(config, extracted, RowHint::NONE);
            ResponseFuture::held(inner.call(req), None, observed)
        }
        Admission::Deciding { decision, policy } => {
            let settle = match (&config.settle, extracted.as_ref()) {
                (Some(settling), Some(key)) => {
                    let pending = Pending::deciding(core, settling, key, &policy);
                    pending.attach(&mut req);
                    Some(pending)
                }
                _ => None,
            };
            drop(policy);
            ResponseFuture::dispatch(
                Dispatch::deciding(inner, req, decision, config.shadow),
                observe(config, extracted, RowHint::NONE),
                settle,
            )
        }
        Admission::Denied { error, .. } => ResponseFuture::rejected(error),
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
