//! What a policy, its quota states and a per-key refusal report, and the
//! per-key service lending and giving back the service it wraps.

use tower::Layer;

use super::*;

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

#[test]
fn the_per_key_service_gives_back_its_inner_service() {
    let mut svc = PerKeyLayer::new(Quota::per_second(10), |n: &u32| Some(*n)).layer(Tagged(1));
    assert_eq!(svc.get_ref(), &Tagged(1));
    svc.get_mut().0 = 2;
    assert_eq!(svc.into_inner(), Tagged(2));
}

#[test]
fn a_policy_reports_its_quotas_cap_name_and_largest_cost() {
    let policy = Policy::new(Quota::per_minute(60))
        .and(Quota::per_day(1_000))
        .unwrap();
    assert_eq!(
        policy.quotas().collect::<Vec<_>>(),
        [Quota::per_minute(60), Quota::per_day(1_000)],
        "in the order added"
    );
    assert_eq!(policy.in_flight_limit(), None);
    assert_eq!(policy.name(), None);
    assert_eq!(policy.max_cost(), u32::MAX, "every quota counts requests");

    assert_eq!(policy.clone().max_in_flight(4).in_flight_limit(), Some(4));
    assert_eq!(
        policy.clone().max_in_flight(0).in_flight_limit(),
        Some(1),
        "always room for one"
    );
    assert_eq!(policy.named("free").name(), Some("free"));
}

#[test]
fn the_largest_cost_is_the_smallest_burst_among_quotas_of_cost() {
    let policy = Policy::new(Quota::per_second(100))
        .and(
            Quota::per_minute(100_000)
                .with_burst(20_000)
                .counting("tokens"),
        )
        .unwrap()
        .and(Quota::per_day(1_000_000).counting("tokens"))
        .unwrap();
    assert_eq!(policy.max_cost(), 20_000);
}

#[test]
fn an_unseen_key_has_every_quota_full() {
    let store = Memory::new(1_000);
    let policy = Policy::new(Quota::per_minute(60))
        .and(Quota::per_day(1_000))
        .unwrap();
    let remaining: Vec<u32> = store
        .states(&"ann", &policy)
        .iter()
        .map(|d| d.remaining())
        .collect();
    assert_eq!(remaining, [60, 1_000]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refusal_names_the_keys_policy() {
    let free = Policy::new(Quota::per_hour(1)).named("free");
    let svc = ServiceBuilder::new()
        .layer(PerKeyLayer::new(free, |user: &&str| Some(user.to_string())))
        .service(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot("ann").await.unwrap();
    let err = svc.clone().oneshot("ann").await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(limited.policy(), Some("free"));
    assert_eq!(limited.quota(), Quota::per_hour(1));

    let unnamed = ServiceBuilder::new()
        .layer(PerKeyLayer::new(Quota::per_hour(1), |user: &&str| {
            Some(user.to_string())
        }))
        .service(service_fn(|_: &str| async { Ok::<_, BoxError>(()) }));
    unnamed.clone().oneshot("ann").await.unwrap();
    let err = unnamed.clone().oneshot("ann").await.unwrap_err();
    assert_eq!(err.downcast_ref::<RateLimited>().unwrap().policy(), None);
}
