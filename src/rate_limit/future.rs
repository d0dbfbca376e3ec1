//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The response future of [`RateLimit`](super::RateLimit): the inner
    /// service's future, or a [`RateLimited`](crate::error::RateLimited) error for a denied request.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        // Boxed when denied: the future stays as small as the inner one.
        Denied { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn called(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
        }
    }

    /// A future that fails with `error` (a [`RateLimited`](crate::error::RateLimited)).
    pub(crate) fn denied(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Denied { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Denied { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Denied { .. } => "Denied",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
