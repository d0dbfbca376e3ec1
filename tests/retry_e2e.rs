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
    let app = Router::new()
        .route("/", get(handler).post(handler))
        .with_state(hits);
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

/// The reqwest client as it comes, behind retry, a rate limit and an HTTP
/// breaker: no hand-written classifier or request cloner.
#[cfg(feature = "reqwest")]
mod reqwest_client {
    use super::*;
    use reqwest::Method;
    use tower_sluice::circuit_breaker::CircuitState;
    use tower_sluice::classify::{Classify, HttpStatus, Outcome};
    use tower_sluice::retry::{HttpRetry, is_transient};
    use tower_sluice::{CircuitBreakerLayer, Quota, RateLimitLayer};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_a_503_through_a_plain_reqwest_client() -> Result<(), BoxError> {
        let hits = Arc::new(AtomicU32::new(0));
        let url = serve(hits.clone()).await;

        let breaker = CircuitBreakerLayer::default().classify(HttpStatus);
        let state = breaker.handle();
        let client = ServiceBuilder::new()
            .layer(BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(50))).http())
            .layer(RateLimitLayer::new(Quota::per_second(20)))
            .layer(breaker)
            .service(reqwest::Client::new());
        let start = Instant::now();
        let res = client
            .oneshot(reqwest::Request::new(Method::GET, url.parse()?))
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await?, "hello");
        assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s retried, then 200");
        // Each 503 asked for a second: the retries waited for it.
        assert!(
            start.elapsed() >= Duration::from_millis(1_900),
            "{:?}",
            start.elapsed()
        );
        // The breaker saw the 503s as shed load (overloads, not counted) and the 200.
        assert_eq!(state.state(), CircuitState::Closed);
        assert_eq!(state.stats().calls, 1);
        Ok(())
    }

    /// One closure over `Result<reqwest::Response, BoxError>`, given to
    /// retry, the breaker and the AIMD layer of one client: retry
    /// retries the 503s (waiting the `Retry-After` the verdict read), the
    /// breaker does not count them, the AIMD layer cuts its rate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_closure_classifies_for_retry_breaker_and_aimd() -> Result<(), BoxError> {
        use tower_sluice::adaptive::AimdLayer;
        use tower_sluice::classify::Verdict;

        let hits = Arc::new(AtomicU32::new(0));
        let url = serve(hits.clone()).await;

        let rule = |r: &Result<reqwest::Response, BoxError>| match r {
            Ok(res) if res.status() == StatusCode::SERVICE_UNAVAILABLE => {
                Verdict::overloaded().with_response(res)
            }
            Ok(res) if res.status().is_server_error() => Verdict::failure(),
            Ok(_) => Verdict::success(),
            Err(_) => Verdict::failure(),
        };
        let breaker = CircuitBreakerLayer::default().classify(rule);
        let state = breaker.handle();
        let aimd = AimdLayer::new(Quota::per_second(100)).classify(rule);
        let rate = aimd.handle();
        let client = ServiceBuilder::new()
            .layer(
                BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(10)))
                    .http()
                    .classify(rule),
            )
            .layer(breaker)
            .layer(aimd)
            .service(reqwest::Client::new());
        let start = Instant::now();
        let res = client
            .oneshot(reqwest::Request::new(Method::GET, url.parse()?))
            .await?;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(hits.load(Ordering::SeqCst), 3, "two 503s retried, then 200");
        assert!(
            start.elapsed() >= Duration::from_millis(1_900),
            "each retry waited the 503's Retry-After: {:?}",
            start.elapsed()
        );
        assert_eq!(state.stats().calls, 1, "the 503s are not counted");
        assert_eq!(state.stats().failures, 0);
        assert!(
            rate.rate() < 100.0,
            "the 503s cut the rate: {}",
            rate.rate()
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_post_and_a_streamed_body_are_sent_once() -> Result<(), BoxError> {
        let hits = Arc::new(AtomicU32::new(0));
        let url = serve(hits.clone()).await;
        let client = ServiceBuilder::new()
            .layer(BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(10))).http())
            .service(reqwest::Client::new());

        // POST is not idempotent: the 503 comes back, unretried.
        let res = client
            .clone()
            .oneshot(reqwest::Request::new(Method::POST, url.parse()?))
            .await?;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        // A GET with a streamed body cannot be cloned: sent once.
        let mut req = reqwest::Request::new(Method::GET, url.parse()?);
        let chunks = futures_lite_stream(vec![Ok::<_, std::io::Error>(Bytes::from("x"))]);
        *req.body_mut() = Some(reqwest::Body::wrap_stream(chunks));
        let res = client.oneshot(req).await?;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        Ok(())
    }

    /// A stream of `items`, without a stream crate.
    fn futures_lite_stream<T: Send + 'static>(
        items: Vec<T>,
    ) -> impl futures_core::Stream<Item = T> + Send + 'static {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<T>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        impl<T> Unpin for Iter<T> {}
        Iter(items.into_iter())
    }

    #[tokio::test]
    async fn reqwest_errors_are_classified() -> Result<(), BoxError> {
        // Nothing listens on this port: a connect error, transient.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}/", listener.local_addr()?);
        drop(listener);
        let err = reqwest::get(&url).await.unwrap_err();
        assert!(err.is_connect());
        // Judged as it comes from the client, and boxed.
        assert_eq!(
            HttpRetry.classify(&Err::<reqwest::Response, _>(&err).map_err(|e| e.to_string())),
            Outcome::Ignore,
            "a String error is not one the rule reads"
        );
        let boxed: BoxError = Box::new(err);
        assert!(is_transient(&*boxed));
        assert_eq!(
            HttpRetry.classify(&Err::<reqwest::Response, _>(boxed)),
            Outcome::Failure
        );
        let err = reqwest::get(&url).await.unwrap_err();
        assert_eq!(
            HttpRetry.classify(&Err::<reqwest::Response, _>(err)),
            Outcome::Failure
        );

        // A status error (error_for_status) is judged by its status.
        let hits = Arc::new(AtomicU32::new(0));
        let url = serve(hits).await;
        let status_err = reqwest::get(&url).await?.error_for_status().unwrap_err();
        assert_eq!(status_err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(
            HttpStatus.classify(&Err::<reqwest::Response, _>(status_err)),
            Outcome::Overloaded,
            "503: the upstream shedding load"
        );
        let boxed: BoxError = Box::new(reqwest::get(&url).await?.error_for_status().unwrap_err());
        assert!(is_transient(&*boxed), "a 503 made an error is retried");
        let ok = reqwest::get(&url).await?;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            HttpStatus.classify(&Ok::<_, reqwest::Error>(ok)),
            Outcome::Success
        );
        Ok(())
    }
}
