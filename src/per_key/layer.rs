use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::core::{Core, Policies, Resolver};
use super::settle::Settling;
use super::{Costed, PerKey, PerKeyHandle, Policy};
use crate::backend::{FullStore, Memory};
use crate::cost::Settleable;
use crate::key::KeyOf;
use crate::observe::{Observer, Observers};

/// The default bound on keys held by the in-memory backend.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use tower_sluice::per_key::DEFAULT_MAX_KEYS;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// let layer = PerKeyLayer::new(Quota::per_minute(60), |ip: &IpAddr| Some(*ip));
/// assert!(layer.handle().backend().max_keys() <= DEFAULT_MAX_KEYS);
/// ```
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// What to do with a request that has no key.
#[derive(Clone)]
pub(crate) enum OnMissing<K> {
    Reject,
    Allow,
    Fallback(K),
}

/// Settings every service of a layer reads (copy-on-write).
#[derive(Clone)]
pub(crate) struct Config<K> {
    pub(crate) max_wait: Duration,
    pub(crate) on_missing: OnMissing<K>,
    pub(crate) observers: Observers,
    pub(crate) shadow: bool,
    /// How requests are settled at their true cost, if they are.
    pub(crate) settle: Option<Arc<Settling>>,
}

/// Applies a rate limit per key: one bucket per client IP, API key or
/// user, with per-key policies (tiers), several quotas at once, a cap on
/// requests in flight, and a bounded store.
///
/// See the [module docs](crate::per_key) for examples.
///
/// # Sharing
///
/// Every service the layer makes, and every clone, shares one store and one
/// set of policies. [`handle`](Self::handle) gives a handle on them to
/// inspect or reconfigure while serving; take it after choosing the backend
/// ([`max_keys`](Self::max_keys), [`backend`](Self::backend)).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Requests are (user, body); one bucket per user.
/// let svc = ServiceBuilder::new()
///     .layer(PerKeyLayer::new(Quota::per_minute(1), |req: &(String, u8)| Some(req.0.clone())))
///     .service(service_fn(|_: (String, u8)| async { Ok::<_, BoxError>(()) }));
/// svc.clone().oneshot(("ann".into(), 0)).await.unwrap();
/// svc.clone().oneshot(("bob".into(), 0)).await.unwrap();
/// let err = svc.clone().oneshot(("ann".into(), 0)).await.unwrap_err();
/// assert!(err.is::<RateLimited>());
/// # }
/// ```
pub struct PerKeyLayer<K, X, B = Memory<K>> {
    extractor: X,
    core: Arc<Core<K, B>>,
    config: Arc<Config<K>>,
    _key: PhantomData<fn() -> K>,
}

impl<K, X> PerKeyLayer<K, X>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// One bucket per key under `policy` (a [`Quota`](crate::Quota) or a
    /// [`Policy`]), the key found by `extractor` (a closure
    /// `|req: &Req| -> Option<K>` or a [`KeyExtractor`](super::KeyExtractor)).
    /// The key type `K` is the closure's, or the extractor's
    /// [`Keyed::Key`](super::Keyed::Key): it never needs writing.
    ///
    /// Rejects at once when a key is over its limit (servers); see
    /// [`max_wait`](Self::max_wait) to delay instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::error::MissingKey;
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// struct Request { user: Option<u64> }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Two requests a minute per user.
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(2), |req: &Request| req.user))
    ///     .service(service_fn(|_: Request| async { Ok::<_, BoxError>("ok") }));
    /// for _ in 0..2 {
    ///     svc.clone().oneshot(Request { user: Some(1) }).await.unwrap();
    /// }
    /// let err = svc.clone().oneshot(Request { user: Some(1) }).await.unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// // A request without a key is refused too (by default).
    /// let err = svc.clone().oneshot(Request { user: None }).await.unwrap_err();
    /// assert!(err.is::<MissingKey>());
    /// # }
    /// ```
    pub fn new<M>(policy: impl Into<Policy>, extractor: X) -> Self
    where
        X: KeyOf<M, Key = K>,
    {
        PerKeyLayer {
            extractor,
            core: Arc::new(Core {
                backend: Memory::new(DEFAULT_MAX_KEYS),
                policies: Policies::new(policy.into()),
            }),
            config: Arc::new(Config {
                max_wait: Duration::ZERO,
                on_missing: OnMissing::Reject,
                observers: Observers::default(),
                shadow: false,
                settle: None,
            }),
            _key: PhantomData,
        }
    }

    /// Holds at most `max_keys` keys in memory (default
    /// [`DEFAULT_MAX_KEYS`]). Idle keys are forgotten on their own; when
    /// `max_keys` keys are all active, a new key takes the place of the
    /// key nearest to full among a few, or is refused (see
    /// [`full_store`](Self::full_store)). See
    /// [`Memory::new`](crate::backend::Memory::new) for the bound.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// // One key per client IP; hold at most 10 000 of them.
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), |ip: &IpAddr| Some(*ip))
    ///     .max_keys(10_000);
    /// assert!(layer.handle().backend().max_keys() <= 10_000);
    /// ```
    #[must_use]
    pub fn max_keys(self, max_keys: usize) -> Self {
        let full = self.core.backend.full_store_policy();
        self.backend(Memory::new(max_keys).full_store(full))
    }

    /// What the in-memory store does with a new key when it holds
    /// `max_keys` keys that are all active, as during a flood of unique
    /// keys from a header any client can set.
    ///
    /// - [`FullStore::EvictNearestFull`] (the default): the new key is
    ///   served, in place of the key nearest to full among 8 of its shard
    ///   (keys with a request in flight are passed over). The trade: the
    ///   key forgotten regains its debt, what it spent and had not earned
    ///   back, at most one burst of each quota; and it is forgotten only
    ///   when none of the 7 other keys looked at owed less, so a key over
    ///   its limit keeps its place while keys that spent less are looked
    ///   at beside it (a flood of keys that spent one request each pushes
    ///   out its own keys, or keys that owed no more than one request).
    /// - [`FullStore::Refuse`]: the new key is refused with
    ///   [`TooManyKeys`](crate::error::TooManyKeys) until a key turns idle,
    ///   and no debt is ever forgotten; but a flood of unique keys locks
    ///   out every new client while its keys stay active.
    ///
    /// Memory stays bounded by `max_keys` either way. See [`FullStore`]
    /// for the exact bound. Keys from an authenticated identity, rather than
    /// a header any client sets, keep floods out in the first place.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::FullStore;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// // Authenticated user ids: refuse new users rather than forget a debt.
    /// let layer = PerKeyLayer::new(Quota::per_day(1_000), |user: &u64| Some(*user))
    ///     .max_keys(100_000)
    ///     .full_store(FullStore::Refuse);
    /// assert_eq!(layer.handle().backend().full_store_policy(), FullStore::Refuse);
    /// ```
    #[must_use]
    pub fn full_store(self, full: FullStore) -> Self {
        self.core.backend.set_full_store(full);
        self
    }
}

impl<K, X, B> PerKeyLayer<K, X, B>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Keeps per-key state in `backend` instead of in memory.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::Memory;
    /// use tower_sluice::limits::check_all;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// // The in-memory store with a bound of 50 000 keys (as `max_keys` does).
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), |user: &u64| Some(*user))
    ///     .backend(Memory::new(50_000));
    /// let handle = layer.handle();
    /// check_all(&[&handle.limit(&7)]).unwrap();
    /// assert_eq!(handle.backend().len(), 1);
    /// ```
    ///
    /// With the `redis` feature, a `RedisBackend` shares the limits between
    /// instances (see the [`backend`](crate::backend) module).
    #[must_use]
    pub fn backend<B2>(self, backend: B2) -> PerKeyLayer<K, X, B2> {
        let mut policies = Policies::new(self.core.policies.default_policy());
        if let Some(resolver) = self.core.policies.current_resolver() {
            policies.set_resolver(resolver);
        }
        PerKeyLayer {
            extractor: self.extractor,
            core: Arc::new(Core { backend, policies }),
            config: self.config,
            _key: PhantomData,
        }
    }

    /// Charges each request the cost `cost` says (a closure
    /// `|req: &Req| -> u32` or a [`Cost`](crate::cost::Cost)): 1 to each
    /// quota of the key's policy that counts requests, the cost to each
    /// that counts a unit ([`Quota::counting`](crate::Quota::counting)),
    /// all decided together. See the [`cost`](crate::cost) module.
    ///
    /// A request of cost 0 passes without a charge (and without a key).
    /// A cost above the burst of a quota that counts cost fails at once
    /// with [`ExceedsBurst`](crate::ExceedsBurst) (HTTP 413 through
    /// `.http()`), whatever [`max_wait`](Self::max_wait) says.
    /// The same holds with the Redis backend, whose script charges each
    /// quota by its unit in the one call.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::per_key::Policy;
    /// use tower_sluice::{ExceedsBurst, PerKeyLayer, Quota, RateLimited};
    ///
    /// struct Prompt { user: &'static str, tokens: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Per user: 60 requests a minute, 10 000 tokens a minute, 100 000 tokens a day.
    /// let policy = Policy::new(Quota::per_minute(60))
    ///     .and(Quota::per_minute(10_000).counting("tokens"))?
    ///     .and(Quota::per_day(100_000).counting("tokens"))?;
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(policy, |p: &Prompt| Some(p.user)).cost(|p: &Prompt| p.tokens))
    ///     .service(service_fn(|_: Prompt| async { Ok::<_, BoxError>("ok") }));
    /// svc.clone().oneshot(Prompt { user: "ann", tokens: 9_000 }).await?;
    /// // Ann's minute is nearly spent; Bob's is not.
    /// let err = svc.clone().oneshot(Prompt { user: "ann", tokens: 2_000 }).await.unwrap_err();
    /// let limited = err.downcast_ref::<RateLimited>().unwrap();
    /// assert_eq!(limited.quota(), Quota::per_minute(10_000).counting("tokens"));
    /// svc.clone().oneshot(Prompt { user: "bob", tokens: 2_000 }).await?;
    /// // More than a minute's burst can never pass.
    /// let err = svc.clone().oneshot(Prompt { user: "bob", tokens: 50_000 }).await.unwrap_err();
    /// assert!(err.is::<ExceedsBurst>());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn cost<C>(self, cost: C) -> PerKeyLayer<K, Costed<X, C>, B> {
        PerKeyLayer {
            extractor: Costed::new(self.extractor, cost),
            core: self.core,
            config: self.config,
            _key: PhantomData,
        }
    }

    /// Settles each request at its true cost, read from its response by
    /// `hook` (a header, a trailer, or what the inner service put in the
    /// response's extensions; `None` keeps the estimate). The estimate is
    /// what [`cost`](Self::cost) charged up front; settling charges the
    /// difference to the key's quotas that count cost (quotas that count
    /// requests keep their 1):
    ///
    /// * **more** than the estimate: a debt. Each such quota's state moves
    ///   on by the difference, past the burst if need be, so the key's
    ///   later requests wait (or are refused) until it is paid, exactly as
    ///   if the true cost had been charged up front. A calendar quota adds
    ///   it to its window's count.
    /// * **less**: the difference is given back, but only where no request
    ///   of the key was admitted since (that request was judged with this
    ///   one's estimate counted): then the key is exactly as if the true
    ///   cost had been charged. Otherwise the estimate stays: settling
    ///   never makes room that was not there. A calendar quota gives back
    ///   within the same window only.
    ///
    /// Only the first settlement of a request counts: the hook's, or a
    /// handler's through its [`Settlement`](crate::cost::Settlement)
    /// handle ([`settle_handle`](Self::settle_handle); with
    /// `.http()` the handle is always in the request's
    /// extensions). A request whose response is dropped, fails, or is
    /// never settled keeps its estimate. With the in-memory backend a
    /// settlement is one more compare-exchange per quota that counts cost;
    /// a key forgotten since (idle) is re-created for a debt and left
    /// alone for a refund. The Redis backend holds a settlement for its
    /// key's next decision, which applies it in the same script call, or
    /// sends it in the background with others within its
    /// `RedisBackend::settle_delay`: the response never waits for it.
    ///
    /// `Res` must be the inner service's response type: a hook of another
    /// type is never called (the layer logs one `tracing` warning naming
    /// both types, and requests keep their estimate).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// struct Prompt { user: &'static str, estimate: u32 }
    /// #[derive(Debug)]
    /// struct Answer { used: u32 }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // 1 000 tokens a minute per user; charge the estimate, settle at the usage.
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_minute(1_000).counting("tokens"), |p: &Prompt| Some(p.user))
    ///             .cost(|p: &Prompt| p.estimate)
    ///             .settle(|answer: &Answer| Some(answer.used)),
    ///     )
    ///     .service(service_fn(|p: Prompt| async move { Ok::<_, BoxError>(Answer { used: p.estimate * 9 }) }));
    /// // Estimated 100, used 900: the user has 100 tokens left, not 900.
    /// svc.clone().oneshot(Prompt { user: "ann", estimate: 100 }).await?;
    /// let err = svc.clone().oneshot(Prompt { user: "ann", estimate: 200 }).await.unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Charging only failed requests (five failed logins a minute per
    /// user; a successful one is settled to zero):
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// struct Login { user: &'static str, password: &'static str }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_minute(5).counting("failures"), |l: &Login| Some(l.user))
    ///             .cost(|_: &Login| 1)
    ///             .settle(|ok: &bool| ok.then_some(0)),
    ///     )
    ///     .service(service_fn(|l: Login| async move { Ok::<_, BoxError>(l.password == "secret") }));
    /// for _ in 0..20 {
    ///     assert!(svc.clone().oneshot(Login { user: "ann", password: "secret" }).await?);
    /// }
    /// for _ in 0..5 {
    ///     assert!(!svc.clone().oneshot(Login { user: "ann", password: "guess" }).await?);
    /// }
    /// let err = svc.clone().oneshot(Login { user: "ann", password: "secret" }).await.unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn settle<Res: 'static>(
        self,
        hook: impl Fn(&Res) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.edit_config(|c| {
            let settling = take_settling(c).with_hook(hook);
            c.settle = Some(Arc::new(settling));
        })
    }

    /// Hands each admitted request of type `Req` its
    /// [`Settlement`](crate::cost::Settlement) handle (see [`Settleable`]:
    /// an `http::Request` keeps it in its extensions), for a handler or a
    /// stream that learns the true cost later to call
    /// [`settle`](crate::cost::Settlement::settle). See
    /// [`settle`](Self::settle) for what settling does.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::cost::Settlement;
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// type Req = http::Request<u32>;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_minute(1_000).counting("bytes"), |_: &Req| Some(()))
    ///             .cost(|_: &Req| 10)
    ///             .settle_handle::<Req>(),
    ///     )
    ///     .service(service_fn(|req: Req| async move {
    ///         // The handler learns the true cost (here: from the body).
    ///         req.extensions().get::<Settlement>().unwrap().settle(*req.body());
    ///         Ok::<_, BoxError>(())
    ///     }));
    /// svc.clone().oneshot(http::Request::new(995)).await?;
    /// let err = svc.clone().oneshot(http::Request::new(10)).await.unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn settle_handle<Req: Settleable + 'static>(self) -> Self {
        self.edit_config(|c| {
            let settling = take_settling(c).with_handle::<Req>();
            c.settle = Some(Arc::new(settling));
        })
    }

    fn edit_config(mut self, f: impl FnOnce(&mut Config<K>)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Chooses each key's policy, for example by tier; `None` means the
    /// default policy. Runs on every request: keep it fast (a map lookup).
    ///
    /// Called after [`handle`](Self::handle) or after cloning the layer, it
    /// replaces the resolver of every clone, handle and service made from
    /// the layer (they share it), as a handle's changes do.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// // API keys starting with "paid-" get 100 a minute, the others 10.
    /// let layer = PerKeyLayer::new(Quota::per_minute(10), |key: &String| Some(key.clone()))
    ///     .policy_for(|key: &String| key.starts_with("paid-").then(|| Quota::per_minute(100)));
    /// let handle = layer.handle();
    /// assert_eq!(handle.policy(&"paid-7".into()).quotas().next(), Some(Quota::per_minute(100)));
    /// assert_eq!(handle.policy(&"anon".into()).quotas().next(), Some(Quota::per_minute(10)));
    /// ```
    #[must_use]
    pub fn policy_for<F, P>(self, resolver: F) -> Self
    where
        F: Fn(&K) -> Option<P> + Send + Sync + 'static,
        P: Into<Policy>,
    {
        let mut layer = self;
        let resolver: Resolver<K> = Arc::new(move |k: &K| resolver(k).map(Into::into));
        match Arc::get_mut(&mut layer.core) {
            Some(core) => core.policies.set_resolver(resolver),
            None => layer.core.policies.set_late_resolver(resolver),
        }
        layer
    }

    /// Lets a request that is over its limit wait up to `max_wait` for its
    /// turn instead of failing (then it is sent when its turn comes);
    /// requests that would wait longer fail at once with
    /// [`RateLimited`](crate::RateLimited). Zero (the default) rejects.
    ///
    /// A waiting request holds its slot. If its response future is
    /// dropped before the request is sent, the request is never sent and,
    /// with the in-memory backend, its slot is given back, as
    /// [`RateLimitLayer`](crate::RateLimitLayer) gives back a dropped
    /// reservation: each quota takes back exactly what this request was
    /// charged, and only if no later request was admitted after it (a later
    /// request was judged with this one counted, so giving it back then
    /// could let a burst through; the key stays charged instead, never the
    /// other way round). A remote backend (Redis) keeps the charge: giving
    /// it back would cost another round trip for every abandoned request,
    /// so an abandoned delayed request there counts as sent until the
    /// bucket refills.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // One a second per user; a request waits up to 1.5 s for its turn.
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_second(1), |user: &&str| Some(user.to_string()))
    ///             .max_wait(Duration::from_millis(1500)),
    ///     )
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// let start = tokio::time::Instant::now();
    /// let (first, second, third) = tokio::join!(
    ///     svc.clone().oneshot("ann"),
    ///     svc.clone().oneshot("ann"),
    ///     svc.clone().oneshot("ann"),
    /// );
    /// assert!(first.is_ok());
    /// assert!(second.is_ok()); // waited 1 s for its turn
    /// assert!(third.unwrap_err().is::<RateLimited>()); // would have waited 2 s
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(start.elapsed(), Duration::from_secs(1));
    /// # let _ = start;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.edit_config(|c| c.max_wait = max_wait)
    }

    /// Shadow (dry-run) mode: decide and report every decision (to the
    /// observer, and `tracing`) as usual, but let every request through at
    /// once: denied requests, requests without a key and requests that
    /// would wait. Admitted requests consume quota as usual; denied ones
    /// consume nothing. Every refusal it lets through is reported with
    /// `enforced: false` (a [`Monitor`](crate::observe::Monitor) counts it
    /// as `shadow_limited`). Use it to try limits on live traffic before
    /// enforcing them.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Would one request a minute per user be too strict? Watch before enforcing it.
    /// let monitor = Monitor::new();
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string()))
    ///             .shadow()
    ///             .observer(monitor.clone()),
    ///     )
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// svc.clone().oneshot("ann").await?;
    /// svc.clone().oneshot("ann").await?; // over the limit, let through
    /// let snapshot = monitor.snapshot();
    /// assert_eq!(snapshot.layer("per_key").unwrap().shadow_limited, 1);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn shadow(self) -> Self {
        self.edit_config(|c| c.shadow = true)
    }

    /// Lets requests without a key through, unlimited (the default is to
    /// fail them with [`MissingKey`](crate::error::MissingKey)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// struct Request { api_key: Option<String> }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Limit API clients; requests without a key are someone else's concern.
    /// let svc = ServiceBuilder::new()
    ///     .layer(PerKeyLayer::new(Quota::per_minute(1), |req: &Request| req.api_key.clone()).allow_missing_key())
    ///     .service(service_fn(|_: Request| async { Ok::<_, BoxError>("ok") }));
    /// for _ in 0..3 {
    ///     svc.clone().oneshot(Request { api_key: None }).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn allow_missing_key(self) -> Self {
        self.edit_config(|c| c.on_missing = OnMissing::Allow)
    }

    /// Limits requests without a key under `key`, together.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
    ///
    /// struct Request { api_key: Option<String> }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// // Anonymous requests share one bucket, "anonymous".
    /// let layer = PerKeyLayer::new(Quota::per_minute(1), |req: &Request| req.api_key.clone())
    ///     .fallback_key("anonymous".to_string());
    /// let svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service(service_fn(|_: Request| async { Ok::<_, BoxError>("ok") }));
    /// svc.clone().oneshot(Request { api_key: None }).await?;
    /// let err = svc.clone().oneshot(Request { api_key: None }).await.unwrap_err();
    /// assert!(err.is::<RateLimited>());
    /// // A client with a key has its own bucket.
    /// svc.clone().oneshot(Request { api_key: Some("k1".into()) }).await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn fallback_key(self, key: K) -> Self {
        self.edit_config(|c| c.on_missing = OnMissing::Fallback(key))
    }

    /// Reports every decision to `observer` (replacing any set before).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::Event;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Note which users were limited.
    /// let limited = Arc::new(Mutex::new(Vec::new()));
    /// let log = limited.clone();
    /// let svc = ServiceBuilder::new()
    ///     .layer(
    ///         PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string())).observer(
    ///             move |event: &Event<'_>| {
    ///                 if let Event::Limited { key: Some(key), .. } = event {
    ///                     log.lock().unwrap().push(format!("{key:?}"));
    ///                 }
    ///             },
    ///         ),
    ///     )
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// for user in ["ann", "bob", "ann"] {
    ///     let _ = svc.clone().oneshot(user).await;
    /// }
    /// assert_eq!(*limited.lock().unwrap(), [r#""ann""#]);
    /// # }
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit_config(|c| c.observers = Observers::new(observer, super::core::LAYER))
    }

    /// A handle to inspect and reconfigure the limits while serving.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = PerKeyLayer::new(Quota::per_minute(1), |user: &&str| Some(user.to_string()));
    /// let handle = layer.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service(service_fn(|_: &str| async { Ok::<_, BoxError>("ok") }));
    /// svc.clone().oneshot("ann").await?;
    /// assert!(svc.clone().oneshot("ann").await.is_err());
    /// // While serving: let "ann" burst to 3. The larger burst adds 2 places.
    /// handle.set_policy("ann".to_string(), Quota::per_minute(1).with_burst(3));
    /// svc.clone().oneshot("ann").await?;
    /// svc.clone().oneshot("ann").await?;
    /// assert!(svc.clone().oneshot("ann").await.is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn handle(&self) -> PerKeyHandle<K, B> {
        PerKeyHandle::new(self.core.clone())
    }
}

impl<K, X, B> PerKeyLayer<K, X, B> {
    /// The extractor, the shared core and the settings, for adapters (HTTP,
    /// gRPC) that decide through the same core.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn into_parts(self) -> (X, Arc<Core<K, B>>, Arc<Config<K>>) {
        (self.extractor, self.core, self.config)
    }
}

impl<K, X: Clone, B> Clone for PerKeyLayer<K, X, B> {
    fn clone(&self) -> Self {
        PerKeyLayer {
            extractor: self.extractor.clone(),
            core: self.core.clone(),
            config: self.config.clone(),
            _key: PhantomData,
        }
    }
}

impl<S, K, X: Clone, B> Layer<S> for PerKeyLayer<K, X, B> {
    type Service = PerKey<S, K, X, B>;

    fn layer(&self, inner: S) -> Self::Service {
        PerKey::new(
            inner,
            self.extractor.clone(),
            self.core.clone(),
            self.config.clone(),
        )
    }
}

impl<K, X, B: fmt::Debug> fmt::Debug for PerKeyLayer<K, X, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKeyLayer")
            .field("extractor", &std::any::type_name::<X>())
            .field("core", &self.core)
            .field("max_wait", &self.config.max_wait)
            .finish_non_exhaustive()
    }
}

/// The layer's settling so far, to add to (a fresh one if it is shared).
fn take_settling<K>(c: &mut Config<K>) -> Settling {
    c.settle
        .take()
        .map(Arc::unwrap_or_clone)
        .unwrap_or_default()
}
