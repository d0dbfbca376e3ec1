//! The response future of [`HttpLimit`](super::HttpLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::{Limits, Rejection, Respond};
use crate::BoxError;
use crate::backend::{Grant, InFlight};
use crate::per_key::Policy;
use crate::per_key::future::{Dispatch, Dispatched, Observed};

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
    pub struct ResponseFuture<S, Req, F, R, ResBody, K>
    where
        S: Service<Req>,
        R: Respond<ResBody>,
    {
        #[pin]
        kind: Kind<S, Req, F, R, ResBody>,
        observed: Option<Observed<K>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, F, R, ResBody>
    where
        S: Service<Req>,
        R: Respond<ResBody>,
    {
        Limited {
            response: Option<Response<ResBody>>,
        },
        // Admitted at once (the common case): the inner future, polled
        // directly.
        Called {
            #[pin]
            future: S::Future,
            headers: Option<R::Headers>,
            in_flight: Option<InFlight>,
        },
        Admitted {
            #[pin]
            dispatch: Dispatch<S, Req, F>,
            headers: Option<R::Headers>,
            // Set while a remote backend decides.
            remote: Option<(Arc<R>, Policy)>,
        },
    }
}

impl<S, Req, F, R, ResBody, K> ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req>,
    R: Respond<ResBody>,
{
    /// Reports the inner service's answer when it comes.
    pub(crate) fn observed(mut self, observed: Option<Observed<K>>) -> Self {
        self.observed = observed;
        self
    }

    pub(crate) fn limited(response: Response<ResBody>) -> Self {
        ResponseFuture {
            kind: Kind::Limited {
                response: Some(response),
            },
            observed: None,
        }
    }

    /// The inner service's `future`, called at once.
    #[inline]
    pub(crate) fn called(
        future: S::Future,
        headers: Option<R::Headers>,
        in_flight: Option<InFlight>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                headers,
                in_flight,
            },
            observed: None,
        }
    }

    pub(crate) fn admitted(dispatch: Dispatch<S, Req, F>, headers: Option<R::Headers>) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                dispatch,
                headers,
                remote: None,
            },
            observed: None,
        }
    }

    pub(crate) fn deciding(
        dispatch: Dispatch<S, Req, F>,
        responder: Arc<R>,
        policy: Policy,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Admitted {
                dispatch,
                headers: None,
                remote: Some((responder, policy)),
            },
            observed: None,
        }
    }
}

impl<S, Req, F, R, ResBody, K> Future for ResponseFuture<S, Req, F, R, ResBody, K>
where
    S: Service<Req, Response = Response<ResBody>>,
    F: Future<Output = Result<Grant, BoxError>>,
    R: Respond<ResBody>,
    K: fmt::Debug + std::hash::Hash,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let observed = this.observed;
        let mut complete = |result: Result<&Response<ResBody>, ()>| {
            if let Some(o) = observed.take() {
                o.complete(result.is_ok_and(|r| !r.status().is_server_error()));
            }
        };
        match this.kind.project() {
            KindProj::Limited { response } => {
                Poll::Ready(Ok(response.take().expect("polled after completion")))
            }
            KindProj::Called {
                future,
                headers,
                in_flight,
            } => {
                let result = ready!(future.poll(cx));
                complete(result.as_ref().map_err(|_| ()));
                let mut response = result?;
                in_flight.take();
                if let Some(headers) = headers.take() {
                    R::add_headers(headers, &mut response);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Admitted {
                dispatch,
                headers,
                remote,
            } => {
                let outcome = ready!(dispatch.poll_dispatch(cx, |decided| {
                    if let (Some((responder, policy)), Ok(grant)) = (remote.as_ref(), decided) {
                        *headers = responder.admitted(&Limits::new(policy, grant.decision(), None));
                    }
                }));
                if let Dispatched::Inner(result) = &outcome {
                    complete(result.as_ref().map_err(|_| ()));
                }
                match outcome {
                    Dispatched::Inner(Ok(mut response)) => {
                        if let Some(headers) = headers.take() {
                            R::add_headers(headers, &mut response);
                        }
                        Poll::Ready(Ok(response))
                    }
                    Dispatched::Inner(Err(e)) => Poll::Ready(Err(e)),
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
            Kind::Called { .. } => "Called",
            Kind::Admitted { .. } => "Admitted",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
