//! What a policy, its quota states, a per-key refusal, a grant, the
//! in-memory store and the per-key handle report, and the per-key service
//! lending and giving back the service it wraps.

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

#[test]
fn a_memory_store_reports_its_keys_bound_and_tables() {
    let store: Memory<&str> = Memory::new(1_000);
    assert!(store.is_empty());
    assert_eq!(store.len(), 0);
    assert_eq!(store.table_bytes(), 0, "no table allocated before a key");
    assert_eq!(store.full_store_policy(), FullStore::EvictNearestFull);

    let policy = Policy::new(Quota::per_minute(10));
    for key in ["ann", "bob", "ann"] {
        // The in-memory store decides at once.
        let Acquire::Ready(grant) = store.acquire(&key, &policy, 1, Duration::ZERO);
        grant.unwrap();
    }
    assert_eq!(store.len(), 2);
    assert!(!store.is_empty());
    assert!(store.table_bytes() > 0);

    let refusing: Memory<u64> = Memory::new(10).full_store(FullStore::Refuse);
    assert_eq!(refusing.full_store_policy(), FullStore::Refuse);
}

#[test]
fn the_key_bound_is_rounded_down_to_whole_shards() {
    assert_eq!(Memory::<u64>::new(64).max_keys(), 64);
    assert_eq!(Memory::<u64>::new(500).max_keys(), 500);
    // At most 64 shards: rounding loses fewer than 64 keys.
    let max = Memory::<u64>::new(100_000).max_keys();
    assert!((100_000 - 64..=100_000).contains(&max), "{max}");
}

#[test]
fn a_grant_reports_its_decision_and_wait() {
    let limiter = tower_sluice::Limiter::new(Quota::per_second(10));
    let grant = tower_sluice::backend::Grant::new(limiter.check(), Duration::from_millis(5));
    assert_eq!(grant.decision().limit(), 10);
    assert_eq!(grant.decision().remaining(), 9);
    assert_eq!(grant.wait(), Duration::from_millis(5));

    // A store's grant: now, then (willing to wait) in a second.
    let store: Memory<u64> = Memory::new(1_000);
    let policy = Policy::new(Quota::per_second(1));
    let Acquire::Ready(Ok(first)) = store.acquire(&1, &policy, 1, Duration::ZERO) else {
        panic!("the first request passes")
    };
    assert_eq!(first.wait(), Duration::ZERO);
    assert!(first.decision().is_allowed());
    let Acquire::Ready(Ok(second)) = store.acquire(&1, &policy, 1, Duration::from_secs(2)) else {
        panic!("the second request is admitted to wait")
    };
    assert!(
        second.wait() > Duration::from_millis(900),
        "{:?}",
        second.wait()
    );
    assert!(second.wait() <= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn the_handle_reads_the_default_policy_and_the_layers_store() {
    let layer = PerKeyLayer::new(Quota::per_minute(60), by_key);
    let handle = layer.handle();
    assert_eq!(handle.default_policy(), Policy::new(Quota::per_minute(60)));
    handle.set_default(Quota::per_minute(30));
    assert_eq!(handle.default_policy(), Policy::new(Quota::per_minute(30)));

    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    assert!(handle.backend().is_empty());
    for key in ["ann", "bob", "bob"] {
        send(&mut svc, req(key)).await.unwrap();
    }
    assert_eq!(handle.backend().len(), 2, "the layer's store, not a copy");
}
