//! Errors of [`BackoffRetryLayer`](crate::BackoffRetryLayer).

use std::error::Error;
use std::fmt;

use crate::BoxError;

/// Every attempt failed: the error of the last one, with how many were
/// made. Returned only when the layer *retried* and then gave up on an
/// error; an error after a single attempt (not retryable, a request that
/// cannot be copied, no budget left) passes through unchanged, and so does
/// a final retryable *response* (such as a 503), which stays a response.
///
/// [`source`](Error::source) is the last error, so code that walks the
/// chain finds it; [`last_error`](Self::last_error) and
/// [`into_last_error`](Self::into_last_error) reach it directly.
///
/// ```
/// # use tower_sluice::{BoxError, RateLimited};
/// use tower_sluice::retry::RetriesExhausted;
/// # fn f(err: BoxError) {
/// if let Some(gave_up) = err.downcast_ref::<RetriesExhausted>() {
///     println!("{} attempts, last: {}", gave_up.attempts(), gave_up.last_error());
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct RetriesExhausted {
    attempts: u32,
    last: BoxError,
}

impl RetriesExhausted {
    pub(crate) fn new(attempts: u32, last: BoxError) -> Self {
        RetriesExhausted { attempts, last }
    }

    /// How many attempts were made, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    pub fn last_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.last
    }

    /// The last attempt's error, unwrapped.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::retry::RetriesExhausted;
    ///
    /// /// Hides the retries from callers: they see the upstream's own error.
    /// fn unwrap_retries(err: BoxError) -> BoxError {
    ///     match err.downcast::<RetriesExhausted>() {
    ///         Ok(gave_up) => gave_up.into_last_error(),
    ///         Err(other) => other,
    ///     }
    /// }
    /// # let _ = unwrap_retries;
    /// ```
    pub fn into_last_error(self) -> BoxError {
        self.last
    }
}

impl fmt::Display for RetriesExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempts; last error: {}",
            self.attempts, self.last
        )
    }
}

impl Error for RetriesExhausted {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.last)
    }
}
