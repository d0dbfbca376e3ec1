//! End to end: a circuit breaker in front of a real HTTP client, calling a
//! real axum server on 127.0.0.1 that can be taken down and brought back.
//!
//! Real time passes here; every wait is bounded generously and nothing
//! asserts how long a step took, so the test stays deterministic under
//! load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::get;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_sluice::circuit_breaker::CircuitState;
use tower_sluice::classify::HttpStatus;
use tower_sluice::{CircuitBreakerLayer, CircuitOpen};

const OPEN_DURATION: Duration = Duration::from_millis(300);

/// The upstream's switch and the number of requests it has seen.
#[derive(Clone, Default)]
struct Upstream {
    down: Arc<AtomicBool>,
    hits: Arc<AtomicU64>,
}

impl Upstream {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

/// Counts the hit, then answers 500 while down and 200 otherwise. (500,
/// not 503: `HttpStatus` calls 503 an overload, deliberate load shedding,
/// which the breaker does not count.)
async fn handler(State(up): State<Upstream>) -> (StatusCode, &'static str) {
    up.hits.fetch_add(1, Ordering::SeqCst);
    if up.down.load(Ordering::SeqCst) {
        (StatusCode::INTERNAL_SERVER_ERROR, "down")
    } else {
        (StatusCode::OK, "ok")
    }
}

/// Serves `GET /` on a free port of 127.0.0.1 and returns its URL.
async fn serve(up: Upstream) -> String {
    let app = Router::new().route("/", get(handler)).with_state(up);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/")
}

/// Sends `GET url` through `svc`: the status, or the error.
async fn get_status<S, B>(svc: &mut S, url: &str) -> Result<StatusCode, BoxError>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = BoxError>,
{
    let req = Request::get(url).body(Empty::new()).unwrap();
    let res = svc.ready().await?.call(req).await?;
    Ok(res.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_a_failing_server_and_closes_when_it_recovers() -> Result<(), BoxError> {
    let up = Upstream::default();
    let url = serve(up.clone()).await;

    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .open_duration(OPEN_DURATION)
        .max_open_duration(OPEN_DURATION)
        .open_jitter(0.0)
        .permitted_calls_in_half_open(1)
        .half_open_timeout(Duration::from_secs(10))
        .build()?
        .classify(HttpStatus);
    let handle = breaker.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut svc = ServiceBuilder::new().layer(breaker).service(client);

    // Up: 200s, and the breaker stays closed.
    for _ in 0..3 {
        assert_eq!(get_status(&mut svc, &url).await?, StatusCode::OK);
        assert_eq!(handle.state(), CircuitState::Closed);
    }
    assert_eq!(up.hits(), 3);

    // Down: 500s until the breaker opens, after exactly 3 in a row.
    up.set_down(true);
    let mut failures = 0;
    while handle.state() != CircuitState::Open {
        assert!(
            failures < 3,
            "still {:?} after {failures} failures",
            handle.state()
        );
        assert_eq!(
            get_status(&mut svc, &url).await?,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        failures += 1;
    }
    assert_eq!(failures, 3);
    let hits_when_opened = up.hits();
    assert_eq!(hits_when_opened, 6);

    // Open: every call is refused at once, and none reaches the server.
    // The calls are refused without I/O, so 50 take far less than the open
    // duration; should a stalled scheduler let it pass anyway, stop before
    // a trial call could reach the server.
    let mut refused = 0;
    for i in 0..50 {
        if handle.state() != CircuitState::Open {
            break;
        }
        let err = get_status(&mut svc, &url)
            .await
            .expect_err("an open breaker let a call through");
        assert!(
            err.downcast_ref::<CircuitOpen>().is_some(),
            "call {i} failed with {err}, not CircuitOpen"
        );
        refused += 1;
    }
    assert!(refused > 0);
    assert_eq!(up.hits(), hits_when_opened, "the server was hit while open");

    // Back up; wait well past the open duration, then probe until a call
    // succeeds (bounded).
    up.set_down(false);
    tokio::time::sleep(OPEN_DURATION * 2).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let recovered = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match get_status(&mut svc, &url).await {
                Ok(StatusCode::OK) => break,
                Ok(status) => panic!("unexpected {status}"),
                Err(e) if e.downcast_ref::<CircuitOpen>().is_some() => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    })
    .await;
    assert!(recovered.is_ok(), "no call succeeded within 5 s");
    assert_eq!(handle.state(), CircuitState::Closed);

    // Closed again: calls pass and reach the server.
    let before = up.hits();
    for _ in 0..5 {
        assert_eq!(get_status(&mut svc, &url).await?, StatusCode::OK);
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(up.hits(), before + 5);
    Ok(())
}
