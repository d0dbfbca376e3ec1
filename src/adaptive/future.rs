//! The response future every adaptive layer returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::BoxError;

pub use super::aimd::AimdTrack;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use super::budget::BudgetFuture;
pub use super::concurrency::ConcurrencyPermit;
pub use super::per_key::KeyTrack;
pub use super::throttle::ThrottleTrack;

/// What an adaptive layer records about one request when its response
/// arrives (latency, success, an upstream's quota). Implemented by this
/// crate's layers; the record is dropped unused when the response future
/// is dropped before completing (a cancelled request teaches nothing, and
/// gives back whatever it held, such as a concurrency slot).
pub trait Track<Res> {
    /// Called once, with the inner service's result (its error converted
    /// into a [`BoxError`]).
    fn complete(self, result: &Result<Res, BoxError>);
}

pin_project! {
    /// The response future of the adaptive layers: the inner service's
    /// future with the request's record `T`, or a local rejection.
    pub struct ResponseFuture<F, T> {
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Called {
            #[pin]
            future: F,
            track: Option<T>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

impl<F, T> ResponseFuture<F, T> {
    pub(crate) fn called(future: F, track: T) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                track: Some(track),
            },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, T, Res, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    T: Track<Res>,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future, track } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(track) = track.take() {
                    track.complete(&result);
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
