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

use std::fmt;

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
#[derive(Clone, Copy)]
pub struct ByCost<F>(pub(crate) F);

impl<F> fmt::Debug for ByCost<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ByCost")
            .field(&std::any::type_name::<F>())
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
