//! A request's cost: [`Cost`], the function a limiting layer asks what a
//! request costs, and [`One`], the default.
//!
//! Some limits count requests ("60 requests a minute"), others count what
//! the requests cost: the tokens of a prompt sent to a model, the bytes of
//! an upload, the credits of a call. A [`Quota`](crate::Quota) says which
//! it counts ([`Quota::counting`](crate::Quota::counting)); a layer given a
//! cost function with `.cost(f)`
//! ([`RateLimitLayer::cost`](crate::RateLimitLayer::cost),
//! [`PerKeyLayer::cost`](crate::PerKeyLayer::cost), or
//! [`Limiter::check_cost`](crate::Limiter::check_cost) directly) charges
//! each request:
//!
//! * **1** to every quota that counts requests;
//! * **its cost** to every quota that counts a unit (tokens, bytes, …).
//!
//! All the quotas of a policy decide together: a refused request consumes
//! from none of them, and the refusal names the quota that refused it
//! (with its unit) and when to retry.
//!
//! * A request of cost **0** passes without any charge and without a
//!   decision (a cached answer, a health check).
//! * A cost **above the burst** of a quota it is charged to could never
//!   pass: it fails at once with [`ExceedsBurst`](crate::ExceedsBurst),
//!   which names the cost, the burst and the quota, never a wait (over
//!   HTTP: `413 Content Too Large`).
//!
//! A layer without a cost function uses [`One`], which the compiler folds
//! away: it costs nothing at run time.
//!
//! # Examples
//!
//! ```
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//! use tower_sluice::{Limiter, Quota, RateLimitLayer, RateLimited};
//!
//! struct Prompt { tokens: u32 }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! // 60 requests a minute AND 1 000 tokens a minute, decided together.
//! let limiter = Limiter::new(Quota::per_minute(60))
//!     .and(Quota::per_minute(1_000).counting("tokens"));
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         RateLimitLayer::with_limiter(limiter.into())
//!             .reject()
//!             .cost(|p: &Prompt| p.tokens),
//!     )
//!     .service(service_fn(|p: Prompt| async move { Ok::<_, BoxError>(p.tokens) }));
//! svc.clone().oneshot(Prompt { tokens: 800 }).await?;
//! // 200 tokens left: a prompt of 300 is refused, and consumes nothing.
//! let err = svc.clone().oneshot(Prompt { tokens: 300 }).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.quota().unit(), "tokens");
//! assert!(err.to_string().contains("1000 tokens per 1m"));
//! svc.clone().oneshot(Prompt { tokens: 200 }).await?;
//! # Ok(())
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a request costs, in the units of the quotas that count cost.
///
/// Implemented for closures `Fn(&Req) -> u32` and for [`One`]. Keep it
/// cheap: it runs once per request, before the decision (an estimate read
/// from a header or the request body's declared length, say).
///
/// # Examples
///
/// ```
/// use tower_sluice::cost::{Cost, One};
///
/// // A closure is a cost function.
/// let bytes = |body: &Vec<u8>| u32::try_from(body.len()).unwrap_or(u32::MAX);
/// assert_eq!(bytes.cost(&vec![0; 1500]), 1500);
/// // The default: every request costs 1.
/// assert_eq!(Cost::<Vec<u8>>::cost(&One, &vec![0; 1500]), 1);
///
/// // Or a type of your own.
/// struct ByWeight;
/// impl Cost<(&'static str, u32)> for ByWeight {
///     fn cost(&self, req: &(&'static str, u32)) -> u32 {
///         req.1
///     }
/// }
/// assert_eq!(ByWeight.cost(&("batch", 40)), 40);
/// ```
pub trait Cost<Req> {
    /// The cost of `req`: 0 lets it through without a charge.
    fn cost(&self, req: &Req) -> u32;
}

impl<Req, F> Cost<Req> for F
where
    F: Fn(&Req) -> u32,
{
    #[inline]
    fn cost(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// The default cost: every request costs 1. Zero-sized; a layer using it
/// decides exactly as one without a cost function.
///
/// # Examples
///
/// ```
/// use tower_sluice::cost::{Cost, One};
///
/// assert_eq!(Cost::<&str>::cost(&One, &"anything"), 1);
/// assert_eq!(std::mem::size_of::<One>(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct One;

impl<Req> Cost<Req> for One {
    #[inline(always)]
    fn cost(&self, _: &Req) -> u32 {
        1
    }
}

/// A layer's cost function, as [`RateLimitLayer::cost`](crate::RateLimitLayer::cost)
/// keeps it: the type a layer with a cost function is named by.
///
/// # Examples
///
/// ```
/// use tower_sluice::cost::ByCost;
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// fn tokens(prompt: &String) -> u32 {
///     u32::try_from(prompt.len() / 4).unwrap_or(u32::MAX)
/// }
/// let layer: RateLimitLayer<ByCost<fn(&String) -> u32>> =
///     RateLimitLayer::new(Quota::per_minute(10_000).counting("tokens")).cost(tokens as fn(&String) -> u32);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct ByCost<F> {
    pub(crate) cost: F,
    /// How requests are settled at their true cost, if they are.
    pub(crate) settle: Option<Arc<Settling>>,
}

impl<F> ByCost<F> {
    pub(crate) fn new(cost: F) -> Self {
        ByCost { cost, settle: None }
    }

    /// The same, settling as `change` makes the layer's settling.
    pub(crate) fn settling(mut self, change: impl FnOnce(Settling) -> Settling) -> Self {
        let settling = self.settle.as_deref().cloned().unwrap_or_default();
        self.settle = Some(Arc::new(change(settling)));
        self
    }
}

impl<F> fmt::Debug for ByCost<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByCost")
            .field("cost", &std::any::type_name::<F>())
            .field("settle", &self.settle)
            .finish()
    }
}

/// What one decision charges: `requests` to every quota that counts
/// requests, `cost` to every quota that counts a unit of cost.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) requests: u32,
    pub(crate) cost: u32,
}

impl Charge {
    /// One request of cost 1 (a plain decision).
    pub(crate) const ONE: Charge = Charge::n(1);

    /// `n` to every quota, whatever it counts (a batch, as
    /// [`Limiter::check_n`](crate::Limiter::check_n)).
    #[inline]
    pub(crate) const fn n(n: u32) -> Self {
        Charge {
            requests: n,
            cost: n,
        }
    }

    /// One request costing `cost`.
    #[inline]
    pub(crate) const fn cost(cost: u32) -> Self {
        Charge { requests: 1, cost }
    }

    /// What a quota of the given kind is charged.
    #[inline(always)]
    pub(crate) const fn of(self, counts_cost: bool) -> u32 {
        if counts_cost {
            self.cost
        } else {
            self.requests
        }
    }
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Charge({} requests, cost {})", self.requests, self.cost)
    }
}

/// A request's settlement: reports its true cost once it is known (the
/// `usage` of a model's answer, the bytes a stream sent), after the
/// request was charged an estimate.
///
/// A layer set to settle ([`PerKeyLayer::settle`](crate::PerKeyLayer::settle),
/// [`PerKeyLayer::settle_handle`](crate::PerKeyLayer::settle_handle), and the
/// same on the shared limit: [`RateLimitLayer::settle`](crate::RateLimitLayer::settle),
/// [`RateLimitLayer::settle_handle`](crate::RateLimitLayer::settle_handle)) hands one to
/// each admitted request that has a place for it ([`Settleable`]: an
/// `http::Request` keeps it in its extensions), where a handler or the end
/// of a stream calls [`settle`](Self::settle). Clones share one
/// settlement.
///
/// * **Only the first settle counts**, whichever clone calls it, and
///   whether it came from the handle or the layer's response hook.
/// * **Dropped without settling**, the request keeps its estimate.
/// * Settling charges the difference to the quotas that count cost
///   (quotas that count requests keep their 1): more than the estimate is
///   a debt that later requests wait out (or are refused for) as if the
///   true cost had been charged up front, beyond the burst if need be;
///   less is given back where no request admitted since relied on it (else
///   the estimate stays: settling never makes room that was not there).
/// * **Where the key lives**: in memory, a settlement is one more
///   compare-exchange per quota that counts cost; on Redis it is one
///   atomic script call sent in the background (the caller never waits;
///   one that fails is dropped and counted, and the estimate stays). See
///   the Redis backend (`backend::redis`, feature `redis`).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::cost::Settlement;
/// use tower_sluice::{PerKeyLayer, Quota, RateLimited};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // 1 000 tokens a minute per user; each prompt is charged an estimate
/// // of 100 up front and settled by the handler at what it really used.
/// let layer = PerKeyLayer::new(Quota::per_minute(1_000).counting("tokens"), |req: &http::Request<u32>| {
///     Some(req.headers()["user"].to_str().unwrap().to_owned())
/// })
/// .cost(|_: &http::Request<u32>| 100)
/// .settle_handle::<http::Request<u32>>();
/// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: http::Request<u32>| async move {
///     let used = *req.body();
///     req.extensions().get::<Settlement>().unwrap().settle(used);
///     Ok::<_, BoxError>(http::Response::new(()))
/// }));
/// let prompt = |used: u32| http::Request::builder().header("user", "ann").body(used).unwrap();
/// svc.clone().oneshot(prompt(950)).await?; // charged 100, settled at 950
/// let err = svc.clone().oneshot(prompt(10)).await.unwrap_err();
/// assert!(err.is::<RateLimited>()); // 50 tokens left: an estimate of 100 waits
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Settlement(std::sync::Arc<SettleOnce>);

type SettleFn = Box<dyn FnOnce(u32) + Send>;

struct SettleOnce(std::sync::Mutex<Option<SettleFn>>);

impl Settlement {
    /// A settlement that runs `settle` with the true cost, once.
    pub(crate) fn new(settle: impl FnOnce(u32) + Send + 'static) -> Self {
        Settlement(std::sync::Arc::new(SettleOnce(std::sync::Mutex::new(
            Some(Box::new(settle)),
        ))))
    }

    /// Settles the request at its true cost `true_cost`, in the units of
    /// the quotas that count cost. Returns whether this call settled it:
    /// `false` when it was settled before (only the first settle counts).
    ///
    /// # Examples
    ///
    /// See the [type's docs](Self).
    pub fn settle(&self, true_cost: u32) -> bool {
        use crate::util::IgnorePoison;
        let settle = self.0.0.lock().ignore_poison().take();
        match settle {
            Some(settle) => {
                settle(true_cost);
                true
            }
            None => false,
        }
    }

    /// Whether the request has been settled (by this settlement or a
    /// clone).
    pub fn is_settled(&self) -> bool {
        use crate::util::IgnorePoison;
        self.0.0.lock().ignore_poison().is_none()
    }
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("settled", &self.is_settled())
            .finish()
    }
}

/// A request that can carry its [`Settlement`] to the handler.
///
/// Implemented for `http::Request` (with the `http` feature), which keeps
/// it in its extensions: a handler reads it with
/// `req.extensions().get::<Settlement>()` (in axum, the
/// `Extension<Settlement>` extractor). Implement it for a request type of
/// your own to carry the handle; a layer's
/// [`settle_handle`](crate::PerKeyLayer::settle_handle) says which request
/// type to hand it to.
///
/// # Examples
///
/// ```
/// use tower_sluice::cost::{Settleable, Settlement};
///
/// struct Job { prompt: String, settlement: Option<Settlement> }
///
/// impl Settleable for Job {
///     fn attach(&mut self, settlement: Settlement) {
///         self.settlement = Some(settlement);
///     }
/// }
/// # let _ = Job { prompt: String::new(), settlement: None }.prompt;
/// ```
pub trait Settleable {
    /// Keeps `settlement` where the request's handler finds it.
    fn attach(&mut self, settlement: Settlement);
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> Settleable for http::Request<B> {
    fn attach(&mut self, settlement: Settlement) {
        self.extensions_mut().insert(settlement);
    }
}

/// How a layer settles (shared by the per-key layer and the rate limit): a hook reading the true cost from a response of
/// type `Res`, and where to hand the handle (a request of type `Req`).
#[derive(Default, Clone)]
pub(crate) struct Settling {
    /// A `Hook<Res>`.
    hook: Option<Arc<dyn Any + Send + Sync>>,
    /// The response type the hook reads, for the warning when the
    /// service answers another.
    hook_type: &'static str,
    /// Whether that warning was given (once per layer).
    warned: Arc<AtomicBool>,
    attach: Option<fn(&mut dyn Any, &Settlement)>,
}

type HookFn<Res> = dyn Fn(&Res) -> Option<u32> + Send + Sync;

struct Hook<Res>(Box<HookFn<Res>>);

fn attach_to<Req: Settleable + 'static>(req: &mut dyn Any, settlement: &Settlement) {
    if let Some(req) = req.downcast_mut::<Req>() {
        req.attach(settlement.clone());
    }
}

impl Settling {
    pub(crate) fn with_hook<Res: 'static>(
        mut self,
        hook: impl Fn(&Res) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.hook = Some(Arc::new(Hook::<Res>(Box::new(hook))));
        self.hook_type = std::any::type_name::<Res>();
        self
    }

    pub(crate) fn with_handle<Req: Settleable + 'static>(mut self) -> Self {
        self.attach = Some(attach_to::<Req>);
        self
    }

    /// Hands `settlement` to `req`, if the layer was told to and `req` is
    /// of the type it was told.
    #[inline]
    pub(crate) fn attach<Req: 'static>(&self, req: &mut Req, settlement: &Settlement) {
        if let Some(attach) = self.attach {
            attach(req, settlement);
        }
    }

    /// The true cost the hook reads from `res` (`None`: keep the estimate,
    /// or no hook for responses of this type, which is warned about once).
    #[inline]
    pub(crate) fn read<Res: 'static>(&self, res: &Res) -> Option<u32> {
        match self.hook.as_ref()?.downcast_ref::<Hook<Res>>() {
            Some(hook) => (hook.0)(res),
            None => {
                self.mismatch::<Res>();
                None
            }
        }
    }

    /// The hook reads another type of response than the service's: it can
    /// never be called, which a user learns from one warning.
    #[cold]
    #[inline(never)]
    fn mismatch<Res>(&self) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "tower_sluice::cost",
                hook = self.hook_type,
                response = std::any::type_name::<Res>(),
                "the settle hook reads another response type than the service answers: \
                 it is never called and requests keep their estimate"
            );
        }
    }
}

impl fmt::Debug for Settling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settling")
            .field("hook", &self.hook.is_some())
            .field("handle", &self.attach.is_some())
            .finish()
    }
}

/// A request's settlement on its way to its response, for a layer that
/// settles: settled by the layer's hook when the response comes, unless a
/// handler settled it first.
pub(crate) struct OnResponse {
    settlement: Settlement,
    settling: Arc<Settling>,
}

impl OnResponse {
    /// Runs `settle` with the true cost, once: handed to `req` where
    /// `settling` says, and read from the response by its hook.
    pub(crate) fn new<Req: 'static>(
        settling: &Arc<Settling>,
        req: &mut Req,
        settle: impl FnOnce(u32) + Send + 'static,
    ) -> Self {
        let settlement = Settlement::new(settle);
        settling.attach(req, &settlement);
        OnResponse {
            settlement,
            settling: settling.clone(),
        }
    }

    /// The response came: the hook's true cost, if it reads one, settles.
    pub(crate) fn respond<Res: 'static>(self, res: &Res) {
        if let Some(true_cost) = self.settling.read(res) {
            self.settlement.settle(true_cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hook_of_another_response_type_reads_nothing_and_warns_once() {
        let settling = Settling::default().with_hook(|n: &u32| Some(*n));
        assert_eq!(settling.read(&7_u32), Some(7));
        assert!(!settling.warned.load(Ordering::Relaxed));
        // The service answers `String`s: the hook can never be called.
        assert_eq!(settling.read(&String::from("answer")), None);
        assert!(settling.warned.load(Ordering::Relaxed));
        assert!(settling.hook_type.contains("u32"));
        // No hook at all: nothing to warn about.
        let none = Settling::default();
        assert_eq!(none.read(&1_u8), None);
        assert!(!none.warned.load(Ordering::Relaxed));
    }
}
