//! `cargo run --example reqwest_client --features axum,reqwest`: a reqwest
//! client behind retries, a rate limit and a circuit breaker, against a
//! local server that answers 429 with `Retry-After` now and then.
//!
//! `reqwest::Client` is a tower `Service<reqwest::Request>`, so the layers
//! wrap it directly. With the `reqwest` feature, `.http()` on the retry
//! layer and on the breaker understand reqwest's requests, responses and
//! errors: requests are copied with `try_clone` (a streaming body cannot
//! be, and is sent once), 429, 502, 503 and 504 are retried after the wait
//! their `Retry-After` asks for, and 5xx responses count against the
//! breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_sluice::retry::Backoff;
use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer, Quota, RateLimitLayer};

/// Every third request is refused with 429 and `Retry-After: 1`.
async fn api(State(hits): State<Arc<AtomicU32>>) -> (StatusCode, HeaderMap, &'static str) {
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let mut headers = HeaderMap::new();
    if n % 3 == 0 {
        headers.insert("retry-after", "1".parse().unwrap());
        return (StatusCode::TOO_MANY_REQUESTS, headers, "slow down");
    }
    (StatusCode::OK, headers, "hello")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new().route("/", get(api)).with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = ServiceBuilder::new()
        .layer(
            BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(100)))
                .max_attempts(4)
                .http(),
        )
        .layer(RateLimitLayer::new(Quota::per_second(10)))
        .layer(CircuitBreakerLayer::default().http())
        .service(reqwest::Client::new());

    let start = Instant::now();
    for i in 1..=5 {
        let req = reqwest::Request::new(reqwest::Method::GET, url.parse()?);
        let res = client.clone().oneshot(req).await?;
        println!(
            "request {i}: {} at {:.1?} ({} server hits so far)",
            res.status(),
            start.elapsed(),
            hits.load(Ordering::SeqCst)
        );
        assert_eq!(res.status(), reqwest::StatusCode::OK);
    }
    println!("every request succeeded; each 429 was retried after its Retry-After");
    Ok(())
}
