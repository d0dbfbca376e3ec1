//! A hyper client behind `BackoffRetryLayer`, calling a flaky local server
//! that it starts itself: the server answers 503 (the first time with
//! `Retry-After: 1`), then 429, then 200. Each attempt and the wait before
//! it are printed.
//!
//! ```sh
//! cargo run --example retry_client --features axum
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_sluice::BackoffRetryLayer;
use tower_sluice::observe::Event;
use tower_sluice::retry::{Backoff, Jitter, RetryReason};

/// Fails three times in different ways, then succeeds.
async fn flaky(State(hits): State<Arc<AtomicU32>>) -> (StatusCode, HeaderMap, &'static str) {
    let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let mut headers = HeaderMap::new();
    let status = match n {
        1 => {
            headers.insert("retry-after", "1".parse().unwrap());
            StatusCode::SERVICE_UNAVAILABLE
        }
        2 => StatusCode::SERVICE_UNAVAILABLE,
        3 => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::OK,
    };
    println!("  server: attempt {n} -> {status}");
    (status, headers, "hello")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route("/", get(flaky))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let retry = BackoffRetryLayer::new(
        Backoff::exponential(Duration::from_millis(100))
            .max_delay(Duration::from_secs(2))
            .jitter(Jitter::Equal),
    )
    .max_attempts(5)
    .max_elapsed(Duration::from_secs(10))
    .observer(|event: &Event<'_>| match event {
        Event::RetryScheduled {
            attempt,
            delay,
            reason,
            upstream,
            ..
        } => {
            let why = match reason {
                RetryReason::Status(s) => format!("status {s}"),
                RetryReason::Error(e) => format!("error: {e}"),
                _ => "retryable response".to_string(),
            };
            let asked = upstream
                .map(|d| format!(", upstream asked {d:?}"))
                .unwrap_or_default();
            println!("  client: {why}; attempt {attempt} in {delay:?}{asked}");
        }
        Event::RetryGaveUp {
            attempts, reason, ..
        } => println!("  client: gave up after {attempts} attempts ({reason:?})"),
        _ => {}
    })
    .http();

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(retry).service(client);

    println!("GET {url}");
    let start = Instant::now();
    let req = Request::get(&url).body(Empty::new())?;
    let res = svc.ready().await?.call(req).await?;
    println!(
        "{} after {} attempts in {:.2?}",
        res.status(),
        hits.load(Ordering::SeqCst),
        start.elapsed()
    );
    Ok(())
}
