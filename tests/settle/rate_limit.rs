//! Settling under the shared rate limit (`RateLimitLayer::cost(..).settle(..)`),
//! on tokio's paused clock: the same rules as per key, exact to the
//! nanosecond.

use std::time::Duration;

use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::cost::Settlement;
use tower_sluice::{Quota, RateLimitLayer, RateLimited};

use super::{Answer, MS, Prompt, prompt, retry_after};

/// 100 tokens a second (one every 10 ms), burst 100, for the whole
/// service; settled at the usage the answer reports.
/// The cost function's type.
type ByEstimate = tower_sluice::cost::ByCost<fn(&Prompt) -> u32>;

fn layer() -> RateLimitLayer<ByEstimate> {
    RateLimitLayer::new(Quota::per_second(100).counting("tokens"))
        .cost((|p: &Prompt| p.estimate) as fn(&Prompt) -> u32)
        .settle(|a: &Answer| a.used)
}

fn answering()
-> impl tower::Service<Prompt, Response = Answer, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|p: Prompt| async move { Ok::<_, BoxError>(Answer { used: Some(p.used) }) })
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debt_delays_the_next_request_exactly() {
    // Rejecting: the debt shows in the refusal's retry_after.
    let svc = ServiceBuilder::new()
        .layer(layer().reject())
        .service(answering());
    // Estimated 10, cost 150: 140 more, past the burst of 100.
    svc.clone().oneshot(prompt(10, 150)).await.unwrap();
    // 50 tokens owed beyond empty: a prompt of 10 waits for 60, 600 ms.
    let err = svc.clone().oneshot(prompt(10, 10)).await.unwrap_err();
    assert_eq!(retry_after(&err), 600 * MS);
    tokio::time::advance(600 * MS - Duration::from_nanos(1)).await;
    assert!(svc.clone().oneshot(prompt(10, 10)).await.is_err());
    tokio::time::advance(Duration::from_nanos(1)).await;
    svc.clone().oneshot(prompt(10, 10)).await.unwrap();

    // Waiting: the next request waits out the debt, exactly.
    let svc = ServiceBuilder::new().layer(layer()).service(answering());
    svc.clone().oneshot(prompt(10, 150)).await.unwrap();
    let start = Instant::now();
    svc.clone().oneshot(prompt(10, 10)).await.unwrap();
    assert_eq!(start.elapsed(), 600 * MS);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refund_is_exact_and_skipped_after_a_later_admission() {
    let svc = ServiceBuilder::new()
        .layer(layer().reject())
        .service(answering());
    // Estimated 90, used 30: 60 given back, 70 left exactly.
    svc.clone().oneshot(prompt(90, 30)).await.unwrap();
    assert!(svc.clone().oneshot(prompt(71, 71)).await.is_err());
    svc.clone().oneshot(prompt(70, 70)).await.unwrap();
    let err = svc.clone().oneshot(prompt(1, 1)).await.unwrap_err();
    assert_eq!(retry_after(&err), 10 * MS);

    // A later request was admitted before the first settled: its refund
    // is skipped (the later request relied on the estimate).
    let layer = RateLimitLayer::new(Quota::per_second(100).counting("tokens"))
        .reject()
        .cost(|r: &http::Request<Prompt>| r.body().estimate)
        .settle_handle::<http::Request<Prompt>>();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |req: http::Request<Prompt>| async move {
            Ok::<_, BoxError>(req.extensions().get::<Settlement>().cloned())
        },
    ));
    let req = |estimate| http::Request::new(prompt(estimate, 0));
    let first = svc.clone().oneshot(req(60)).await.unwrap().unwrap();
    let second = svc.clone().oneshot(req(10)).await.unwrap().unwrap();
    assert!(first.settle(0), "the first settle counts");
    assert!(!first.settle(0), "only the first");
    let err = svc.clone().oneshot(req(31)).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>().unwrap().remaining(),
        30,
        "the refund was skipped: 30 left"
    );
    // The last request admitted settles with a refund: exact.
    assert!(second.settle(0));
    svc.clone().oneshot(req(40)).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_never_settled_keeps_its_estimate() {
    // The inner service never answers: the response future is dropped.
    let layer = RateLimitLayer::new(Quota::per_second(100).counting("tokens"))
        .reject()
        .cost(|p: &Prompt| p.estimate)
        .settle(|a: &Answer| a.used);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|p: Prompt| async move {
            if p.used == u32::MAX {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(Answer { used: None })
        }));
    let pending = svc.clone().oneshot(prompt(40, u32::MAX));
    assert!(
        tokio::time::timeout(MS, pending).await.is_err(),
        "dropped unanswered"
    );
    // An answer without a usage (`None`) keeps the estimate too.
    svc.clone().oneshot(prompt(40, 0)).await.unwrap();
    let err = svc.clone().oneshot(prompt(21, 0)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().remaining(), 20);
}
