//! The response future of [`RateLimitByCost`](super::RateLimitByCost).
//! [`RateLimit`](super::RateLimit) answers with the crate's one
//! [called-or-refused future](crate::future::ResponseFuture).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::BoxError;
use crate::cost::{Charge, OnResponse};
use crate::gcra::Reserved;
use crate::limiter::Limiter;

pin_project! {
    /// The response future of [`RateLimitByCost`](super::RateLimitByCost):
    /// the inner service's future, a request waiting for its turn (with a
    /// readied clone of the inner service), or an error
    /// ([`RateLimited`](crate::error::RateLimited), [`ExceedsBurst`](crate::ExceedsBurst)).
    ///
    /// A request that waits is boxed with its timer: the rare path
    /// allocates so that the common one stays small.
    pub struct CostFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: CostKind<S, Req>,
        // The request's settlement, for a layer that settles.
        settle: Option<Box<OnResponse>>,
    }
}

pin_project! {
    #[project = CostKindProj]
    enum CostKind<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] future: S::Future },
        Delayed {
            sleep: Pin<Box<Sleep>>,
            send: Option<Box<(S, Req)>>,
            unsent: Option<Unsent>,
        },
        Ready {
            send: Option<Box<(S, Req)>>,
            unsent: Option<Unsent>,
        },
        Rejected { error: Option<BoxError> },
    }
}

/// What a waiting request reserved, given back (where no later request
/// relied on it) if the request is dropped before it is sent.
pub(crate) struct Unsent {
    /// `None` once the request is sent: its charge stays.
    limiter: Option<Arc<Limiter>>,
    reserved: Reserved,
    charge: Charge,
}

impl Unsent {
    pub(crate) fn new(limiter: Arc<Limiter>, reserved: Reserved, charge: Charge) -> Self {
        Unsent {
            limiter: Some(limiter),
            reserved,
            charge,
        }
    }

    fn sent(&mut self) {
        self.limiter = None;
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        if let Some(limiter) = &self.limiter {
            limiter.refund(&self.reserved, self.charge);
        }
    }
}

impl<S: Service<Req>, Req> CostFuture<S, Req> {
    pub(crate) fn called(future: S::Future) -> Self {
        CostFuture {
            kind: CostKind::Called { future },
            settle: None,
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        CostFuture {
            kind: CostKind::Rejected { error: Some(error) },
            settle: None,
        }
    }

    /// Sends `req` through the readied `inner` after `wait`.
    pub(crate) fn delayed(wait: Duration, inner: S, req: Req, unsent: Unsent) -> Self {
        CostFuture {
            kind: CostKind::Delayed {
                sleep: Box::pin(tokio::time::sleep(wait)),
                send: Some(Box::new((inner, req))),
                unsent: Some(unsent),
            },
            settle: None,
        }
    }

    /// Settles the request from its response (see
    /// [`RateLimitLayer::settle`](crate::RateLimitLayer::settle)).
    pub(crate) fn settling(mut self, settle: OnResponse) -> Self {
        self.settle = Some(Box::new(settle));
        self
    }
}

impl<S, Req> Future for CostFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let next = match this.kind.project() {
                CostKindProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    if let (Some(settle), Ok(res)) = (this.settle.take(), &result) {
                        settle.respond(res);
                    }
                    return Poll::Ready(result.map_err(Into::into));
                }
                CostKindProj::Rejected { error } => {
                    let error = error.take().expect("CostFuture polled after completion");
                    return Poll::Ready(Err(error));
                }
                CostKindProj::Delayed {
                    sleep,
                    send,
                    unsent,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    CostKind::Ready {
                        send: send.take(),
                        unsent: unsent.take(),
                    }
                }
                CostKindProj::Ready { send, unsent } => {
                    let (inner, _) =
                        &mut **send.as_mut().expect("CostFuture polled after completion");
                    // Never sent on an error: the charge is given back on drop.
                    ready!(inner.poll_ready(cx)).map_err(Into::into)?;
                    if let Some(unsent) = unsent.as_mut() {
                        unsent.sent();
                    }
                    let (mut inner, req) =
                        *send.take().expect("CostFuture polled after completion");
                    CostKind::Called {
                        future: inner.call(req),
                    }
                }
            };
            self.as_mut().project().kind.set(next);
        }
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for CostFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            CostKind::Called { .. } => "Called",
            CostKind::Delayed { .. } => "Delayed",
            CostKind::Ready { .. } => "Ready",
            CostKind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("CostFuture").field("state", &state).finish()
    }
}
