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
    /// service's future (holding the key's in-flight slot, if its policy
    /// caps them), a request waiting for its turn, a decision in progress
    /// (remote backends), or an error.
    ///
    /// With an observer set, it also holds the request's key (moved from
    /// the extractor, not cloned) to report
    /// [`Event::Completed`](crate::observe::Event::Completed).
    pub struct ResponseFuture<S, Req, F, K>
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
    pub(crate) fn new(dispatch: Dispatch<S, Req, F>, observed: Option<Observed<K>>) -> Self {
        ResponseFuture {
            dispatch,
            observed,
            settle: None,
        }
    }

    /// Settles the request from its response (see
    /// [`PerKeyLayer::settle`](crate::PerKeyLayer::settle)).
    #[inline]
    pub(crate) fn settling(mut self, settle: Option<Pending>) -> Self {
        self.settle = settle;
        self
    }

    /// The inner service's `future`, called at once holding no in-flight
    /// slot (the common case), built in place.
    #[inline]
    pub(crate) fn called(future: S::Future, observed: Option<Observed<K>>) -> Self {
        ResponseFuture {
            dispatch: Dispatch::Called {
                future,
                in_flight: None,
            },
            observed,
            settle: None,
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let observed = &mut *this.observed;
        // The common state, called, polled here without the state machine.
        let dispatched = match this.dispatch.as_mut().project() {
            DispatchProj::Called { future, .. } => Dispatched::Inner(ready!(future.poll(cx))),
            _ => {
                let shadow = this.dispatch.is_shadow();
                let settle = &*this.settle;
                ready!(this.dispatch.poll_dispatch(cx, |decided| {
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
                }))
            }
        };
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
        f.debug_struct("ResponseFuture")
            .field("state", &self.dispatch.name())
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

    /// Fails with `error`.
    pub(crate) fn rejected(error: BoxError) -> Self {
        Dispatch::Rejected { error: Some(error) }
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
