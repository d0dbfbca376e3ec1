//! Tower middleware for resilient clients and servers: rate limiting (one
//! shared bucket or per key, in memory or on Redis), retry with backoff,
//! circuit breaking, request queuing, adaptive limits and monitoring, each a
//! `tower::Layer`, correct, fast and shared by every clone.
//!
//! A client pipeline: many tasks share one client; each attempt is paced
//! under the upstream's quota of 60 a minute; failures are retried with
//! backoff and jitter; a failing upstream is cut off; a `Monitor` watches.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//! use tower_sluice::observe::Monitor;
//! use tower_sluice::retry::Backoff;
//! use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer, QueueLayer, Quota, RateLimitLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let monitor = Monitor::new();
//! let client = ServiceBuilder::new()
//!     .layer(QueueLayer::new(1_000).concurrency(16).observer(monitor.clone()))
//!     .layer(BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(100))))
//!     .layer(RateLimitLayer::new(Quota::per_minute(60).with_burst(10)).observer(monitor.clone()))
//!     .layer(CircuitBreakerLayer::default().observer(monitor.clone()))
//!     .service(service_fn(|path: &'static str| async move {
//!         Ok::<_, BoxError>(format!("200 OK {path}"))
//!     }));
//!
//! let start = tokio::time::Instant::now();
//! for _ in 0..12 {
//!     client.clone().oneshot("/v1/models").await?;
//! }
//! // 10 passed at once, the 11th and 12th one second apart.
//! # #[cfg(feature = "test-util")]
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//! assert_eq!(monitor.snapshot().layer("rate_limit").unwrap().waited, 2);
//! # Ok(())
//! # }
//! ```
//!
//! The [guide](https://docs.rs/tower-sluice/latest/tower_sluice/guide/)
//! (`docs/guide.md`) walks through each problem with tested examples.
//!
//! # Which layer?
//!
//! | you want to | use | status |
//! |---|---|---|
//! | keep a client under a quota, waiting for capacity | [`RateLimitLayer::new`] | available |
//! | protect a server, rejecting excess with a retry time | [`RateLimitLayer::new(q).reject()`](RateLimitLayer::reject) | available |
//! | several quotas at once (60/min *and* 1000/day) | [`Limiter::and`] + [`RateLimitLayer::with_limiter`] | available |
//! | decide without tower (a direct limiter) | [`Limiter`] | available |
//! | limit per client, IP or API key, with tiers | [`PerKeyLayer`] | available |
//! | answer 429 with `Retry-After` and `RateLimit` headers in axum | [`PerKeyLayer::http`](crate::PerKeyLayer) (feature `http`) | available |
//! | try a limit on live traffic without enforcing it | `.shadow()` on [`RateLimitLayer`], [`PerKeyLayer`] and [`CircuitBreakerLayer`] | available |
//! | share limits across instances | `RedisBackend` (feature `redis`) as [`PerKeyLayer::backend`], or [`RateLimitLayer::shared`] | available |
//! | retry with backoff and jitter, a retry budget, `Retry-After` honoured | [`BackoffRetryLayer`] ([`retry`]) | available |
//! | cut off a failing upstream | [`CircuitBreakerLayer`] | available |
//! | queue and pace requests; share a non-`Clone` service | [`QueueLayer`] | available |
//! | see who is limited and how often, breaker states, queue depth; alert on thresholds; export metrics | [`observe::Monitor`], [`observe::AlertRule`], `observe::MetricsObserver` (feature `metrics`), `tracing` | available |
//! | adapt: per-key limits that follow success and latency, a client rate that follows upstream 429s and `RateLimit` headers, a concurrency limit that follows latency, client-side throttling | [`adaptive`]: [`AdaptivePolicy`](adaptive::AdaptivePolicy), [`AimdLayer`], [`AdaptiveConcurrencyLayer`], [`AdaptiveThrottleLayer`] | available |
//!
//! # Feature flags
//!
//! The in-memory core needs none of them (`default-features = false` builds
//! it with tower, tokio and quanta only).
//!
//! | feature | enables |
//! |---|---|
//! | `serde` | `Serialize`/`Deserialize` for [`Quota`], `Serialize` for [`observe::Snapshot`] |
//! | `test-util` | limiters read tokio's clock, so `tokio::time::pause` drives them (dev-dependencies only) |
//! | `http` | the `http` module: key extractors (peer IP, trusted `X-Forwarded-For`, headers), rejections as 429 / 400 / 503 responses with `Retry-After` and `RateLimit` fields, `PerKeyLayer::http()` |
//! | `axum` | `http`, plus axum's `ConnectInfo` peer addresses and a `HandleErrorLayer` handler |
//! | `tonic` | `http`, plus gRPC statuses with retry pushback (`PerKeyLayer::grpc()`) |
//! | `redis` | `backend::redis::RedisBackend`: limits shared across instances through Redis or Redis Cluster |
//! | `metrics` | `observe::MetricsObserver`: counters, gauges and histograms through the `metrics` facade |
//! | `reqwest` | the HTTP classifiers and `BackoffRetryLayer::http()` take reqwest's requests, responses and errors (implies `http`) |
//! | `full` | every integration |
//!
//! # Errors
//!
//! Every layer's error type is [`BoxError`], tower's convention; inner
//! errors pass through unchanged. Downcast to the concrete types in
//! [`error`] to read what to do:
//!
//! ```
//! # use tower_sluice::{BoxError, RateLimited};
//! # fn handle(err: BoxError) {
//! if let Some(limited) = err.downcast_ref::<RateLimited>() {
//!     println!("slow down: retry in {:?}", limited.retry_after());
//! }
//! # }
//! ```
//!
//! # Time and tests
//!
//! Decisions read a fast TSC clock ([`quanta`], cheaper than
//! `Instant::now()`), once per decision; waiting sleeps on tokio timers.
//! Enable the `test-util` feature in your dev-dependencies and the limiters
//! follow tokio's clock instead, so `#[tokio::test(start_paused = true)]`
//! and `tokio::time::advance` test your rate-limited code exactly and
//! instantly.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.88.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// `get_ref`, `get_mut` and `into_inner` for a service with an `inner`
/// field of type `S`.
macro_rules! inner_accessors {
    () => {
        /// A reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// A mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// The inner service, consuming this one.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
    // A layer expression given by older call sites; accessors need no
    // example, so it is not used.
    (layer: $layer:literal) => {
        $crate::inner_accessors!();
    };
}
pub(crate) use inner_accessors;

pub mod adaptive;
pub mod backend;
pub mod calendar;
pub mod circuit_breaker;
pub mod classify;
mod clock;
pub mod cost;
pub mod error;
pub mod future;
mod gcra;
mod hash;
mod headers;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod key;
mod limiter;
pub mod limits;
pub mod observe;
pub mod per_key;
mod policy;
pub mod queue;
pub mod quota;
pub mod rate_limit;
pub mod retry;
mod slot;
mod util;

pub use adaptive::{AdaptiveConcurrencyLayer, AdaptiveThrottleLayer, AimdLayer};
pub use calendar::Calendar;
pub use circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
pub use cost::Cost;
pub use error::{CircuitOpen, ExceedsBurst, QueueClosed, QueueFull, QueueTimeout, RateLimited};
pub use gcra::Decision;
pub use headers::MAX_UPSTREAM_WAIT;
pub use limiter::Limiter;
pub use per_key::{PerKey, PerKeyLayer};
pub use queue::{Queue, QueueHandle, QueueLayer};
pub use quota::{Quota, QuotaError};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use retry::{Backoff, BackoffRetry, BackoffRetryLayer, Jitter, RetriesExhausted, RetryBudget};

/// The error type of every layer: tower's `BoxError`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The guide: one section per problem, with examples (tested as doc
/// tests). Also in `docs/guide.md`.
// Built for the docs whatever the features (it holds no code); its
// examples run as doc tests when the features they use are on.
#[cfg(any(
    doc,
    all(doctest, feature = "axum", feature = "redis", feature = "test-util")
))]
#[doc = include_str!("../docs/guide.md")]
pub mod guide {}

#[cfg(all(doctest, feature = "axum", feature = "redis"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
