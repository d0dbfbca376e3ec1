//! Every rate limit service, and each clone of one, reads the layer's
//! limiter itself, not a copy.

use tower::Layer;

use super::*;

#[test]
fn every_service_and_clone_shares_the_layers_limiter() {
    let layer = RateLimitLayer::new(Quota::per_minute(60));
    let svc = layer.layer(echo());
    assert!(Arc::ptr_eq(svc.limiter(), layer.limiter()));
    assert!(Arc::ptr_eq(svc.clone().limiter(), layer.limiter()));
    assert!(Arc::ptr_eq(layer.layer(echo()).limiter(), svc.limiter()));

    let by_cost =
        RateLimitLayer::new(Quota::per_minute(6_000).counting("tokens")).cost(|n: &u32| *n);
    let svc = by_cost.layer(echo());
    assert!(Arc::ptr_eq(svc.limiter(), by_cost.limiter()));
    assert!(Arc::ptr_eq(svc.clone().limiter(), by_cost.limiter()));
}

#[tokio::test(start_paused = true)]
async fn a_quota_set_through_a_services_limiter_is_the_layers() {
    let layer = RateLimitLayer::new(Quota::per_minute(1)).reject();
    let mut svc = layer.layer(echo());
    svc.ready().await.unwrap().call(1).await.unwrap();
    // Raised through the service: the layer's limiter holds it.
    svc.limiter().set_quota(Quota::per_second(1)).unwrap();
    assert!(layer.limiter().quotas().eq([Quota::per_second(1)]));
    // The empty bucket refills at the new rate: in a second, not a minute.
    let err = downcast(layer.layer(echo()).oneshot(2).await.unwrap_err());
    assert!(err.retry_after() <= Duration::from_secs(1), "{err:?}");
    advance(Duration::from_secs(1)).await;
    layer.layer(echo()).oneshot(3).await.unwrap();
}
