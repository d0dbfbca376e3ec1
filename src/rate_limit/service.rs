use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tower_service::Service;

use super::layer::Mode;
use crate::BoxError;
use crate::error::RateLimited;
use crate::future::ResponseFuture;
use crate::gcra::{Copied, Decision, Reserved as Reservation};
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
    /// This service's copy of the limiter's quota parameters: read with
    /// one load per decision while the quota does not change.
    params: Copied,
    /// Reused across waits so waiting allocates once per service.
    sleep: Option<Pin<Box<Sleep>>>,
}

/// The limiter and this instance's reservation; gives an unused
/// reservation back when dropped.
struct Slot {
    limiter: Arc<Limiter>,
    state: State,
    /// The reservation, while the state is `Waiting` or `Ready`: beside
    /// the state rather than in it, so that it is written once where it
    /// stays instead of moved into an enum.
    reserved: Reservation,
}

enum State {
    Idle,
    /// Capacity reserved; sleeping until it is due.
    Waiting,
    /// Capacity reserved and due.
    Ready,
    /// The wait would exceed `max_wait`: `call` fails with this.
    Denied(RateLimited),
}

impl Slot {
    fn new(limiter: Arc<Limiter>) -> Self {
        Slot {
            limiter,
            state: State::Idle,
            reserved: Reservation {
                wait: 0,
                now: 0,
                stamps: [0; crate::gcra::INLINE_CELLS],
            },
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let State::Waiting | State::Ready = self.state {
            self.limiter
                .refund(&self.reserved, crate::cost::Charge::ONE);
        }
    }
}

impl<S> RateLimit<S> {
    pub(crate) fn new(inner: S, limiter: Arc<Limiter>, mode: Mode, observers: Observers) -> Self {
        RateLimit {
            inner,
            mode,
            observers,
            params: limiter.copied(),
            slot: Slot::new(limiter),
            sleep: None,
        }
    }

    /// The layer's limiter, shared by every service and clone (see
    /// [`RateLimitLayer::limiter`](crate::RateLimitLayer::limiter)).
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.slot.limiter
    }

    crate::inner_accessors!(layer: "tower_sluice::RateLimitLayer::new(tower_sluice::Quota::per_second(10))");

    fn limited(&self, error: &RateLimited, enforced: bool) {
        report_limited(&self.observers, error, enforced);
    }

    /// Reports a request sent on `reserved`: the decision as of when it
    /// was due, without reading the clock again.
    #[inline]
    fn allowed(&self, reserved: &Reservation) {
        self.admitted(|| self.slot.limiter.snapshot_at(reserved));
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

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.mode {
            Mode::Wait { max_wait } => self.poll_reserve(cx, max_wait),
            Mode::Reject | Mode::Shadow => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        // The future is built here only, from a verdict of two words.
        match self.admit() {
            Ok(()) => ResponseFuture::untracked(self.inner.call(req)),
            Err(error) => ResponseFuture::refused(error),
        }
    }
}

/// Reports a refused (or, in shadow mode, a would-be refused) request to
/// `tracing` and the observers: what both rate-limit services do.
pub(super) fn report_limited(observers: &Observers, error: &RateLimited, enforced: bool) {
    tracing::info!(
        target: "tower_sluice::rate_limit",
        retry_after_ms = ms(error.retry_after()),
        policy = %error.quota(),
        enforced,
        "rate limited"
    );
    observers.emit(&Event::Limited {
        layer: LAYER,
        key: None,
        error,
        enforced,
    });
}

/// Reports an admitted request to `tracing` at debug level, out of line.
#[cold]
#[inline(never)]
fn trace_admitted(decision: &Decision) {
    tracing::debug!(
        target: "tower_sluice::rate_limit",
        remaining = decision.remaining(),
        "allowed"
    );
}

impl<S> RateLimit<S> {
    /// `poll_ready` in waiting mode: reserves capacity, then sleeps until
    /// it is due.
    fn poll_reserve<Req>(
        &mut self,
        cx: &mut Context<'_>,
        max_wait: u64,
    ) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        loop {
            match &mut self.slot.state {
                State::Idle => match self.slot.limiter.reserve_into(
                    &mut self.params,
                    max_wait,
                    &mut self.slot.reserved,
                ) {
                    Ok(()) if self.slot.reserved.wait == 0 => self.slot.state = State::Ready,
                    Ok(()) => {
                        let wait = self.slot.reserved.wait;
                        let deadline = tokio::time::Instant::now() + Duration::from_nanos(wait);
                        match &mut self.sleep {
                            Some(sleep) => sleep.as_mut().reset(deadline),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                        self.slot.state = State::Waiting;
                    }
                    Err(decision) => {
                        let error = RateLimited::from_decision(&decision);
                        self.limited(&error, true);
                        self.slot.state = State::Denied(error);
                    }
                },
                State::Waiting => {
                    let sleep = self.sleep.as_mut().expect("a waiting service has a timer");
                    ready!(sleep.as_mut().poll(cx));
                    let waited = Duration::from_nanos(self.slot.reserved.wait);
                    self.slot.state = State::Ready;
                    tracing::debug!(target: "tower_sluice::rate_limit", waited_ms = ms(waited), "waited");
                    self.observers.emit(&Event::Waited {
                        layer: LAYER,
                        key: None,
                        waited,
                    });
                }
                State::Ready => return self.inner.poll_ready(cx).map_err(Into::into),
                State::Denied(_) => return Poll::Ready(Ok(())),
            }
        }
    }

    /// Reports an admitted request. Inlined into every admitted request:
    /// with no observer and `DEBUG` events off, two loads and two
    /// branches; the rest is out of line.
    #[inline(always)]
    fn admitted(&self, decision: impl Fn() -> Decision) {
        use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
        // The check `debug!` starts with (the level filter), inline; the
        // event's own callsite check and the event are out of line.
        if tracing::Level::DEBUG <= STATIC_MAX_LEVEL
            && tracing::Level::DEBUG <= LevelFilter::current()
        {
            trace_admitted(&decision());
        }
        if self.observers.is_set() {
            self.observers.emit_allowed(LAYER, decision);
        }
    }

    /// Whether `call` sends the request (`Ok`) or fails with the error.
    #[inline(always)]
    fn admit(&mut self) -> Result<(), BoxError> {
        if let Mode::Wait { .. } = self.mode {
            return self.take_reservation();
        }
        let Some(stamp) = self.slot.limiter.check_with(&mut self.params) else {
            return self.admit_checked();
        };
        if stamp.allowed {
            // The decision is built only for whoever reads it.
            self.admitted(|| stamp.decision(&self.params));
            Ok(())
        } else {
            self.refused(&stamp.decision(&self.params))
        }
    }

    /// [`admit`](Self::admit) in rejecting or shadow mode on a limiter of
    /// several quotas.
    #[inline(never)]
    fn admit_checked(&mut self) -> Result<(), BoxError> {
        let decision = self.slot.limiter.check();
        if decision.is_allowed() {
            self.admitted(|| decision);
            Ok(())
        } else {
            self.refused(&decision)
        }
    }

    /// [`admit`](Self::admit) in waiting mode: the reservation
    /// `poll_ready` made, or its denial.
    fn take_reservation(&mut self) -> Result<(), BoxError> {
        match std::mem::replace(&mut self.slot.state, State::Idle) {
            // The reservation is spent: leaving `Ready` keeps the capacity used.
            State::Ready => {
                self.allowed(&self.slot.reserved);
                Ok(())
            }
            State::Denied(error) => Err(error.into()),
            State::Idle | State::Waiting => {
                panic!("RateLimit::call without poll_ready returning Ready(Ok(())) first")
            }
        }
    }

    /// A request the limit refused: the error, or in shadow mode `Ok` (the
    /// request is sent anyway). Out of line: the admitted path stays short.
    #[cold]
    #[inline(never)]
    fn refused(&mut self, decision: &Decision) -> Result<(), BoxError> {
        let error = RateLimited::from_decision(decision);
        let enforced = self.mode == Mode::Reject;
        self.limited(&error, enforced);
        if enforced { Err(error.into()) } else { Ok(()) }
    }
}

impl<S: Clone> Clone for RateLimit<S> {
    /// Shares the limit; the clone starts with no reservation of its own.
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            mode: self.mode,
            observers: self.observers.clone(),
            // Still valid, or refreshed on the clone's first decision.
            params: self.params,
            slot: Slot::new(self.slot.limiter.clone()),
            sleep: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.slot.state {
            State::Idle => "Idle",
            State::Waiting => "Waiting",
            State::Ready => "Ready",
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
