//! Limit requests per key: one bucket per client IP, API key or user.
//!
//! [`PerKeyLayer`] finds each request's key with a closure or a
//! [`KeyExtractor`] (whose key type it takes: an extractor type of your
//! own names it in [`Keyed`] too), resolves the key's [`Policy`] (one or several quotas
//! and an optional cap on requests in flight; tiers through
//! [`policy_for`](PerKeyLayer::policy_for)), and admits or rejects the
//! request. State lives in a bounded in-memory store by default
//! ([`Memory`](crate::backend::Memory)), or in another
//! [`Backend`](crate::backend::Backend).
//!
//! | situation | result |
//! |---|---|
//! | key over a quota | [`RateLimited`](crate::RateLimited) with `retry_after` (or a wait, with [`max_wait`](PerKeyLayer::max_wait)) |
//! | key at its in-flight cap | [`TooManyInFlight`](crate::error::TooManyInFlight) |
//! | no key | [`MissingKey`](crate::error::MissingKey), unless [`allow_missing_key`](PerKeyLayer::allow_missing_key) or [`fallback_key`](PerKeyLayer::fallback_key) |
//! | a new key while `max_keys` keys are all active | served in place of the key nearest to full among 8; or [`TooManyKeys`](crate::error::TooManyKeys) with [`FullStore::Refuse`](crate::backend::FullStore::Refuse) (see [`full_store`](PerKeyLayer::full_store)) |
//!
//! A denied request consumes nothing from any quota. A request's in-flight
//! slot is released when its response future completes or is dropped.
//!
//! # Example
//!
//! Tiers: free keys get 30 per minute, paid keys 120 per minute and 10 000
//! per day with at most 4 in flight.
//!
//! ```
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::per_key::Policy;
//! use tower_sluice::{PerKeyLayer, Quota, RateLimited};
//!
//! struct Request { api_key: Option<String> }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let paid = Policy::new(Quota::per_minute(120))
//!     .and(Quota::per_day(10_000))?
//!     .max_in_flight(4)
//!     .named("paid");
//! let layer = PerKeyLayer::new(
//!     Policy::new(Quota::per_minute(30)).named("free"),
//!     |req: &Request| req.api_key.clone(),
//! )
//! .policy_for(move |key: &String| key.starts_with("paid-").then(|| paid.clone()));
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service(service_fn(|_req: Request| async { Ok::<_, BoxError>("ok") }));
//!
//! for _ in 0..30 {
//!     let req = Request { api_key: Some("free-1".into()) };
//!     svc.ready().await?.call(req).await?;
//! }
//! let req = Request { api_key: Some("free-1".into()) };
//! let err = svc.ready().await?.call(req).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.policy(), Some("free"));
//!
//! // Other keys have their own buckets.
//! let req = Request { api_key: Some("paid-7".into()) };
//! assert_eq!(svc.ready().await?.call(req).await?, "ok");
//! # Ok(())
//! # }
//! ```
//!
//! # Backpressure
//!
//! The service is ready whenever the inner one is: the key is only known in
//! `call`, so limits are applied there. That suits axum and tonic routers,
//! which never wait for readiness.

pub(crate) mod core;
pub mod future;
mod handle;
pub(crate) mod layer;
mod service;
pub(crate) mod settle;

pub use crate::key::{ByClosure, ByKeyed, ConstKey, Costed, KeyExtractor, KeyOf, Keyed};
pub use crate::policy::{MAX_QUOTAS, Policy, TooManyQuotas};
pub use handle::PerKeyHandle;
pub use layer::{DEFAULT_MAX_KEYS, PerKeyLayer};
pub use service::PerKey;
