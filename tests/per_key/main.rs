//! PerKeyLayer and the in-memory backend, on tokio's paused clock (feature
//! `test-util`), plus real threads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::backend::{Acquire, Backend, FullStore, Memory};
use tower_sluice::error::{MissingKey, TooManyInFlight, TooManyKeys};
use tower_sluice::observe::Event;
use tower_sluice::per_key::Policy;
use tower_sluice::{PerKeyLayer, Quota, RateLimited};

mod accessors;

const SEC: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

/// A request: a key (or none) and a payload.
#[derive(Debug, Clone)]
struct Req {
    key: Option<&'static str>,
}

fn req(key: &'static str) -> Req {
    Req { key: Some(key) }
}

fn by_key(r: &Req) -> Option<String> {
    r.key.map(str::to_owned)
}

type Echo = tower::util::ServiceFn<fn(Req) -> std::future::Ready<Result<&'static str, Infallible>>>;

fn echo() -> Echo {
    service_fn(|_| std::future::ready(Ok("ok")))
}

async fn send<S>(svc: &mut S, r: Req) -> Result<&'static str, BoxError>
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    svc.ready().await?.call(r).await
}

fn is<E: std::error::Error + 'static>(r: &Result<&'static str, BoxError>) -> bool {
    matches!(r, Err(e) if e.is::<E>())
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent_and_recover() {
    let mut svc = ServiceBuilder::new()
        .layer(PerKeyLayer::new(Quota::per_minute(3), by_key))
        .service(echo());
    for _ in 0..3 {
        assert!(send(&mut svc, req("a")).await.is_ok());
    }
    let err = send(&mut svc, req("a")).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
    assert_eq!(limited.retry_after(), Duration::from_secs(20));
    // Another key is untouched.
    for _ in 0..3 {
        assert!(send(&mut svc, req("b")).await.is_ok());
    }
    assert!(is::<RateLimited>(&send(&mut svc, req("b")).await));
    // After exactly retry_after, "a" gets one more.
    advance(Duration::from_secs(20)).await;
    assert!(send(&mut svc, req("a")).await.is_ok());
    assert!(is::<RateLimited>(&send(&mut svc, req("a")).await));
}

/// The tier table of the issue: per API key, the service from the path.
#[tokio::test(start_paused = true)]
async fn tier_table_by_api_key_and_service() {
    #[derive(Clone)]
    struct Call {
        api_key: &'static str,
        path: &'static str,
    }
    fn tier_quota(service: &str, paid: bool) -> Quota {
        let per_min = match (service, paid) {
            ("text", false) => 30,
            ("text", true) => 120,
            ("image", false) => 10,
            ("image", true) => 60,
            ("vision", false) => 20,
            ("vision", true) => 100,
            _ => unreachable!(),
        };
        Quota::per_minute(per_min)
    }
    let layer = PerKeyLayer::new(Quota::per_minute(1), |c: &Call| {
        let service = c.path.strip_prefix("/v1/")?;
        Some((c.api_key.to_owned(), service.to_owned()))
    })
    .policy_for(|(api_key, service): &(String, String)| {
        let paid = api_key.starts_with("paid-");
        let tier = if paid { "paid" } else { "free" };
        Some(Policy::new(tier_quota(service, paid)).named(tier))
    });
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Call| async { Ok::<_, Infallible>("ok") }));
    for (api_key, path, want) in [
        ("free-1", "/v1/text", 30),
        ("free-1", "/v1/image", 10),
        ("free-1", "/v1/vision", 20),
        ("paid-1", "/v1/text", 120),
        ("paid-1", "/v1/image", 60),
        ("paid-1", "/v1/vision", 100),
        ("free-2", "/v1/image", 10),
    ] {
        let mut ok = 0;
        let mut denied = None;
        for _ in 0..want + 5 {
            match svc
                .ready()
                .await
                .unwrap()
                .call(Call { api_key, path })
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => denied = Some(*e.downcast::<RateLimited>().unwrap()),
            }
        }
        assert_eq!(ok, want, "{api_key} {path}");
        let denied = denied.unwrap();
        assert_eq!(denied.limit(), want);
        assert_eq!(
            denied.policy(),
            Some(if api_key.starts_with("paid") {
                "paid"
            } else {
                "free"
            })
        );
    }
    // A path with no service has no key.
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(Call {
            api_key: "free-1",
            path: "/health",
        })
        .await;
    assert!(r.unwrap_err().is::<MissingKey>());
}

#[tokio::test(start_paused = true)]
async fn several_quotas_the_day_quota_stops_the_key_and_denials_consume_nothing() {
    let policy = Policy::new(Quota::per_minute(2))
        .and(Quota::per_day(5))
        .unwrap()
        .named("daily");
    let layer = PerKeyLayer::new(policy, by_key);
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    let mut allowed = 0;
    for _ in 0..10 {
        for _ in 0..4 {
            match send(&mut svc, req("k")).await {
                Ok(_) => allowed += 1,
                Err(e) => {
                    let e = e.downcast::<RateLimited>().unwrap();
                    let want = if allowed < 5 {
                        Quota::per_minute(2)
                    } else {
                        Quota::per_day(5)
                    };
                    assert_eq!(e.quota(), want, "after {allowed} allowed");
                }
            }
        }
        advance(MIN).await;
    }
    assert_eq!(allowed, 5, "two per minute until the day's five are spent");
    // The minute quota was not charged for the denials: it is full.
    let states: Vec<_> = handle.states(&"k".to_string()).iter().copied().collect();
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].remaining(), 2);
    assert_eq!(states[1].remaining(), 0);
}

/// An inner service that holds each request until told to answer.
fn gated() -> (
    impl Service<Req, Response = &'static str, Error = Infallible, Future = impl Send> + Clone,
    Arc<tokio::sync::Semaphore>,
) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let svc = service_fn(move |_: Req| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
            Ok::<_, Infallible>("ok")
        }
    });
    (svc, gate)
}

#[tokio::test(start_paused = true)]
async fn in_flight_cap_is_released_on_completion_and_on_drop() {
    let (inner, gate) = gated();
    let policy = Policy::new(Quota::per_second(100)).max_in_flight(2);
    let mut svc = ServiceBuilder::new()
        .layer(PerKeyLayer::new(policy, by_key))
        .service(inner);
    let first = svc.ready().await.unwrap().call(req("k"));
    let second = svc.ready().await.unwrap().call(req("k"));
    let third = svc.ready().await.unwrap().call(req("k")).await;
    let err = third.unwrap_err();
    assert_eq!(err.downcast_ref::<TooManyInFlight>().unwrap().limit(), 2);
    // Other keys are not capped by "k".
    let other = svc.ready().await.unwrap().call(req("other"));
    // Dropping a pending response future frees its slot.
    drop(first);
    let fourth = svc.ready().await.unwrap().call(req("k"));
    assert!(
        svc.ready()
            .await
            .unwrap()
            .call(req("k"))
            .await
            .unwrap_err()
            .is::<TooManyInFlight>()
    );
    // Completing frees it too.
    gate.add_permits(1);
    assert_eq!(second.await.unwrap(), "ok");
    let fifth = svc.ready().await.unwrap().call(req("k"));
    gate.add_permits(3);
    assert_eq!(fourth.await.unwrap(), "ok");
    assert_eq!(fifth.await.unwrap(), "ok");
    assert_eq!(other.await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn missing_key_is_an_error_unless_configured() {
    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key);
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    let err = send(&mut svc, Req { key: None }).await.unwrap_err();
    assert!(err.is::<MissingKey>());
    assert!(err.to_string().contains("no rate-limit key"), "{err}");

    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key).allow_missing_key();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    for _ in 0..5 {
        assert!(send(&mut svc, Req { key: None }).await.is_ok());
    }

    let layer = PerKeyLayer::new(Quota::per_minute(2), by_key).fallback_key("anonymous".into());
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    assert!(send(&mut svc, Req { key: None }).await.is_ok());
    assert!(send(&mut svc, req("anonymous")).await.is_ok());
    assert!(is::<RateLimited>(&send(&mut svc, Req { key: None }).await));
}

#[tokio::test(start_paused = true)]
async fn max_wait_delays_then_sends_in_turn() {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let start = Instant::now();
    let inner = service_fn(move |r: Req| {
        log.lock().unwrap().push((r.key.unwrap(), start.elapsed()));
        std::future::ready(Ok::<_, Infallible>("ok"))
    });
    let layer =
        PerKeyLayer::new(Quota::per_second(2), by_key).max_wait(Duration::from_millis(1_000));
    let svc = ServiceBuilder::new().layer(layer).service(inner);
    let mut futures = Vec::new();
    for _ in 0..5 {
        let mut svc = svc.clone();
        futures.push(tokio::spawn(async move {
            svc.ready().await?.call(req("k")).await
        }));
    }
    let mut results = Vec::new();
    for f in futures {
        results.push(f.await);
    }
    let oks = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    // Burst 2 now, then 0.5 s and 1 s; the fifth would wait 1.5 s: refused.
    assert_eq!(oks, 4);
    let errs: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.unwrap().err())
        .collect();
    assert_eq!(
        errs[0].downcast_ref::<RateLimited>().unwrap().retry_after(),
        Duration::from_millis(1_500)
    );
    let times: Vec<_> = sent.lock().unwrap().iter().map(|(_, t)| *t).collect();
    assert_eq!(times, [0, 0, 500, 1_000].map(Duration::from_millis));
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_dropped_before_its_turn_is_never_sent() {
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let inner = service_fn(move |_: Req| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>("ok"))
    });
    let layer = PerKeyLayer::new(Quota::per_second(1), by_key).max_wait(Duration::from_secs(5));
    let mut svc = ServiceBuilder::new().layer(layer).service(inner);
    send(&mut svc, req("k")).await.unwrap();
    let delayed = svc.ready().await.unwrap().call(req("k"));
    let r = tokio::time::timeout(Duration::from_millis(500), delayed).await;
    assert!(r.is_err(), "still waiting for its turn");
    advance(Duration::from_secs(2)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the dropped request never reached the service"
    );
}

/// When the response of a request sent through `svc` arrives, measured
/// from now on the paused clock.
async fn answered_after<S>(svc: &mut S, r: Req) -> (Result<&'static str, BoxError>, Duration)
where
    S: Service<Req, Response = &'static str, Error = BoxError>,
{
    let start = Instant::now();
    let result = send(svc, r).await;
    (result, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_delayed_request_dropped_before_its_turn_gives_its_slot_back() {
    // 1 per minute, waiting up to 5 minutes.
    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key).max_wait(5 * MIN);
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    send(&mut svc, req("k")).await.unwrap();
    // Its turn is at 60 s; dropped after 10 s of waiting.
    let delayed = svc.ready().await.unwrap().call(req("k"));
    assert!(tokio::time::timeout(10 * SEC, delayed).await.is_err());
    // The next request takes the dropped one's turn: answered at 60 s, not
    // at 120 s.
    let (result, waited) = answered_after(&mut svc, req("k")).await;
    assert_eq!(result.unwrap(), "ok");
    assert_eq!(waited, 50 * SEC);
    // And the one after it waits a full period more: nothing extra was
    // given back.
    let (result, waited) = answered_after(&mut svc, req("k")).await;
    assert_eq!(result.unwrap(), "ok");
    assert_eq!(waited, MIN);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_delayed_request_that_others_relied_on_stays_charged() {
    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key).max_wait(5 * MIN);
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    send(&mut svc, req("k")).await.unwrap();
    // Turns at 60 s and 120 s; the first is dropped after the second was
    // admitted behind it.
    let first = svc.ready().await.unwrap().call(req("k"));
    let second = svc.ready().await.unwrap().call(req("k"));
    drop(first);
    let start = Instant::now();
    second.await.unwrap();
    assert_eq!(start.elapsed(), 2 * MIN, "the second keeps its turn");
    // Giving the first back now could let a burst through later: the key
    // stays charged for it, so the next turn is at 180 s.
    let (result, waited) = answered_after(&mut svc, req("k")).await;
    assert_eq!(result.unwrap(), "ok");
    assert_eq!(waited, MIN);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_delayed_request_gives_back_every_quota_of_its_policy() {
    // 1 per second and 3 per minute: the fourth request of the minute waits.
    let policy = Policy::new(Quota::per_second(1))
        .and(Quota::per_minute(3))
        .unwrap()
        .max_in_flight(10);
    let layer = PerKeyLayer::new(policy, by_key).max_wait(MIN);
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    let before = handle.states(&"k".to_string());
    let before: Vec<_> = before.iter().map(|d| d.remaining()).collect();
    assert_eq!(before, [1, 3]);
    // The first is sent at once, the second waits 1 s.
    send(&mut svc, req("k")).await.unwrap();
    let delayed = svc.ready().await.unwrap().call(req("k"));
    let states: Vec<_> = handle
        .states(&"k".to_string())
        .iter()
        .map(|d| d.remaining())
        .collect();
    assert_eq!(states, [0, 1], "the waiting request is charged to both");
    drop(delayed);
    let states: Vec<_> = handle
        .states(&"k".to_string())
        .iter()
        .map(|d| d.remaining())
        .collect();
    assert_eq!(states, [0, 2], "and given back to both when dropped");
}

#[tokio::test(start_paused = true)]
async fn reconfiguration_never_lets_a_burst_through() {
    let layer = PerKeyLayer::new(Quota::per_minute(10), by_key);
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    for _ in 0..10 {
        send(&mut svc, req("k")).await.unwrap();
    }
    // Raising the limit does not refill the spent bucket.
    handle.set_default(Quota::per_minute(20));
    assert!(is::<RateLimited>(&send(&mut svc, req("k")).await));
    // It refills at the new rate: one every 3 s.
    advance(Duration::from_secs(3)).await;
    assert!(send(&mut svc, req("k")).await.is_ok());
    assert!(is::<RateLimited>(&send(&mut svc, req("k")).await));
    // Lowering it makes the key wait longer for its debt.
    handle.set_default(Quota::per_minute(5));
    advance(Duration::from_secs(6)).await;
    assert!(is::<RateLimited>(&send(&mut svc, req("k")).await));
    // A per-key override wins over the default, and can be removed.
    handle.set_policy("vip".into(), Quota::per_minute(100));
    for _ in 0..100 {
        send(&mut svc, req("vip")).await.unwrap();
    }
    assert!(is::<RateLimited>(&send(&mut svc, req("vip")).await));
    assert_eq!(
        handle.policy(&"vip".into()).quotas().next(),
        Some(Quota::per_minute(100))
    );
    assert!(handle.remove_policy(&"vip".into()).is_some());
    assert_eq!(
        handle.policy(&"vip".into()).quotas().next(),
        Some(Quota::per_minute(5))
    );
}

/// Under load from several threads, a key switched between two quotas
/// never gets more than the larger one allows over the run.
#[test]
fn reconfiguration_under_load_stays_within_the_larger_quota() {
    let small = Quota::new(50, Duration::from_millis(100)).with_burst(10);
    let large = Quota::new(100, Duration::from_millis(100)).with_burst(20);
    let layer = PerKeyLayer::new(small, |k: &u64| Some(*k));
    let handle = layer.handle();
    let backend = Arc::new(handle.clone());
    let admitted = AtomicU64::new(0);
    let start = StdInstant::now();
    let run = Duration::from_millis(400);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                while start.elapsed() < run {
                    let policy = backend.policy(&1);
                    if let Acquire::Ready(Ok(_)) =
                        backend.backend().acquire(&1, &policy, 1, Duration::ZERO)
                    {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        s.spawn(|| {
            let mut flip = false;
            while start.elapsed() < run {
                handle.set_default(if flip { small } else { large });
                flip = !flip;
                std::thread::sleep(Duration::from_millis(7));
            }
        });
    });
    let elapsed = start.elapsed().as_nanos();
    let bound = u128::from(large.burst()) + elapsed / large.emission_interval().as_nanos();
    let admitted = u128::from(admitted.into_inner());
    assert!(admitted <= bound, "{admitted} admitted, bound {bound}");
    assert!(admitted >= 10, "only {admitted} admitted");
}

#[tokio::test(start_paused = true)]
async fn peek_leaves_every_bucket_untouched() {
    let policy = Policy::new(Quota::per_minute(3))
        .and(Quota::per_hour(10))
        .unwrap();
    let layer = PerKeyLayer::new(policy, by_key);
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    let key = "k".to_string();
    // Unknown key: allowed, and still unknown afterwards.
    assert!(handle.peek(&key).is_ok());
    assert_eq!(handle.backend().len(), 0);
    send(&mut svc, req("k")).await.unwrap();
    let before: Vec<_> = handle.states(&key).iter().copied().collect();
    for _ in 0..100 {
        assert!(handle.peek(&key).is_ok());
    }
    let after: Vec<_> = handle.states(&key).iter().copied().collect();
    assert_eq!(before, after);
    assert_eq!(after[0].remaining(), 2);
    assert_eq!(after[1].remaining(), 9);
    send(&mut svc, req("k")).await.unwrap();
    send(&mut svc, req("k")).await.unwrap();
    let err = handle.peek(&key).unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>().unwrap().retry_after(),
        Duration::from_secs(20)
    );
    // Peeking a denial consumed nothing either.
    advance(Duration::from_secs(20)).await;
    assert!(send(&mut svc, req("k")).await.is_ok());
}

/// With [`FullStore::Refuse`], a store full of active keys refuses new
/// keys (as it always did before `FullStore`), and forgets no debt.
#[tokio::test(start_paused = true)]
async fn a_flood_of_unique_keys_keeps_memory_bounded() {
    let backend: Memory<u64> = Memory::new(10_000).full_store(FullStore::Refuse);
    let policy = Policy::new(Quota::per_second(1));
    let mut refused = 0u64;
    // 1M unique keys, a new one every microsecond: each turns idle after 1 s.
    for key in 0..1_000_000u64 {
        if key % 1_000 == 0 {
            advance(Duration::from_millis(1)).await;
        }
        match backend.acquire(&key, &policy, 1, Duration::ZERO) {
            Acquire::Ready(Ok(_)) => {}
            Acquire::Ready(Err(e)) => {
                let full = e.downcast_ref::<TooManyKeys>().expect("only TooManyKeys");
                assert!(full.retry_after() <= SEC);
                refused += 1;
            }
            Acquire::Pending(_) => unreachable!(),
        }
        if key % 50_000 == 0 {
            assert!(backend.len() <= 10_000, "{} keys held", backend.len());
        }
    }
    assert!(backend.len() <= 10_000);
    // Table memory stays near the bound: entries of 8-byte keys.
    assert!(
        backend.table_bytes() < 10_000 * 64,
        "{} bytes",
        backend.table_bytes()
    );
    // 1000 new keys per ms against 10 000 slots that free after 1 s: most of
    // the flood is refused, never admitted without a limit.
    assert!(refused > 900_000, "{refused} refused");
    // Keys still held are still limited.
    let held = (0..1_000_000u64)
        .rev()
        .find(|k| matches!(backend.peek(k, &policy, 1), Acquire::Ready(Err(_))))
        .expect("some recent key is held and spent");
    assert!(matches!(
        backend.acquire(&held, &policy, 1, Duration::ZERO),
        Acquire::Ready(Err(e)) if e.is::<RateLimited>()
    ));
    // Once they are idle, the whole store makes room again.
    advance(SEC).await;
    backend.sweep();
    assert_eq!(backend.len(), 0);
    assert!(matches!(
        backend.acquire(&u64::MAX, &policy, 1, Duration::ZERO),
        Acquire::Ready(Ok(_))
    ));
}

/// 1 000 a day, 10 at once: nothing refills while a test runs (one
/// request's worth is 86.4 s).
fn daily() -> Policy {
    Policy::new(Quota::per_day(1_000).with_burst(10))
}

fn admitted(backend: &Memory<u64>, key: u64, policy: &Policy) -> Result<(), BoxError> {
    let Acquire::Ready(got) = backend.acquire(&key, policy, 1, Duration::ZERO);
    got.map(drop)
}

/// Spends every request of `key`'s burst; the next one is refused.
fn exhaust(backend: &Memory<u64>, key: u64, policy: &Policy) {
    for _ in 0..10 {
        admitted(backend, key, policy).unwrap();
    }
    assert!(
        admitted(backend, key, policy)
            .unwrap_err()
            .is::<RateLimited>()
    );
}

/// The default store keeps serving new keys during a flood of unique keys
/// (each spending one request, as from a header any client sets), while
/// keys over their limit stay refused: a full shard forgets the key nearest
/// to full among the 8 it looks at, and 7 keys over their limit are never
/// all of those 8. Memory stays bounded by `max_keys`. Both for a
/// one-quota policy and for one with two quotas (a second table).
#[tokio::test(start_paused = true)]
async fn a_flood_of_unique_keys_does_not_lock_out_new_keys() {
    let two = daily().and(Quota::per_hour(1_000_000)).unwrap();
    // Bytes per key: an entry of the main table (and one of the second
    // table with its block), at hashbrown's load factor.
    for (policy, per_key) in [(daily(), 64), (two, 128)] {
        flood_beside_keys_over_their_limit(policy, per_key).await;
    }
}

async fn flood_beside_keys_over_their_limit(policy: Policy, bytes_per_key: usize) {
    let backend: Memory<u64> = Memory::new(64);
    assert_eq!(backend.full_store_policy(), FullStore::EvictNearestFull);
    let start = Instant::now();
    let heavy: Vec<u64> = (1_000_000..1_000_007).collect();
    for &key in &heavy {
        exhaust(&backend, key, &policy);
    }
    for key in 0..20_000u64 {
        advance(Duration::from_millis(1)).await;
        // A new key is served, never refused for want of room.
        admitted(&backend, key, &policy).unwrap_or_else(|e| panic!("key {key}: {e}"));
        assert!(backend.len() <= 64, "{} keys held", backend.len());
        if key % 97 == 0 {
            for &h in &heavy {
                let refused = admitted(&backend, h, &policy).unwrap_err();
                assert!(refused.is::<RateLimited>(), "heavy key {h}: {refused}");
            }
        }
    }
    // The heavy keys were never forgotten: their debt is whole, one
    // request's worth (86.4 s) less the time of the flood.
    for &h in &heavy {
        let Acquire::Ready(peek) = backend.peek(&h, &policy, 1);
        let wait = peek
            .unwrap_err()
            .downcast::<RateLimited>()
            .unwrap()
            .retry_after();
        assert_eq!(
            wait,
            Duration::from_millis(86_400) - start.elapsed(),
            "key {h}"
        );
    }
    // Table memory stays that of 64 keys of 8 bytes, however many come
    // and go.
    let bytes = backend.table_bytes();
    assert!(bytes < 64 * bytes_per_key, "{bytes} bytes");
}

/// A key with a request in flight is never forgotten to make room (its
/// in-flight cap would be lost): a store full of such keys refuses a new
/// key, whatever its policy for a full store.
#[tokio::test(start_paused = true)]
async fn keys_with_requests_in_flight_keep_their_place() {
    let backend: Memory<u64> = Memory::new(64);
    let policy = daily().max_in_flight(1);
    let held: Vec<_> = (0..64u64)
        .map(
            |key| match backend.acquire(&key, &policy, 1, Duration::ZERO) {
                Acquire::Ready(Ok(grant)) => grant,
                _ => panic!("key {key} refused"),
            },
        )
        .collect();
    let refused = admitted(&backend, 64, &policy).unwrap_err();
    assert!(refused.is::<TooManyKeys>(), "{refused}");
    for key in 0..64u64 {
        let refused = admitted(&backend, key, &policy).unwrap_err();
        assert!(refused.is::<TooManyInFlight>(), "key {key}: {refused}");
    }
    // Once one is done, its key (idle-free but in debt) can give its place.
    drop(held);
    admitted(&backend, 64, &policy).unwrap();
    assert!(backend.len() <= 64);
}

/// Real threads flood a small store with unique keys while others hammer
/// keys that spent their burst: every new key is served, and no key over
/// its limit gets a single request more.
#[test]
fn a_concurrent_flood_never_loosens_keys_over_their_limit() {
    let backend: Memory<u64> = Memory::new(64);
    let policy = daily();
    let heavy: Vec<u64> = (1_000_000..1_000_004).collect();
    for &key in &heavy {
        exhaust(&backend, key, &policy);
    }
    let flood_refused = AtomicU64::new(0);
    let flood_served = AtomicU64::new(0);
    let heavy_admitted = AtomicU64::new(0);
    let start = StdInstant::now();
    let run = Duration::from_millis(300);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (backend, policy) = (&backend, &policy);
            let (refused, served) = (&flood_refused, &flood_served);
            s.spawn(move || {
                let mut key = t << 40;
                while start.elapsed() < run {
                    key += 1;
                    match admitted(backend, key, policy) {
                        Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        let (backend, policy, heavy, admitted_) = (&backend, &policy, &heavy, &heavy_admitted);
        s.spawn(move || {
            while start.elapsed() < run {
                for &h in heavy {
                    if admitted(backend, h, policy).is_ok() {
                        admitted_.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    });
    assert_eq!(heavy_admitted.load(Ordering::Relaxed), 0);
    assert_eq!(flood_refused.load(Ordering::Relaxed), 0);
    assert!(flood_served.load(Ordering::Relaxed) > 1_000);
    assert!(backend.len() <= 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A flood of unique keys (one request each) fills a one-shard store
    /// of 64 keys while up to 7 other keys send at random. Every flood key
    /// is served, and every decision for the other keys is one a key could
    /// get if, besides its own bucket, it were forgotten at moments when it
    /// owed no more than one request (a flood key's debt): the documented
    /// bound. Checked against the range of levels the key may have.
    #[test]
    fn a_flood_forgets_a_key_only_within_the_documented_bound(
        limit in 1u32..20,
        period_ms in 10u64..5_000,
        burst in 2u32..8,
        others in 1u64..8,
        ops in prop::collection::vec((0u64..16, 0u64..50), 1..600),
    ) {
        let q = Quota::try_with_burst(limit, Duration::from_millis(period_ms), burst).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async move {
                let backend: Memory<u64> = Memory::new(64);
                let policy = Policy::new(q);
                let t = q.emission_interval().as_nanos();
                let cap = t * u128::from(q.burst());
                // Per key: the lowest and highest level it may have, and
                // when they were last brought up to date.
                let mut range: HashMap<u64, (u128, u128)> = HashMap::new();
                let mut flood = 1u64 << 32;
                for (op, gap_ms) in ops {
                    advance(Duration::from_millis(gap_ms)).await;
                    let dt = u128::from(gap_ms) * 1_000_000;
                    for (lo, hi) in range.values_mut() {
                        *lo = lo.saturating_sub(dt);
                        *hi = hi.saturating_sub(dt);
                        // It may have been forgotten once it owed no more
                        // than a flood key.
                        if *lo <= t {
                            *lo = 0;
                        }
                    }
                    if op >= others {
                        // Several flood keys at once.
                        for _ in 0..op {
                            flood += 1;
                            prop_assert!(admitted(&backend, flood, &policy).is_ok(), "flood key refused");
                        }
                        continue;
                    }
                    let (lo, hi) = range.entry(op).or_insert((0, 0));
                    match admitted(&backend, op, &policy) {
                        Ok(()) => {
                            prop_assert!(*lo + t <= cap, "key {} admitted at level {}..{} (cap {})", op, lo, hi, cap);
                            *hi = (*hi).min(cap - t) + t;
                            *lo += t;
                        }
                        Err(e) => {
                            prop_assert!(e.is::<RateLimited>(), "{}", e);
                            prop_assert!(*hi + t > cap, "key {} refused at level {}..{}", op, lo, hi);
                            *lo = (*lo).max(cap - t + 1);
                        }
                    }
                    prop_assert!(backend.len() <= 64);
                }
                Ok(())
            })?;
    }
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_forgotten_without_changing_decisions() {
    let backend: Memory<u64> = Memory::new(1_000_000);
    let policy = Policy::new(Quota::per_second(10));
    for round in 0..20u64 {
        for key in 0..5_000 {
            let key = round * 5_000 + key;
            assert!(matches!(
                backend.acquire(&key, &policy, 1, Duration::ZERO),
                Acquire::Ready(Ok(_))
            ));
        }
        // Each round's keys are idle 100 ms after their request, and for
        // longer than the store's one-second grace by the next round.
        advance(2 * SEC).await;
    }
    // 100k keys seen, but only the recent ones are held.
    assert!(backend.len() < 20_000, "{} held", backend.len());
}

/// A steady set of keys whose buckets refill between their requests (a
/// generous quota) is kept: forgetting them before the table grows would
/// only bring each straight back (an insert under the write lock), over
/// and over. Keys idle for longer than a second are still dropped then.
///
/// Both for a one-quota policy (a key is one table entry) and for one with
/// two quotas (a second table holds the key's other bucket).
#[tokio::test(start_paused = true)]
async fn a_steady_set_of_keys_is_kept_and_only_long_idle_keys_are_dropped() {
    let one = Policy::new(Quota::per_second(1_000_000));
    let two = Policy::new(Quota::per_second(1_000_000))
        .and(Quota::per_hour(1_000_000_000))
        .unwrap();
    for policy in [one, two] {
        let backend: Memory<u64> = Memory::new(10_000);
        let send = |key: u64| {
            assert!(matches!(
                backend.acquire(&key, &policy, 1, Duration::ZERO),
                Acquire::Ready(Ok(_))
            ));
        };
        for round in 0..5 {
            for key in 0..1_000 {
                // Each key's buckets are full again microseconds later.
                advance(Duration::from_micros(5)).await;
                send(key);
            }
            assert_eq!(backend.len(), 1_000, "keys held after round {round}");
        }
        // Two seconds later, new keys make the tables grow: the old keys,
        // idle since, are forgotten first.
        advance(2 * SEC).await;
        for key in 1_000..2_000 {
            send(key);
        }
        assert!(backend.len() < 1_500, "{} held", backend.len());
    }
}

/// Reference model: one leaky bucket per key.
#[derive(Clone, Default)]
struct Bucket {
    level: u128,
    last: u128,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn many_keys_match_per_key_models(
        limit in 1u32..10,
        period_ms in 1u64..2_000,
        burst in 1u32..6,
        arrivals in prop::collection::vec((0u8..6, 0u64..400), 1..200),
    ) {
        let q = Quota::try_with_burst(limit, Duration::from_millis(period_ms), burst).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(async move {
                let backend: Memory<u8> = Memory::new(1_000);
                let policy = Policy::new(q);
                let t = q.emission_interval().as_nanos();
                let cap = t * u128::from(q.burst());
                let mut models: HashMap<u8, Bucket> = HashMap::new();
                let mut now = 0u128;
                for (key, gap_ms) in arrivals {
                    advance(Duration::from_millis(gap_ms)).await;
                    now += u128::from(gap_ms) * 1_000_000;
                    let m = models.entry(key).or_default();
                    let level = m.level.saturating_sub(now - m.last);
                    let want = level + t <= cap;
                    let got = backend.acquire(&key, &policy, 1, Duration::ZERO);
                    let Acquire::Ready(got) = got;
                    prop_assert_eq!(got.is_ok(), want, "key {} at {} ns", key, now);
                    match got {
                        Ok(grant) => {
                            m.level = level + t;
                            m.last = now;
                            prop_assert_eq!(u128::from(grant.decision().remaining()), (cap - m.level) / t);
                        }
                        Err(e) => {
                            let e = e.downcast::<RateLimited>().unwrap();
                            prop_assert_eq!(e.retry_after().as_nanos(), level + t - cap);
                        }
                    }
                }
                Ok(())
            })?;
    }
}

/// Real threads on many keys: no key is ever admitted beyond its bound.
#[test]
fn threads_on_many_keys_never_exceed_any_bound() {
    let quota = Quota::new(20, Duration::from_millis(100)).with_burst(5);
    let backend: Arc<Memory<u32>> = Arc::new(Memory::new(100_000));
    let policy = Policy::new(quota);
    let keys = 64u32;
    let counts: Vec<AtomicU64> = (0..keys).map(|_| AtomicU64::new(0)).collect();
    let start = StdInstant::now();
    let run = Duration::from_millis(300);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let (backend, policy, counts) = (&backend, &policy, &counts);
            s.spawn(move || {
                let mut i = t;
                while start.elapsed() < run {
                    i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let key = (i >> 8) % keys;
                    if let Acquire::Ready(Ok(_)) = backend.acquire(&key, policy, 1, Duration::ZERO)
                    {
                        counts[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_nanos();
    let bound = u128::from(quota.burst()) + elapsed / quota.emission_interval().as_nanos();
    let mut total = 0;
    for (key, c) in counts.iter().enumerate() {
        let c = u128::from(c.load(Ordering::Relaxed));
        assert!(c <= bound, "key {key}: {c} admitted, bound {bound}");
        total += c;
    }
    assert!(total >= u128::from(keys) * 10, "only {total} admitted");
}

#[tokio::test(start_paused = true)]
async fn observer_sees_keys() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key).observer(move |e: &Event<'_>| {
        let key = e.key().map(|k| format!("{k:?}"));
        let kind = match e {
            Event::Allowed { .. } => "allowed",
            Event::Limited { .. } => "limited",
            Event::MissingKey { .. } => "missing",
            // Completions are checked in tests/observe.
            Event::Completed { .. } => return,
            _ => "other",
        };
        s.lock().unwrap().push((kind, key));
    });
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    let _ = send(&mut svc, req("a")).await;
    let _ = send(&mut svc, req("a")).await;
    let _ = send(&mut svc, Req { key: None }).await;
    let want = vec![
        ("allowed", Some("\"a\"".to_string())),
        ("limited", Some("\"a\"".to_string())),
        ("missing", None),
    ];
    assert_eq!(*seen.lock().unwrap(), want);
}

#[test]
fn bounds_for_axum() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    type Layer = PerKeyLayer<String, fn(&Req) -> Option<String>>;
    ok::<Layer>();
    ok::<<Layer as tower::Layer<Echo>>::Service>();
}

#[test]
fn policy_rejects_too_many_quotas() {
    let p = Policy::new(Quota::per_second(1))
        .and(Quota::per_minute(10))
        .and_then(|p| p.and(Quota::per_hour(100)))
        .and_then(|p| p.and(Quota::per_day(1000)))
        .unwrap();
    let err = p.and(Quota::per_day(10_000)).unwrap_err();
    assert!(err.to_string().contains("at most 4"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_lets_everything_through_and_reports() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let start = Instant::now();
    let layer = PerKeyLayer::new(Quota::per_minute(2), by_key)
        .max_wait(Duration::from_secs(60))
        .shadow()
        .observer(move |e: &Event<'_>| {
            let kind = match e {
                Event::Allowed { .. } => "allowed".to_string(),
                Event::Limited { enforced, .. } => format!("limited enforced={enforced}"),
                Event::Waited { .. } => "waited".to_string(),
                Event::MissingKey { .. } => "missing".to_string(),
                Event::Completed { .. } => return,
                _ => "other".to_string(),
            };
            ev.lock().unwrap().push(kind);
        });
    let handle = layer.handle();
    let mut svc = ServiceBuilder::new().layer(layer).service(echo());
    // Two fit, the third would wait 30 s, the fourth 60 s, the fifth is over
    // max_wait: all pass at once.
    for _ in 0..5 {
        assert_eq!(send(&mut svc, req("k")).await.unwrap(), "ok");
    }
    assert!(send(&mut svc, Req { key: None }).await.is_ok());
    assert_eq!(start.elapsed(), Duration::ZERO, "shadow mode never waits");
    let events = events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "allowed",
            "allowed",
            "allowed",
            "waited",
            "allowed",
            "waited",
            "limited enforced=false",
            "missing",
        ]
    );
    // The four admitted requests were charged (two of them ahead of time).
    let err = handle.peek(&"k".to_string()).unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>().unwrap().retry_after(),
        Duration::from_secs(90)
    );
}

/// `policy_for` never panics: after `handle()` or a clone it replaces the
/// resolver of every service, clone and handle made from the layer (they
/// share it), and the debt a key already has is kept.
#[tokio::test(start_paused = true)]
async fn policy_for_after_handle_and_clone_applies_to_everything_shared() {
    use tower::Layer as _;
    let layer = PerKeyLayer::new(Quota::per_minute(1), by_key);
    let handle = layer.handle();
    let mut svc = layer.clone().layer(echo());
    assert!(send(&mut svc, req("paid-1")).await.is_ok());
    assert!(is::<RateLimited>(&send(&mut svc, req("paid-1")).await));

    // After handle() and a clone: the service made earlier follows.
    let layer = layer.policy_for(|k: &String| k.starts_with("paid-").then(|| Quota::per_minute(3)));
    assert_eq!(
        handle.policy(&"paid-2".to_string()).quotas().next(),
        Some(Quota::per_minute(3))
    );
    for _ in 0..3 {
        assert!(send(&mut svc, req("paid-2")).await.is_ok());
    }
    assert!(is::<RateLimited>(&send(&mut svc, req("paid-2")).await));
    // paid-1 kept its debt: raising its limit did not refill its bucket
    // (one of 3 per minute: its next slot is 20 s after its first request).
    assert!(is::<RateLimited>(&send(&mut svc, req("paid-1")).await));
    advance(Duration::from_secs(20)).await;
    assert!(send(&mut svc, req("paid-1")).await.is_ok());
    assert!(send(&mut svc, req("free-1")).await.is_ok());

    // A second replacement wins over the first, everywhere.
    let _layer = layer.policy_for(|_: &String| None::<Quota>);
    assert_eq!(
        handle.policy(&"paid-2".to_string()).quotas().next(),
        Some(Quota::per_minute(1))
    );
}

/// A resolver set before the backend is chosen still picks each key's
/// policy (choosing the backend rebuilds the policies).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn resolver_survives_choosing_the_backend() {
    use tower::Layer;
    let layer = PerKeyLayer::new(Quota::per_minute(1), |n: &u32| Some(*n))
        .policy_for(|n: &u32| (*n == 1).then(|| Quota::per_minute(2)))
        .backend(Memory::<u32>::new(100));
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    // Key 1 (resolved: 2 a minute) passes twice, key 2 (the default) once.
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(1).await.is_err());
    assert!(svc.clone().oneshot(2).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_err());
}

/// A request admitted at once keeps the inner service's future and little
/// more (frameworks move the future several times per request): waiting,
/// a remote decision, settling and an observer's state live elsewhere.
#[test]
fn the_response_future_is_the_inner_one_and_little_more() {
    use std::mem::size_of;
    use tower_sluice::backend::Never;
    use tower_sluice::per_key::future::ResponseFuture;

    type Inner = std::future::Ready<Result<&'static str, Infallible>>;
    type Future = ResponseFuture<Echo, Req, Never, String>;
    // The inner future, a tag, and two pointers for a request that holds
    // an in-flight slot or is observed.
    let most = size_of::<Inner>() + 3 * size_of::<usize>();
    assert!(
        size_of::<Future>() <= most,
        "{} bytes, more than {most}",
        size_of::<Future>()
    );
}
