//! Limits that adapt: to each key's success and latency, to an upstream's
//! 429s and quota headers, and to a service's latency under load.
//!
//! | you are | and want | use |
//! |---|---|---|
//! | a server with per-client quotas | well-behaved clients (fast, successful requests) to earn more, up to a max | [`AdaptivePolicy`] with [`PerKeyLayer`](crate::PerKeyLayer) |
//! | a client of a rate-limited API whose real limit you do not know (or that changes) | to find it and stay just under it, honouring `Retry-After` and `RateLimit` headers | [`AimdLayer`] |
//! | a server (or a client of a shared backend) that should not queue itself to death | a limit on requests in flight that follows latency, excess refused at once | [`AdaptiveConcurrencyLayer`] ([`GradientLimit`] or [`AimdLimit`]) |
//! | a client of an overloaded backend | to stop sending what the backend would refuse anyway, sheddable requests first | [`AdaptiveThrottleLayer`] |
//! | a client of an AI provider with a request *and* a token budget | to charge each prompt its tokens, settle them from the answer's usage, and follow the provider's `x-ratelimit-*` / `anthropic-ratelimit-*` / `RateLimit` fields | `ProviderBudgetLayer` (feature `http`) |
//!
//! Every layer learns from responses through a classifier of the shared
//! vocabulary, [`Classify`](crate::classify::Classify) (the same closure or
//! value a breaker or retry takes, over the inner service's own error
//! type): by default [`DefaultFeedback`] (errors are failures; a
//! [`RateLimited`] error or a gRPC `RESOURCE_EXHAUSTED` status is an
//! overload) or, with the feature `http`,
//! `classify::HttpStatus` (429 and 503 are overloads
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
//! # Staying under an AI provider's budgets
//!
//! With the feature `http`, `ProviderBudgetLayer` keeps an LLM client
//! under its provider's requests per minute *and* tokens per minute: each
//! request is charged its estimated tokens before it is sent and waits
//! (never longer than `max_wait`) until both budgets have room; the true
//! count, read from the response or settled by the caller through the
//! `TokenSettlement` the response carries, corrects the estimate; and the
//! provider's fields (`ProviderLimits`: OpenAI-style, Anthropic-style, IETF,
//! `Retry-After`) pause it or bring its budgets down, every wait capped.
//!
//! `ProviderBudgetLayer`'s docs have a runnable example, and
//! `examples/llm_client.rs` runs one against a mock provider.
//!
//! [`RateLimited`]: crate::RateLimited

mod aimd;
#[cfg(feature = "http")]
mod budget;
mod classify;
mod concurrency;
pub mod future;
mod per_key;
mod throttle;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use crate::headers::provider::{
    ProviderLimits, UpstreamBudget, parse_reset_duration, parse_rfc3339,
};
pub use aimd::{Aimd, AimdHandle, AimdLayer};
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use budget::{
    DefaultEstimate, EstimateTokens, ProviderBudget, ProviderBudgetHandle, ProviderBudgetLayer,
    ProviderResponse, ReadUsage, SettleLater, TokenSettlement,
};
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
