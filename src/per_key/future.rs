//! The response future of [`PerKey`](super::PerKey).

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::core::{report_allowed, report_denied};
use super::layer::Config;
use super::settle::Pending;
use crate::BoxError;
use crate::backend::{Grant, InFlight, Refund};
use crate::clock::Stamp;
use crate::observe::{EventKey, RowHint};

use super::core::LAYER;

pin_project! {
    /// The response future of [`PerKey`](super::PerKey): the inner
    /// service's future, or an error.
    ///
    /// A request admitted at once holds the inner future alone (with the
    /// key's in-flight slot, if its policy caps them); what an observer
    /// needs to report its completion, and a request that waits for its
    /// turn, is being decided by a remote backend or is settled at its
    /// true cost, are kept on the heap: the future stays small (axum and
    /// hyper move it).
    pub struct ResponseFuture<S, Req, F, K>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, F, K>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, F, K>
    where
        S: Service<Req>,
    {
        // Admitted at once, with nothing to hold or report: the common case.
        Called {
            #[pin]
            future: S::Future,
        },
        // Any other state.
        Other {
            #[pin]
            other: Other<S, Req, F, K>,
        },
    }
}

pin_project! {
    #[project = OtherProj]
    enum Other<S, Req, F, K>
    where
        S: Service<Req>,
    {
        // Admitted at once, holding an in-flight slot or followed by an
        // observer.
        Held {
            #[pin]
            future: S::Future,
            in_flight: Option<InFlight>,
            observed: Option<Box<Observed<K>>>,
        },
        Rejected {
            error: Option<BoxError>,
        },
        // Waiting, being decided, or settled (rare: boxed).
        Full {
            full: Pin<Box<Full<S, Req, F, K>>>,
        },
    }
}

pin_project! {
    /// A request on its way through every state a decision can leave it
    /// in, observed and settled as configured.
    struct Full<S, Req, F, K>
    where
        S: Service<Req>,
    {
        #[pin]
        dispatch: Dispatch<S, Req, F>,
        observed: Option<Observed<K>>,
        settle: Option<Pending>,
    }
}

/// What an observed request needs to report its completion.
///
/// It holds the layer's configuration (one reference count, where the
/// observer is) rather than a clone of the observer: the future stays
/// small (axum and hyper move it).
pub(crate) struct Observed<K> {
    key: Option<K>,
    config: Arc<Config<K>>,
    /// Set for the requests the observer wants timed.
    start: Option<Stamp>,
    /// Where a bound monitor counted the request's admission.
    row: RowHint,
}

impl<K> Observed<K> {
    /// `row`: what reporting the request's admission returned.
    ///
    /// Out of line: the service's `call` stays as small without an
    /// observer as it was before there was one to build.
    #[inline(never)]
    pub(crate) fn new(key: Option<K>, config: &Arc<Config<K>>, row: RowHint) -> Self {
        Observed {
            key,
            // A request a sampling monitor drew is timed: that is what
            // its sample is for.
            start: (row.sampled() || config.observers.time_this_call()).then(Stamp::now),
            config: config.clone(),
            row,
        }
    }
}

impl<K: fmt::Debug + Hash> Observed<K> {
    /// Reports [`Event::Completed`] for the request, `success` as judged by
    /// the caller.
    ///
    /// Out of line, with a bound monitor's whole count of the completion
    /// inlined into it: one call per observed completion.
    #[inline(never)]
    pub(crate) fn complete(self, success: bool) {
        self.config.observers.emit_completed(
            LAYER,
            self.key.as_ref().map(|k| k as &dyn EventKey),
            self.row,
            self.start.map(|s| s.elapsed()),
            success,
        );
    }
}

impl<S: Service<Req>, Req, F, K> ResponseFuture<S, Req, F, K> {
    /// The inner service's `future`, called at once with nothing to hold
    /// or report (the common case), built in place.
    #[inline]
    pub(crate) fn called(future: S::Future) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    /// The inner service's `future`, called at once, holding `in_flight`
    /// until it is dropped and reporting its completion if `observed`.
    #[inline]
    pub(crate) fn held(
        future: S::Future,
        in_flight: Option<InFlight>,
        observed: Option<Observed<K>>,
    ) -> Self {
        if in_flight.is_none() && observed.is_none() {
            return Self::called(future);
        }
        Self::other(Other::Held {
            future,
            in_flight,
            observed: observed.map(Box::new),
        })
    }

    /// Fails with `error`.
    pub(crate) fn rejected(error: BoxError) -> Self {
        Self::other(Other::Rejected { error: Some(error) })
    }

    /// A request sent as `dispatch` says (boxed), observed and settled as
    /// configured.
    pub(crate) fn dispatch(
        dispatch: Dispatch<S, Req, F>,
        observed: Option<Observed<K>>,
        settle: Option<Pending>,
    ) -> Self {
        Self::other(Other::Full {
            full: Box::pin(Full {
                dispatch,
                observed,
                settle,
            }),
        })
    }

    fn other(other: Other<S, Req, F, K>) -> Self {
        ResponseFuture {
            kind: Kind::Other { other },
        }
    }
}

impl<S, Req, F, K> Future for ResponseFuture<S, Req, F, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    F: Future<Output = Result<Grant, BoxError>>,
    K: fmt::Debug + Hash,
{
    type Output = Result<S::Response, BoxError>;

    // The common state inline, the others out of line: a small poll that
    // callers inline.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Other { other } => poll_other(other, cx),
        }
    }
}

/// Polls a request in any state but the common one.
#[inline(never)]
fn poll_other<S, Req, F, K>(
    other: Pin<&mut Other<S, Req, F, K>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    F: Future<Output = Result<Grant, BoxError>>,
    K: fmt::Debug + Hash,
{
    match other.project() {
        OtherProj::Held {
            future, observed, ..
        } => {
            let result = ready!(future.poll(cx));
            if let Some(o) = observed.take() {
                o.complete(result.is_ok());
            }
            Poll::Ready(result.map_err(Into::into))
        }
        OtherProj::Rejected { error } => {
            Poll::Ready(Err(error.take().expect("polled after completion")))
        }
        OtherProj::Full { full } => full.as_mut().poll_full(cx),
    }
}

impl<S, Req, F, K> Full<S, Req, F, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: 'static,
    F: Future<Output = Result<Grant, BoxError>>,
    K: fmt::Debug + Hash,
{
    fn poll_full(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, BoxError>> {
        let mut this = self.project();
        let observed = &mut *this.observed;
        let shadow = this.dispatch.is_shadow();
        let settle = &*this.settle;
        let dispatched = ready!(this.dispatch.as_mut().poll_dispatch(cx, |decided| {
            if let (Some(pending), Ok(grant)) = (settle, decided) {
                pending.decided(grant.charged());
            }
            // A remote backend decided: report it as a local decision is.
            if let Some(Observed {
                key: Some(key),
                config,
                row,
                ..
            }) = observed
            {
                let observers = &config.observers;
                match decided {
                    Ok(grant) => *row = report_allowed(observers, key, grant),
                    Err(error) => report_denied(observers, shadow, key, error),
                }
            }
        }));
        match dispatched {
            Dispatched::Inner(result) => {
                if let Some(o) = this.observed.take() {
                    o.complete(result.is_ok());
                }
                if let (Some(pending), Ok(res)) = (this.settle.take(), &result) {
                    pending.respond(res);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            Dispatched::Rejected(error) => Poll::Ready(Err(error)),
        }
    }
}

impl<S: Service<Req>, Req, F, K> fmt::Debug for ResponseFuture<S, Req, F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. }
            | Kind::Other {
                other: Other::Held { .. },
            } => "Called",
            Kind::Other {
                other: Other::Rejected { .. },
            } => "Rejected",
            Kind::Other {
                other: Other::Full { full },
            } => full.dispatch.name(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

pin_project! {
    /// A request's way to the inner service after its key's decision,
    /// shared by every per-key service: called at once, waiting for its
    /// turn, being decided by a remote backend, or rejected.
    ///
    /// A request that waits is boxed (with its timer): the rare path
    /// allocates so that the common one, called at once, stays small.
    #[project = DispatchProj]
    pub(crate) enum Dispatch<S, Req, F>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            future: S::Future,
            in_flight: Option<InFlight>,
        },
        Delayed {
            sleep: Pin<Box<Sleep>>,
            send: Option<Box<(S, Req)>>,
            in_flight: Option<InFlight>,
            unsent: Unsent,
        },
        Ready {
            send: Option<Box<(S, Req)>>,
            in_flight: Option<InFlight>,
            unsent: Unsent,
        },
        Deciding {
            #[pin]
            decision: F,
            send: Option<Box<(S, Req)>>,
            shadow: bool,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

/// What a request that waits for its turn charged, given back if it is
/// dropped before it is sent (in memory, where nothing admitted since relied
/// on it; see [`Refund`]).
#[derive(Default)]
pub(crate) struct Unsent(Option<Refund>);

impl Unsent {
    /// The request is sent: its charge stays.
    fn sent(&mut self) {
        self.0 = None;
    }

    fn take(&mut self) -> Unsent {
        Unsent(self.0.take())
    }
}

impl Drop for Unsent {
    fn drop(&mut self) {
        if let Some(refund) = self.0.take() {
            refund.give_back();
        }
    }
}

/// How a [`Dispatch`] ended: the inner service's result, or the limiter's
/// rejection.
pub(crate) enum Dispatched<T, E> {
    Inner(Result<T, E>),
    Rejected(BoxError),
}

impl<S: Service<Req>, Req, F> Dispatch<S, Req, F> {
    /// Calls `inner` now, holding `in_flight` until the response.
    #[inline]
    pub(crate) fn call(inner: &mut S, req: Req, in_flight: Option<InFlight>) -> Self {
        Dispatch::Called {
            future: inner.call(req),
            in_flight,
        }
    }

    /// Sends the request as `grant` says: now through `inner`, or after
    /// its wait through a readied service taken from `inner` (a clone is
    /// left in its place).
    #[inline]
    pub(crate) fn granted(inner: &mut S, req: Req, mut grant: Grant) -> Self
    where
        S: Clone,
    {
        let in_flight = grant.take_in_flight();
        if grant.wait().is_zero() {
            return Self::call(inner, req, in_flight);
        }
        Dispatch::Delayed {
            sleep: Box::pin(tokio::time::sleep(grant.wait())),
            send: Some(Box::new((take_ready(inner), req))),
            in_flight,
            unsent: Unsent(grant.take_refund()),
        }
    }

    /// Waits for a remote backend's `decision`, then sends the request
    /// through a readied service taken from `inner` (in `shadow` mode,
    /// whatever the decision, at once).
    pub(crate) fn deciding(inner: &mut S, req: Req, decision: F, shadow: bool) -> Self
    where
        S: Clone,
    {
        Dispatch::Deciding {
            decision,
            send: Some(Box::new((take_ready(inner), req))),
            shadow,
        }
    }

    /// Whether a remote decision in progress is in shadow mode.
    fn is_shadow(&self) -> bool {
        matches!(self, Dispatch::Deciding { shadow: true, .. })
    }

    fn name(&self) -> &'static str {
        match self {
            Dispatch::Called { .. } => "Called",
            Dispatch::Delayed { .. } => "Delayed",
            Dispatch::Ready { .. } => "Ready",
            Dispatch::Deciding { .. } => "Deciding",
            Dispatch::Rejected { .. } => "Rejected",
        }
    }
}

/// The readied service, leaving a clone in its place (as tower-http's async
/// middleware do).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

impl<S, Req, F> Dispatch<S, Req, F>
where
    S: Service<Req>,
    F: Future<Output = Result<Grant, BoxError>>,
{
    /// Drives the request to its end. `on_decided` sees a remote backend's
    /// decision before the request is sent or rejected.
    pub(crate) fn poll_dispatch(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut on_decided: impl FnMut(&Result<Grant, BoxError>),
    ) -> Poll<Dispatched<S::Response, S::Error>> {
        loop {
            let next = match self.as_mut().project() {
                DispatchProj::Called { future, .. } => {
                    return future.poll(cx).map(Dispatched::Inner);
                }
                DispatchProj::Rejected { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Dispatched::Rejected(error));
                }
                DispatchProj::Delayed {
                    sleep,
                    send,
                    in_flight,
                    unsent,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    Dispatch::Ready {
                        send: send.take(),
                        in_flight: in_flight.take(),
                        unsent: unsent.take(),
                    }
                }
                DispatchProj::Ready {
                    send,
                    in_flight,
                    unsent,
                } => {
                    let (inner, _) = &mut **send.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(inner.poll_ready(cx)) {
                        // Never sent: its charge is given back on drop.
                        return Poll::Ready(Dispatched::Inner(Err(e)));
                    }
                    unsent.sent();
                    let (mut inner, req) = *send.take().expect("polled after completion");
                    Self::call(&mut inner, req, in_flight.take())
                }
                DispatchProj::Deciding {
                    decision,
                    send,
                    shadow,
                } => match ready!(decision.poll(cx)) {
                    decided @ Err(_) if *shadow => {
                        // Reported as denied, sent anyway.
                        on_decided(&decided);
                        Dispatch::Ready {
                            send: send.take(),
                            in_flight: None,
                            unsent: Unsent::default(),
                        }
                    }
                    Ok(grant) => {
                        let decided = Ok(grant);
                        on_decided(&decided);
                        let Ok(mut grant) = decided else {
                            unreachable!()
                        };
                        if *shadow {
                            grant.send_now();
                        }
                        let send = send.take();
                        let in_flight = grant.take_in_flight();
                        let unsent = Unsent(grant.take_refund());
                        if grant.wait().is_zero() {
                            Dispatch::Ready {
                                send,
                                in_flight,
                                unsent,
                            }
                        } else {
                            Dispatch::Delayed {
                                sleep: Box::pin(tokio::time::sleep(grant.wait())),
                                send,
                                in_flight,
                                unsent,
                            }
                        }
                    }
                    decided @ Err(_) => {
                        on_decided(&decided);
                        let Err(error) = decided else { unreachable!() };
                        Dispatch::Rejected { error: Some(error) }
                    }
                },
            };
            self.set(next);
        }
    }
}
