//! Stop calling an upstream that is failing, and probe it until it
//! recovers.
//!
//! [`CircuitBreakerLayer`] watches the outcomes of calls through it:
//!
//! * **Closed**: calls pass; outcomes go into a sliding window (the last
//!   N calls, or the last N seconds in buckets). Once the window holds
//!   [`minimum_calls`](CircuitBreakerBuilder::minimum_calls) calls and the
//!   failure rate (or the slow-call rate) reaches its threshold, it opens.
//!   In [consecutive mode](CircuitBreakerBuilder::consecutive_failures), it
//!   opens after N failures in a row instead.
//! * **Open**: calls fail at once with [`CircuitOpen`](crate::CircuitOpen),
//!   whose `retry_after` is the time left, without touching the inner
//!   service. The open duration doubles after each failed round of trials,
//!   up to a cap, and is reset when the breaker closes.
//! * **Half-open**: once the open duration has passed, the next calls are
//!   trials: at most
//!   [`permitted_calls_in_half_open`](CircuitBreakerBuilder::permitted_calls_in_half_open)
//!   run at once, others are refused. When the trials have completed, the
//!   breaker closes if their failure rate is under the threshold and opens
//!   again otherwise. It reopens *as soon as* enough trials have failed
//!   that the round cannot pass (so with 3 trials and a 50% threshold, the
//!   second failure reopens it without waiting for the third; in
//!   consecutive mode the first failure does). If the
//!   [half-open timeout](CircuitBreakerBuilder::half_open_timeout) passes
//!   first, it judges the trials that completed (none: it reopens), so a
//!   trial that hangs cannot leave it stuck.
//!
//! Details that other breakers get wrong:
//!
//! * The move from open to half-open is lazy (no background task), yet
//!   [`CircuitBreakerHandle::state`] reports it on time with no traffic.
//! * A call counts only in the state it started in: outcomes of calls
//!   admitted before a transition are dropped.
//! * A cancelled call (its future dropped) counts as nothing, and gives its
//!   half-open slot back.
//! * What counts as a failure is a [`Classify`]: by default `Err` is a
//!   failure and `Ok` a success; with the `http` feature, `HttpStatus`
//!   counts 5xx as failures but ignores 429 and 503 (the upstream shedding
//!   load on purpose).
//!
//! # Sharing
//!
//! All services made by one layer, all their clones and all
//! [handles](CircuitBreakerLayer::handle) share one breaker. In Closed a
//! call takes no lock: one atomic load when admitted, and when it completes
//! an atomic load plus a lock-free window update (a few atomic adds).
//!
//! # Backpressure
//!
//! None: the service is ready when the inner one is, and refuses in `call`.
//! That suits clients and servers alike (axum and tonic routers never wait
//! for `poll_ready`).
//!
//! # Errors
//!
//! The service's error type is [`BoxError`](crate::BoxError). Refusals are
//! [`CircuitOpen`](crate::CircuitOpen) (HTTP 503 with `Retry-After`, gRPC
//! `UNAVAILABLE` with retry pushback, through the `http` module); errors of
//! the inner service pass through unchanged.
//!
//! # Defaults
//!
//! Tuned for small services, where waiting for 100 calls (Resilience4j) or
//! a minute in open is too slow to help:
//!
//! | setting | tower-sluice | Resilience4j | Polly v8 |
//! |---|---|---|---|
//! | failure rate threshold | 50% | 50% | 10% (`FailureRatio`) |
//! | window | last 30 s, 10 buckets | last 100 calls | last 30 s (`SamplingDuration`) |
//! | minimum calls | 20 | 100 | 100 (`MinimumThroughput`) |
//! | open duration | 5 s, x2 per failed probe, capped at 60 s, up to 10% shorter (jitter) | 60 s, fixed | 5 s, fixed (or a generator) |
//! | half-open trials | 3 at once | 10 | 1 |
//! | half-open timeout | 10 s | none (waits forever) | none |
//! | slow calls | off (set `slow_call_duration`) | 60 s, rate 100% | not tracked |
//!
//! Why: a 30 s time window forgets an old outage on its own, where a
//! count window of a quiet service can hold hour-old failures; 20 calls is
//! enough evidence at the rates small services see; the growing open
//! duration probes a dead upstream quickly at first and then less and
//! less, and its jitter keeps many clients from probing in step; 3
//! trials judge recovery on more than one lucky call.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
//! use tower_sluice::circuit_breaker::{CircuitState, SlidingWindow};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .window(SlidingWindow::Count(10))
//!     .minimum_calls(4)
//!     .open_duration(Duration::from_secs(5))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err::<u32, BoxError>("upstream down".into()) } else { Ok(200) }
//!     }));
//!
//! // Two successes and two failures: 50% of 4 calls opens it.
//! for fail in [false, false, true, true] {
//!     let _ = svc.ready().await?.call(fail).await;
//! }
//! assert_eq!(handle.state(), CircuitState::Open);
//!
//! // Now calls fail at once, without reaching the upstream.
//! let err = svc.ready().await?.call(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert!(open.retry_after() <= Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```

mod classify;
mod config;
pub mod future;
mod handle;
mod layer;
mod service;
mod state;
mod window;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use classify::HttpStatus;
pub use classify::{Classify, ErrorsAreFailures, Outcome};
pub use config::{CircuitBreakerBuilder, CircuitBreakerConfig, ConfigError, SlidingWindow};
pub use handle::CircuitBreakerHandle;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreaker;
pub use state::Stats;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass and are judged.
    Closed,
    /// Calls are refused until the open duration has passed.
    Open,
    /// A few trial calls pass; the rest are refused.
    HalfOpen,
    /// Refused by [`CircuitBreakerHandle::force_open`] until reset.
    ForcedOpen,
    /// Passing by [`CircuitBreakerHandle::force_closed`] until reset;
    /// nothing trips it.
    ForcedClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        ok::<CircuitBreakerLayer>();
        ok::<CircuitBreaker<tower::util::BoxCloneSyncService<u8, u8, crate::BoxError>>>();
        ok::<CircuitBreakerHandle>();
    }
}
