//! What a Redis backend reports: whether it decides through Redis, its
//! counters and its failure policy.

use super::*;

#[tokio::test]
async fn a_new_backend_is_available_and_counts_each_decision() {
    let (url, _server) = RedisServer::url_or_start();
    let b = backend(&url);
    // Nothing connects before the first decision: available, nothing counted.
    assert!(b.is_available());
    let stats = b.stats();
    assert_eq!(stats.decisions, 0);
    assert_eq!(stats.went_down, 0);

    let policy = Policy::new(Quota::per_minute(10));
    let key = "accessors".to_string();
    for _ in 0..3 {
        decide(&b, &key, &policy).await.unwrap();
    }
    assert!(b.is_available());
    let stats = b.stats();
    assert_eq!(stats.decisions, 3);
    assert_eq!(stats.skipped + stats.fallback + stats.failed_closed, 0);
}

#[test]
fn a_backend_reports_the_failure_policy_it_was_given() {
    let b = RedisBackend::from_url("redis://127.0.0.1:1").unwrap();
    assert_eq!(b.get_failure_policy(), FailurePolicy::default());
    let b = b.failure_policy(FailurePolicy::FailOpen);
    assert_eq!(b.get_failure_policy(), FailurePolicy::FailOpen);
}
