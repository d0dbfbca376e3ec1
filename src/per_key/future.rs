//! The response future of [`PerKey`](super::PerKey).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::BoxError;
use crate::backend::{Grant, InFlight};

pin_project! {
    /// The response future of [`PerKey`](super::PerKey): the inner
    /// service's future (holding the key's in-flight slot, if its policy
    /// caps them), a request waiting for its turn, a decision in progress
    /// (remote backends), or an error.
    pub struct ResponseFuture<S, Req, F>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, F>
    where
        S: Service<Req>,
    {
        Called {
            #[pin]
            future: S::Future,
            in_flight: Option<InFlight>,
        },
        Delayed {
            #[pin]
            sleep: Sleep,
            send: Option<(S, Req)>,
            in_flight: Option<InFlight>,
        },
        Ready {
            send: Option<(S, Req)>,
            in_flight: Option<InFlight>,
        },
        Deciding {
            #[pin]
            decision: F,
            send: Option<(S, Req)>,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<S: Service<Req>, Req, F> ResponseFuture<S, Req, F> {
    pub(crate) fn called(future: S::Future, in_flight: Option<InFlight>) -> Self {
        ResponseFuture {
            state: State::Called { future, in_flight },
        }
    }

    pub(crate) fn delayed(sleep: Sleep, inner: S, req: Req, in_flight: Option<InFlight>) -> Self {
        ResponseFuture {
            state: State::Delayed {
                sleep,
                send: Some((inner, req)),
                in_flight,
            },
        }
    }

    pub(crate) fn deciding(decision: F, inner: S, req: Req) -> Self {
        ResponseFuture {
            state: State::Deciding {
                decision,
                send: Some((inner, req)),
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            state: State::Failed { error: Some(error) },
        }
    }
}

impl<S, Req, F> Future for ResponseFuture<S, Req, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<Grant, BoxError>>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Called { future, .. } => return future.poll(cx).map_err(Into::into),
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
                StateProj::Delayed {
                    sleep,
                    send,
                    in_flight,
                } => {
                    ready!(sleep.poll(cx));
                    State::Ready {
                        send: send.take(),
                        in_flight: in_flight.take(),
                    }
                }
                StateProj::Ready { send, in_flight } => {
                    let (inner, _) = send.as_mut().expect("polled after completion");
                    if let Err(e) = ready!(inner.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let (mut inner, req) = send.take().expect("polled after completion");
                    State::Called {
                        future: inner.call(req),
                        in_flight: in_flight.take(),
                    }
                }
                StateProj::Deciding { decision, send } => match ready!(decision.poll(cx)) {
                    Ok(mut grant) => {
                        let (inner, req) = send.take().expect("polled after completion");
                        let in_flight = grant.take_in_flight();
                        if grant.wait().is_zero() {
                            State::Ready {
                                send: Some((inner, req)),
                                in_flight,
                            }
                        } else {
                            State::Delayed {
                                sleep: tokio::time::sleep(grant.wait()),
                                send: Some((inner, req)),
                                in_flight,
                            }
                        }
                    }
                    Err(error) => State::Failed { error: Some(error) },
                },
            };
            this.state.set(next);
        }
    }
}

impl<S: Service<Req>, Req, F> fmt::Debug for ResponseFuture<S, Req, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "Called",
            State::Delayed { .. } => "Delayed",
            State::Ready { .. } => "Ready",
            State::Deciding { .. } => "Deciding",
            State::Failed { .. } => "Failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
