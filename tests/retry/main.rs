//! BackoffRetryLayer on tokio's paused clock (features `test-util`, `http`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::classify::Outcome;
use tower_sluice::observe::Event;
use tower_sluice::retry::{
    Backoff, GiveUpReason, HttpClone, HttpReplay, Idempotency, Jitter, RetriesExhausted,
    RetryBudget,
};
use tower_sluice::{BackoffRetryLayer, Quota, RateLimitLayer, RateLimited};

mod accessors;
mod hints;

const MS: Duration = Duration::from_millis(1);

fn refused() -> BoxError {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into()
}

/// Counts calls and records when each started.
#[derive(Clone, Default)]
struct Log {
    times: Arc<Mutex<Vec<Instant>>>,
}

impl Log {
    fn hit(&self) -> usize {
        let mut t = self.times.lock().unwrap();
        t.push(Instant::now());
        t.len()
    }

    fn calls(&self) -> usize {
        self.times.lock().unwrap().len()
    }

    /// The waits between consecutive calls.
    fn gaps(&self) -> Vec<Duration> {
        let t = self.times.lock().unwrap();
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// Fails with a connection error `fails` times, then answers `n`.
fn flaky(
    log: Log,
    fails: usize,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |n: u32| {
        let call = log.hit();
        async move { if call <= fails { Err(refused()) } else { Ok(n) } }
    })
}

fn ceil_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)
}

fn no_jitter(base: Duration) -> Backoff {
    Backoff::exponential(base).jitter(Jitter::None)
}

#[tokio::test(start_paused = true)]
async fn waits_the_backoff_between_attempts() {
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .max_attempts(4)
        .layer(flaky(log.clone(), 3));
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(log.calls(), 4);
    assert_eq!(log.gaps(), [100 * MS, 200 * MS, 400 * MS]);
}

#[tokio::test(start_paused = true)]
async fn exact_delays_per_jitter_mode_with_a_seed() {
    let modes = [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Proportional(0.2),
    ];
    for jitter in modes {
        let backoff = Backoff::exponential(100 * MS)
            .max_delay(Duration::from_secs(1))
            .jitter(jitter)
            .seed(7);
        let expected: Vec<Duration> = backoff.delays().take(5).collect();
        let log = Log::default();
        let layer = BackoffRetryLayer::new(backoff).max_attempts(6).no_budget();
        let mut svc = layer.layer(flaky(log.clone(), 100));
        let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<RetriesExhausted>().unwrap().attempts(),
            6
        );
        // tokio's timer ticks in whole milliseconds, rounding sleeps up.
        let slept: Vec<Duration> = expected.iter().map(|d| ceil_ms(*d)).collect();
        assert_eq!(log.gaps(), slept, "{jitter:?}");
        let nominal = [100, 200, 400, 800, 1000].map(|m| m * MS);
        if jitter == Jitter::None {
            assert_eq!(expected, nominal);
        } else {
            assert_ne!(expected, nominal, "{jitter:?} added no jitter");
        }
        // The same seed gives the same delays in another layer; the next
        // request through this one draws another stream.
        let again = Log::default();
        let mut other = BackoffRetryLayer::new(backoff)
            .max_attempts(6)
            .no_budget()
            .layer(flaky(again.clone(), 100));
        let _ = other.ready().await.unwrap().call(1).await;
        assert_eq!(again.gaps(), slept);
        let next = Log::default();
        let mut svc2 = layer.layer(flaky(next.clone(), 100));
        let _ = svc2.ready().await.unwrap().call(1).await;
        if jitter != Jitter::None {
            assert_ne!(next.gaps(), slept, "{jitter:?}: streams repeat");
        }
    }
}

proptest! {
    #[test]
    fn jitter_stays_in_bounds(
        seed in any::<u64>(),
        base_ms in 1u64..500,
        factor in 1.0f64..4.0,
        cap_mult in 1u64..50,
        f in 0.0f64..=1.0,
    ) {
        let base = Duration::from_millis(base_ms);
        let cap = base * cap_mult as u32;
        let b = |j| Backoff::exponential(base).factor(factor).max_delay(cap).jitter(j).seed(seed);
        let nominal: Vec<Duration> = b(Jitter::None).delays().take(12).collect();
        for (n, d) in nominal.iter().enumerate() {
            let exact = base.as_secs_f64() * factor.powi(n as i32);
            prop_assert!(*d <= cap);
            prop_assert!((d.as_secs_f64() - exact.min(cap.as_secs_f64())).abs() < 1e-6);
        }
        for (d, nom) in b(Jitter::Full).delays().zip(&nominal) {
            prop_assert!(d <= *nom && d <= cap);
        }
        for (d, nom) in b(Jitter::Equal).delays().zip(&nominal) {
            prop_assert!(d >= *nom / 2 && d <= *nom);
        }
        let mut prev = base;
        for d in b(Jitter::Decorrelated).delays().take(12) {
            prop_assert!(d >= base && d <= cap && d <= (prev * 3).max(base));
            prev = d;
        }
        for (d, nom) in b(Jitter::Proportional(f)).delays().zip(&nominal) {
            prop_assert!(d <= cap);
            prop_assert!(d.as_secs_f64() >= nom.as_secs_f64() * (1.0 - f) - 1e-9);
            prop_assert!(d.as_secs_f64() <= nom.as_secs_f64() * (1.0 + f) + 1e-9);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn max_attempts_then_gives_up_with_the_last_error() {
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .max_attempts(3)
        .layer(flaky(log.clone(), 100));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(log.calls(), 3);
    let gave_up = err.downcast_ref::<RetriesExhausted>().expect("wrapped");
    assert_eq!(gave_up.attempts(), 3);
    let last = std::error::Error::source(gave_up).unwrap();
    let io = last.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

    // One attempt: the error passes through unwrapped.
    let log = Log::default();
    let mut once = BackoffRetryLayer::new(no_jitter(10 * MS))
        .max_attempts(1)
        .layer(flaky(log.clone(), 100));
    let err = once.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_transient_errors_are_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS)).layer(service_fn(move |_: u8| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<u8, BoxError>("bad request".into()) }
    }));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.to_string(), "bad request");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn max_elapsed_gives_up_before_a_wait_that_would_pass_it() {
    let log = Log::default();
    let start = Instant::now();
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .max_attempts(10)
        .max_elapsed(Duration::from_millis(750))
        .layer(flaky(log.clone(), 100));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    // Waits of 100, 200, 400 ms end at 700 ms; the next (800 ms) would end
    // at 1.5 s, so it gives up at 700 ms without sleeping.
    assert_eq!(log.gaps(), [100 * MS, 200 * MS, 400 * MS]);
    assert_eq!(start.elapsed(), 700 * MS);
    assert_eq!(
        err.downcast_ref::<RetriesExhausted>().unwrap().attempts(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limited_retry_after_is_the_minimum_wait() {
    // The inner rate limiter admits one request a second and rejects the
    // rest with RateLimited { retry_after }.
    let log = Log::default();
    let limited = RateLimitLayer::new(Quota::per_second(1))
        .reject()
        .layer(flaky(log.clone(), 0));
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS)).layer(limited);
    let start = Instant::now();
    svc.ready().await.unwrap().call(1).await.unwrap();
    svc.ready().await.unwrap().call(2).await.unwrap();
    // The second waited for the limiter's retry_after (1 s), not 10 ms.
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(log.calls(), 2);

    // With a cap on upstream waits, the cap wins.
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .max_retry_after(200 * MS)
        .max_attempts(2)
        .layer(
            RateLimitLayer::new(Quota::per_minute(1))
                .reject()
                .layer(flaky(Log::default(), 0)),
        );
    svc.ready().await.unwrap().call(1).await.unwrap();
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(start.elapsed(), 200 * MS);
    let gave_up = err.downcast_ref::<RetriesExhausted>().unwrap();
    assert!(gave_up.last_error().downcast_ref::<RateLimited>().is_some());

    // And so does the backoff's max_delay: no single wait is longer.
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS).max_delay(300 * MS))
        .max_attempts(2)
        .layer(
            RateLimitLayer::new(Quota::per_minute(1))
                .reject()
                .layer(flaky(Log::default(), 0)),
        );
    svc.ready().await.unwrap().call(1).await.unwrap();
    let start = Instant::now();
    svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(start.elapsed(), 300 * MS);
}

// ---------------------------------------------------------------------------
// HTTP

/// A status and headers.
type Step = (u16, Vec<(&'static str, &'static str)>);

/// Answers each request with the next of `script` (status and headers),
/// then 200; records the bodies it received.
#[derive(Clone)]
struct Upstream {
    log: Log,
    script: Arc<Mutex<Vec<Step>>>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Upstream {
    fn new(script: Vec<Step>) -> Self {
        Upstream {
            log: Log::default(),
            script: Arc::new(Mutex::new(script.into_iter().rev().collect())),
            bodies: Arc::default(),
        }
    }

    fn service<B>(
        &self,
    ) -> impl Service<Request<B>, Response = Response<String>, Error = BoxError, Future: Send> + Clone
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let up = self.clone();
        service_fn(move |req: Request<B>| {
            let up = up.clone();
            async move {
                up.log.hit();
                let body = req.into_body().collect().await.map_err(Into::into)?;
                up.bodies.lock().unwrap().push(body.to_bytes());
                let (status, headers) = up.script.lock().unwrap().pop().unwrap_or((200, vec![]));
                let mut res = Response::builder().status(status);
                for (k, v) in headers {
                    res = res.header(k, v);
                }
                Ok::<_, BoxError>(res.body(String::from("answer")).unwrap())
            }
        })
    }
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test(start_paused = true)]
async fn http_retry_after_longer_than_the_backoff_is_used() {
    let up = Upstream::new(vec![(503, vec![("retry-after", "2")]), (429, vec![])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .http()
        .layer(up.service());
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // 2 s as asked, then the backoff's 200 ms for the 429 without a hint.
    assert_eq!(up.log.gaps(), [Duration::from_secs(2), 200 * MS]);
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_max_elapsed_gives_up_at_once() {
    // 30 s asked, cut to max_delay (10 s): still past the 5 s budget.
    let up = Upstream::new(vec![(503, vec![("retry-after", "30")])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .max_elapsed(Duration::from_secs(5))
        .http()
        .layer(up.service());
    let start = Instant::now();
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(up.log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn malformed_retry_after_is_ignored_and_negative_is_clamped() {
    let up = Upstream::new(vec![
        (503, vec![("retry-after", "tomorrow")]),
        (503, vec![("retry-after", "-5")]),
    ]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .http()
        .layer(up.service());
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(up.log.gaps(), [100 * MS, 200 * MS]);
}

#[tokio::test(start_paused = true)]
async fn grpc_negative_pushback_is_not_retried() {
    let up = Upstream::new(vec![(503, vec![("grpc-retry-pushback-ms", "-1")])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .http()
        .layer(up.service());
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.log.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_methods_are_not_retried_unless_allowed() {
    let post = |key: bool| {
        let mut b = Request::post("/");
        if key {
            b = b.header("idempotency-key", "k1");
        }
        b.body(Full::new(Bytes::from_static(b"x"))).unwrap()
    };
    let layer = || BackoffRetryLayer::new(no_jitter(10 * MS));
    let cases = [
        (HttpClone::new(), false, 1),
        (HttpClone::new(), true, 1),
        (
            HttpClone::new().rules(Idempotency::new().idempotency_key(true)),
            false,
            1,
        ),
        (
            HttpClone::new().rules(Idempotency::new().idempotency_key(true)),
            true,
            2,
        ),
        (
            HttpClone::new().rules(Idempotency::new().all_methods(true)),
            false,
            2,
        ),
    ];
    for (policy, key, calls) in cases {
        let up = Upstream::new(vec![(503, vec![])]);
        let mut svc = layer().http().clone_request(policy).layer(up.service());
        let res = svc.ready().await.unwrap().call(post(key)).await.unwrap();
        assert_eq!(up.log.calls(), calls, "{policy:?} key={key}");
        let want = if calls == 1 { 503 } else { 200 };
        assert_eq!(res.status().as_u16(), want);
    }
}

/// A request that cannot be cloned.
#[derive(Debug)]
struct Unique(u32);

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_copied_is_sent_once() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let inner = service_fn(move |_: Unique| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, BoxError>(refused()) }
    });
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .clone_request(|_: &Unique| None)
        .layer(inner);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Unique(1))
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Passed through, not wrapped.
    assert!(err.downcast_ref::<std::io::Error>().is_some());

    // A hook that can copy it is retried.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let inner = service_fn(move |u: Unique| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move { if n == 0 { Err(refused()) } else { Ok(u.0) } }
    });
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .clone_request(|u: &Unique| Some(Unique(u.0)))
        .layer(inner);
    assert_eq!(svc.ready().await.unwrap().call(Unique(9)).await.unwrap(), 9);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A streamed body that is not `Clone`: yields its chunks one by one.
struct Chunks(Vec<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Frame::data(self.0.remove(0)))))
        }
    }
}

fn streamed(method: Method, chunks: usize, size: usize) -> Request<Chunks> {
    let body = (0..chunks)
        .map(|i| Bytes::from(vec![b'a' + i as u8; size]))
        .collect();
    Request::builder()
        .method(method)
        .uri("/")
        .body(Chunks(body))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn replay_body_under_the_cap_is_replayed_identically() {
    let up = Upstream::new(vec![(503, vec![]), (502, vec![])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .http_replay()
        .layer(up.service());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(streamed(Method::PUT, 4, 1000))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let bodies = up.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0].len(), 4000);
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test(start_paused = true)]
async fn replay_body_over_the_cap_is_not_retried() {
    let up = Upstream::new(vec![(503, vec![])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .http_replay()
        .clone_request(HttpReplay::new().max_bytes(3000))
        .layer(up.service());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(streamed(Method::PUT, 4, 1000))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.log.calls(), 1);
    assert_eq!(up.bodies.lock().unwrap()[0].len(), 4000);

    // A POST is streamed once, without buffering, and not retried.
    let up = Upstream::new(vec![(503, vec![])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS))
        .http_replay()
        .layer(up.service());
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(streamed(Method::POST, 2, 10))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.log.calls(), 1);
}

// ---------------------------------------------------------------------------
// budget, cancellation, readiness, events

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_when_everything_fails() {
    const N: usize = 500;
    // No floor: at most 20% extra calls.
    let log = Log::default();
    let budget = RetryBudget::new(Duration::from_secs(10), 0.2, 0).unwrap();
    let mut svc = BackoffRetryLayer::new(Backoff::constant(MS))
        .max_attempts(5)
        .budget(budget.clone())
        .layer(flaky(log.clone(), usize::MAX));
    let start = Instant::now();
    for _ in 0..N {
        let _ = svc.ready().await.unwrap().call(1).await;
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    let calls = log.calls();
    assert!(calls <= N + N / 5, "{calls} calls for {N} requests");
    assert!(
        calls >= N + N / 5 - 5,
        "the budget allowed too few: {calls}"
    );

    // The default budget adds a floor of 10 a second over its 10 s window.
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(Backoff::constant(MS))
        .max_attempts(5)
        .layer(flaky(log.clone(), usize::MAX));
    let start = Instant::now();
    for _ in 0..N {
        let _ = svc.ready().await.unwrap().call(1).await;
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    let calls = log.calls();
    assert!(calls <= N + N / 5 + 100, "{calls} calls for {N} requests");
    assert!(calls >= N + N / 5 + 95, "{calls}");

    // Without a budget every request makes all its attempts.
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(Backoff::constant(MS))
        .max_attempts(5)
        .no_budget()
        .layer(flaky(log.clone(), usize::MAX));
    for _ in 0..10 {
        let _ = svc.ready().await.unwrap().call(1).await;
    }
    assert_eq!(log.calls(), 50);
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_budget() {
    let log = Log::default();
    let layer = BackoffRetryLayer::new(Backoff::constant(MS))
        .budget(RetryBudget::new(Duration::from_secs(10), 0.0, 1).unwrap());
    let svc = layer.layer(flaky(log.clone(), usize::MAX));
    // A floor of 1/s over 10 s: 10 retries in all, whichever clone asks.
    for _ in 0..20 {
        let mut c = svc.clone();
        let _ = c.ready().await.unwrap().call(1).await;
    }
    assert_eq!(log.calls(), 20 + 10);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_during_the_wait_cancels_the_retry() {
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(no_jitter(Duration::from_secs(1)))
        .layer(flaky(log.clone(), usize::MAX));
    let fut = svc.ready().await.unwrap().call(1);
    let res = tokio::time::timeout(500 * MS, fut).await;
    assert!(res.is_err(), "still waiting before the retry");
    assert_eq!(log.calls(), 1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(log.calls(), 1, "a dropped future made another attempt");
}

#[tokio::test(start_paused = true)]
async fn retries_go_on_after_the_service_and_the_layer_are_dropped() {
    // Without shared state (the future holds a copy of the settings) and
    // with it (a budget and an observer: the future holds the layer's
    // shared state).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layers = [
        BackoffRetryLayer::new(no_jitter(100 * MS))
            .max_attempts(3)
            .no_budget(),
        BackoffRetryLayer::new(no_jitter(100 * MS))
            .max_attempts(3)
            .budget(RetryBudget::new(Duration::from_secs(10), 0.0, 1).unwrap())
            .observer(recorder(&seen)),
    ];
    for layer in layers {
        let log = Log::default();
        let svc = layer.layer(flaky(log.clone(), usize::MAX));
        drop(layer);
        // `oneshot` drops the service once it has called it.
        let err = svc.oneshot(1).await.unwrap_err();
        assert_eq!(
            err.downcast_ref::<RetriesExhausted>().unwrap().attempts(),
            3
        );
        assert_eq!(log.gaps(), [100 * MS, 200 * MS]);
    }
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Seen::Scheduled(2, 100 * MS, None),
            Seen::Scheduled(3, 200 * MS, None),
            Seen::GaveUp(3, GiveUpReason::MaxAttempts),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_future_tells_its_state() {
    let log = Log::default();
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS)).layer(flaky(log.clone(), 1));
    let mut fut = Box::pin(svc.ready().await.unwrap().call(4));
    assert!(format!("{fut:?}").contains(r#"state: "Called", attempts: Some(1)"#));
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    assert!(format!("{fut:?}").contains(r#"state: "Sleeping", attempts: Some(1)"#));
    assert_eq!(fut.await.unwrap(), 4);
    assert_eq!(log.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_the_inner_service_to_be_ready() {
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    handle.allow(1);
    let mut svc = BackoffRetryLayer::new(no_jitter(10 * MS)).layer(mock);
    svc.ready().await.unwrap();
    let mut fut = tokio_test::task::spawn(svc.call(5));
    assert!(fut.poll().is_pending());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 5);
    send.send_error(refused());
    assert!(fut.poll().is_pending());
    // After the backoff, the retry waits for readiness: the mock has no
    // capacity left, so nothing is called (the mock panics if called
    // while not ready).
    tokio::time::sleep(50 * MS).await;
    assert!(fut.poll().is_pending());
    assert!(fut.poll().is_pending());
    handle.allow(1);
    assert!(fut.is_woken());
    assert!(fut.poll().is_pending());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req, 5);
    send.send_response(50);
    assert_eq!(fut.await.unwrap(), 50);
}

/// What a retry layer reported, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Scheduled(u32, Duration, Option<u16>),
    GaveUp(u32, GiveUpReason),
    Budget(u32),
}

/// An observer appending the retry events it sees to `seen`.
fn recorder(seen: &Arc<Mutex<Vec<Seen>>>) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
    let seen = seen.clone();
    move |e: &Event<'_>| {
        let mut s = seen.lock().unwrap();
        match e {
            Event::RetryScheduled {
                attempt,
                delay,
                reason,
                ..
            } => {
                let status = match reason {
                    tower_sluice::retry::RetryReason::Status(s) => Some(*s),
                    _ => None,
                };
                s.push(Seen::Scheduled(*attempt, *delay, status))
            }
            Event::RetryGaveUp {
                attempts, reason, ..
            } => s.push(Seen::GaveUp(*attempts, *reason)),
            Event::RetryBudgetExhausted { attempts, .. } => s.push(Seen::Budget(*attempts)),
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn events_are_reported() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let up = Upstream::new(vec![(503, vec![("retry-after", "1")])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .observer(recorder(&seen))
        .budget(RetryBudget::new(Duration::from_secs(10), 0.0, 0).unwrap())
        .http()
        .layer(up.service());
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *seen.lock().unwrap(),
        [Seen::Budget(1), Seen::GaveUp(1, GiveUpReason::Budget)]
    );

    seen.lock().unwrap().clear();
    let up = Upstream::new(vec![(502, vec![]), (504, vec![]), (503, vec![])]);
    let mut svc = BackoffRetryLayer::new(no_jitter(100 * MS))
        .observer(recorder(&seen))
        .http()
        .layer(up.service());
    let res = svc.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            Seen::Scheduled(2, 100 * MS, Some(502)),
            Seen::Scheduled(3, 200 * MS, Some(504)),
            Seen::GaveUp(3, GiveUpReason::MaxAttempts),
        ]
    );
    let _ = Outcome::Failure;
}

/// One closure, given to retry, the breaker and an adaptive layer around a
/// service whose error is `std::io::Error`: each layer reads the same
/// outcomes (the error boxed, as every layer passes it on).
#[tokio::test(start_paused = true)]
async fn one_closure_classifies_for_retry_breaker_and_throttle_over_an_io_service() {
    use std::io;
    use tower_sluice::CircuitBreakerLayer;
    use tower_sluice::adaptive::AdaptiveThrottleLayer;

    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    // Request 0: reset twice, then 200. Request 1: 404. Request 2: not found.
    let upstream = service_fn(move |req: u32| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            match (req, n) {
                (0, 0 | 1) => Err(io::Error::from(io::ErrorKind::ConnectionReset)),
                (0, _) => Ok(200u16),
                (1, _) => Ok(404),
                _ => Err(io::Error::from(io::ErrorKind::NotFound)),
            }
        }
    });
    let rule = |r: &Result<u16, BoxError>| match r {
        Ok(429 | 503) => Outcome::Overloaded,
        Ok(500..) => Outcome::Failure,
        Ok(400..) => Outcome::Ignore,
        Ok(_) => Outcome::Success,
        Err(e) => match e.downcast_ref::<io::Error>().map(io::Error::kind) {
            Some(io::ErrorKind::ConnectionReset) => Outcome::Failure,
            _ => Outcome::Ignore,
        },
    };
    let breaker = CircuitBreakerLayer::default().classify(rule);
    let stats = breaker.handle();
    // In shadow mode: it counts and decides, never refuses.
    let throttle = AdaptiveThrottleLayer::new().shadow().classify(rule);
    let counts = throttle.handle();
    let retry = BackoffRetryLayer::new(Backoff::constant(10 * MS).jitter(Jitter::None))
        .max_attempts(3)
        .classify(rule);
    let svc = tower::ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .layer(throttle)
        .service(upstream);

    assert_eq!(svc.clone().oneshot(0).await.unwrap(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3, "two resets retried");
    let s = stats.stats();
    assert_eq!((s.calls, s.failures), (3, 2));
    assert_eq!(counts.counts(), (3, 1), "one accept of three requests");

    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 404);
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::NotFound),
        "ignored: returned at once, unwrapped"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5, "neither was retried");
    assert_eq!(stats.stats().calls, 3, "the breaker recorded neither");
    assert_eq!(counts.counts(), (5, 3), "ignored outcomes count as accepts");
}
