//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::state::{Breaker, Permit};
use crate::BoxError;
use crate::classify::Classify;
use crate::error::CircuitOpen;

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker):
    /// the inner service's future, whose outcome is recorded when it
    /// completes, or a [`CircuitOpen`] error for a refused call.
    ///
    /// Dropping it before it completes counts the call as nothing (and
    /// gives a half-open trial slot back).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called { #[pin] future: F, guard: Option<Guard<C>> },
        Rejected { error: Option<CircuitOpen> },
    }
}

/// A call in flight: records its outcome, or cancels it when dropped.
pub(crate) struct Guard<C> {
    breaker: Arc<Breaker>,
    permit: Permit,
    classifier: C,
    done: bool,
}

impl<C> Guard<C> {
    pub(crate) fn new(breaker: Arc<Breaker>, permit: Permit, classifier: C) -> Self {
        Guard {
            breaker,
            permit,
            classifier,
            done: false,
        }
    }
}

impl<C> Drop for Guard<C> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.cancel(self.permit);
        }
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: Guard<C>) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: Some(guard),
            },
        }
    }

    /// A call let through in shadow mode: its outcome is not recorded.
    pub(crate) fn unguarded(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                guard: None,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, guard } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                // Recorded in place: moving the guard out first costs a
                // copy the compiler splits badly (a wide load of narrow
                // stores). The guard lets the breaker go when the future is
                // dropped.
                if let Some(guard) = guard.as_mut().filter(|g| !g.done) {
                    let outcome = guard.classifier.classify(&result);
                    guard.done = true;
                    guard.breaker.finish(guard.permit, outcome);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
