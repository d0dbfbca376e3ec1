//! The response future of a layer that either calls the inner service or
//! refuses the request: [`ResponseFuture`].
//!
//! The rate limit, the circuit breaker and the adaptive layers decide in
//! `call` whether a request goes through. A request let through is the
//! inner service's future, with whatever the layer records when it
//! completes (a [`Track`]: a breaker's call, an adaptive layer's latency
//! sample); a refused one is the layer's error, ready at once. The
//! breaker names its form
//! [`circuit_breaker::future::ResponseFuture`](crate::circuit_breaker::future::ResponseFuture).
//!
//! # Examples
//!
//! ```
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//! use tower_sluice::{Quota, RateLimitLayer, RateLimited};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RateLimitLayer::new(Quota::per_hour(1)).reject();
//! let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//! // Let through: the inner service's answer.
//! assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
//! // Refused: the layer's error, without calling the inner service.
//! let err = svc.oneshot(8).await.unwrap_err();
//! assert!(err.is::<RateLimited>());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::BoxError;

/// What a layer records about a request it let through, when the inner
/// service's answer arrives.
///
/// Implemented by this crate's layers (the breaker's call, the adaptive
/// layers' samples and permits). A record is dropped unused when the
/// response future is dropped before completing: a cancelled request
/// teaches nothing, and gives back what it held (a concurrency slot, a
/// half-open trial).
pub trait Track<Res> {
    /// Called once, with the inner service's result (its error converted
    /// into a [`BoxError`]); the record is dropped with the future.
    fn complete(&mut self, result: &Result<Res, BoxError>);
}

/// A [`Track`] that records nothing: the response future of a layer that
/// only decides up front (the rate limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Untracked;

impl<Res> Track<Res> for Untracked {
    #[inline(always)]
    fn complete(&mut self, _: &Result<Res, BoxError>) {}
}

pin_project! {
    /// The inner service's future with the layer's record `T` of the
    /// request, or the error of a refused request.
    ///
    /// See the [module docs](self).
    pub struct ResponseFuture<F, T = Untracked> {
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
        // Boxed when refused: the future stays about as small as the
        // inner one.
        Refused {
            error: Option<BoxError>,
        },
    }
}

impl<F, T> ResponseFuture<F, T> {
    /// A request let through: `future`, then `track` with its result.
    #[inline]
    pub(crate) fn called(future: F, track: T) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                track: Some(track),
            },
        }
    }

    /// A request let through with nothing to record (a breaker in shadow
    /// mode that would have refused it).
    #[inline]
    pub(crate) fn without_track(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                track: None,
            },
        }
    }

    /// A refused request: fails with `error` when first polled.
    pub(crate) fn refused(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F> ResponseFuture<F> {
    /// A request let through by a layer that records nothing.
    #[inline]
    pub(crate) fn untracked(future: F) -> Self {
        Self::called(future, Untracked)
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
                // Completed in place: moving the record out first costs a
                // copy.
                if let Some(track) = track {
                    track.complete(&result);
                }
                Poll::Ready(result)
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Called { .. } => "Called",
            Kind::Refused { .. } => "Refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::future::ready;
    use std::rc::Rc;

    use super::*;

    struct Count(Rc<Cell<u32>>);

    impl Track<u8> for Count {
        fn complete(&mut self, result: &Result<u8, BoxError>) {
            assert!(result.is_ok());
            self.0.set(self.0.get() + 1);
        }
    }

    #[tokio::test]
    async fn a_call_completes_its_track_once_and_a_refusal_fails() {
        let n = Rc::new(Cell::new(0));
        let fut = ResponseFuture::called(ready(Ok::<u8, BoxError>(3)), Count(n.clone()));
        assert_eq!(fut.await.unwrap(), 3);
        assert_eq!(n.get(), 1);

        // Dropped before completing: the record is dropped unused.
        drop(ResponseFuture::called(
            std::future::pending::<Result<u8, BoxError>>(),
            Count(n.clone()),
        ));
        assert_eq!(n.get(), 1);

        let refused = ResponseFuture::<std::future::Pending<Result<u8, BoxError>>, Count>::refused(
            "no".into(),
        );
        assert!(format!("{refused:?}").contains("Refused"));
        assert_eq!(refused.await.unwrap_err().to_string(), "no");
    }
}
