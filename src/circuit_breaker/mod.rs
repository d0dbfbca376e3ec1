//! Stop calling an upstream that is failing, and probe it until it
//! recovers.
//!
//! [`CircuitBreakerLayer`] watches the outcomes of calls through it:
//!
//! * **Closed**: calls pass; outcomes go into a sliding window (the last
//!   N calls, or the last N seconds in buckets). Once the window holds
//!   [`minimum_calls`](CircuitBreakerBuilder::minimum_calls) calls and the
//!   failure rate (or the slow-call rate) reaches its threshold, it opens.
//!   Every recorded call is judged, successes included: four failures then
//!   a success, with a minimum of 5 and a 50 % threshold, open it.
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
//! * What counts as a failure is a [`Classify`](crate::classify::Classify)
//!   of the shared vocabulary (the same closure or value retry and the
//!   adaptive layers take): by default `Err` is a failure and `Ok` a
//!   success; with the `http` feature, `HttpStatus` counts 5xx as failures
//!   but not 429 and 503 (overloads: the upstream shedding load on
//!   purpose).
//!
//! # Sharing
//!
//! All services made by one layer, all their clones and all
//! [handles](CircuitBreakerLayer::handle) share one breaker. In Closed a
//! call takes no lock: one atomic load when admitted, and when it completes
//! an atomic load plus a lock-free window update (a few atomic adds).
//!
//! # Watching it
//!
//! [`CircuitBreakerHandle`] reads the state and the window's statistics,
//! forces the breaker open or closed, and
//! [`subscribe`](CircuitBreakerHandle::subscribe)s to its transitions (a
//! [`StateChange`]: from, to, [why](ChangeReason), when) through a tokio
//! `broadcast` channel that never slows calls down.
//! [`observer`](CircuitBreakerLayer::observer) reports transitions,
//! refusals and every call's outcome to an
//! [`Observer`](crate::observe::Observer) instead.
//!
//! # Clocks
//!
//! The open duration, the half-open timeout and half-open trials are timed
//! on a precise monotonic clock. Calls in Closed read a cheaper, coarse
//! clock when its resolution is fine enough for what they time: on Linux,
//! `CLOCK_MONOTONIC_COARSE` through the vDSO, the time at the kernel's last
//! tick (1 to 4 ms apart on most kernels; a read costs a fraction of a
//! precise one). They use it when
//!
//! * each bucket of a time window spans at least 10 ticks (the default
//!   3 s buckets span 750 ticks of 4 ms). Bucket boundaries then move by
//!   up to one tick: a call up to one tick after a boundary may be counted
//!   in the bucket before it, and a bucket is forgotten up to one tick
//!   late;
//! * [`slow_call_duration`](CircuitBreakerBuilder::slow_call_duration), if
//!   set, is at least 100 ticks (400 ms with 4 ms ticks). A call's measured
//!   time is then within one tick of the truth, so only calls within 1% of
//!   the duration can be misjudged; shorter durations need the precise
//!   clock.
//!
//! Otherwise, and on other systems, closed calls read the precise clock.
//! An [observer](CircuitBreakerLayer::observer) does not change this: the
//! calls it wants timed
//! ([`Observer::latency_one_in`](crate::observe::Observer::latency_one_in):
//! every call for a closure; for a [`Monitor`](crate::observe::Monitor),
//! every call while the thread is quiet and one in 32 once it is busy) are
//! timed apart, on the precise
//! clock (two more reads), and judged slow on it.
//! With the `test-util` feature both follow tokio's clock, so tests on
//! paused time are exact.
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

mod config;
pub mod future;
mod handle;
mod layer;
mod per_key;
mod service;
mod state;
mod window;

pub use crate::observe::words::CircuitState;
pub use config::{CircuitBreakerBuilder, CircuitBreakerConfig, SlidingWindow};
pub use handle::{ChangeReason, CircuitBreakerHandle, StateChange};
pub use layer::CircuitBreakerLayer;
pub use per_key::{PerKeyCircuitBreaker, PerKeyCircuitBreakerHandle, PerKeyCircuitBreakerLayer};
pub use service::CircuitBreaker;
pub use state::Stats;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        ok::<CircuitBreakerLayer>();
        ok::<CircuitBreaker<tower::util::BoxCloneSyncService<u8, u8, crate::BoxError>>>();
        ok::<CircuitBreakerHandle>();
        ok::<StateChange>();
        // A receiver can move into a spawned task.
        fn task<T: Send + 'static>() {}
        task::<tokio::sync::broadcast::Receiver<StateChange>>();
    }

    use std::time::Duration;
    use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

    /// A service that fails on `Err` and takes `ms` milliseconds.
    fn upstream() -> impl Service<(bool, u64), Response = (), Error = BoxError> + Clone {
        service_fn(|(fail, ms): (bool, u64)| async move {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if fail { Err("down".into()) } else { Ok(()) }
        })
    }

    /// On the real clock: without `test-util` on Linux, this is the kernel's
    /// coarse clock (a tick of 1 to 10 ms), so the bounds are generous.
    #[tokio::test]
    async fn the_time_window_forgets_and_counts_in_real_time() {
        let layer = CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: Duration::from_millis(400),
                buckets: 4,
            })
            .minimum_calls(1000)
            .build()
            .unwrap();
        let handle = layer.handle();
        // 100 ms buckets are at least 10 ticks of any kernel's coarse clock.
        assert!(handle.breaker.load().is_coarse());
        let mut svc = layer.layer(upstream());
        for fail in [true, true, false, true, false] {
            let _ = svc.ready().await.unwrap().call((fail, 0)).await;
        }
        let s = handle.stats();
        assert_eq!((s.calls, s.failures), (5, 3), "{s:?}");
        // Every bucket those calls went into ends within 400 ms + one
        // bucket + one tick.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(handle.stats().calls, 0, "{:?}", handle.stats());
        for fail in [true, false] {
            let _ = svc.ready().await.unwrap().call((fail, 0)).await;
        }
        let s = handle.stats();
        assert_eq!((s.calls, s.failures), (2, 1), "{s:?}");
        assert_eq!(s.state, CircuitState::Closed);
    }

    /// Slow calls timed on the real (coarse, without `test-util`) clock.
    #[tokio::test]
    async fn slow_calls_are_timed_in_real_time() {
        let layer = CircuitBreakerLayer::builder()
            .window(SlidingWindow::Count(10))
            .minimum_calls(1000)
            .slow_call_duration(Duration::from_millis(500))
            .build()
            .unwrap();
        let handle = layer.handle();
        // 500 ms is at least 100 ticks of a coarse clock of up to 5 ms.
        if crate::clock::CoarseClock::resolution() <= 5_000_000 {
            assert!(handle.breaker.load().is_coarse());
        }
        let mut svc = layer.layer(upstream());
        svc.ready().await.unwrap().call((false, 0)).await.unwrap();
        svc.ready().await.unwrap().call((false, 650)).await.unwrap();
        let s = handle.stats();
        assert_eq!((s.calls, s.slow_calls), (2, 1), "{s:?}");
    }

    /// An observer does not change the clock of closed calls: the latency
    /// it is given is timed apart, on the precise clock, for the calls it
    /// wants timed.
    #[tokio::test]
    async fn an_observer_keeps_the_coarse_clock_and_times_calls_apart() {
        use std::sync::{Arc, Mutex};
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let seen = latencies.clone();
        let layer =
            CircuitBreakerLayer::default().observer(move |e: &crate::observe::Event<'_>| {
                if let crate::observe::Event::BreakerCall { latency, .. } = e {
                    seen.lock().unwrap().push(*latency);
                }
            });
        assert!(layer.handle().breaker.load().is_coarse());
        let mut svc = layer.layer(upstream());
        svc.ready().await.unwrap().call((false, 20)).await.unwrap();
        // A closure observer wants every call timed.
        let latencies = latencies.lock().unwrap();
        assert_eq!(latencies.len(), 1);
        assert!(
            latencies[0].is_some_and(|l| l >= Duration::from_millis(20)),
            "{latencies:?}"
        );
        // A bucket shorter than 10 ticks keeps the precise clock (where
        // there are ticks).
        let layer = CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: Duration::from_millis(10),
                buckets: 10,
            })
            .build()
            .unwrap();
        assert_eq!(
            layer.handle().breaker.load().is_coarse(),
            crate::clock::CoarseClock::resolution() == 0
        );
        assert!(
            CircuitBreakerLayer::default()
                .handle()
                .breaker
                .load()
                .is_coarse()
        );
    }

    /// `observer` and `shadow` replace the breaker for the layer and every
    /// handle (taken before or after); services wrapped before keep theirs.
    #[tokio::test]
    async fn setters_after_a_handle_replace_the_breaker_it_follows() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let early = layer.handle();
        let before = layer.layer(upstream());
        let layer = layer.clone().shadow();
        let after = layer.layer(upstream());
        // The shadow breaker opens but lets the next call through.
        after.clone().oneshot((true, 0)).await.unwrap_err();
        assert_eq!(early.state(), CircuitState::Open);
        assert!(after.clone().oneshot((false, 0)).await.is_ok());
        // The service wrapped before still has the old, enforcing breaker,
        // which has seen nothing.
        assert_eq!(before.handle().state(), CircuitState::Closed);
        before.clone().oneshot((true, 0)).await.unwrap_err();
        let refused = before.clone().oneshot((false, 0)).await;
        assert!(refused.unwrap_err().is::<crate::error::CircuitOpen>());
        assert_eq!(before.handle().stats().calls, 1);
        assert_eq!(early.stats().calls, 1);
    }
}
