//! Limits that adapt: to each key's success and latency, to an upstream's
//! 429s and quota headers, and to a service's latency under load.
//!
//! | you are | and want | use |
//! |---|---|---|
//! | a server with per-client quotas | well-behaved clients (fast, successful requests) to earn more, up to a max | [`AdaptivePolicy`] with [`PerKeyLayer`](crate::PerKeyLayer) |
//! | a client of a rate-limited API whose real limit you do not know (or that changes) | to find it and stay just under it, honouring `Retry-After` and `RateLimit` headers | [`AimdLayer`] |
//! | a server (or a client of a shared backend) that should not queue itself to death | a limit on requests in flight that follows latency, excess refused at once | [`AdaptiveConcurrencyLayer`] ([`GradientLimit`] or [`AimdLimit`]) |
//! | a client of an overloaded backend | to stop sending what the backend would refuse anyway, sheddable requests first | [`AdaptiveThrottleLayer`] |
//!
//! Every layer learns from responses through a classifier of the shared
//! vocabulary, [`Classify`](crate::classify::Classify) (the same closure or
//! value a breaker or retry takes, over the inner service's own error
//! type): by default [`DefaultFeedback`] (errors are failures; a
//! [`RateLimited`] error or a gRPC `RESOURCE_EXHAUSTED` status is an
//! overload) or, with the feature `http`,
//! [`HttpStatus`](crate::classify::HttpStatus) (429 and 503 are overloads
//! with their `Retry-After`, other 5xx failures, and quota headers read).
//! [`Overloaded`](crate::classify::Outcome::Overloaded) cuts an AIMD rate
//! and counts as a drop; [`Failure`](crate::classify::Outcome::Failure)
//! counts against a key's success rate and the throttle;
//! [`Ignore`](crate::classify::Outcome::Ignore) is not counted. Each shares its state across clones
//! and has a handle (or, for [`AdaptivePolicy`], methods) to read its
//! current limit; limit changes are reported
//! to observers as [`Event::LimitChanged`](crate::observe::Event::LimitChanged)
//! or [`Event::ConcurrencyLimitChanged`](crate::observe::Event::ConcurrencyLimitChanged).
//!
//! **Upstream hints are bounded.** [`AimdLayer`] is the layer here that
//! waits for what an upstream says (`Retry-After`, a [`RateLimited`]'s
//! `retry_after`, a quota in `RateLimit` or `X-RateLimit-*` fields spent
//! until its reset); every such wait is cut to one bound,
//! [`AimdLayer::max_pause`], by default
//! [`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT) (60 s). Numbers in these
//! fields are digits only (`+5` is ignored as malformed) and arithmetic on
//! them saturates, so no answer can crash or stall a client. The other
//! layers read only a response's [`Outcome`](crate::classify::Outcome).
//!
//! **Which one for a client?** [`AimdLayer`] when the upstream has a rate
//! quota (it answers 429); [`AdaptiveThrottleLayer`] when it fails under
//! load without saying how much it takes; [`AdaptiveConcurrencyLayer`] when
//! latency is what degrades. They compose, and a
//! [`QueueLayer`](crate::QueueLayer) in front absorbs what [`AimdLayer`]
//! and [`AdaptiveConcurrencyLayer::wait`] hold back in `poll_ready` (the
//! others refuse at once, with errors that map to HTTP 503).
//!
//! # Example
//!
//! A client that starts at 100 requests per second and finds the
//! upstream's real limit by its 429s:
//!
//! ```
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::Quota;
//! use tower_sluice::adaptive::AimdLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let aimd = AimdLayer::new(Quota::per_second(100));
//! let rate = aimd.handle();
//! let mut client = ServiceBuilder::new()
//!     .layer(aimd)
//!     .service(service_fn(|req: u32| async move { Ok::<_, BoxError>(req) }));
//!
//! for i in 0..10 {
//!     client.ready().await?.call(i).await?;
//! }
//! assert_eq!(rate.rate(), 100.0);
//! # Ok(())
//! # }
//! ```
//!
//! [`RateLimited`]: crate::RateLimited

mod aimd;
mod classify;
mod concurrency;
pub mod future;
mod per_key;
mod throttle;

pub use aimd::{Aimd, AimdHandle, AimdLayer};
pub use classify::{DefaultFeedback, error_feedback};
pub use concurrency::{
    AdaptiveConcurrency, AdaptiveConcurrencyLayer, AimdLimit, ConcurrencyAlgorithm,
    ConcurrencyHandle, GradientLimit, Sample,
};
pub use per_key::{
    AdaptivePolicy, DefaultFormula, KeyFeedback, KeyFeedbackLayer, KeyStats, LimitFormula,
};
pub use throttle::{
    AdaptiveThrottle, AdaptiveThrottleLayer, AllCritical, Criticality, CriticalityOf,
    ThrottleHandle,
};
