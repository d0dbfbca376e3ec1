//! The response future of [`HttpLimit`](super::HttpLimit).

use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Limits, Rejection, Respond};
use crate::BoxError;
use crate::backend::{Grant, InFlight};
use crate::per_key::future::{Dispatch, Dispatched, Observed};
use crate::per_key::settle::Pending;
use crate::policy::Policy;

pin_project! {
    /// The response future of [`HttpLimit`](super::HttpLimit): the
    /// rejection's response, ready at once, or the inner service's
    /// response (with the limit fields added), possibly after waiting for
    /// the request's turn or a remote backend's decision.
    ///
    /// With an observer set, it also holds the request's key to report
    /// [`Event::Completed`](crate::observe::Event::Completed) when the
    /// inner service answers (a 5xx response or an error counts as a
    /// failure).
    ///
    /// # Size
    ///
    /// axum moves a route's future several times and then boxes it, for
    /// every request: the common case (admitted at once) holds the inner
    /// future and the fields to add, little more; a request that waits,
    /// an observed one and one holding an in-flight slot keep the rest on
    /// the heap.
    pub struct ResponseFuture<S, Req, F, R, ResBody, K>
    where
        S: Service<Req>,
        R: Respond<ResBody>,
    {
        #[pin]
        kind: Kind<S, Req, F, R, ResBody, K>,
    }
}

pin_project! {
    // A tag of its own, beside the inner future rather than in its spare
    // values: then `call` writes the inner future straight into the
    // returned one (with the tag in the future's spare values, the whole
    // arm is assembled aside and copied once more).
    #[project = KindProj]
    #[repr(usize)]
    enum Kind<S, Req, F, R, ResBody, K>
    where
        S: Service<Req>,
        R: Respond<ResBody>,
    {
        Limited {
            response: Option<Response<ResBody>>,
        },
        // Admitted at once, nothing to release or report (the common
        // case): the inner future, polled directly, and the fields to add.
        Called {
            #[pin]
            future: S::Future,
            headers: Fields<R::Headers>,
        },
        // Admitted at once, holding an in-flight slot or observed.
        Tracked {
            tracked: Pin<Box<Tracked<S::Future, R::Headers, K>>>,
        },
        // Waiting for the request's turn or a remote backend's decision.
        Admitted {
            admitted: Pin<Box<Admitted<S, Req, F, R, ResBody, K>>>,
        },
    }
}

pin_project! {
    /// A request admitted at once that holds an in-flight slot or is
    /// observed (boxed, so that the common case stays small).
    struct Tracked<Fut, H, K> {
        #[pin]
        future: Fut,
        headers: Option<H>,
        in_flight: Option<InFlight>,
        observed: Option<Observed<K>>,
    }
}

pin_project! {
    /// A request that waits before it is sent (rare: boxed, so that the
    /// common case stays small).
    struct Admitted<S, Req, F, R, ResBody, K>
    where
        S: Service<Req>,
        R: Respond<ResBody>,
    {
        #[pin]
        dispatch: Dispatch<S, Req, F>,
        headers: Option<R::Headers>,
        // Set while a remote backend decides.
        remote: Option<(Arc<R>, Policy)>,
        observed: Option<Observed<K>>,
        settle: Option<Pending>,
    }
}

/// The fields to add, in the common arm: dropping none (the response
/// received them, or there were none) is a check, inline, so that dropping
/// the common future costs little more than dropping the inner one.
struct Fields<H>(ManuallyDrop<Option<H>>);

impl<H> Drop for Fields<H> {
    #[inline]
    fn drop(&mut self) {
        if self.0.is_some() {
            drop_fields(&mut self.0);
        }
    }
}

/// Drops fields a response never received (its future was dropped first).
#[cold]
#[inline(never)]
fn drop_fields<H>(fields: &mut Option<H>) {
    drop(fields.take());
}

impl<S, Req, F, R, ResBody, K> ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req>,
    R: Respond<ResBody>,
{
    pub(crate) fn limited(response: Response<ResBody>) -> Self {
        ResponseFuture {
            kind: Kind::Limited {
                response: Some(response),
            },
        }
    }

    /// The inner service's `future`, called at once, with nothing to
    /// release or report.
    #[inline(always)]
    pub(crate) fn called(future: S::Future, headers: Option<R::Headers>) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                headers: Fields(ManuallyDrop::new(headers)),
            },
        }
    }

    /// The inner service's `future`, called at once, releasing `in_flight`
    /// and reporting to the observer when it completes.
    #[inline]
    pub(crate) fn tracked(
        future: S::Future,
        headers: Option<R::Headers>,
        in_flight: Option<InFlight>,
        observed: Option<Observed<K>>,
    ) -> Self {
        if in_flight.is_none() && observed.is_none() {
            return Self::called(future, headers);
        }
        ResponseFuture {
            kind: Kind::Tracked {
                tracked: Box::pin(Tracked {
                    future,
                    headers,
                    in_flight,
                    observed,
                }),
            },
        }
    }

    /// Settles the request from its response (a request on the boxed
    /// path).
    pub(crate) fn settling(mut self, settle: Pending) -> Self {
        if let Kind::Admitted { admitted } = &mut self.kind {
            admitted.as_mut().project().settle.replace(settle);
        }
        self
    }

    /// A request that waits for its turn.
    pub(crate) fn admitted(
        dispatch: Dispatch<S, Req, F>,
        headers: Option<R::Headers>,
        observed: Option<Observed<K>>,
    ) -> Self {
        Self::waiting(Admitted {
            dispatch,
            headers,
            remote: None,
            observed,
            settle: None,
        })
    }

    /// A request a remote backend is deciding.
    pub(crate) fn deciding(
        dispatch: Dispatch<S, Req, F>,
        responder: Arc<R>,
        policy: Policy,
        observed: Option<Observed<K>>,
    ) -> Self {
        Self::waiting(Admitted {
            dispatch,
            headers: None,
            remote: Some((responder, policy)),
            observed,
            settle: None,
        })
    }

    fn waiting(admitted: Admitted<S, Req, F, R, ResBody, K>) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                admitted: Box::pin(admitted),
            },
        }
    }
}

/// Reports the inner service's answer to the observer, if any: a 5xx
/// response or an error counts as a failure.
#[inline]
fn complete<K: fmt::Debug + std::hash::Hash, B, E>(
    observed: Option<Observed<K>>,
    result: &Result<Response<B>, E>,
) {
    if let Some(o) = observed {
        o.complete(matches!(result, Ok(r) if !r.status().is_server_error()));
    }
}

impl<S, Req, F, R, ResBody, K> Future for ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req, Response = Response<ResBody>>,
    ResBody: 'static,
    F: Future<Output = Result<Grant, BoxError>>,
    R: Respond<ResBody>,
    K: fmt::Debug + std::hash::Hash,
{
    type Output = Result<Response<ResBody>, S::Error>;

    // Small, so that the caller can inline it: the common request only
    // polls the inner future; the rest is out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, headers } => {
                if headers.0.is_none() {
                    // Nothing to add.
                    return future.poll(cx);
                }
                poll_adding::<_, R, _, _>(future, &mut headers.0, cx)
            }
            KindProj::Tracked { tracked } => poll_tracked::<_, R, _, _, _>(tracked.as_mut(), cx),
            KindProj::Limited { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Admitted { admitted } => admitted.as_mut().poll_admitted(cx),
        }
    }
}

/// Polls `future` and adds `headers` to its response.
#[inline(never)]
fn poll_adding<Fut, R, ResBody, E>(
    future: Pin<&mut Fut>,
    headers: &mut Option<R::Headers>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResBody>, E>>
where
    Fut: Future<Output = Result<Response<ResBody>, E>>,
    R: Respond<ResBody>,
{
    let mut result = ready!(future.poll(cx));
    // In place: a response is large, and moving it is a copy.
    if let (Ok(response), Some(headers)) = (&mut result, headers.take()) {
        R::add_headers(headers, response);
    }
    Poll::Ready(result)
}

/// Polls `future`, then reports its answer, releases `in_flight` and adds
/// `headers` to its response.
#[inline(never)]
fn poll_tracked<Fut, R, ResBody, E, K>(
    tracked: Pin<&mut Tracked<Fut, R::Headers, K>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResBody>, E>>
where
    Fut: Future<Output = Result<Response<ResBody>, E>>,
    R: Respond<ResBody>,
    K: fmt::Debug + std::hash::Hash,
{
    let this = tracked.project();
    let mut result = ready!(this.future.poll(cx));
    complete(this.observed.take(), &result);
    this.in_flight.take();
    let headers = this.headers;
    // In place: a response is large, and moving it is a copy.
    if let (Ok(response), Some(headers)) = (&mut result, headers.take()) {
        R::add_headers(headers, response);
    }
    Poll::Ready(result)
}

impl<S, Req, F, R, ResBody, K> Admitted<S, Req, F, R, ResBody, K>
where
    S: Service<Req, Response = Response<ResBody>>,
    ResBody: 'static,
    F: Future<Output = Result<Grant, BoxError>>,
    R: Respond<ResBody>,
    K: fmt::Debug + std::hash::Hash,
{
    #[inline(never)]
    fn poll_admitted(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Response<ResBody>, S::Error>> {
        let this = self.project();
        let (headers, remote, settle) = (this.headers, &*this.remote, &*this.settle);
        let outcome = ready!(this.dispatch.poll_dispatch(cx, |decided| {
            if let (Some(pending), Ok(grant)) = (settle, decided) {
                pending.decided(grant.charged());
            }
            if let (Some((responder, policy)), Ok(grant)) = (remote, decided) {
                *headers = responder.admitted(&Limits::new(policy, grant.decision(), None));
            }
        }));
        match outcome {
            Dispatched::Inner(result) => {
                complete(this.observed.take(), &result);
                let mut response = result?;
                if let Some(settle) = this.settle.take() {
                    settle.respond(&response);
                }
                if let Some(headers) = headers.take() {
                    R::add_headers(headers, &mut response);
                }
                Poll::Ready(Ok(response))
            }
            Dispatched::Rejected(error) => {
                // Only a remote decision rejects here; a local one
                // answered with `Limited` at once.
                let (responder, policy) = remote
                    .as_ref()
                    .expect("only remote decisions reject in the future");
                let rejection = Rejection::new(&*error).with_context(Some(policy), None);
                Poll::Ready(Ok(responder.reject(&rejection)))
            }
        }
    }
}

impl<S, Req, F, R, ResBody, K> fmt::Debug for ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req>,
    R: Respond<ResBody>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Limited { .. } => "Limited",
            Kind::Called { .. } | Kind::Tracked { .. } => "Called",
            Kind::Admitted { .. } => "Admitted",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
