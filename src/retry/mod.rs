//! Retry failed requests with exponential backoff and jitter, within a
//! retry budget, honouring what the upstream says about waiting.
//!
//! [`BackoffRetryLayer::new`](crate::BackoffRetryLayer::new) takes a
//! [`Backoff`] (by default `Backoff::exponential(100 ms)`, factor 2, capped
//! at 10 s, [full jitter](Jitter::Full)) and retries a request while:
//!
//! * its classifier says the result is a [`Failure`](crate::classify::Outcome::Failure) or
//!   an [`Overloaded`](crate::classify::Outcome::Overloaded) refusal: by default
//!   ([`DefaultRetry`]) errors that are [`RateLimited`], [`CircuitOpen`],
//!   [`QueueFull`], [`QueueTimeout`], timeouts and I/O connection errors;
//!   with `BackoffRetryLayer::http()` (feature `http`), also 429, 502, 503
//!   and 504 responses; or any [`Classify`] rule of the shared vocabulary
//!   (`crate::classify`), the same closure or `HttpStatus` a breaker uses,
//!   over the inner service's own error type;
//! * attempts are left ([`max_attempts`](crate::BackoffRetryLayer::max_attempts),
//!   3 in all by default) and the next wait ends before
//!   [`max_elapsed`](crate::BackoffRetryLayer::max_elapsed) (if set): a
//!   wait that would run past it gives up *at once*, without sleeping;
//! * the request can be copied ([`CloneRequest`]; requests need not be
//!   `Clone`: one that cannot be copied is sent once);
//! * the shared [`RetryBudget`] allows it (20% of recent requests plus 10
//!   retries a second, by default), so retries cannot multiply an outage.
//!
//! The wait before retry `n` is the backoff's delay, or longer when the
//! upstream asked for more: [`RateLimited::retry_after`],
//! [`CircuitOpen::retry_after`], or (feature `http`) the response's
//! `Retry-After`, `RateLimit` `t=`, `X-RateLimit-Reset` or
//! `grpc-retry-pushback-ms` (`response_hints`). An upstream's wait is cut
//! to [`max_retry_after`](crate::BackoffRetryLayer::max_retry_after)
//! ([`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT), 60 s, by default: the
//! one bound on waits taken from an upstream) and to the backoff's
//! [`max_delay`](Backoff::max_delay) (10 s by default): no single wait is
//! longer than `max_delay`, whoever asks. Raise `max_delay` to honour longer
//! `Retry-After`s (retrying sooner than the upstream asked usually earns
//! another refusal). Numbers in these fields are digits only (a
//! `Retry-After: +5` is ignored as malformed; a `grpc-retry-pushback-ms:
//! +100` is unparsable, so not retried) and saturate.
//!
//! # Giving up
//!
//! A successful or non-retryable result is returned as it is. When the
//! layer gives up on a retryable result:
//!
//! * a *response* (such as a last 503) is returned as the response;
//! * an *error* after retries is wrapped in [`RetriesExhausted`], whose
//!   [`attempts`](RetriesExhausted::attempts) says how many were made and
//!   whose `source()` is the last error; an error after a single attempt
//!   passes through unchanged.
//!
//! Each decision is reported to the layer's
//! [observer](crate::BackoffRetryLayer::observer):
//! [`Event::RetryScheduled`](crate::observe::Event::RetryScheduled),
//! [`Event::RetryGaveUp`](crate::observe::Event::RetryGaveUp) and
//! [`Event::RetryBudgetExhausted`](crate::observe::Event::RetryBudgetExhausted).
//!
//! # Backpressure
//!
//! `poll_ready` is the inner service's. Each retry is made on a clone of
//! the inner service taken at `call` (as tower's `Retry` does), and waits
//! for that clone's `poll_ready` before calling it: an unready service is
//! never called. Dropping the response future cancels the wait and the
//! attempt in flight.
//!
//! # Cost
//!
//! A request that succeeds at once costs one request clone (kept for a
//! retry), one clone of the inner service, and a budget deposit counted in
//! a per-thread tally (no atomic operation, no clock read; see
//! [`RetryBudget`]). It allocates nothing: the wait, the next request and
//! the backoff state of a retry are allocated when the request's first
//! retry is scheduled. Its response future holds a copy of the layer's
//! settings, or, when the layer has a budget, seeded jitter or
//! `max_elapsed`, a reference to the layer's shared state (settings,
//! budget, clock). That reference costs no atomic operation either: each
//! thread keeps one reference to the shared state of the layer whose
//! request it finished last, and lends it to the next request through that
//! layer (so that state lives until the thread ends or finishes a request
//! through another layer). With an observer, the future holds an ordinary
//! reference count instead.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::BackoffRetryLayer;
//! use tower_sluice::retry::{Backoff, Jitter};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let mut svc = ServiceBuilder::new()
//!     .layer(
//!         BackoffRetryLayer::new(
//!             Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::None),
//!         )
//!         .max_attempts(4),
//!     )
//!     .service(service_fn(move |req: &'static str| {
//!         let n = seen.fetch_add(1, Ordering::SeqCst);
//!         async move {
//!             // Two transient failures, then an answer.
//!             if n < 2 {
//!                 let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//!                 Err::<String, BoxError>(refused.into())
//!             } else {
//!                 Ok(format!("{req}: ok"))
//!             }
//!         }
//!     }));
//!
//! let start = tokio::time::Instant::now();
//! let res = svc.ready().await?.call("GET /").await?;
//! assert_eq!(res, "GET /: ok");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(start.elapsed(), Duration::from_millis(100 + 200));
//! # Ok(())
//! # }
//! ```
//!
//! [`RateLimited`]: crate::RateLimited
//! [`RateLimited::retry_after`]: crate::RateLimited::retry_after
//! [`CircuitOpen`]: crate::CircuitOpen
//! [`CircuitOpen::retry_after`]: crate::CircuitOpen::retry_after
//! [`QueueFull`]: crate::QueueFull
//! [`QueueTimeout`]: crate::QueueTimeout
//! [`Outcome`]: crate::classify::Outcome
//! [`Classify`]: crate::classify::Classify

mod backoff;
#[cfg(feature = "http")]
mod body;
mod budget;
mod classify;
pub mod error;
pub mod future;
#[cfg(feature = "http")]
mod http;
mod layer;
mod lease;
mod request;
mod service;

use crate::error::ConfigError;

pub use crate::classify::{error_hints, is_transient};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use crate::headers::hints::{Hint, response_hints};
pub use crate::key::NoKey;
pub use crate::observe::words::{GiveUpReason, RetryReason};
pub use backoff::{Backoff, Delays, Jitter};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use body::ReplayBody;
pub use budget::RetryBudget;
pub use classify::DefaultRetry;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use classify::HttpRetry;
pub use error::RetriesExhausted;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use http::{HttpClone, HttpReplay, HttpRequest, Idempotency};
pub use layer::BackoffRetryLayer;
pub use request::{CloneRequest, CloneRequests};
pub use service::BackoffRetry;

/// A [`ConfigError`] of this layer.
pub(crate) fn invalid(field: &'static str, reason: &'static str) -> ConfigError {
    ConfigError::new("retry", field, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        ok::<BackoffRetryLayer>();
        ok::<BackoffRetry<tower::util::BoxCloneSyncService<u8, u8, crate::BoxError>>>();
        ok::<RetryBudget>();
    }
}
