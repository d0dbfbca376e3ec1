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
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::{Backoff, RetriesExhausted};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let svc = ServiceBuilder::new()
    ///     .layer(BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10))))
    ///     .service(service_fn(|_: ()| async {
    ///         Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    ///     }));
    /// let err = svc.oneshot(()).await.unwrap_err();
    /// let gave_up = err.downcast_ref::<RetriesExhausted>().unwrap();
    /// assert_eq!(gave_up.attempts(), 3);
    /// assert_eq!(gave_up.to_string(), format!("gave up after 3 attempts; last error: {}", gave_up.last_error()));
    /// # }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The last attempt's error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// # use tower_sluice::BackoffRetryLayer;
    /// # use tower_sluice::retry::{Backoff, RetriesExhausted};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let svc = ServiceBuilder::new()
    /// #     .layer(BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10))))
    /// #     .service(service_fn(|_: ()| async {
    /// #         Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    /// #     }));
    /// let err = svc.oneshot(()).await.unwrap_err();
    /// let last = err.downcast_ref::<RetriesExhausted>().unwrap().last_error();
    /// let io = last.downcast_ref::<std::io::Error>().unwrap();
    /// assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    /// # }
    /// ```
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
