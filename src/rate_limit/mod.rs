//! Limit the rate of requests to a service, with one bucket shared by every
//! clone.
//!
//! [`RateLimitLayer`] applies a [`Quota`](crate::Quota) (or several, through
//! a [`Limiter`](crate::Limiter)) with the GCRA: after a quiet spell up to
//! `burst` requests pass at once, then one per `period / limit`.
//!
//! # Backpressure
//!
//! Three behaviours when the quota is exhausted:
//!
//! | builder | what happens | suits |
//! |---|---|---|
//! | [`RateLimitLayer::new`] | `poll_ready` reserves the next slot and sleeps on a tokio timer until it is due | clients (hyper, reqwest, tonic clients): requests are paced, never failed |
//! | [`.max_wait(d)`](RateLimitLayer::max_wait) | as above, but a predicted wait over `d` fails at once with [`RateLimited`](crate::RateLimited) | clients with a deadline |
//! | [`.reject()`](RateLimitLayer::reject) | always ready; `call` fails at once with [`RateLimited`](crate::RateLimited) | servers (axum and tonic routers never wait for `poll_ready`) |
//!
//! Waiting reserves capacity in the order callers reach `poll_ready`, so
//! waiters are served first come, first served, and each sleeps exactly
//! once, until its own slot (no polling, no thundering herd). A service that
//! is dropped with a reservation it never used gives it back when nothing
//! was reserved after it, otherwise that one slot is lost (never more).
//!
//! # Sharing
//!
//! All services made by one layer, and all their clones, share one bucket
//! (unlike `tower::limit::RateLimit`, which keeps one per instance).
//!
//! # Errors
//!
//! The service's error type is [`BoxError`](crate::BoxError). Denials are
//! [`RateLimited`](crate::RateLimited), which carries
//! [`retry_after`](crate::RateLimited::retry_after); errors of the inner
//! service pass through unchanged.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::{Quota, RateLimitLayer, RateLimited};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let mut svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(Quota::per_second(2)).reject())
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//!
//! assert_eq!(svc.ready().await?.call(1).await?, 2);
//! assert_eq!(svc.ready().await?.call(2).await?, 4);
//! // The burst of 2 is spent: the third is denied with how long to wait.
//! let err = svc.ready().await?.call(3).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert!(limited.retry_after() <= Duration::from_millis(500));
//! # Ok(())
//! # }
//! ```

mod cost;
pub mod future;
mod layer;
mod service;

pub use cost::RateLimitByCost;
pub use layer::RateLimitLayer;
pub use service::RateLimit;
