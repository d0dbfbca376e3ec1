use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Shared;
use super::{Limits, Rejection, Respond, Responder};
use crate::BoxError;
use crate::backend::Grant;
use crate::backend::{Backend, Memory};
use crate::key::KeyExtractor;
use crate::observe::RowHint;
use crate::per_key::core::{self, Admission, Decided, DefaultCache, Resolved, key_for};
use crate::per_key::future::{Dispatch, Observed};
use crate::per_key::layer::Config;
use crate::per_key::settle::Pending;
use crate::policy::Policy;

/// Enforces per-key limits on HTTP requests, answering rejections with
/// responses (see [`Respond`]); errors of the inner service pass through
/// unchanged.
///
/// Made by [`HttpLimitLayer`](super::HttpLimitLayer); see the
/// [module docs](super). Like [`PerKey`](crate::PerKey), the inner service
/// must be `Clone` (axum's and tonic's are).
///
/// # Examples
///
/// A request over the limit is answered (`Ok`, 429); the inner service's
/// errors stay errors:
///
/// ```
/// use http::{Request, Response, StatusCode};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
/// use tower_sluice::http::HeaderKey;
/// use tower_sluice::{BoxError, PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let mut svc = ServiceBuilder::new()
///     .layer(PerKeyLayer::new(Quota::per_minute(2), HeaderKey::from_static("x-api-key")).http())
///     .service(service_fn(|req: Request<()>| async move {
///         match req.uri().path() {
///             "/fail" => Err(BoxError::from("database down")),
///             _ => Ok(Response::new(String::from("hello"))),
///         }
///     }));
/// let req = |path| Request::get(path).header("x-api-key", "k-1").body(());
/// let err = svc.ready().await?.call(req("/fail")?).await.unwrap_err();
/// assert_eq!(err.to_string(), "database down");
/// assert_eq!(svc.ready().await?.call(req("/")?).await?.status(), StatusCode::OK);
/// let limited = svc.ready().await?.call(req("/")?).await?;
/// assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
/// # Ok(())
/// # }
/// ```
pub struct HttpLimit<S, K, X, B = Memory<K>, R = Responder> {
    inner: S,
    extractor: X,
    shared: Arc<Shared<K, B, R>>,
    default: DefaultCache,
    _key: PhantomData<fn() -> K>,
}

impl<S, K, X, B, R> HttpLimit<S, K, X, B, R> {
    pub(crate) fn new(inner: S, extractor: X, shared: Arc<Shared<K, B, R>>) -> Self {
        HttpLimit {
            inner,
            extractor,
            default: shared.core.policies.cache(),
            shared,
            _key: PhantomData,
        }
    }

    crate::inner_accessors!();
}

impl<S, K, X, B, R, ReqBody, ResBody> Service<Request<ReqBody>> for HttpLimit<S, K, X, B, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: 'static,
    X: KeyExtractor<Request<ReqBody>, Key = K>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
    R: Respond<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>, B::Future, R, ResBody, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let extracted = self.extractor.extract(&req);
        let cost = self.extractor.cost(&req);
        let shared = &self.shared;
        let (core, config) = (&*shared.core, &shared.config);
        // Each future is built where it is returned: axum moves it again
        // and boxes it, and every move is a copy of the inner future. Only
        // the common case (admitted, sent at once, not settled) is inline;
        // the others are out of line, so that it stays small.
        let (policy, decided) = match key_for(config, extracted.as_ref(), cost) {
            Err(undecided) => (None, Decided::Undecided(undecided)),
            Ok(key) => {
                let policy = core.policies.resolve_with(key, &mut self.default);
                match core.acquire(config, key, &policy, cost) {
                    Ok((admitted, row)) if config.settle.is_none() => {
                        let lookup = || core.backend.states(key, &policy);
                        let decision = admitted.decision(&policy);
                        let limits = Limits::new(&policy, &decision, Some(&lookup));
                        let headers = shared.responder.admitted(&limits);
                        // Done with the key: the observer may take it.
                        drop(policy);
                        if observes(config, row) {
                            return call_observed(
                                &mut self.inner,
                                config,
                                req,
                                headers,
                                extracted,
                                row,
                            );
                        }
                        return ResponseFuture::called(self.inner.call(req), headers);
                    }
                    Ok((admitted, row)) => (Some(policy), Decided::Now(admitted, row)),
                    Err(rest) => (Some(policy), Decided::Rest(rest)),
                }
            }
        };
        let inner = &mut self.inner;
        other(inner, shared, req, extracted, cost, policy, decided)
    }
}

/// The settlement of an admitted request, when the layer settles: put in
/// the request's extensions, and kept for the response.
fn settle<K, B, R, ReqBody>(
    shared: &Shared<K, B, R>,
    req: &mut Request<ReqBody>,
    key: &K,
    policy: &Policy,
    grant: &Grant,
) -> Option<Pending>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
{
    let settling = shared.config.settle.as_ref()?;
    let pending = Pending::new(&shared.core, settling, key, policy, grant.charged());
    req.extensions_mut().insert(pending.settlement().clone());
    Some(pending)
}

/// The future of every request but the common one (admitted at once, not
/// settled): settled, waiting, being decided, undecided or denied. Out of
/// line: the common request's call stays small.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn other<S, K, B, R, ReqBody, ResBody>(
    inner: &mut S,
    shared: &Arc<Shared<K, B, R>>,
    mut req: Request<ReqBody>,
    extracted: Option<K>,
    cost: u32,
    policy: Option<Resolved<'_>>,
    decided: Decided<B::Future>,
) -> ResponseFuture<S, Request<ReqBody>, B::Future, R, ResBody, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ResBody: 'static,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
    R: Respond<ResBody>,
{
    let core = &*shared.core;
    match core::decided(&shared.config, extracted.as_ref(), policy, decided) {
        Admission::Granted {
            key,
            policy,
            mut grant,
            row,
        } => {
            let lookup = || core.backend.states(key, &policy);
            let limits = Limits::new(&policy, grant.decision(), Some(&lookup));
            let headers = shared.responder.admitted(&limits);
            let settle = settle(shared, &mut req, key, &policy, &grant);
            // Done with the key: the observer may take it.
            drop(policy);
            let observed = observe(&shared.config, extracted, row);
            if let Some(settle) = settle {
                // Settling requests take the rarer, boxed path.
                return waiting(inner, req, grant, headers, observed).settling(settle);
            }
            if grant.wait().is_zero() {
                let in_flight = grant.take_in_flight();
                ResponseFuture::tracked(inner.call(req), headers, in_flight, observed)
            } else {
                waiting(inner, req, grant, headers, observed)
            }
        }
        Admission::Now {
            key,
            policy,
            admitted,
            row,
        } => {
            let lookup = || core.backend.states(key, &policy);
            let decision = admitted.decision(&policy);
            let limits = Limits::new(&policy, &decision, Some(&lookup));
            let headers = shared.responder.admitted(&limits);
            let grant = admitted
                .into_grant(&policy)
                .with_charged(admitted.charged(cost));
            let settle = settle(shared, &mut req, key, &policy, &grant);
            drop(policy);
            let observed = observe(&shared.config, extracted, row);
            let future = waiting(inner, req, grant, headers, observed);
            match settle {
                // Settling requests take the rarer, boxed path.
                Some(settle) => future.settling(settle),
                None => future,
            }
        }
        Admission::Unlimited => ResponseFuture::tracked(
            inner.call(req),
            None,
            None,
            observe(&shared.config, extracted, RowHint::NONE),
        ),
        Admission::Deciding { policy, decision } => {
            let policy = Policy::clone(&policy);
            let settle = match (&shared.config.settle, extracted.as_ref()) {
                (Some(settling), Some(key)) => {
                    let pending = Pending::deciding(&shared.core, settling, key, &policy);
                    req.extensions_mut().insert(pending.settlement().clone());
                    Some(pending)
                }
                _ => None,
            };
            let observed = observe(&shared.config, extracted, RowHint::NONE);
            let future = deciding(inner, shared, req, decision, policy, observed);
            match settle {
                Some(settle) => future.settling(settle),
                None => future,
            }
        }
        Admission::Denied { key, policy, error } => denied(shared, key, policy, error),
    }
}

/// An observed request admitted at once: it reports its completion.
#[cold]
#[inline(never)]
fn call_observed<S, Req, F, K, R, ResBody>(
    inner: &mut S,
    config: &Arc<Config<K>>,
    req: Req,
    headers: Option<R::Headers>,
    key: Option<K>,
    row: RowHint,
) -> ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req>,
    R: Respond<ResBody>,
{
    let observed = observe(config, key, row);
    ResponseFuture::tracked(inner.call(req), headers, None, observed)
}

/// A request admitted to be sent after its wait.
#[cold]
#[inline(never)]
fn waiting<S, Req, F, R, ResBody, K>(
    inner: &mut S,
    req: Req,
    grant: Grant,
    headers: Option<R::Headers>,
    observed: Option<Observed<K>>,
) -> ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req> + Clone,
    R: Respond<ResBody>,
{
    ResponseFuture::admitted(Dispatch::granted(inner, req, grant), headers, observed)
}

/// A request a remote backend is deciding.
#[cold]
#[inline(never)]
fn deciding<S, Req, K, B, R, ResBody>(
    inner: &mut S,
    shared: &Shared<K, B, R>,
    req: Req,
    decision: B::Future,
    policy: Policy,
    observed: Option<Observed<K>>,
) -> ResponseFuture<S, Req, B::Future, R, ResBody, K>
where
    S: Service<Req> + Clone,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
    R: Respond<ResBody>,
{
    ResponseFuture::deciding(
        Dispatch::deciding(inner, req, decision, shared.config.shadow),
        shared.responder.clone(),
        policy,
        observed,
    )
}

/// A rejected request: the responder's answer, ready at once.
#[cold]
#[inline(never)]
fn denied<S, Req, K, B, R, ResBody>(
    shared: &Shared<K, B, R>,
    key: Option<&K>,
    policy: Option<Resolved<'_>>,
    error: BoxError,
) -> ResponseFuture<S, Req, B::Future, R, ResBody, K>
where
    S: Service<Req>,
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    B: Backend<K>,
    R: Respond<ResBody>,
{
    let states = match (key, &policy) {
        (Some(key), Some(policy)) => Some(shared.core.backend.states(key, policy)),
        _ => None,
    };
    let rejection = Rejection::new(&*error).with_context(policy.as_deref(), states);
    ResponseFuture::limited(shared.responder.reject(&rejection))
}

/// What an observed request needs to report its completion (the key moved
/// from the extractor, not cloned); nothing without an observer, or for a
/// request a sampling monitor does not follow.
#[inline]
fn observe<K>(config: &Arc<Config<K>>, key: Option<K>, row: RowHint) -> Option<Observed<K>> {
    observes(config, row).then(|| Observed::new(key, config, row))
}

/// Whether a request is observed: an observer is set and, for a sampling
/// monitor, follows the request's row.
#[inline]
fn observes<K>(config: &Config<K>, row: RowHint) -> bool {
    config.observers.is_set() && row.follows()
}

impl<S: Clone, K, X: Clone, B, R> Clone for HttpLimit<S, K, X, B, R> {
    // axum clones a route's service per request: copy the cache (free
    // until a handle changes the default) rather than reading it again.
    fn clone(&self) -> Self {
        HttpLimit {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            shared: self.shared.clone(),
            default: self.default.clone(),
            _key: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K, X, B: fmt::Debug, R: fmt::Debug> fmt::Debug for HttpLimit<S, K, X, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLimit")
            .field("inner", &self.inner)
            .field("extractor", &std::any::type_name::<X>())
            .field("core", &self.shared.core)
            .field("responder", &self.shared.responder)
            .finish_non_exhaustive()
    }
}
