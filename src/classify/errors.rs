//! What an error says: whether it is transient ([`is_transient`]), the
//! wait it carries ([`error_hints`]), and how a classifier generic over the
//! error type reads one ([`as_error`]).

use std::any::Any;
use std::error::Error;
use std::time::Duration;

use crate::BoxError;
use crate::error::{CircuitOpen, QueueFull, QueueTimeout, RateLimited};

/// The error as a `dyn Error`, when its type is one a generic classifier
/// knows how to read: a [`BoxError`] (or another boxed `dyn Error`),
/// `std::io::Error`, this crate's errors, the timeouts of tokio and tower
/// and, with their features, `reqwest::Error` and `tonic::Status`. Other
/// error types return `None`: classify them with a closure.
pub(crate) fn as_error<E: 'static>(error: &E) -> Option<&(dyn Error + 'static)> {
    let any: &dyn Any = error;
    if let Some(e) = any.downcast_ref::<BoxError>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn Error + Send>>() {
        return Some(&**e);
    }
    if let Some(e) = any.downcast_ref::<Box<dyn Error>>() {
        return Some(&**e);
    }
    macro_rules! known {
        ($($t:ty),* $(,)?) => {
            $(if let Some(e) = any.downcast_ref::<$t>() { return Some(e); })*
        };
    }
    known!(
        std::io::Error,
        RateLimited,
        CircuitOpen,
        QueueFull,
        QueueTimeout,
        tokio::time::error::Elapsed,
        tower::timeout::error::Elapsed,
    );
    #[cfg(feature = "reqwest")]
    known!(reqwest::Error);
    #[cfg(feature = "tonic")]
    known!(tonic::Status);
    None
}

/// Whether an error (or one of its sources) is worth retrying:
/// [`RateLimited`], [`CircuitOpen`], [`QueueFull`], [`QueueTimeout`],
/// timeouts (`tokio::time::error::Elapsed`, `tower::timeout::error::Elapsed`),
/// I/O errors of the connection (refused, reset, aborted, not connected,
/// broken pipe, timed out) and, with the `reqwest` feature, a
/// `reqwest::Error` of connecting or timing out, or one made by
/// `error_for_status` from a 429, 502, 503 or 504.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::classify::is_transient;
///
/// let reset: BoxError = std::io::Error::from(std::io::ErrorKind::ConnectionReset).into();
/// let bad_input: BoxError = "invalid JSON".into();
/// assert!(is_transient(&*reset));
/// assert!(!is_transient(&*bad_input));
/// ```
pub fn is_transient(error: &(dyn Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<RateLimited>()
            || e.is::<CircuitOpen>()
            || e.is::<QueueFull>()
            || e.is::<QueueTimeout>()
            || e.is::<tokio::time::error::Elapsed>()
            || e.is::<tower::timeout::error::Elapsed>()
        {
            return true;
        }
        #[cfg(feature = "reqwest")]
        if let Some(r) = e.downcast_ref::<reqwest::Error>() {
            if r.is_connect() || r.is_timeout() {
                return true;
            }
            if let Some(status) = r.status() {
                return matches!(status.as_u16(), 429 | 502 | 503 | 504);
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The wait an error asks for: [`RateLimited::retry_after`] or
/// [`CircuitOpen::retry_after`], found on the error or its sources.
///
/// Retry and the AIMD layer add it to a verdict that did not say how long
/// to wait, so a classifier need not look for it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::classify::error_hints;
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let limited: BoxError = limiter.check().into_result().unwrap_err().into();
/// assert!(error_hints(&*limited).unwrap() > Duration::from_secs(59));
/// assert_eq!(error_hints(&*BoxError::from("other")), None);
/// ```
pub fn error_hints(error: &(dyn Error + 'static)) -> Option<Duration> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RateLimited>() {
            return Some(r.retry_after());
        }
        if let Some(o) = e.downcast_ref::<CircuitOpen>() {
            return Some(o.retry_after());
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        let io = |k| -> BoxError { Box::new(std::io::Error::new(k, "x")) };
        assert!(is_transient(&*io(std::io::ErrorKind::ConnectionRefused)));
        assert!(!is_transient(&*io(std::io::ErrorKind::NotFound)));
        let e: BoxError = Box::new(CircuitOpen::new(Duration::from_secs(3)));
        assert!(is_transient(&*e));
        assert_eq!(error_hints(&*e), Some(Duration::from_secs(3)));
        let e: BoxError = Box::new(QueueFull::new(3));
        assert!(is_transient(&*e));
        assert_eq!(error_hints(&*e), None);
        let e: BoxError = "boom".into();
        assert!(!is_transient(&*e));
    }

    #[test]
    fn reads_known_error_types() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(as_error(&io).is_some_and(is_transient));
        let boxed: BoxError = io.into();
        assert!(as_error(&boxed).is_some_and(is_transient));
        let open = CircuitOpen::new(Duration::from_secs(3));
        assert_eq!(
            as_error(&open).and_then(error_hints),
            Some(Duration::from_secs(3))
        );
        #[derive(Debug)]
        struct Mine;
        assert!(as_error(&Mine).is_none());
        assert!(as_error(&"text").is_none());
    }
}
