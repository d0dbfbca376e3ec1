//! Whole pipelines over real HTTP on 127.0.0.1: the client stack (queue →
//! retry → rate limit → breaker → hyper) against a mock upstream with a
//! hidden quota, injected failures and an outage; and the server stack
//! (per-key limit → concurrency → handler) under several concurrent
//! clients.

#[path = "../examples/support/upstream.rs"]
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};
use tower_sluice::circuit_breaker::CircuitState;
use tower_sluice::classify::HttpStatus;
use tower_sluice::http::HeaderKey;
use tower_sluice::observe::Event;
use tower_sluice::retry::{Backoff, Jitter, RetriesExhausted};
use tower_sluice::{
    BackoffRetryLayer, CircuitBreakerLayer, CircuitOpen, PerKeyLayer, QueueLayer, Quota,
    RateLimitLayer,
};

fn http_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pipeline_completes_everything_under_a_hidden_quota() {
    let (addr, up) = upstream::start(Quota::per_second(20).with_burst(5), 7).await;
    let url = format!("http://{addr}/");
    let client = ServiceBuilder::new()
        .layer(QueueLayer::new(256).concurrency(8))
        .layer(
            BackoffRetryLayer::new(
                Backoff::exponential(Duration::from_millis(50)).max_delay(Duration::from_secs(2)),
            )
            .max_attempts(6)
            .http(),
        )
        .layer(RateLimitLayer::new(Quota::per_second(18).with_burst(3)))
        .layer(CircuitBreakerLayer::default().classify(HttpStatus))
        .service(http_client());

    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..6 {
                    let req = Request::get(&url).body(Empty::new()).unwrap();
                    statuses.push(client.clone().oneshot(req).await.unwrap().status());
                }
                statuses
            })
        })
        .collect();
    for t in tasks {
        for status in t.await.unwrap() {
            assert_eq!(status, StatusCode::OK, "every request eventually succeeds");
        }
    }
    assert_eq!(up.stats.ok.load(Ordering::SeqCst), 60);
    assert!(
        up.stats.failed.load(Ordering::SeqCst) >= 8,
        "failures were injected"
    );
    let limited = up.stats.limited.load(Ordering::SeqCst);
    assert!(
        limited <= 3,
        "{limited} x 429: the client stays under the quota"
    );
    // Over any second the upstream saw at most its quota plus its burst.
    let busiest = up.max_in_window(Duration::from_secs(1));
    assert!(busiest <= 25, "{busiest} requests in one second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_keeps_requests_off_the_upstream_during_an_outage() {
    let (addr, up) = upstream::start(Quota::per_second(1_000), 0).await;
    let url = format!("http://{addr}/");
    // Calls that passed the breaker (so reached the upstream), and that
    // count at each breaker transition.
    let passed = Arc::new(AtomicU64::new(0));
    let transitions = Arc::new(Mutex::new(Vec::<(CircuitState, u64)>::new()));
    let (p, tr) = (passed.clone(), transitions.clone());
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .open_duration(Duration::from_millis(300))
        .max_open_duration(Duration::from_millis(300))
        .open_jitter(0.0)
        .build()
        .unwrap()
        .classify(HttpStatus)
        .observer(move |e: &Event<'_>| {
            if let Event::BreakerStateChanged { to, .. } = e {
                tr.lock().unwrap().push((*to, p.load(Ordering::SeqCst)));
            }
        });
    let handle = breaker.handle();
    let counted = passed.clone();
    let client = ServiceBuilder::new()
        .layer(
            BackoffRetryLayer::new(
                Backoff::exponential(Duration::from_millis(20))
                    .max_delay(Duration::from_millis(200))
                    .jitter(Jitter::None),
            )
            .max_attempts(3)
            .no_budget()
            .http(),
        )
        .layer(breaker)
        .map_request(move |r| {
            counted.fetch_add(1, Ordering::SeqCst);
            r
        })
        .service(http_client());

    up.outage.store(true, Ordering::SeqCst);
    let outage_ends = Instant::now() + Duration::from_millis(1_200);
    let (mut ok, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < outage_ends + Duration::from_millis(800) {
        assert!(Instant::now() < deadline);
        if Instant::now() >= outage_ends {
            up.outage.store(false, Ordering::SeqCst);
        }
        let req = Request::get(&url).body(Empty::new()).unwrap();
        match client.clone().oneshot(req).await {
            Ok(res) if res.status() == StatusCode::OK => ok += 1,
            // A failure is a clear one: the upstream's 502 after retries,
            // or the open breaker's error.
            Ok(res) => {
                assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
                failed += 1;
            }
            Err(e) => {
                let clear = e.is::<CircuitOpen>()
                    || e.downcast_ref::<RetriesExhausted>()
                        .is_some_and(|r| r.last_error().is::<CircuitOpen>());
                assert!(clear, "unexpected error: {e}");
                failed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed > 0 && ok > 0, "{failed} failed, {ok} ok");
    assert_eq!(handle.state(), CircuitState::Closed, "recovered");
    let transitions = transitions.lock().unwrap().clone();
    let opened = transitions
        .iter()
        .filter(|(s, _)| *s == CircuitState::Open)
        .count();
    assert!(opened >= 1, "{transitions:?}");
    // While open, nothing passed the breaker.
    for pair in transitions.windows(2) {
        if pair[0].0 == CircuitState::Open {
            assert_eq!(
                pair[0].1, pair[1].1,
                "calls reached the upstream while open: {transitions:?}"
            );
        }
    }
    // And the upstream saw no more than what passed.
    assert_eq!(
        up.arrival_times().len() as u64,
        passed.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pipeline_gives_each_key_its_quota_with_headers() {
    let limit = PerKeyLayer::new(Quota::per_minute(10), HeaderKey::from_static("x-api-key")).http();
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                "ok"
            }),
        )
        .layer(ServiceBuilder::new().layer(limit).concurrency_limit(16));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let clients: Vec<_> = (0..6)
        .map(|c| {
            tokio::spawn(async move {
                let client = http_client();
                let key = format!("client-{c}");
                let mut results = Vec::new();
                for _ in 0..14 {
                    let req = Request::get(format!("http://{addr}/"))
                        .header("x-api-key", &key)
                        .body(Empty::new())
                        .unwrap();
                    let res = client.request(req).await.unwrap();
                    let header = |name: &str| {
                        res.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    results.push((res.status(), header("ratelimit"), header("retry-after")));
                }
                results
            })
        })
        .collect();
    for c in clients {
        let results = c.await.unwrap();
        let ok: Vec<_> = results.iter().filter(|r| r.0 == StatusCode::OK).collect();
        let limited: Vec<_> = results
            .iter()
            .filter(|r| r.0 == StatusCode::TOO_MANY_REQUESTS)
            .collect();
        assert_eq!(ok.len(), 10, "each key gets its quota, no more");
        assert_eq!(limited.len(), 4);
        // Remaining counts down 9..0 on the admitted responses.
        for (i, (_, ratelimit, _)) in ok.iter().enumerate() {
            let r = ratelimit.as_deref().expect("RateLimit on success");
            assert!(r.contains(&format!(";r={};", 9 - i)), "{r}");
        }
        for (_, ratelimit, retry_after) in limited {
            let secs: u64 = retry_after.as_deref().unwrap().parse().unwrap();
            assert!((1..=6).contains(&secs), "Retry-After {secs}");
            assert!(ratelimit.as_deref().unwrap().contains(";r=0;"));
        }
    }
}
