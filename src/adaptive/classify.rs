//! What the adaptive layers learn from by default: [`DefaultFeedback`].
//! They take any [`Classify`] of the shared vocabulary (`crate::classify`).

use std::error::Error;

use crate::classify::{Classify, Outcome, Verdict, as_error};
use crate::error::RateLimited;

/// The default classifier of the adaptive layers: a response is a success;
/// an error is [`Overloaded`](Outcome::Overloaded) when it is (or wraps) a
/// [`RateLimited`] (with its `retry_after`) or a gRPC `RESOURCE_EXHAUSTED`
/// status (feature `tonic`), otherwise a [`Failure`](Outcome::Failure).
///
/// The layers give it the error boxed, so any error type (and its
/// sources) is read.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::DefaultFeedback;
/// use tower_sluice::classify::{Classify, Outcome};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let limited: BoxError = limiter.check().into_result().unwrap_err().into();
/// let v = DefaultFeedback.verdict(&Err::<(), _>(limited));
/// assert_eq!(v.outcome(), Outcome::Overloaded);
/// assert!(v.retry_after().is_some()); // the RateLimited's retry_after
/// assert_eq!(DefaultFeedback.classify(&Ok::<_, BoxError>(())), Outcome::Success);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultFeedback;

impl<Res, E: 'static> Classify<Res, E> for DefaultFeedback {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self.verdict(result).outcome()
    }

    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict {
        match result {
            Ok(_) => Verdict::success(),
            Err(e) => as_error(e).map_or(Verdict::failure(), error_feedback),
        }
    }
}

/// The verdict of an error: see [`DefaultFeedback`].
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::adaptive::error_feedback;
/// use tower_sluice::classify::{Outcome, Verdict};
///
/// // A classifier for a client whose responses never signal overload.
/// let classify = |r: &Result<String, BoxError>| match r {
///     Ok(_) => Verdict::success(),
///     Err(e) => error_feedback(&**e),
/// };
/// # let _ = classify;
/// assert_eq!(error_feedback(&*BoxError::from("timeout")).outcome(), Outcome::Failure);
/// ```
pub fn error_feedback(error: &(dyn Error + 'static)) -> Verdict {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RateLimited>() {
            return Verdict::overloaded().with_retry_after(r.retry_after());
        }
        #[cfg(feature = "tonic")]
        if let Some(s) = e.downcast_ref::<tonic::Status>()
            && s.code() == tonic::Code::ResourceExhausted
        {
            return Verdict::overloaded();
        }
        next = e.source();
    }
    Verdict::failure()
}
