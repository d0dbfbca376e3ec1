use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Mode;
use crate::BoxError;
use crate::error::RateLimited;
use crate::gcra::Reserved as Reservation;
use crate::limiter::Limiter;
use crate::observe::{Event, Observers, ms};

pub(super) const LAYER: &str = "rate_limit";

/// Enforces a rate limit on the requests to the inner service.
///
/// Made by [`RateLimitLayer`](crate::RateLimitLayer); see the
/// [module docs](crate::rate_limit).
///
/// Clones share the limit. Each clone keeps only its own pending
/// reservation, which is not cloned.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
/// use tower_sluice::{Quota, RateLimit, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let mut a: RateLimit<_> = RateLimitLayer::new(Quota::per_minute(2))
///     .layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let mut b = a.clone();
/// // Each clone reserves its own slot in `ready`, from the one shared bucket.
/// a.ready().await?;
/// b.ready().await?;
/// assert!(!a.limiter().peek().is_allowed(), "both slots are taken");
/// // A readied service dropped without a call gives its slot back.
/// drop(b);
/// assert!(a.limiter().peek().is_allowed());
/// assert_eq!(a.call(1).await?, 1);
/// # Ok(())
/// # }
/// ```
pub struct RateLimit<S> {
    inner: S,
    mode: Mode,
    observers: Observers,
    slot: Slot,
    /// Reused across waits so waiting allocates once per service.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The limiter and this instance's reservation; gives an unused
/// reservation back when dropped.
struct Slot {
    limiter: Arc<Limiter>,
    state: State,
}

enum State {
    Idle,
    /// Capacity reserved; sleeping until it is due.
    Waiting(Reservation),
    /// Capacity reserved and due.
    Ready(Reservation),
    /// The wait would exceed `max_wait`: `call` fails with this.
    Denied(RateLimited),
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let State::Waiting(r) | State::Ready(r) = &self.state {
            self.limiter.refund(r, crate::cost::Charge::ONE);
        }
    }
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, limiter: Arc<Limiter>, mode: Mode, observers: Observers) -> Self {
        RateLimit {
            inner,
            mode,
            observers,
            slot: Slot {
                limiter,
                state: State::Idle,
            },
            sleep: None,
        }
    }

    /// The shared limiter.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tower::{service_fn, BoxError, Layer};
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(Quota::per_minute(60));
    /// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// // The layer's limiter, not a copy.
    /// assert!(Arc::ptr_eq(svc.limiter(), layer.limiter()));
    /// ```
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.slot.limiter
    }

    crate::inner_accessors!(layer: "tower_sluice::RateLimitLayer::new(tower_sluice::Quota::per_second(10))");

    fn limited(&self, error: &RateLimited, enforced: bool) {
        tracing::info!(
            target: "tower_sluice::rate_limit",
            retry_after_ms = ms(error.retry_after()),
            policy = %error.quota(),
            enforced,
            "rate limited"
        );
        self.observers.emit(&Event::Limited {
            layer: LAYER,
            key: None,
            error,
            enforced,
        });
    }

    /// Reports a request sent on `reserved`: the decision as of when it
    /// was due, without reading the clock again.
    fn allowed(&self, reserved: &Reservation) {
        tracing::debug!(target: "tower_sluice::rate_limit", "allowed");
        self.observers
            .emit_allowed(LAYER, || self.slot.limiter.snapshot_at(reserved));
    }
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Mode::Wait { max_wait } = self.mode else {
            return self.inner.poll_ready(cx).map_err(Into::into);
        };
        loop {
            match &mut self.slot.state {
                State::Idle => match self
                    .slot
                    .limiter
                    .reserve(crate::cost::Charge::ONE, max_wait)
                {
                    Ok(r) if r.wait == 0 => self.slot.state = State::Ready(r),
                    Ok(r) => {
                        let deadline = tokio::time::Instant::now() + Duration::from_nanos(r.wait);
                        match &mut self.sleep {
                            Some(sleep) => sleep.as_mut().reset(deadline),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        self.slot.state = State::Waiting(r);
                    }
                    Err(decision) => {
                        let error = RateLimited::from_decision(&decision);
                        self.limited(&error, true);
                        self.slot.state = State::Denied(error);
                    }
                },
                State::Waiting(r) => {
                    let sleep = self.sleep.as_mut().expect("a waiting service has a timer");
                    ready!(sleep.as_mut().poll(cx));
                    let waited = Duration::from_nanos(r.wait);
                    let State::Waiting(r) = std::mem::replace(&mut self.slot.state, State::Idle)
                    else {
                        unreachable!()
                    };
                    self.slot.state = State::Ready(r);
                    tracing::debug!(target: "tower_sluice::rate_limit", waited_ms = ms(waited), "waited");
                    self.observers.emit(&Event::Waited {
                        layer: LAYER,
                        key: None,
                        waited,
                    });
                }
                State::Ready(_) => return self.inner.poll_ready(cx).map_err(Into::into),
                State::Denied(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.mode {
            Mode::Reject | Mode::Shadow => {
                let decision = self.slot.limiter.check();
                if decision.is_allowed() {
                    tracing::debug!(
                        target: "tower_sluice::rate_limit",
                        remaining = decision.remaining(),
                        "allowed"
                    );
                    self.observers.emit_allowed(LAYER, || decision);
                    ResponseFuture::called(self.inner.call(req))
                } else {
                    let error = RateLimited::from_decision(&decision);
                    let enforced = self.mode == Mode::Reject;
                    self.limited(&error, enforced);
                    if enforced {
                        ResponseFuture::denied(error)
                    } else {
                        ResponseFuture::called(self.inner.call(req))
                    }
                }
            }
            Mode::Wait { .. } => match std::mem::replace(&mut self.slot.state, State::Idle) {
                // The reservation is spent: dropping it keeps the capacity used.
                State::Ready(reserved) => {
                    self.allowed(&reserved);
                    ResponseFuture::called(self.inner.call(req))
                }
                State::Denied(error) => ResponseFuture::denied(error),
                State::Idle | State::Waiting(_) => {
                    panic!("RateLimit::call without poll_ready returning Ready(Ok(())) first")
                }
            },
        }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    /// Shares the limit; the clone starts with no reservation of its own.
    fn clone(&self) -> Self {
        RateLimit::new(
            self.inner.clone(),
            self.slot.limiter.clone(),
            self.mode,
            self.observers.clone(),
        )
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.slot.state {
            State::Idle => "Idle",
            State::Waiting(_) => "Waiting",
            State::Ready(_) => "Ready",
            State::Denied(_) => "Denied",
        };
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.slot.limiter)
            .field("mode", &self.mode)
            .field("state", &state)
            .finish()
    }
}
