//! `cargo run --example client_pipeline --features axum`: the whole client
//! stack against a local mock upstream that enforces a quota the client
//! does not know exactly and fails some requests.
//!
//! ```text
//! QueueLayer        many tasks share one client; at most 8 in flight
//!  └ BackoffRetry   502/503/429 retried with backoff, Retry-After honoured
//!     └ RateLimit   every attempt paced under the upstream's quota
//!        └ Breaker  stops calling an upstream that keeps failing
//!           └ hyper client
//! ```
//!
//! The upstream allows 20 requests a second (burst 5) and fails every 9th
//! request with 502; the client limits itself to 18 a second (burst 3).
//! It prints that every request completed and how few 429s it got.

#[path = "support/upstream.rs"]
mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_sluice::circuit_breaker::SlidingWindow;
use tower_sluice::observe::Event;
use tower_sluice::retry::{Backoff, Jitter};
use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer, QueueLayer, Quota, RateLimitLayer};

const REQUESTS: u32 = 60;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (addr, upstream) = upstream::start(Quota::per_second(20).with_burst(5), 9).await;
    let url = format!("http://{addr}/");

    let retries = Arc::new(AtomicU32::new(0));
    let counted = retries.clone();
    let client = ServiceBuilder::new()
        .layer(QueueLayer::new(256).concurrency(8))
        .layer(
            BackoffRetryLayer::new(
                Backoff::exponential(Duration::from_millis(50))
                    .max_delay(Duration::from_secs(2))
                    .jitter(Jitter::Full),
            )
            .max_attempts(6)
            .max_elapsed(Duration::from_secs(20))
            .observer(move |e: &Event<'_>| {
                if let Event::RetryScheduled { .. } = e {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            })
            .http(),
        )
        .layer(RateLimitLayer::new(Quota::per_second(18).with_burst(3)))
        .layer(
            CircuitBreakerLayer::builder()
                .window(SlidingWindow::Count(20))
                .minimum_calls(10)
                .failure_rate_threshold(50.0)
                .build()?
                .http(),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());

    println!("{REQUESTS} requests from 12 tasks to {url}");
    println!("upstream: 20/s (burst 5), every 9th request fails; client: 18/s (burst 3)\n");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..12 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..REQUESTS / 12 {
                let req = Request::get(&url).body(Empty::new()).unwrap();
                match client.clone().oneshot(req).await {
                    Ok(res) if res.status() == StatusCode::OK => ok += 1,
                    Ok(res) => eprintln!("task {task}: gave up with {}", res.status()),
                    Err(e) => eprintln!("task {task}: {e}"),
                }
            }
            ok
        }));
    }
    let mut completed = 0;
    for t in tasks {
        completed += t.await?;
    }
    let elapsed = start.elapsed();
    let limited = upstream.stats.limited.load(Ordering::SeqCst);
    let failed = upstream.stats.failed.load(Ordering::SeqCst);
    println!(
        "completed {completed}/{REQUESTS} in {:.1?} ({:.1}/s)",
        elapsed,
        f64::from(completed) / elapsed.as_secs_f64()
    );
    println!(
        "upstream saw {} requests: {} ok, {limited} x 429, {failed} x 502 (injected); the client retried {} times",
        upstream.arrival_times().len(),
        upstream.stats.ok.load(Ordering::SeqCst),
        retries.load(Ordering::Relaxed)
    );
    println!(
        "busiest second at the upstream: {} requests (its quota: 20/s, burst 5)",
        upstream.max_in_window(Duration::from_secs(1))
    );
    if completed != REQUESTS || limited > 3 {
        return Err(format!(
            "expected every request to complete with at most 3 x 429, got {completed} and {limited}"
        )
        .into());
    }
    Ok(())
}
