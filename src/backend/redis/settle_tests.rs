//! Settling grants Redis did not decide: a grant let through by
//! `FailOpen` was charged nowhere and is not settled on Redis; a grant of
//! the fallback settles in the fallback; a grant of Redis keeps the warm
//! fallback in step.

use std::time::Duration;

use super::*;
use crate::backend::{Acquire, Backend};

use super::conformance::server;

fn backend(url: &str, failure: FailurePolicy) -> RedisBackend {
    RedisBackend::from_url(url)
        .unwrap()
        .prefix(format!("sluice-settle-{}:", std::process::id()))
        .deadline(Duration::from_secs(5))
        .failure_policy(failure)
}

/// Tokens, burst 10, a token an hour: nothing refills during a test.
fn tokens() -> Policy {
    Policy::new(Quota::per_hour(10).counting("tokens"))
}

async fn decide(b: &RedisBackend, key: &'static str, cost: u32, peek: bool) -> Grant {
    let policy = tokens();
    let acquire = if peek {
        Backend::<&str>::peek(b, &key, &policy, cost)
    } else {
        Backend::<&str>::acquire(b, &key, &policy, cost, Duration::ZERO)
    };
    match acquire {
        Acquire::Ready(r) => r.unwrap(),
        Acquire::Pending(f) => f.await.unwrap(),
    }
}

/// What Redis has left for `key` (at least 1: a peek of 1, on Redis,
/// which answers what would be left after it).
async fn on_redis(b: &RedisBackend, key: &'static str) -> u32 {
    decide(b, key, 1, true).await.decision().remaining() + 1
}

/// What the warm fallback has left for `key` (this instance's view).
fn in_fallback(b: &RedisBackend, key: &'static str) -> u32 {
    let states = Backend::<&str>::states(b, &key, &tokens());
    states.iter().next().unwrap().remaining()
}

/// Takes `key`'s node off Redis (three failures), as a failing Redis does.
fn take_down(b: &RedisBackend, key: &'static str) {
    let key = b.inner.key_bytes(&key);
    let health = b.inner.nodes.of(&key);
    for now in [1, 2, 3] {
        health.failure(&b.inner, &key, now, false);
    }
    assert!(!health.is_up());
}

/// Brings `key`'s node back (as a probe that succeeds does).
fn bring_back(b: &RedisBackend, key: &'static str) {
    let key = b.inner.key_bytes(&key);
    b.inner.nodes.of(&key).success(&b.inner, 0, true);
}

/// Waits until `done` holds of the backend's stats.
pub(super) async fn until(b: &RedisBackend, done: impl Fn(&RedisStats) -> bool) {
    for _ in 0..1_000 {
        if done(&b.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("never: {:?}", b.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_open_grant_is_not_settled_on_redis() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(&url, FailurePolicy::FailOpen);
    assert_eq!(on_redis(&b, "open").await, 10);
    take_down(&b, "open");
    // Let through without a charge anywhere.
    let grant = decide(&b, "open", 2, false).await;
    assert_eq!(b.stats().failed_open, 1);
    bring_back(&b, "open");
    b.settle(&"open", &tokens(), grant.charged(), 9);
    assert_eq!(b.stats().settles_skipped, 1);
    // A settlement Redis decides afterwards proves the queue has run.
    let grant = decide(&b, "open", 1, false).await;
    b.settle(&"open", &tokens(), grant.charged(), 2);
    until(&b, |s| s.settled + s.settles_dropped >= 1).await;
    assert_eq!(b.stats().settled, 1);
    // Redis was charged only the request it decided, at its true cost.
    assert_eq!(on_redis(&b, "open").await, 10 - 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_grant_settles_in_the_fallback_not_on_redis() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(
        &url,
        FailurePolicy::Fallback {
            expected_instances: 1,
        },
    );
    take_down(&b, "fb");
    let grant = decide(&b, "fb", 2, false).await;
    assert_eq!(b.stats().fallback, 1);
    assert_eq!(in_fallback(&b, "fb"), 8);
    bring_back(&b, "fb");
    // 9 in all: 7 more in the fallback, where the 2 were charged.
    b.settle(&"fb", &tokens(), grant.charged(), 9);
    assert_eq!(b.stats().settled_in_fallback, 1);
    assert_eq!(in_fallback(&b, "fb"), 1);
    // Nothing went to Redis: its bucket is full.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((b.stats().settled, b.stats().settles_dropped), (0, 0));
    assert_eq!(on_redis(&b, "fb").await, 10);

    // A refund in the fallback: given back where the fallback charged it.
    take_down(&b, "fb-refund");
    let grant = decide(&b, "fb-refund", 6, false).await;
    b.settle(&"fb-refund", &tokens(), grant.charged(), 1);
    assert_eq!(in_fallback(&b, "fb-refund"), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_grant_keeps_the_warm_fallback_in_step() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(
        &url,
        FailurePolicy::Fallback {
            expected_instances: 1,
        },
    );
    let grant = decide(&b, "warm", 2, false).await;
    assert_eq!(in_fallback(&b, "warm"), 8, "the fallback counted it");
    b.settle(&"warm", &tokens(), grant.charged(), 9);
    until(&b, |s| s.settled == 1).await;
    assert_eq!(on_redis(&b, "warm").await, 1);
    // The debt is in the fallback too: were Redis to fail now, the key is
    // still limited as Redis limited it.
    assert_eq!(in_fallback(&b, "warm"), 1);
}

/// Settlements past the queue's bound (each key's, as a key's debts
/// merge) are dropped and counted at once; those queued, sent to a Redis
/// that is down, are dropped and counted too. Nothing waits.
#[tokio::test]
async fn a_full_queue_and_a_down_redis_drop_and_count() {
    let b = backend("redis://127.0.0.1:1", FailurePolicy::FailClosed);
    let charged = Charged::new(1, [1, 0, 0, 0]);
    // One thread: the backend's task cannot take the queue meanwhile.
    for i in 0..held::QUEUE + 5 {
        b.settle(&format!("full-{i}"), &tokens(), charged, 3);
    }
    assert_eq!(b.stats().settles_dropped, 5);
    let all = (held::QUEUE + 5) as u64;
    until(&b, |s| s.settles_dropped == all).await;
    assert_eq!(b.stats().settled, 0);
}
