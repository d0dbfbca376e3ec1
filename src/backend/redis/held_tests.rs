//! Settlements held for their key's next decision: carried by it (applied
//! before it decides), or sent on their own once their delay has passed or
//! on a flush; a debt counts from when it was found either way.

use std::time::Duration;

use super::conformance::server;
use super::settle_tests::until;
use super::*;
use crate::backend::{Acquire, Backend};

fn backend(url: &str, delay: Duration) -> RedisBackend {
    RedisBackend::from_url(url)
        .unwrap()
        .prefix(format!("sluice-held-{}:", std::process::id()))
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::FailClosed)
        .settle_delay(delay)
}

/// Tokens, burst 10, a token an hour: nothing refills during a test.
fn tokens() -> Policy {
    Policy::new(Quota::per_hour(10).counting("tokens"))
}

/// 100 tokens a second, burst 100: a token is 10 ms.
fn fast_tokens() -> Policy {
    Policy::new(Quota::per_second(100).counting("tokens"))
}

async fn decide(
    b: &RedisBackend,
    policy: &Policy,
    key: &'static str,
    cost: u32,
    peek: bool,
) -> Grant {
    let acquire = if peek {
        Backend::<&str>::peek(b, &key, policy, cost)
    } else {
        Backend::<&str>::acquire(b, &key, policy, cost, Duration::ZERO)
    };
    match acquire {
        Acquire::Ready(r) => r.unwrap(),
        Acquire::Pending(f) => f.await.unwrap(),
    }
}

/// A debt waits for the key's next decision, which applies it before it
/// decides; meanwhile Redis has not seen it. A refund rides along too.
#[tokio::test]
async fn a_keys_next_decision_carries_its_settlement() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(&url, Duration::from_secs(60));
    let policy = tokens();
    let grant = decide(&b, &policy, "carried", 2, false).await;
    assert_eq!(grant.decision().remaining(), 8);
    b.settle(&"carried", &policy, grant.charged(), 6);
    // Held: a peek (which carries nothing) sees Redis without the debt.
    let peek = decide(&b, &policy, "carried", 1, true).await;
    assert_eq!(peek.decision().remaining(), 7);
    assert_eq!(b.stats().settled, 0);
    // The next decision applies the debt of 4 first: 10 - 2 - 4 - 1.
    let next = decide(&b, &policy, "carried", 1, false).await;
    assert_eq!(next.decision().remaining(), 3);
    let stats = b.stats();
    assert_eq!((stats.settled, stats.settles_carried), (1, 1));
    // A refund of the last request (charged 1, cost 0) rides along too.
    b.settle(&"carried", &policy, next.charged(), 0);
    let after = decide(&b, &policy, "carried", 1, false).await;
    assert_eq!(after.decision().remaining(), 3);
    assert_eq!(b.stats().settles_carried, 2);
}

/// With no decision of its key to carry it, a settlement is sent once its
/// delay has passed, and a flush sends it at once.
#[tokio::test]
async fn a_held_settlement_is_sent_after_its_delay_or_on_a_flush() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(&url, Duration::from_millis(50));
    let policy = tokens();
    let grant = decide(&b, &policy, "sent", 2, false).await;
    b.settle(&"sent", &policy, grant.charged(), 6);
    until(&b, |s| s.settled == 1).await;
    assert_eq!(b.stats().settles_carried, 0);
    let peek = decide(&b, &policy, "sent", 1, true).await;
    assert_eq!(peek.decision().remaining(), 3, "10 - 2 - 4 - 1");

    let b = backend(&url, Duration::from_secs(60));
    let grant = decide(&b, &policy, "flushed", 2, false).await;
    b.settle(&"flushed", &policy, grant.charged(), 6);
    assert_eq!(b.stats().settled, 0);
    tokio::time::timeout(Duration::from_secs(5), b.flush_settlements())
        .await
        .expect("a flush returns once Redis has answered");
    assert_eq!(b.stats().settled, 1);
    let peek = decide(&b, &policy, "flushed", 1, true).await;
    assert_eq!(peek.decision().remaining(), 3);
    // Nothing held: a flush returns at once.
    tokio::time::timeout(Duration::from_millis(100), b.flush_settlements())
        .await
        .expect("nothing to flush");
}

/// A debt held for 300 ms moves the TAT from when it was found, not from
/// when Redis applies it: the bucket refilled meanwhile is not taken twice.
/// Carried by the next decision, and sent on its own.
#[tokio::test]
async fn a_debt_counts_from_when_it_was_found() {
    let (url, _server) = server::RedisServer::url_or_start();
    let policy = fast_tokens();
    for (delay, key) in [
        (Duration::from_secs(60), "found-carried"),
        (Duration::from_millis(300), "found-sent"),
    ] {
        let b = backend(&url, delay);
        // Learn Redis' time (a decision on another key).
        decide(&b, &policy, "clock", 1, false).await;
        // t0: charged 1 (TAT t0 + 10 ms), really 51: a debt of 500 ms.
        let grant = decide(&b, &policy, key, 1, false).await;
        let t0 = std::time::Instant::now();
        b.settle(&key, &policy, grant.charged(), 51);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let late = t0.elapsed().as_millis() as u32;
        // Applied as found, the TAT is t0 + 510 ms; the next request makes
        // it t0 + 520 ms, so (1000 - (520 - late)) / 10 are left. Applied
        // at 300 ms or later it would be at least t0 + 810 ms: 59 left at
        // most, whenever the next request comes.
        let next = decide(&b, &policy, key, 1, false).await;
        let left = next.decision().remaining();
        let exact = (1_000 - (520 - late.min(520))) / 10;
        assert!(
            left >= 70 && left + 5 >= exact,
            "{key}: {left} left, {exact} expected"
        );
        assert_eq!(b.stats().settled, 1, "{key}");
    }
}

/// A settlement carried by a decision that fails may have run: it is
/// dropped and counted, never sent again.
#[tokio::test]
async fn a_settlement_carried_by_a_failed_decision_is_dropped() {
    let b = backend("redis://127.0.0.1:1", Duration::from_secs(60));
    let policy = tokens();
    b.settle(&"gone", &policy, Charged::new(1, [1, 0, 0, 0]), 3);
    assert_eq!(b.stats().settles_dropped, 0, "held");
    let acquire = Backend::<&str>::acquire(&b, &"gone", &policy, 1, Duration::ZERO);
    let result = match acquire {
        Acquire::Ready(r) => r,
        Acquire::Pending(f) => f.await,
    };
    assert!(result.is_err(), "Redis is down: refused (FailClosed)");
    let stats = b.stats();
    assert_eq!((stats.settled, stats.settles_dropped), (0, 1));
    // Nothing is left to send.
    tokio::time::timeout(Duration::from_secs(1), b.flush_settlements())
        .await
        .expect("nothing held");
    assert_eq!(b.stats().settles_dropped, 1);
}

/// A key's debts merge while the key is known to stay in debt (its TAT
/// after the first is past the second's time): their sum at the first's
/// time charges what each would have. A debt found after the key could
/// have refilled is kept apart, applied in turn.
#[test]
fn debts_merge_only_while_the_key_stays_in_debt() {
    // 100 tokens a second: a token is 10 000 us. Each request was charged
    // 1 with its TAT written at 1 000 000 us, and really cost 2.
    let policy = fast_tokens();
    // Found at `at` us of Redis' time, this process' clock reading the
    // same in ns.
    let debt = |at: u64| {
        let charged = Charged::new(1, [1_000_000, 0, 0, 0]);
        settle::settle_args(&policy, charged, 2, (at, at * 1_000))
    };
    // Found at 1 000 000 and 1 005 000: after the first the TAT is at
    // least 1 010 000, past the second. One debt of 2 tokens.
    let held = held::Held::carrying(b"k", [debt(1_000_000), debt(1_005_000)]).unwrap();
    assert_eq!(held.count(), 2);
    assert_eq!(held.lone_debt(1_100_000_000), Some((10_000, 2, 100_000)));
    // The third is found at 2 000 000, when the key may be full again
    // (its TAT at least 1 020 000): kept apart.
    let held =
        held::Held::carrying(b"k", [debt(1_000_000), debt(1_005_000), debt(2_000_000)]).unwrap();
    assert_eq!(held.count(), 3);
    assert_eq!(held.lone_debt(2_100_000_000), None, "two debts, not one");
    assert_eq!(held.len(), 8, "two groups of four arguments");
    // Debts whose time is unknown (0: when applied) are applied at one
    // time together: they merge.
    let held = held::Held::carrying(b"k", [debt(0), debt(0)]).unwrap();
    assert_eq!(held.lone_debt(5), Some((10_000, 2, 0)));
}

/// The task that sends settlements, spawned on a runtime that is dropped
/// before it ever ran, is started again by the next call that needs it:
/// nothing stays held for a task that will never run.
#[test]
fn a_task_dropped_before_it_ran_is_started_again() {
    let (url, _server) = server::RedisServer::url_or_start();
    let b = backend(&url, Duration::ZERO);
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // A debt of 2 tokens on a key Redis does not hold yet.
    let charged = Charged::new(1, [1, 0, 0, 0]);
    let first = runtime();
    // The settlement starts the task on `first`, which returns before
    // running it, and is dropped with it.
    first.block_on(async { b.settle(&"restart", &tokens(), charged, 3) });
    drop(first);
    runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(5), b.flush_settlements())
            .await
            .expect("a new task sends what is held");
    });
    assert_eq!(b.stats().settled, 1);
}
