//! The Redis backend against real Redis servers that the tests start (and
//! kill, pause and restart) themselves. The conformance suite (memory and
//! Redis agree on every field) lives beside the backend in
//! `src/backend/redis/conformance.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tower::{Service, ServiceExt};
use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
use tower_sluice::backend::{Acquire, Backend, Grant};
use tower_sluice::error::{BackendUnavailable, KeyTooLong};
use tower_sluice::observe::{BackendErrorKind, Event, FailureAction};
use tower_sluice::per_key::Policy;
use tower_sluice::{BoxError, PerKeyLayer, Quota, RateLimited};

#[path = "../support/fault_proxy.rs"]
mod proxy;
#[path = "../support/redis_server.rs"]
mod server;
#[path = "../support/token_api.rs"]
mod token_api;

use proxy::{Fault, FaultProxy};
use server::{RedisCluster, RedisServer};

mod accessors;
mod settle;

async fn decide<K>(b: &impl Backend<K>, key: &K, policy: &Policy) -> Result<Grant, BoxError> {
    match b.acquire(key, policy, 1, Duration::ZERO) {
        Acquire::Ready(r) => r,
        Acquire::Pending(f) => f.await,
    }
}

async fn decide_cost<K>(
    b: &impl Backend<K>,
    key: &K,
    policy: &Policy,
    cost: u32,
) -> Result<Grant, BoxError> {
    match b.acquire(key, policy, cost, Duration::ZERO) {
        Acquire::Ready(r) => r,
        Acquire::Pending(f) => f.await,
    }
}

fn backend(url: &str) -> RedisBackend {
    RedisBackend::from_url(url)
        .unwrap()
        .prefix(format!("t{}:", std::process::id()))
        // Correctness tests must not see a timeout on a loaded machine.
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::FailClosed)
}

fn is_limited(r: &Result<Grant, BoxError>) -> bool {
    matches!(r, Err(e) if e.is::<RateLimited>())
}

#[tokio::test]
async fn per_key_layer_limits_through_redis() {
    let (url, _server) = RedisServer::url_or_start();
    let layer = PerKeyLayer::new(Quota::per_minute(3), |k: &String| Some(k.clone()))
        .backend(backend(&url).prefix(format!("layer{}:", std::process::id())));
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service_fn(|k: String| async move { Ok::<_, BoxError>(k) });
    for _ in 0..3 {
        let out = svc.ready().await.unwrap().call("alice".into()).await;
        assert_eq!(out.unwrap(), "alice");
    }
    let err = svc
        .ready()
        .await
        .unwrap()
        .call("alice".into())
        .await
        .unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
    assert!(limited.retry_after() > Duration::from_secs(19));
    assert!(limited.retry_after() <= Duration::from_secs(20));
    assert_eq!(limited.remaining(), 0);
    // Another key has its own bucket.
    assert!(svc.ready().await.unwrap().call("bob".into()).await.is_ok());
}

#[tokio::test]
async fn several_quotas_are_decided_together() {
    let (url, _server) = RedisServer::url_or_start();
    let b = backend(&url);
    // 2 per second AND 3 per minute: the minute quota binds on the 4th.
    let policy = Policy::new(Quota::per_second(2))
        .and(Quota::per_minute(3))
        .unwrap()
        .named("tight");
    let key = "multi".to_string();
    assert!(decide(&b, &key, &policy).await.is_ok());
    assert!(decide(&b, &key, &policy).await.is_ok());
    let e = decide(&b, &key, &policy).await.unwrap_err();
    let e = e.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(e.quota(), Quota::per_second(2), "the second quota is fine");
    assert_eq!(e.policy(), Some("tight"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        decide(&b, &key, &policy).await.is_ok(),
        "1 s quota refilled one"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = decide(&b, &key, &policy).await.unwrap_err();
    let e = e.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(
        e.quota(),
        Quota::per_minute(3),
        "now the minute quota denies"
    );
    // A denial consumed nothing: the per-second quota still has room once
    // the minute quota allows (checked through peek, which consumes nothing).
    match Backend::<String>::peek(&b, &key, &policy, 1) {
        Acquire::Pending(f) => assert!(is_limited(&f.await)),
        Acquire::Ready(r) => assert!(is_limited(&r)),
    }
}

/// Redis' time, in microseconds since the epoch.
async fn redis_time(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1_000_000 + micros
}

#[tokio::test]
async fn calendar_quotas_count_in_one_expiring_key_per_window() {
    let (url, _server) = RedisServer::url_or_start();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Keep clear of a minute boundary (at most 5 s of waiting).
    let now = redis_time(&mut conn).await;
    let into_minute = now % 60_000_000;
    if into_minute > 54_000_000 {
        tokio::time::sleep(Duration::from_micros(60_100_000 - into_minute)).await;
    }
    let policy = Policy::new(Quota::per_second(100))
        .and(Quota::per_calendar_minute(3))
        .unwrap()
        .and(Quota::per_calendar_month(1_000))
        .unwrap();
    let prefix = format!("cal{}:", std::process::id());
    let b = backend(&url).prefix(prefix.clone());
    let key = "{ann}".to_string();
    for left in [2, 1, 0] {
        let grant = decide(&b, &key, &policy).await.unwrap();
        assert_eq!(grant.decision().remaining(), left);
        assert_eq!(grant.decision().quota(), Quota::per_calendar_minute(3));
    }
    let denied = decide(&b, &key, &policy).await.unwrap_err();
    let denied = denied.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(denied.quota(), Quota::per_calendar_minute(3));
    assert_eq!(denied.retry_after(), denied.reset_after());
    assert!(denied.retry_after() <= Duration::from_secs(60));

    // One key per window, named after it, holding the count, expiring a
    // minute after the window's end.
    let now = redis_time(&mut conn).await / 1_000_000;
    let minute = now / 60;
    let minute_key = format!("{prefix}{{ann}}@calendar-minute:{minute}");
    let count: Option<u32> = redis::cmd("GET")
        .arg(&minute_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, Some(3), "the refusal charged nothing");
    let expires: i64 = redis::cmd("PEXPIRETIME")
        .arg(&minute_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(expires, ((minute + 1) * 60 + 60) as i64 * 1_000);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&minute_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 60_000 && ttl <= 120_000, "{ttl}");
    // The month's key counts the same three; a new instance (a restart)
    // sees them: usage lives in Redis.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}{{ann}}@calendar-month:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let month: u32 = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(month, 3);
    let restarted = backend(&url).prefix(prefix);
    let again = decide(&restarted, &key, &policy).await.unwrap_err();
    assert!(again.is::<RateLimited>(), "the minute is still spent");
}

#[tokio::test]
async fn calendar_quotas_of_tokens_count_the_cost_in_their_own_key() {
    let (url, _server) = RedisServer::url_or_start();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Keep clear of midnight UTC (at most 5 s of waiting).
    let now = redis_time(&mut conn).await;
    let into_day = now % 86_400_000_000;
    if into_day > 86_395_000_000 {
        tokio::time::sleep(Duration::from_micros(86_400_100_000 - into_day)).await;
    }
    // 100 000 tokens a minute, 1 000 000 tokens and 500 requests a
    // calendar day, and a second day of tokens (a looser one: it counts
    // the same tokens, in the same key).
    let tokens_a_day = Quota::per_calendar_day(1_000_000).counting("tokens");
    let policy = Policy::new(Quota::per_minute(100_000).counting("tokens"))
        .and(tokens_a_day)
        .unwrap()
        .and(Quota::per_calendar_day(500))
        .unwrap()
        .and(Quota::per_calendar_day(2_000_000).counting("tokens"))
        .unwrap();
    let prefix = format!("caltok{}:", std::process::id());
    let b = backend(&url).prefix(prefix.clone());
    let key = "{ann}".to_string();
    let grant = decide_cost(&b, &key, &policy, 60_000).await.unwrap();
    // The tightest: 499 requests left today.
    assert_eq!(grant.decision().remaining(), 499);
    assert_eq!(grant.decision().quota(), Quota::per_calendar_day(500));
    // Refused by the minute's tokens: nothing is charged anywhere.
    let refused = decide_cost(&b, &key, &policy, 50_000).await.unwrap_err();
    let refused = refused.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(
        refused.quota(),
        Quota::per_minute(100_000).counting("tokens")
    );
    // 40 000 left, and the minute's tokens refill about 1.7 a
    // millisecond of real time between the two calls.
    let left = refused.remaining();
    assert!((40_000..=41_700).contains(&left), "{left} tokens left");
    decide_cost(&b, &key, &policy, 40_000).await.unwrap();

    let day = redis_time(&mut conn).await / 86_400_000_000;
    let get = |k: String| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg(&k)
                .query_async::<Option<u64>>(&mut conn)
                .await
                .unwrap()
        }
    };
    // The day's tokens: the cost, charged once for both token quotas.
    assert_eq!(
        get(format!("{prefix}{{ann}}@tokens-calendar-day:{day}")).await,
        Some(100_000)
    );
    // The day's requests: 1 each, in the key of requests.
    assert_eq!(
        get(format!("{prefix}{{ann}}@calendar-day:{day}")).await,
        Some(2)
    );
    // Refused by the day once it is spent (a new instance reads the same).
    let restarted = backend(&url).prefix(prefix.clone());
    redis::cmd("SET")
        .arg(format!("{prefix}{{ann}}@tokens-calendar-day:{day}"))
        .arg(990_000)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    // The minute's tokens refuse too, but the day needs the longest wait.
    let refused = decide_cost(&restarted, &key, &policy, 20_000)
        .await
        .unwrap_err();
    let refused = refused.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(refused.quota(), tokens_a_day);
    assert_eq!(refused.remaining(), 10_000);
    assert_eq!(refused.retry_after(), refused.reset_after());
    assert!(refused.retry_after() <= Duration::from_secs(86_400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_one_limit() {
    let (url, _server) = RedisServer::url_or_start();
    let rate = 50u32;
    let burst = 10u32;
    let policy = Policy::new(Quota::per_second(rate).with_burst(burst));
    let key = format!("shared-{}", std::process::id());
    // Four backends: four separate connections, as four instances would have.
    let backends: Vec<Arc<RedisBackend>> = (0..4)
        .map(|_| Arc::new(backend(&url).deny_cache(0)))
        .collect();
    let admitted = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let b = backends[i % 4].clone();
        let (policy, key, admitted) = (policy.clone(), key.clone(), admitted.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_millis(1_200) {
                match decide(&*b, &key, &policy).await {
                    Ok(_) => {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => assert!(e.is::<RateLimited>(), "unexpected error: {e}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let admitted = admitted.load(Ordering::Relaxed) as f64;
    let bound = f64::from(burst) + f64::from(rate) * elapsed;
    assert!(admitted <= bound + 1.0, "admitted {admitted} > {bound}");
    // And the limit is used, not just refused: at least the rate over the
    // shortest span the decisions could have covered.
    assert!(
        admitted >= f64::from(rate) * 1.0,
        "admitted only {admitted}"
    );
}

#[test]
fn two_processes_share_one_limit() {
    let (url, _server) = RedisServer::url_or_start();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join("redis_distributed"))
        .unwrap();
    assert!(
        example.exists(),
        "{} is missing: run the suite with `./scripts/test` (it builds the examples)",
        example.display()
    );
    let key = format!("procs-{}", std::process::id());
    let millis = 1_500u64;
    let start = Instant::now();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&example)
                .args(["hammer", &url, &key, &millis.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0u64;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut words = text.split_whitespace();
        assert_eq!(words.next(), Some("passed"), "{text}");
        let passed: u64 = words.next().unwrap().parse().unwrap();
        assert_eq!(words.nth(1), Some("0"), "no failed decisions: {text}");
        assert!(passed > 0, "each process got some: {text}");
        total += passed;
    }
    // 100/s with burst 20, over at most the time both ran.
    let elapsed = start.elapsed().as_secs_f64();
    let bound = 20.0 + 100.0 * elapsed;
    assert!((total as f64) <= bound, "{total} passed, bound {bound}");
    assert!(total >= 100, "the limit was used: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_fails_closed_then_comes_back() {
    let mut server = RedisServer::start();
    let downs = Arc::new(AtomicUsize::new(0));
    let ups = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let (d, u, f) = (downs.clone(), ups.clone(), failures.clone());
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .failure_policy(FailurePolicy::FailClosed)
        .breaker(3, Duration::from_millis(100), Duration::from_millis(400))
        .observer(move |e: &Event<'_>| match e {
            Event::BackendStateChanged {
                available: false, ..
            } => {
                d.fetch_add(1, Ordering::Relaxed);
            }
            Event::BackendStateChanged {
                available: true, ..
            } => {
                u.fetch_add(1, Ordering::Relaxed);
            }
            Event::BackendFailure { action, .. } => {
                assert_eq!(*action, FailureAction::Refused);
                f.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        });
    let policy = Policy::new(Quota::per_second(1_000));
    let key = "k".to_string();
    for _ in 0..5 {
        decide(&b, &key, &policy).await.unwrap();
    }
    server.kill();
    for i in 0..50 {
        let t = Instant::now();
        let e = decide(&b, &key, &policy).await.unwrap_err();
        let e = e
            .downcast_ref::<BackendUnavailable>()
            .unwrap_or_else(|| panic!("decision {i}: {e}"));
        assert_eq!(e.backend(), "redis");
        assert!(e.retry_after() > Duration::ZERO);
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "decision {i} took {:?}",
            t.elapsed()
        );
    }
    assert!(!b.is_available());
    assert_eq!(downs.load(Ordering::Relaxed), 1, "one event going down");
    assert_eq!(failures.load(Ordering::Relaxed), 50);
    let stats = b.stats();
    assert!(
        stats.skipped >= 40,
        "most decisions skipped Redis: {stats:?}"
    );
    assert_eq!(stats.failed_closed, 50);
    assert_eq!(stats.went_down, 1);

    server.restart();
    let t = Instant::now();
    loop {
        if decide(&b, &key, &policy).await.is_ok() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.is_available());
    assert_eq!(ups.load(Ordering::Relaxed), 1, "one event coming back");
    let before = b.stats().decisions;
    for _ in 0..5 {
        decide(&b, &key, &policy).await.unwrap();
    }
    assert_eq!(b.stats().decisions, before + 5, "decided by Redis again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_is_warm_when_redis_goes_away() {
    let mut server = RedisServer::start();
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .deny_cache(0);
    assert_eq!(
        b.get_failure_policy(),
        FailurePolicy::Fallback {
            expected_instances: 1
        },
        "the default"
    );
    let policy = Policy::new(Quota::per_minute(5));
    let (busy, quiet) = ("busy".to_string(), "quiet".to_string());
    for _ in 0..5 {
        decide(&b, &busy, &policy).await.unwrap();
    }
    server.kill();
    // The busy key used its 5 through Redis: the local fallback knows.
    let r = decide(&b, &busy, &policy).await;
    assert!(is_limited(&r), "busy key still limited: {r:?}");
    // A quiet key gets the local limit, exactly.
    for _ in 0..5 {
        decide(&b, &quiet, &policy).await.unwrap();
    }
    assert!(is_limited(&decide(&b, &quiet, &policy).await));
    let stats = b.stats();
    assert_eq!(stats.fallback, 7);
    assert!(
        stats.refused + stats.io_errors + stats.timeouts >= 1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_lets_requests_through() {
    let mut server = RedisServer::start();
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .failure_policy(FailurePolicy::FailOpen);
    let policy = Policy::new(Quota::per_minute(1));
    let key = "open".to_string();
    decide(&b, &key, &policy).await.unwrap();
    assert!(is_limited(&decide(&b, &key, &policy).await));
    server.kill();
    // A key Redis just denied stays denied (the deny cache is exact)...
    assert!(is_limited(&decide(&b, &key, &policy).await));
    // ...every other request passes while Redis is down.
    let other = "other".to_string();
    for _ in 0..10 {
        decide(&b, &other, &policy).await.unwrap();
    }
    assert_eq!(b.stats().failed_open, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_redis_is_down() {
    let mut server = RedisServer::start();
    server.kill();
    // Built while nothing listens: no error, no panic; the policy decides.
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .breaker(1, Duration::from_millis(50), Duration::from_millis(100));
    let policy = Policy::new(Quota::per_second(100));
    let key = "early".to_string();
    decide(&b, &key, &policy).await.unwrap();
    assert_eq!(b.stats().fallback, 1);
    server.restart();
    let t = Instant::now();
    while b.stats().decisions == 0 {
        let _ = decide(&b, &key, &policy).await;
        assert!(t.elapsed() < Duration::from_secs(10), "never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(b.is_available());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_server_hits_the_deadline() {
    let server = RedisServer::start();
    let deadline = Duration::from_millis(80);
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(deadline)
        .failure_policy(FailurePolicy::FailOpen)
        .breaker(2, Duration::from_millis(200), Duration::from_millis(200));
    let policy = Policy::new(Quota::per_second(100));
    let key = "slow".to_string();
    decide(&b, &key, &policy).await.unwrap();
    server.pause();
    for _ in 0..5 {
        let t = Instant::now();
        decide(&b, &key, &policy).await.unwrap();
        assert!(t.elapsed() < deadline * 5, "took {:?}", t.elapsed());
    }
    let stats = b.stats();
    assert_eq!(stats.timeouts, 2, "two timeouts, then skipped: {stats:?}");
    assert_eq!(stats.skipped, 3);
    server.resume();
    let t = Instant::now();
    while !b.is_available() || b.stats().decisions < 2 {
        decide(&b, &key, &policy).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_sleep_is_a_timeout_not_a_double_charge() {
    let server = RedisServer::start();
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .failure_policy(FailurePolicy::FailClosed)
        .deny_cache(0);
    let policy = Policy::new(Quota::per_minute(3));
    let key = "sleepy".to_string();
    decide(&b, &key, &policy).await.unwrap();
    let port = server.port();
    let sleeper = std::thread::spawn(move || server::cli(port, &["DEBUG", "SLEEP", "0.5"]));
    std::thread::sleep(Duration::from_millis(100));
    let e = decide(&b, &key, &policy).await.unwrap_err();
    assert!(e.is::<BackendUnavailable>(), "{e}");
    assert_eq!(b.stats().timeouts, 1);
    sleeper.join().unwrap();
    // The timed-out decision ran once when the server woke (it was sent),
    // and was never sent again: exactly one more passes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    decide(&b, &key, &policy).await.unwrap();
    assert!(is_limited(&decide(&b, &key, &policy).await));
    drop(server);
}

#[tokio::test]
async fn script_flush_is_recovered() {
    let server = RedisServer::start();
    let b = backend(&server.url());
    let policy = Policy::new(Quota::per_minute(10));
    let key = "flushed".to_string();
    decide(&b, &key, &policy).await.unwrap();
    assert!(server.cli(&["SCRIPT", "FLUSH"]).contains("OK"));
    decide(&b, &key, &policy).await.unwrap();
    let stats = b.stats();
    assert_eq!(stats.decisions, 2);
    assert_eq!(stats.script_errors, 0);
    // The state survived the flush: 8 left.
    for _ in 0..8 {
        decide(&b, &key, &policy).await.unwrap();
    }
    assert!(is_limited(&decide(&b, &key, &policy).await));
}

#[tokio::test]
async fn huge_and_odd_keys() {
    let (url, _server) = RedisServer::url_or_start();
    let b = backend(&url);
    let policy = Policy::new(Quota::per_minute(2));
    let huge = vec![b'x'; 1 << 20];
    let e = decide(&b, &huge, &policy).await.unwrap_err();
    let e = e.downcast_ref::<KeyTooLong>().expect("KeyTooLong");
    assert!(e.key_len() > 1 << 20);
    assert!(e.to_string().contains("longer than the backend's limit"));

    // Raised, a 1 MiB key works and is a bucket of its own.
    let b = backend(&url).max_key_len(2 << 20);
    decide(&b, &huge, &policy).await.unwrap();
    decide(&b, &huge, &policy).await.unwrap();
    assert!(is_limited(&decide(&b, &huge, &policy).await));
    let mut other = huge.clone();
    other[0] = b'y';
    decide(&b, &other, &policy).await.unwrap();

    // Binary keys, braces, NULs and separators never share a bucket.
    let odd: Vec<Vec<u8>> = vec![
        b"\0".to_vec(),
        b"\0\0".to_vec(),
        b"{tag}a".to_vec(),
        b"{tag}b".to_vec(),
        b" ".to_vec(),
        vec![0xff, 0xfe],
        b"sluice:".to_vec(),
    ];
    for k in &odd {
        decide(&b, k, &policy).await.unwrap();
        decide(&b, k, &policy).await.unwrap();
    }
    for k in &odd {
        assert!(is_limited(&decide(&b, k, &policy).await), "{k:?}");
    }
    // Pairs are unambiguous.
    let p1 = ("a:b".to_string(), "c".to_string());
    let p2 = ("a".to_string(), "b:c".to_string());
    decide(&b, &p1, &policy).await.unwrap();
    decide(&b, &p1, &policy).await.unwrap();
    decide(&b, &p2, &policy).await.unwrap();
}

#[tokio::test]
async fn deny_cache_saves_round_trips_and_expires() {
    let (url, _server) = RedisServer::url_or_start();
    let b = backend(&url);
    let policy = Policy::new(Quota::per_second(4).with_burst(1));
    let key = "abuser".to_string();
    decide(&b, &key, &policy).await.unwrap();
    let first = decide(&b, &key, &policy).await.unwrap_err();
    let retry = first.downcast_ref::<RateLimited>().unwrap().retry_after();
    assert!(retry <= Duration::from_millis(250));
    let decided = b.stats().decisions;
    for _ in 0..100 {
        let e = decide(&b, &key, &policy).await.unwrap_err();
        let e = e.downcast_ref::<RateLimited>().unwrap();
        assert!(e.retry_after() <= retry);
    }
    let stats = b.stats();
    assert_eq!(stats.deny_cache_hits, 100);
    assert_eq!(stats.decisions, decided, "no round trip while denied");
    tokio::time::sleep(retry + Duration::from_millis(5)).await;
    decide(&b, &key, &policy).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_keys_and_survives_script_flush() {
    let cluster = RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let b = RedisBackend::cluster(client)
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::FailClosed);
    let policy = Policy::new(Quota::per_minute(2));
    let keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    for k in &keys {
        decide(&b, k, &policy).await.unwrap();
    }
    // Keys landed on every master.
    for node in &cluster.nodes {
        let n: u64 = node.cli(&["DBSIZE"]).trim().parse().unwrap();
        assert!(n > 0, "node {} holds no key", node.port());
    }
    for node in &cluster.nodes {
        assert!(node.cli(&["SCRIPT", "FLUSH"]).contains("OK"));
    }
    for k in &keys {
        decide(&b, k, &policy).await.unwrap();
    }
    for k in &keys {
        assert!(is_limited(&decide(&b, k, &policy).await), "{k}");
    }
    // Hash tags keep related keys on one slot (and still separate).
    let a = "{acct-7}:text".to_string();
    let c = "{acct-7}:image".to_string();
    decide(&b, &a, &policy).await.unwrap();
    decide(&b, &c, &policy).await.unwrap();
    let stats = b.stats();
    assert_eq!(
        stats.script_errors + stats.io_errors + stats.other_errors,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    let mut server = RedisServer::start();
    let b = RedisBackend::from_url(&server.url())
        .unwrap()
        .deadline(Duration::from_millis(200))
        .breaker(100, Duration::from_millis(10), Duration::from_millis(10));
    let kinds = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = kinds.clone();
    let b = b.observer(move |e: &Event<'_>| {
        if let Event::BackendFailure {
            error: Some(kind), ..
        } = e
        {
            seen.lock().unwrap().push(*kind);
        }
    });
    let policy = Policy::new(Quota::per_second(100));
    let key = "kinds".to_string();
    decide(&b, &key, &policy).await.unwrap();
    server.kill();
    for _ in 0..3 {
        decide(&b, &key, &policy).await.unwrap();
    }
    let kinds = kinds.lock().unwrap().clone();
    assert_eq!(kinds.len(), 3);
    assert!(
        kinds.iter().all(|k| matches!(
            k,
            BackendErrorKind::Refused | BackendErrorKind::Io | BackendErrorKind::Timeout
        )),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn rate_limit_shared_is_one_bucket_for_every_instance() {
    let (url, _server) = RedisServer::url_or_start();
    let key = format!("fleet-{}", std::process::id());
    let instance = || {
        let layer =
            tower_sluice::RateLimitLayer::shared(Quota::per_minute(4), backend(&url), key.clone())
                .max_wait(Duration::ZERO);
        tower::ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: ()| async { Ok::<_, BoxError>(()) })
    };
    let (a, b) = (instance(), instance());
    for svc in [&a, &b, &a, &b] {
        svc.clone().oneshot(()).await.unwrap();
    }
    for svc in [&a, &b] {
        let e = svc.clone().oneshot(()).await.unwrap_err();
        assert!(e.is::<RateLimited>(), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_load_every_call_answers_in_time() {
    let mut server = RedisServer::start();
    let deadline = Duration::from_millis(100);
    let b = Arc::new(
        RedisBackend::from_url(&server.url())
            .unwrap()
            .deadline(deadline)
            .deny_cache(0),
    );
    let policy = Policy::new(Quota::per_second(1_000_000));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (b, policy, stop) = (b.clone(), policy.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (mut calls, mut slowest) = (0u32, Duration::ZERO);
            let key = format!("load-{t}");
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                // Fallback (the default) admits: every call must succeed.
                decide(&*b, &key, &policy).await.unwrap();
                slowest = slowest.max(start.elapsed());
                calls += 1;
                // Skipped decisions are answered without an await point.
                tokio::task::yield_now().await;
            }
            (calls, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = b.stats();
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let (calls, slowest) = t.await.unwrap();
        assert!(calls > 10, "{calls} calls");
        // The deadline plus scheduling slack on a busy 2-core machine.
        assert!(slowest < deadline * 4, "a call took {slowest:?}");
    }
    let after = b.stats();
    assert!(
        before.decisions > 100,
        "load ran on Redis first: {before:?}"
    );
    assert!(after.fallback > 0, "then on the fallback: {after:?}");
    assert_eq!(after.went_down, 1);
}

#[tokio::test]
async fn from_an_existing_connection_manager() {
    let (url, _server) = RedisServer::url_or_start();
    let manager = redis::aio::ConnectionManager::new(redis::Client::open(url).unwrap())
        .await
        .unwrap();
    let b = RedisBackend::from_manager(manager)
        .prefix(format!("mgr{}:", std::process::id()))
        .failure_policy(FailurePolicy::FailClosed);
    let policy = Policy::new(Quota::per_minute(1));
    let key = 7u64;
    decide(&b, &key, &policy).await.unwrap();
    assert!(is_limited(&decide(&b, &key, &policy).await));
    assert_eq!(
        b.redis_key(&key),
        format!("mgr{}:7", std::process::id()).into_bytes()
    );
}

#[tokio::test]
async fn remote_decisions_are_reported_and_shadow_lets_them_through() {
    let (url, _server) = RedisServer::url_or_start();
    for shadow in [false, true] {
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = events.clone();
        let mut layer = PerKeyLayer::new(Quota::per_minute(1), |k: &String| Some(k.clone()))
            .backend(backend(&url).prefix(format!("report{}-{shadow}:", std::process::id())))
            .observer(move |e: &Event<'_>| match e {
                Event::Allowed { key, .. } => seen
                    .lock()
                    .unwrap()
                    .push(format!("allowed {:?}", key.unwrap())),
                Event::Limited { enforced, .. } => seen
                    .lock()
                    .unwrap()
                    .push(format!("limited enforced={enforced}")),
                _ => {}
            });
        if shadow {
            layer = layer.shadow();
        }
        let svc = tower::ServiceBuilder::new()
            .layer(layer)
            .service_fn(|_: String| async { Ok::<_, BoxError>(()) });
        let mut passed = 0;
        for _ in 0..3 {
            if svc.clone().oneshot("k".to_string()).await.is_ok() {
                passed += 1;
            }
        }
        let enforced = !shadow;
        assert_eq!(passed, if shadow { 3 } else { 1 });
        assert_eq!(
            *events.lock().unwrap(),
            [
                "allowed \"k\"".to_string(),
                format!("limited enforced={enforced}"),
                format!("limited enforced={enforced}"),
            ]
        );
    }
}

/// A fault between the backend and Redis.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Injected by the proxy, cleared by letting traffic pass again.
    Proxy(Fault),
    /// The server killed, cleared by starting it again (empty).
    Restart,
}

/// Under `outage`, a `FailClosed` backend goes down, probes at most a few
/// times a second, and is back on Redis within a second of Redis
/// answering again.
async fn back_on_redis_within_a_second(outage: Outage) {
    let mut server = RedisServer::start();
    let proxy = FaultProxy::start(server.port()).await;
    let b = RedisBackend::from_url(&proxy.url())
        .unwrap()
        .deadline(Duration::from_millis(100))
        .failure_policy(FailurePolicy::FailClosed)
        .deny_cache(0);
    let policy = Policy::new(Quota::per_second(1_000_000));
    let key = "steady".to_string();
    for _ in 0..5 {
        decide(&b, &key, &policy).await.unwrap();
    }
    match outage {
        Outage::Proxy(fault) => proxy.set(fault),
        Outage::Restart => server.kill(),
    }
    let t = Instant::now();
    while b.is_available() {
        let _ = decide(&b, &key, &policy).await;
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{outage:?}: never down"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Down for two seconds under steady traffic: every decision is refused
    // at once, and only the probes reach the proxy.
    let (conns, chunks) = (proxy.connections(), proxy.chunks());
    let down = Instant::now();
    let mut refused = 0;
    while down.elapsed() < Duration::from_secs(2) {
        let e = decide(&b, &key, &policy).await.unwrap_err();
        assert!(e.is::<BackendUnavailable>(), "{outage:?}: {e}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tries = (proxy.connections() - conns) + (proxy.chunks() - chunks);
    assert!(refused > 100, "{outage:?}: traffic ran ({refused})");
    eprintln!("{outage:?}: {tries} connections and commands in 2 s while down");
    // A probe every 250 ms: at most 9 in two seconds. Each is one command,
    // or, while connections are refused or reset, at most two connection
    // attempts (the first call gets the last failed attempt and starts a
    // new one, the second waits for it). 20 is that bound, rounded up; a
    // probe per request would be hundreds.
    assert!(
        tries <= 20,
        "{outage:?}: {tries} connections and commands in 2 s while down"
    );
    match outage {
        Outage::Proxy(_) => proxy.set(Fault::Pass),
        // Measured from when the new server answers PING.
        Outage::Restart => server.restart(),
    }
    let cleared = Instant::now();
    loop {
        match decide(&b, &key, &policy).await {
            Ok(_) => break,
            Err(e) => assert!(e.is::<BackendUnavailable>(), "{outage:?}: {e}"),
        }
        // The issue's target is 1 s. Real time on a shared 2-core machine:
        // the bound is the target itself; a probe every 250 ms comes back
        // in about 300 ms.
        assert!(
            cleared.elapsed() < Duration::from_secs(1),
            "{outage:?}: not back on Redis 1 s after the fault cleared"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let back = cleared.elapsed();
    assert!(b.is_available());
    let before = b.stats().decisions;
    for _ in 0..5 {
        decide(&b, &key, &policy).await.unwrap();
    }
    assert_eq!(
        b.stats().decisions,
        before + 5,
        "{outage:?}: on Redis again"
    );
    eprintln!("{outage:?}: back on Redis {back:?} after the fault cleared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_on_redis_within_a_second_after_a_black_hole() {
    back_on_redis_within_a_second(Outage::Proxy(Fault::BlackHole)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_on_redis_within_a_second_after_latency_over_the_deadline() {
    back_on_redis_within_a_second(Outage::Proxy(Fault::Latency(Duration::from_millis(300)))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_on_redis_within_a_second_after_connection_resets() {
    back_on_redis_within_a_second(Outage::Proxy(Fault::Reset)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_on_redis_within_a_second_after_a_restart() {
    back_on_redis_within_a_second(Outage::Restart).await;
}

/// On a 3-master Cluster with one master dead, keys on the live masters
/// stay exact (one limit across two instances) and only the dead master's
/// keys take the failure policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_cluster_master_takes_only_its_keys_off_redis() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let instance = || {
        let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
        RedisBackend::cluster(client)
            .deadline(Duration::from_millis(200))
            .deny_cache(0)
    };
    let (a, b) = (instance(), instance());
    let policy = Policy::new(Quota::per_minute(5));
    // A key on master 0 (stays up) and one on master 2 (killed).
    let find = |node: usize, name: &str| {
        (0..)
            .map(|i| format!("{name}-{i}"))
            .find(|k| cluster.node_of(&a.redis_key(k)) == node)
            .unwrap()
    };
    let (live, dead) = (find(0, "live"), find(2, "dead"));
    let warm = find(1, "warm");
    for backend in [&a, &b] {
        decide(backend, &warm, &policy).await.unwrap();
    }
    cluster.nodes[2].kill();
    // Both instances find the dead master down...
    for backend in [&a, &b] {
        let t = Instant::now();
        while backend.is_available_for(&dead) {
            let r = decide(backend, &dead, &policy).await;
            assert!(r.is_ok() || is_limited(&r), "fallback decides: {r:?}");
            assert!(t.elapsed() < Duration::from_secs(5), "never down");
        }
        assert!(!backend.is_available());
        assert!(backend.stats().fallback > 0);
    }
    // ...while the live masters' keys stay on Redis: 5 admitted of 8
    // across the two instances, where the fallback would admit 8.
    assert!(a.is_available_for(&live) && b.is_available_for(&live));
    let mut admitted = 0;
    for backend in [&a, &b, &a, &b, &a, &b, &a, &b] {
        match decide(backend, &live, &policy).await {
            Ok(_) => admitted += 1,
            Err(e) => assert!(e.is::<RateLimited>(), "{e}"),
        }
    }
    assert_eq!(admitted, 5, "the shared limit, exactly");
    let fallback = a.stats().fallback;
    let r = decide(&a, &dead, &policy).await;
    assert!(r.is_ok() || is_limited(&r), "{r:?}");
    assert_eq!(a.stats().fallback, fallback + 1, "the dead master's key");
    // The master restarts (its slots kept in its nodes.conf) and serves
    // again once it sees the cluster (cluster_state:ok, about 2 s later):
    // its probe, on a key of its own, brings its keys back.
    cluster.nodes[2].restart();
    let restarted = Instant::now();
    while !cluster.nodes[2]
        .cli(&["CLUSTER", "INFO"])
        .contains("cluster_state:ok")
    {
        assert!(restarted.elapsed() < Duration::from_secs(10), "never ok");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let serving = Instant::now();
    while !(a.is_available_for(&dead) && b.is_available_for(&dead)) {
        // 1.5 s, not 1: the cluster client retries a node it found down
        // with a backoff of its own, inside the probe's deadline (about
        // 0.4 s measured here after the node serves again).
        assert!(
            serving.elapsed() < Duration::from_millis(1_500),
            "not back 1.5 s after the master served again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "dead master's keys back {:?} after it served again",
        serving.elapsed()
    );
    let decisions = a.stats().decisions;
    decide(&a, &dead, &policy).await.unwrap();
    assert_eq!(a.stats().decisions, decisions + 1, "decided by Redis");
    eprintln!("cluster test took {:?}", started.elapsed());
}

/// A policy with an in-flight cap is decided on Redis (its derived local
/// policy used to panic at the first decision).
#[tokio::test]
async fn a_policy_with_an_in_flight_cap_is_decided() {
    let (url, _server) = RedisServer::url_or_start();
    let b = backend(&url).prefix(format!("inflight{}:", std::process::id()));
    let policy = Policy::new(Quota::per_minute(10)).max_in_flight(1);
    let first = decide(&b, &"ann".to_string(), &policy).await;
    assert!(first.is_ok(), "{:?}", first.err());
    let second = decide(&b, &"ann".to_string(), &policy).await;
    let err = second.expect_err("one in flight already");
    assert!(err.is::<tower_sluice::error::TooManyInFlight>(), "{err}");
    drop(first);
    assert!(decide(&b, &"ann".to_string(), &policy).await.is_ok());
}

/// A real axum server on 127.0.0.1 whose per-key layer charges each API
/// key its tokens on Redis: a quota of tokens refuses, a cost above its
/// burst is a 413, cost 0 is free, and the calendar day's tokens count in
/// their own Redis key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_limits_by_cost_on_redis() {
    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::routing::get;
    use http::{Request, StatusCode};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower_sluice::http::HeaderKey;

    let (url, _server) = RedisServer::url_or_start();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Keep clear of midnight UTC (at most 5 s of waiting).
    let into_day = redis_time(&mut conn).await % 86_400_000_000;
    if into_day > 86_395_000_000 {
        tokio::time::sleep(Duration::from_micros(86_400_100_000 - into_day)).await;
    }

    // Per API key: 60 requests and 1 000 tokens a minute, 5 000 tokens a
    // calendar day; the cost is the request's `x-tokens` (missing: 1).
    let policy = Policy::new(Quota::per_minute(60))
        .and(Quota::per_minute(1_000).counting("tokens"))
        .unwrap()
        .and(Quota::per_calendar_day(5_000).counting("tokens"))
        .unwrap();
    let prefix = format!("http-cost{}:", std::process::id());
    let layer = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key"))
        .cost(|req: &Request<Body>| {
            req.headers()
                .get("x-tokens")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1)
        })
        .backend(backend(&url).prefix(prefix.clone()));
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer.http());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let fetch = |tokens: u32| {
        let req = Request::get(format!("http://{addr}/"))
            .header("x-api-key", "{ann}")
            .header("x-tokens", tokens)
            .body(Empty::new())
            .unwrap();
        let res = client.request(req);
        async move {
            let res = res.await.unwrap();
            let (parts, body) = res.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            (
                parts.status,
                parts.headers,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
    };
    let field = |headers: &http::HeaderMap, name: &str| {
        headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    };

    let (status, headers, _) = fetch(700).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        field(&headers, "ratelimit-policy").unwrap(),
        concat!(
            r#""per-minute";q=60;w=60, "tokens-per-minute";q=1000;w=60;qu="tokens", "#,
            r#""tokens-calendar-day";q=5000;w=86400;qu="tokens""#
        )
    );
    // 400 tokens are refused by the minute's tokens (300 left).
    let (status, headers, body) = fetch(400).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    let retry: u64 = field(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((5..=6).contains(&retry), "{retry}"); // 100 tokens at 1 000 a minute
    assert!(body.contains("1000 tokens per 1m"), "{body}");
    // More than the burst can never pass: 413, without Retry-After.
    let (status, headers, body) = fetch(5_000).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(field(&headers, "retry-after"), None);
    assert!(
        body.starts_with("request cost 5000 tokens exceeds the burst of 1000 tokens"),
        "{body}"
    );
    // Cost 0 is free: no decision, no fields.
    let (status, headers, _) = fetch(0).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&headers, "ratelimit"), None);
    // The refusals charged nothing: 300 tokens still fit.
    let (status, _, _) = fetch(300).await;
    assert_eq!(status, StatusCode::OK);

    // In Redis: the day's tokens in their window's key, the requests in
    // the key's rolling state.
    let day = redis_time(&mut conn).await / 86_400_000_000;
    let tokens: Option<u64> = redis::cmd("GET")
        .arg(format!("{prefix}{{ann}}@tokens-calendar-day:{day}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(tokens, Some(1_000));
    let rolling: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}{{ann}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(rolling.map(|v| v.split(' ').count()), Some(3));
}
