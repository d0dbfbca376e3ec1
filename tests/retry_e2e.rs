//! End to end: BackoffRetryLayer around hyper-util's client, calling a real
//! axum server on 127.0.0.1 that answers 503 with `Retry-After: 1` twice,
//! then 200.
//!
//! Real time passes here (about 2 s); the bounds are generous so that the
//! test stays deterministic under load.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_sluice::BackoffRetryLayer;
use tower_sluice::observe::Event;
use tower_sluice::retry::{Backoff, Jitter};

/// 503 with `Retry-After: 1` for the first two requests, then 200.
async fn handler(
    State(hits): State<Arc<AtomicU32>>,
) -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    let n = hits.fetch_add(1, Ordering::SeqCst);
    if n < 2 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "busy",
        )
    } else {
        (StatusCode::OK, [("x-ok", "1")], "hello")
    }
}

async fn serve(hits: Arc<AtomicU32>) -> String {
    let app = Router::new().route("/", get(handler)).with_state(hits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_a_503_with_retry_after_until_it_succeeds() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicU32::new(0));
    let url = serve(hits.clone()).await;

    let delays = Arc::new(Mutex::new(Vec::new()));
    let seen = delays.clone();
    let retry = BackoffRetryLayer::new(
        Backoff::exponential(Duration::from_millis(50)).jitter(Jitter::None),
    )
    .max_attempts(4)
    .max_elapsed(Duration::from_secs(30))
    .observer(move |e: &Event<'_>| {
        if let Event::RetryScheduled { delay, .. } = e {
            seen.lock().unwrap().push(*delay);
        }
    })
    .http();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(retry).service(client);

    let start = Instant::now();
    let req = Request::get(&url).body(Empty::new())?;
    let res = svc.ready().await?.call(req).await?;
    let elapsed = start.elapsed();

    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await?.to_bytes();
    assert_eq!(&body[..], b"hello");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    // Both waits were the server's second, not the 50 / 100 ms backoff.
    assert_eq!(*delays.lock().unwrap(), [Duration::from_secs(1); 2]);
    assert!(elapsed >= Duration::from_secs(2), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    Ok(())
}

/// A streamed request body that is not `Clone`.
struct Chunks(Vec<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(if self.0.is_empty() {
            None
        } else {
            Some(Ok(http_body::Frame::data(self.0.remove(0))))
        })
    }
}

/// 503 (`Retry-After: 0`) for the first upload, then the body's length.
async fn upload(
    State(hits): State<Arc<AtomicU32>>,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    if hits.fetch_add(1, Ordering::SeqCst) == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
            String::new(),
        )
    } else {
        (
            StatusCode::OK,
            [("x-ok", "1")],
            format!(
                "{} {}",
                body.len(),
                body.iter().map(|&b| u64::from(b)).sum::<u64>()
            ),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_a_streamed_body_through_hyper() -> Result<(), BoxError> {
    let hits = Arc::new(AtomicU32::new(0));
    let app = Router::new()
        .route("/", axum::routing::put(upload))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let retry = BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10))).http_replay();
    let client = Client::builder(TokioExecutor::new())
        .build_http::<tower_sluice::retry::ReplayBody<Chunks>>();
    let mut svc = ServiceBuilder::new().layer(retry).service(client);

    let chunks: Vec<Bytes> = (0..8u8).map(|i| Bytes::from(vec![i; 1000])).collect();
    let sum: u64 = (0..8u64).map(|i| i * 1000).sum();
    let req = Request::put(&url).body(Chunks(chunks))?;
    let res = svc.ready().await?.call(req).await?;
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await?.to_bytes();
    assert_eq!(std::str::from_utf8(&body)?, format!("8000 {sum}"));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    Ok(())
}
