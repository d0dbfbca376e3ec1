//! `cargo run --example reqwest_client --features axum`: a reqwest client
//! behind a rate limit and retries, against a local server that answers
//! 429 with `Retry-After` now and then.
//!
//! `reqwest::Client` is a tower `Service<reqwest::Request>`, so the layers
//! wrap it directly; no bridge is needed. Two small adapters make retries
//! work with reqwest's types: requests are copied with
//! `reqwest::Request::try_clone` (a streaming body cannot be, and is sent
//! once), and responses are classified by status with their `Retry-After`
//! read by `retry::response_hints`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_sluice::classify::Outcome;
use tower_sluice::retry::{Backoff, ClassifyRetry, DefaultRetry, Hint, Verdict, response_hints};
use tower_sluice::{BackoffRetryLayer, Quota, RateLimitLayer};

/// Retries 429, 502, 503 and 504 (waiting what `Retry-After` says) and the
/// transient errors `DefaultRetry` knows.
#[derive(Clone, Copy)]
struct ReqwestRetry;

impl ClassifyRetry<reqwest::Response> for ReqwestRetry {
    fn classify_retry(&self, result: &Result<reqwest::Response, BoxError>) -> Verdict {
        let res = match result {
            Ok(res) => res,
            Err(_) => {
                return ClassifyRetry::<reqwest::Response>::classify_retry(&DefaultRetry, result);
            }
        };
        match res.status().as_u16() {
            429 | 502 | 503 | 504 => match response_hints(res.headers()) {
                Hint::After(wait) => Verdict::new(Outcome::Failure).with_retry_after(wait),
                Hint::Stop => Verdict::new(Outcome::Success),
                _ => Verdict::new(Outcome::Failure),
            },
            _ => Verdict::new(Outcome::Success),
        }
    }
}

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
                .classify(ReqwestRetry)
                .clone_request(|req: &reqwest::Request| req.try_clone()),
        )
        .layer(RateLimitLayer::new(Quota::per_second(10)))
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
