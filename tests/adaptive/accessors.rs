//! What the adaptive layers' handles and policies (and a provider
//! budget's handle) report before any traffic: the configured starting
//! point and no history.

use super::*;

#[test]
fn a_verdict_carries_no_hints_until_given() {
    let v = tower_sluice::classify::Verdict::from(tower_sluice::classify::Outcome::Failure);
    assert_eq!(v.outcome(), tower_sluice::classify::Outcome::Failure);
    assert_eq!(v.retry_after(), None);
    assert_eq!(v.upstream(), None);
    assert_eq!(v.status(), None);
    assert!(!v.is_do_not_retry());
}

#[test]
fn a_fresh_aimd_layer_sends_at_its_initial_rate_unpaused() {
    let handle = AimdLayer::new(Quota::per_second(20)).handle();
    assert_eq!(handle.rate(), 20.0);
    assert_eq!(handle.good_rate(), None, "no window has completed yet");
    assert!(handle.paused_for().is_zero());
    // `initial` sets the starting rate, reported over the quota's period.
    let handle = AimdLayer::new(Quota::per_minute(60)).initial(30).handle();
    assert_eq!(handle.quota(), Quota::per_minute(30));
    assert_eq!(handle.rate(), 0.5);
}

#[test]
fn a_fresh_concurrency_layer_starts_at_its_initial_limit_with_nothing_in_flight() {
    let layer = AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(16));
    assert_eq!(layer.handle().limit(), 16);
    assert_eq!(layer.handle().in_flight(), 0);
    assert_eq!(GradientLimit::new().min_rtt(), None, "nothing measured yet");
}

#[test]
fn a_fresh_throttle_has_counted_nothing() {
    let handle = AdaptiveThrottleLayer::new().k(1.5).handle();
    assert_eq!(handle.counts(), (0, 0));
    assert_eq!(handle.probability(Criticality::Critical), 0.0);
}

#[test]
fn an_adaptive_policy_keeps_its_base_and_never_caps_below_it() {
    let policy = AdaptivePolicy::new(Quota::per_second(5), 10);
    assert_eq!(policy.base(), Quota::per_second(5));
    assert_eq!(policy.max(), 10);
    assert!(policy.base_policy().quotas().eq([Quota::per_second(5)]));
    // A cap below the base's limit is raised to it.
    assert_eq!(AdaptivePolicy::new(Quota::per_second(5), 1).max(), 5);
}

#[test]
fn an_adaptive_policy_holds_one_entry_per_recorded_key() {
    let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    assert!(policy.is_empty());
    policy.record(&"ann", true, Duration::ZERO);
    policy.record(&"bob", true, Duration::ZERO);
    policy.record(&"ann", false, Duration::ZERO);
    assert_eq!(policy.len(), 2);
    assert!(!policy.is_empty());
}

#[cfg(feature = "http")]
#[test]
fn a_fresh_provider_budget_is_full_unpaused_and_keeps_its_quotas_in_order() {
    let handle = tower_sluice::adaptive::ProviderBudgetLayer::per_minute(500, 30_000)
        .and_requests(Quota::per_day(10_000))
        .and_tokens(Quota::per_day(1_000_000))
        .handle();
    assert_eq!(handle.requests_remaining(), 500);
    assert_eq!(handle.tokens_remaining(), 30_000);
    assert!(handle.paused_for().is_zero());
    assert_eq!(
        handle.request_quotas(),
        [Quota::per_minute(500), Quota::per_day(10_000)]
    );
    assert_eq!(
        handle.token_quotas(),
        [Quota::per_minute(30_000), Quota::per_day(1_000_000)]
    );
}

/// A stand-in inner service that says which one it is.
#[derive(Debug, PartialEq)]
struct Tagged(u32);

/// The service `layer` makes around `Tagged(1)` lends it, lets it be
/// changed and gives it back.
macro_rules! gives_back_its_inner_service {
    ($layer:expr) => {{
        let mut svc = $layer.layer(Tagged(1));
        assert_eq!(svc.get_ref(), &Tagged(1));
        svc.get_mut().0 = 2;
        assert_eq!(svc.into_inner(), Tagged(2));
    }};
}

#[test]
fn every_adaptive_service_gives_back_its_inner_service() {
    gives_back_its_inner_service!(AdaptiveThrottleLayer::new());
    gives_back_its_inner_service!(AimdLayer::new(Quota::per_second(10)));
    gives_back_its_inner_service!(AdaptiveConcurrencyLayer::new(GradientLimit::new()));
    gives_back_its_inner_service!(
        AdaptivePolicy::new(Quota::per_second(10), 20).feedback_layer(|n: &u32| Some(*n))
    );
}
