//! The response future of [`CircuitBreaker`](super::CircuitBreaker): the
//! crate's one [called-or-refused future](crate::future), recording each
//! call it lets through.

use std::sync::Arc;

use super::state::{Breaker, Permit};
use crate::BoxError;
use crate::classify::Classify;
use crate::future::Track;

/// The response future of [`CircuitBreaker`](super::CircuitBreaker): the
/// inner service's future, whose outcome is recorded when it completes, or
/// a [`CircuitOpen`](crate::CircuitOpen) error for a refused call.
///
/// Dropping it before it completes counts the call as nothing (and gives a
/// half-open trial slot back).
pub type ResponseFuture<F, C> = crate::future::ResponseFuture<F, Call<C>>;

/// A call the breaker let through: its outcome is recorded when the
/// response arrives, and it is cancelled (counted as nothing) when its
/// future is dropped first.
pub struct Call<C> {
    breaker: Arc<Breaker>,
    permit: Permit,
    classifier: C,
    done: bool,
}

impl<C> Call<C> {
    pub(crate) fn new(breaker: Arc<Breaker>, permit: Permit, classifier: C) -> Self {
        Call {
            breaker,
            permit,
            classifier,
            done: false,
        }
    }
}

impl<C, Res> Track<Res> for Call<C>
where
    C: Classify<Res, BoxError>,
{
    #[inline]
    fn complete(&mut self, result: &Result<Res, BoxError>) {
        let outcome = self.classifier.classify(result);
        self.done = true;
        self.breaker.finish(self.permit, outcome);
    }
}

impl<C> Drop for Call<C> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.cancel(self.permit);
        }
    }
}

impl<C> std::fmt::Debug for Call<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call").finish_non_exhaustive()
    }
}
