//! What an upstream's hints can do to `BackoffRetryLayer::http()`: no value
//! crashes it, a `+` sign is malformed, and no wait it asks for is longer
//! than the layer's cap (`max_retry_after`, by default `MAX_UPSTREAM_WAIT`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::observe::Event;
use tower_sluice::retry::{Backoff, Jitter};
use tower_sluice::{BackoffRetryLayer, MAX_UPSTREAM_WAIT};

/// One answer of the upstream: a status and header fields (as bytes, so
/// that any value a `HeaderValue` accepts can be sent).
#[path = "../support/hint_fields.rs"]
mod hint_fields;

use hint_fields::{Answer, answers};

/// Answers each request with the next of `script`, then 200; records when
/// each call started.
fn upstream(
    script: Vec<Answer>,
    calls: Arc<Mutex<Vec<Instant>>>,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    let script = Arc::new(Mutex::new(script.into_iter().rev().collect::<Vec<_>>()));
    service_fn(move |_: Request<()>| {
        calls.lock().unwrap().push(Instant::now());
        let (status, fields) = script.lock().unwrap().pop().unwrap_or((200, vec![]));
        let mut res = Response::builder().status(status);
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                res = res.header(HeaderName::from_static(name), value);
            }
        }
        let res = res.body(()).unwrap();
        async move { Ok::<_, BoxError>(res) }
    })
}

/// A backoff of 10 ms, doubling, never the bound on an upstream's wait.
fn backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(10))
        .max_delay(Duration::from_secs(365 * 86_400))
        .jitter(Jitter::None)
}

/// The waits between the calls of one request through `layer`.
async fn gaps(layer: BackoffRetryLayer, script: Vec<Answer>) -> Vec<Duration> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let attempts = script.len() as u32 + 1;
    let svc = layer
        .max_attempts(attempts)
        .no_budget()
        .http()
        .layer(upstream(script, calls.clone()));
    let req = Request::get("/").body(()).unwrap();
    tokio::time::timeout(Duration::from_secs(365 * 86_400), svc.oneshot(req))
        .await
        .expect("finished")
        .unwrap();
    let calls = calls.lock().unwrap();
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

fn answer(status: u16, name: &'static str, value: &str) -> Answer {
    (status, vec![(name, value.as_bytes().to_vec())])
}

#[tokio::test(start_paused = true)]
async fn every_upstream_wait_is_cut_to_the_cap() {
    let long = [
        answer(429, "retry-after", "86400"),
        answer(503, "retry-after", "99999999999999999999999"),
        answer(429, "retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
        answer(429, "ratelimit", r#""a";r=0;t=2592000"#),
        answer(429, "x-ratelimit-reset", "86400"),
        answer(429, "x-ratelimit-reset", "9223372036854775807"),
        answer(503, "grpc-retry-pushback-ms", "86400000"),
    ];
    for a in long {
        let gaps = gaps(BackoffRetryLayer::new(backoff()), vec![a.clone()]).await;
        assert_eq!(gaps, [MAX_UPSTREAM_WAIT], "{a:?}");
        let cap = Duration::from_secs(5);
        let gaps = gaps_with_cap(cap, a.clone()).await;
        assert_eq!(gaps, [cap], "{a:?}");
    }
}

async fn gaps_with_cap(cap: Duration, a: Answer) -> Vec<Duration> {
    gaps(
        BackoffRetryLayer::new(backoff()).max_retry_after(cap),
        vec![a],
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_plus_sign_is_malformed() {
    // `Retry-After: +5` is ignored: the backoff's 10 ms.
    let gaps = gaps(
        BackoffRetryLayer::new(backoff()),
        vec![answer(503, "retry-after", "+5")],
    )
    .await;
    assert_eq!(gaps, [Duration::from_millis(10)]);
    // `grpc-retry-pushback-ms: +100` is unparsable: not retried.
    let gaps = gaps_of_pushback("+100").await;
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(gaps_of_pushback("100").await, [Duration::from_millis(100)]);
}

async fn gaps_of_pushback(value: &str) -> Vec<Duration> {
    gaps(
        BackoffRetryLayer::new(backoff()),
        vec![answer(503, "grpc-retry-pushback-ms", value)],
    )
    .await
}

// ------------------------------------------------------------ properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the upstream answers, the retry layer neither panics nor
    /// waits longer than its cap (or its backoff, at most 80 ms here),
    /// measured on the paused clock and in the delays it reports.
    #[test]
    fn retry_waits_no_longer_than_the_cap(
        script in answers(),
        cap in proptest::option::of((0u64..120_000).prop_map(Duration::from_millis)),
    ) {
        let delays = Arc::new(Mutex::new(Vec::new()));
        let seen = delays.clone();
        let mut layer = BackoffRetryLayer::new(backoff()).observer(move |e: &Event<'_>| {
            if let Event::RetryScheduled { delay, .. } = e {
                seen.lock().unwrap().push(*delay);
            }
        });
        if let Some(cap) = cap {
            layer = layer.max_retry_after(cap);
        }
        let bound = cap.unwrap_or(MAX_UPSTREAM_WAIT).max(Duration::from_millis(80));
        let gaps = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(gaps(layer, script));
        for d in gaps.iter().chain(delays.lock().unwrap().iter()) {
            prop_assert!(*d <= bound, "waited {d:?}, bound {bound:?}: {gaps:?}");
        }
    }
}
