//! [`RateLimitByCost`]: the service of a [`RateLimitLayer`](super::RateLimitLayer)
//! given a cost function, which learns a request's cost in `call` and so
//! decides there (waiting, when it waits, in the response future).

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::future::{CostFuture, Unsent};
use super::layer::Mode;
use super::service::{LAYER, report_limited};
use crate::BoxError;
use crate::cost::{Charge, Cost, OnResponse, Settling};
use crate::error::{ExceedsBurst, RateLimited};
use crate::gcra::Reserved;
use crate::limiter::Limiter;
use crate::observe::{Event, Observers};

/// Enforces a rate limit charging each request its cost.
///
/// Made by [`RateLimitLayer::cost`](crate::RateLimitLayer::cost); see the
/// [`cost`](crate::cost) module for how a cost is charged.
///
/// Unlike [`RateLimit`](super::RateLimit), it cannot reserve capacity in
/// `poll_ready` (the cost is known only from the request): it decides in
/// `call`. In waiting mode, a request that must wait for its turn waits in
/// its response future, holding a readied clone of the inner service, so
/// the inner service must be `Clone` (axum routes, hyper and reqwest
/// clients are). A request dropped while waiting gives its charge back,
/// where no later request relied on it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// // 1 000 bytes a second: an upload of 1 500 bytes right after one of 1 000 waits 1.5 s.
/// let svc = ServiceBuilder::new()
///     .layer(RateLimitLayer::new(Quota::per_second(1_000).counting("bytes")).cost(|body: &Vec<u8>| body.len() as u32))
///     .service(service_fn(|body: Vec<u8>| async move { Ok::<_, BoxError>(body.len()) }));
/// let start = tokio::time::Instant::now();
/// svc.clone().oneshot(vec![0; 1_000]).await?;
/// svc.clone().oneshot(vec![0; 1_000]).await?;
/// # #[cfg(feature = "test-util")]
/// assert_eq!(start.elapsed(), Duration::from_secs(1));
/// # let _ = start;
/// # Ok(())
/// # }
/// ```
pub struct RateLimitByCost<S, F> {
    inner: S,
    limiter: Arc<Limiter>,
    mode: Mode,
    observers: Observers,
    cost: F,
    settle: Option<Arc<Settling>>,
}

impl<S, F> RateLimitByCost<S, F> {
    /// A request whose cost is above a quota's burst: it can never pass,
    /// so it fails at once (let through in shadow mode), never waits.
    #[cold]
    #[inline(never)]
    fn too_large<Req>(&mut self, req: Req, error: ExceedsBurst) -> CostFuture<S, Req>
    where
        S: Service<Req>,
    {
        let enforced = self.mode != Mode::Shadow;
        tracing::warn!(target: "tower_sluice::rate_limit", %error, enforced, "request can never pass");
        self.observers.emit(&Event::TooLarge {
            layer: LAYER,
            key: None,
            error: &error,
            enforced,
        });
        if enforced {
            CostFuture::rejected(error.into())
        } else {
            CostFuture::called(self.inner.call(req))
        }
    }

    pub(crate) fn new(
        inner: S,
        limiter: Arc<Limiter>,
        mode: Mode,
        observers: Observers,
        cost: F,
        settle: Option<Arc<Settling>>,
    ) -> Self {
        RateLimitByCost {
            inner,
            limiter,
            mode,
            observers,
            cost,
            settle,
        }
    }

    /// The layer's limiter, shared by every service and clone (see
    /// [`RateLimitLayer::limiter`](crate::RateLimitLayer::limiter)).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    crate::inner_accessors!(layer: "tower_sluice::RateLimitLayer::new(tower_sluice::Quota::per_second(10).counting(\"tokens\")).cost(|n: &u32| *n)");

    fn limited(&self, error: &RateLimited, enforced: bool) {
        report_limited(&self.observers, error, enforced);
    }
}

impl<S, F, Req> Service<Req> for RateLimitByCost<S, F>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    Req: 'static,
    F: Cost<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = CostFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let cost = self.cost.cost(&req);
        if cost == 0 {
            // Free: no charge and no decision.
            return CostFuture::called(self.inner.call(req));
        }
        let charge = Charge::cost(cost);
        if let Some(settling) = &self.settle {
            return self.settling(settling.clone(), req, charge);
        }
        match self.mode {
            Mode::Reject | Mode::Shadow => {
                let decision = match self.limiter.decide_checked(charge) {
                    Ok(decision) => decision,
                    Err(error) => return self.too_large(req, error),
                };
                if decision.is_allowed() {
                    self.observers.emit_allowed(LAYER, || decision);
                    return CostFuture::called(self.inner.call(req));
                }
                let error = RateLimited::from_decision(&decision);
                let enforced = self.mode == Mode::Reject;
                self.limited(&error, enforced);
                if enforced {
                    CostFuture::rejected(error.into())
                } else {
                    CostFuture::called(self.inner.call(req))
                }
            }
            Mode::Wait { max_wait } => match self
                .limiter
                .validate(charge)
                .map(|()| self.limiter.reserve(charge, max_wait))
            {
                Err(error) => self.too_large(req, error),
                Ok(reserved) => match reserved {
                    Ok(reserved) if reserved.wait == 0 => {
                        self.observers
                            .emit_allowed(LAYER, || self.limiter.snapshot_at(&reserved));
                        CostFuture::called(self.inner.call(req))
                    }
                    Ok(reserved) => {
                        self.observers
                            .emit_allowed(LAYER, || self.limiter.snapshot_at(&reserved));
                        self.delayed(req, reserved, charge)
                    }
                    Err(decision) => {
                        let error = RateLimited::from_decision(&decision);
                        self.limited(&error, true);
                        CostFuture::rejected(error.into())
                    }
                },
            },
        }
    }
}

impl<S, F> RateLimitByCost<S, F> {
    /// [`call`](Service::call) for a layer that settles: every decision is
    /// a reservation (its stamps say what a refund may give back), and the
    /// admitted request carries its settlement.
    fn settling<Req>(
        &mut self,
        settling: Arc<Settling>,
        mut req: Req,
        charge: Charge,
    ) -> CostFuture<S, Req>
    where
        S: Service<Req> + Clone,
        S::Response: 'static,
        Req: 'static,
    {
        if let Err(error) = self.limiter.validate(charge) {
            return self.too_large(req, error);
        }
        let max_wait = match self.mode {
            Mode::Wait { max_wait } => max_wait,
            Mode::Reject | Mode::Shadow => 0,
        };
        let reserved = match self.limiter.reserve(charge, max_wait) {
            Ok(reserved) => reserved,
            Err(decision) => {
                let error = RateLimited::from_decision(&decision);
                let enforced = self.mode != Mode::Shadow;
                self.limited(&error, enforced);
                return if enforced {
                    CostFuture::rejected(error.into())
                } else {
                    // Sent anyway, charged nothing: nothing to settle.
                    CostFuture::called(self.inner.call(req))
                };
            }
        };
        self.observers
            .emit_allowed(LAYER, || self.limiter.snapshot_at(&reserved));
        let limiter = self.limiter.clone();
        let on_response = OnResponse::new(&settling, &mut req, move |true_cost| {
            limiter.settle(&reserved, charge.cost, true_cost);
        });
        if reserved.wait == 0 {
            return CostFuture::called(self.inner.call(req)).settling(on_response);
        }
        self.delayed(req, reserved, charge).settling(on_response)
    }

    /// The future of a request admitted to be sent after `reserved.wait`:
    /// it takes the service that is ready (leaving a clone) and gives the
    /// reservation back if dropped before it is sent.
    fn delayed<Req>(&mut self, req: Req, reserved: Reserved, charge: Charge) -> CostFuture<S, Req>
    where
        S: Service<Req> + Clone,
    {
        let waited = Duration::from_nanos(reserved.wait);
        self.observers.emit(&Event::Waited {
            layer: LAYER,
            key: None,
            waited,
        });
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let unsent = Unsent::new(self.limiter.clone(), reserved, charge);
        CostFuture::delayed(waited, ready, req, unsent)
    }
}

impl<S: Clone, F: Clone> Clone for RateLimitByCost<S, F> {
    fn clone(&self) -> Self {
        RateLimitByCost::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.mode,
            self.observers.clone(),
            self.cost.clone(),
            self.settle.clone(),
        )
    }
}

impl<S: fmt::Debug, F> fmt::Debug for RateLimitByCost<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitByCost")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .field("mode", &self.mode)
            .field("cost", &std::any::type_name::<F>())
            .field("settle", &self.settle)
            .finish()
    }
}
