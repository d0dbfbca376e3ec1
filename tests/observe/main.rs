//! Monitoring: exact event sequences from each layer, Monitor figures,
//! alerts, shadow mode, the metrics exporter. All on paused time.

#![cfg(feature = "test-util")]

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, advance};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::circuit_breaker::CircuitState;
use tower_sluice::observe::{Alert, AlertRule, Event, Fanout, Monitor};
use tower_sluice::retry::{Backoff, Jitter};
use tower_sluice::{
    BackoffRetryLayer, CircuitBreakerLayer, PerKeyLayer, QueueFull, QueueLayer, Quota,
    RateLimitLayer,
};

mod accessors;
#[cfg(feature = "metrics")]
mod prometheus;

const MS: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(5);

/// Records events as short strings.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn observer(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e: &Event<'_>| log.lock().unwrap().push(describe(e))
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn key(e: &Event<'_>) -> String {
    e.key().map(|k| format!(" {k:?}")).unwrap_or_default()
}

/// A closure observer times every call: show the latency as a duration.
fn timed(latency: &Option<Duration>) -> String {
    latency.map_or_else(|| "untimed".to_owned(), |l| format!("{l:?}"))
}

fn describe(e: &Event<'_>) -> String {
    let k = key(e);
    match e {
        Event::Allowed { layer, .. } => format!("{layer} allowed{k}"),
        Event::Limited {
            layer,
            enforced,
            error,
            ..
        } => format!(
            "{layer} limited{k} enforced={enforced} retry_after={:?}",
            error.retry_after()
        ),
        Event::Waited { layer, waited, .. } => format!("{layer} waited{k} {waited:?}"),
        Event::Completed {
            layer,
            latency,
            success,
            ..
        } => format!("{layer} completed{k} {} ok={success}", timed(latency)),
        Event::BreakerStateChanged { from, to, .. } => format!("breaker {from:?}->{to:?}"),
        Event::BreakerRejected {
            state, enforced, ..
        } => format!("breaker rejected in {state:?} enforced={enforced}"),
        Event::BreakerCall {
            outcome,
            counted,
            latency,
            ..
        } => format!(
            "breaker call {outcome:?} counted={counted} {}",
            timed(latency)
        ),
        Event::RetryScheduled { attempt, delay, .. } => {
            format!("retry{k} attempt={attempt} delay={delay:?}")
        }
        Event::RetryGaveUp {
            attempts, reason, ..
        } => format!("retry gave up{k} attempts={attempts} {reason:?}"),
        Event::RetryBudgetExhausted { attempts, .. } => {
            format!("retry budget exhausted attempts={attempts}")
        }
        Event::Queued { depth, .. } => format!("queued depth={depth}"),
        Event::Dequeued {
            waited,
            depth,
            queued,
            ..
        } => {
            format!("dequeued waited={waited:?} depth={depth} queued={queued}")
        }
        Event::QueueFull { error, .. } => format!("queue full capacity={}", error.capacity()),
        Event::QueueTimedOut { depth, .. } => format!("queue timed out depth={depth}"),
        Event::TooLarge {
            layer,
            error,
            enforced,
            ..
        } => format!(
            "{layer} too large{k} cost={} burst={} {} enforced={enforced}",
            error.cost(),
            error.quota().burst(),
            error.quota().unit()
        ),
        other => format!("{other:?}"),
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(3600), f)
        .await
        .expect("test future hung")
}

/// Answers after `latency`, failing when asked to.
fn upstream(
    latency: Duration,
) -> impl Service<bool, Response = &'static str, Error = BoxError, Future: Send> + Clone {
    service_fn(move |ok: bool| async move {
        tokio::time::sleep(latency).await;
        if ok { Ok("ok") } else { Err("boom".into()) }
    })
}

// ---------------------------------------------------------------------------
// event sequences

#[tokio::test(start_paused = true)]
async fn breaker_closed_open_half_open_closed() {
    let log = Log::default();
    let mut svc = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .open_duration(WAIT)
        .open_jitter(0.0)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
        .observer(log.observer())
        .layer(upstream(10 * MS));
    for ok in [false, false, true] {
        let _ = within(svc.ready().await.unwrap().call(ok)).await;
    }
    advance(WAIT).await;
    assert_eq!(
        within(svc.ready().await.unwrap().call(true)).await.unwrap(),
        "ok"
    );
    assert_eq!(
        log.take(),
        [
            "breaker call Failure counted=true 10ms",
            "breaker Closed->Open",
            "breaker call Failure counted=true 10ms",
            "breaker rejected in Open enforced=true",
            "breaker Open->HalfOpen",
            "breaker HalfOpen->Closed",
            "breaker call Success counted=true 10ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_schedules_then_gives_up() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let flaky = service_fn(move |n: u32| {
        let call = c.fetch_add(1, Ordering::Relaxed);
        async move {
            if call < 2 {
                Err::<u32, BoxError>(
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                )
            } else {
                Ok(n)
            }
        }
    });
    let log = Log::default();
    let backoff = Backoff::exponential(100 * MS).jitter(Jitter::None);
    let mut svc = BackoffRetryLayer::new(backoff)
        .max_attempts(4)
        .observer(log.observer())
        .layer(flaky);
    assert_eq!(within(svc.ready().await.unwrap().call(7)).await.unwrap(), 7);
    assert_eq!(
        log.take(),
        ["retry attempt=2 delay=100ms", "retry attempt=3 delay=200ms"]
    );

    let failing = service_fn(|_: u32| async {
        Err::<u32, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    });
    // With a key, every event of the request carries it.
    let mut svc = BackoffRetryLayer::new(backoff)
        .max_attempts(3)
        .key(|n: &u32| Some(format!("upstream-{n}")))
        .observer(log.observer())
        .layer(failing);
    assert!(within(svc.ready().await.unwrap().call(1)).await.is_err());
    assert_eq!(
        log.take(),
        [
            "retry \"upstream-1\" attempt=2 delay=100ms",
            "retry \"upstream-1\" attempt=3 delay=200ms",
            "retry gave up \"upstream-1\" attempts=3 MaxAttempts",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn queue_queued_full_dequeued() {
    let log = Log::default();
    let mut svc = QueueLayer::new(1)
        .concurrency(1)
        .observer(log.observer())
        .layer(upstream(Duration::from_secs(1)));
    let a = tokio::spawn(svc.call(true));
    let b = tokio::spawn(svc.call(true));
    tokio::task::yield_now().await;
    let err = svc.call(true).await.unwrap_err();
    assert!(err.is::<QueueFull>());
    within(a).await.unwrap().unwrap();
    within(b).await.unwrap().unwrap();
    assert_eq!(
        log.take(),
        [
            "dequeued waited=0ns depth=0 queued=false",
            "queued depth=1",
            "queue full capacity=1",
            "dequeued waited=1s depth=0 queued=true",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_allowed_limited_waited() {
    let log = Log::default();
    let mut svc = RateLimitLayer::new(Quota::per_second(2))
        .reject()
        .observer(log.observer())
        .layer(upstream(MS));
    for _ in 0..3 {
        let _ = within(svc.ready().await.unwrap().call(true)).await;
    }
    assert_eq!(
        log.take(),
        [
            "rate_limit allowed",
            "rate_limit allowed",
            "rate_limit limited enforced=true retry_after=498ms",
        ]
    );
    // Waiting mode reports the wait (1 s less the 1 ms the first call
    // took), then the admission.
    let mut svc = RateLimitLayer::new(Quota::per_second(1))
        .observer(log.observer())
        .layer(upstream(MS));
    for _ in 0..2 {
        within(svc.ready().await.unwrap().call(true)).await.unwrap();
    }
    assert_eq!(
        log.take(),
        [
            "rate_limit allowed",
            "rate_limit waited 999ms",
            "rate_limit allowed"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn per_key_allowed_completed_limited() {
    let log = Log::default();
    let mut svc = PerKeyLayer::new(Quota::per_minute(1), |r: &(&'static str, bool)| {
        Some(r.0.to_owned())
    })
    .observer(log.observer())
    .layer(service_fn(|r: (&'static str, bool)| async move {
        tokio::time::sleep(25 * MS).await;
        if r.1 {
            Ok::<_, Infallible>("ok")
        } else {
            Ok("meh")
        }
    }));
    within(svc.ready().await.unwrap().call(("alice", true)))
        .await
        .unwrap();
    assert!(
        within(svc.ready().await.unwrap().call(("alice", true)))
            .await
            .is_err()
    );
    within(svc.ready().await.unwrap().call(("bob", true)))
        .await
        .unwrap();
    assert_eq!(
        log.take(),
        [
            "per_key allowed \"alice\"",
            "per_key completed \"alice\" 25ms ok=true",
            "per_key limited \"alice\" enforced=true retry_after=59.975s",
            "per_key allowed \"bob\"",
            "per_key completed \"bob\" 25ms ok=true",
        ]
    );
}

/// A request costing `r.1` tokens.
fn tokens(r: &(&'static str, u32)) -> u32 {
    r.1
}

#[tokio::test(start_paused = true)]
async fn a_cost_above_the_burst_is_reported_as_too_large() {
    let log = Log::default();
    let answer = || service_fn(|_: (&'static str, u32)| async { Ok::<_, Infallible>("ok") });
    let quota = Quota::per_minute(100).counting("tokens");
    let monitor = Monitor::new();
    for shadow in [false, true] {
        let layer = PerKeyLayer::new(quota, |r: &(&'static str, u32)| Some(r.0.to_owned()))
            .cost(tokens)
            .observer(Fanout::new().with(monitor.clone()).with(log.observer()));
        let layer = if shadow { layer.shadow() } else { layer };
        let mut svc = layer.layer(answer());
        let sent = within(svc.ready().await.unwrap().call(("ann", 101))).await;
        assert_eq!(sent.is_ok(), shadow);
    }
    let snapshot = monitor.snapshot();
    let stats = snapshot.layer("per_key").unwrap();
    assert_eq!(
        (stats.requests, stats.limited, stats.shadow_limited),
        (2, 1, 1)
    );

    for shadow in [false, true] {
        let layer = RateLimitLayer::new(quota).reject().observer(log.observer());
        let layer = if shadow { layer.shadow() } else { layer };
        let mut svc = layer.cost(tokens).layer(answer());
        let sent = within(svc.ready().await.unwrap().call(("ann", 101))).await;
        assert_eq!(sent.is_ok(), shadow);
    }

    let mut svc = QueueLayer::new(10)
        .pace(quota)
        .cost(tokens)
        .observer(log.observer())
        .layer(answer());
    let sent = within(svc.ready().await.unwrap().call(("ann", 101))).await;
    assert!(sent.is_err());

    assert_eq!(
        log.take(),
        [
            "per_key too large \"ann\" cost=101 burst=100 tokens enforced=true",
            "per_key too large \"ann\" cost=101 burst=100 tokens enforced=false",
            // Let through in shadow mode: its call completes.
            "per_key completed \"ann\" 0ns ok=true",
            "rate_limit too large cost=101 burst=100 tokens enforced=true",
            "rate_limit too large cost=101 burst=100 tokens enforced=false",
            "queue too large cost=101 burst=100 tokens enforced=true",
        ]
    );
}

// ---------------------------------------------------------------------------
// Monitor

fn keyed(
    quota: Quota,
    observer: impl tower_sluice::observe::Observer,
) -> impl Service<(&'static str, u64), Response = (), Error = BoxError> {
    PerKeyLayer::new(quota, |r: &(&'static str, u64)| Some(r.0.to_owned()))
        .observer(observer)
        .layer(service_fn(|r: (&'static str, u64)| async move {
            tokio::time::sleep(Duration::from_millis(r.1)).await;
            Ok::<_, Infallible>(())
        }))
}

async fn send<S>(svc: &mut S, key: &'static str, latency_ms: u64) -> bool
where
    S: Service<(&'static str, u64), Response = (), Error = BoxError>,
{
    within(svc.ready().await.unwrap().call((key, latency_ms)))
        .await
        .is_ok()
}

#[tokio::test(start_paused = true)]
async fn monitor_figures_on_constructed_traffic() {
    // Every call timed, so that the EWMAs are exact (see
    // `sampled_latency_counts_every_call` for the default sampling).
    let monitor = Monitor::builder().smoothing(0.5).sample_one_in(1).build();
    let mut svc = keyed(Quota::per_minute(10), monitor.clone());
    // alice: 20 requests, 10 fit; latencies 100 ms then 200 ms.
    for i in 0..20 {
        send(&mut svc, "alice", if i == 0 { 100 } else { 200 }).await;
    }
    for _ in 0..5 {
        send(&mut svc, "bob", 40).await;
    }
    let snap = monitor.snapshot();
    let alice = snap.key(&"alice").unwrap();
    assert_eq!(
        (alice.requests, alice.limited, alice.shadow_limited),
        (20, 10, 0)
    );
    assert_eq!(alice.limited_rate, 0.5);
    assert_eq!(alice.completed, 10);
    // EWMA with α = 0.5 over 100, 200 × 9: 200 − 100 / 2^9.
    let want = 200.0 - 100.0 / 512.0;
    let got = alice.latency_ewma.unwrap().as_secs_f64() * 1000.0;
    assert!((got - want).abs() < 1e-3, "{got} vs {want}");
    let bob = snap.key(&"bob").unwrap();
    assert_eq!((bob.requests, bob.limited, bob.limited_rate), (5, 0, 0.0));
    assert_eq!(bob.latency_ewma, Some(40 * MS));
    // Sorted: most limited first.
    assert_eq!(snap.keys[0].key, "\"alice\"");
    let layer = snap.layer("per_key").unwrap();
    assert_eq!((layer.requests, layer.allowed, layer.limited), (25, 15, 10));
    assert_eq!(layer.completed, 15);
    assert_eq!(snap.totals.requests, 25);
    assert_eq!(monitor.top_limited(5).len(), 1);
    // The recent window (1 min) holds everything: same rate.
    assert!((alice.recent_limited_rate - 0.5).abs() < 1e-9);
    // Two windows later the recent rate is gone, the totals stay.
    advance(Duration::from_secs(121)).await;
    let alice = monitor.key(&"alice").unwrap();
    assert_eq!(alice.recent_requests, 0.0);
    assert_eq!(alice.requests, 20);
}

#[tokio::test(start_paused = true)]
async fn monitor_tracks_breakers_queues_retries_per_scope() {
    let monitor = Monitor::new();
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(WAIT)
        .build()
        .unwrap()
        .observer(monitor.scoped("payments"));
    let mut svc = breaker.layer(upstream(MS));
    let _ = within(svc.ready().await.unwrap().call(false)).await;
    let _ = within(svc.ready().await.unwrap().call(true)).await;
    let mut queue = QueueLayer::new(10)
        .concurrency(1)
        .observer(monitor.clone())
        .layer(upstream(Duration::from_secs(1)));
    let a = tokio::spawn(queue.call(true));
    let b = tokio::spawn(queue.call(true));
    let c = tokio::spawn(queue.call(true));
    tokio::task::yield_now().await;
    assert_eq!(
        monitor.snapshot().layer("queue").unwrap().queue_depth,
        Some(2)
    );
    for t in [a, b, c] {
        within(t).await.unwrap().unwrap();
    }
    let snap = monitor.snapshot();
    assert_eq!(snap.breakers.len(), 1);
    assert_eq!(snap.breakers[0].name, "payments");
    assert_eq!(snap.breakers[0].state, CircuitState::Open);
    let p = snap.layer("payments").unwrap();
    assert_eq!((p.requests, p.breaker_rejected, p.failed), (2, 1, 1));
    let q = snap.layer("queue").unwrap();
    assert_eq!((q.queued, q.dequeued, q.queue_depth), (2, 2, Some(0)));
    // The request sent at once counts as a request, not as a wait.
    assert_eq!((q.requests, q.waited), (3, 2));
    assert_eq!(q.wait_total, Duration::from_secs(3));
}

/// The span over which a monitor measures a thread's pace, and the
/// admitted requests per span from which it samples (10 000 a second).
const SPAN: Duration = Duration::from_millis(100);
const BUSY: u64 = 1_000;

/// Makes this thread busy for `svc`'s monitor: a span with `BUSY` admitted
/// requests (of keys of their own), then one more past the span, which
/// turns sampling on.
async fn make_busy<S>(svc: &mut S)
where
    S: Service<(&'static str, u64), Response = (), Error = BoxError>,
{
    const WARM: [&str; 8] = ["w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"];
    for i in 0..BUSY as usize {
        assert!(send(svc, WARM[i % 8], 0).await);
    }
    advance(SPAN).await;
    assert!(send(svc, WARM[0], 0).await);
}

/// A thread that admits many requests through a per-key layer samples them:
/// the layer's count stays exact, a key's admitted requests and
/// completions are estimates (one followed request in 32, counted 32
/// times).
#[tokio::test(start_paused = true)]
async fn busy_threads_sample_keys_and_layers_stay_exact() {
    const PER_KEY: u64 = 25_000;
    let monitor = Monitor::new();
    let mut svc = keyed(Quota::per_second(1_000_000_000), monitor.clone());
    make_busy(&mut svc).await;
    let before = monitor.snapshot().layer("per_key").unwrap().clone();
    // All within one span: sampled throughout.
    let keys = ["a", "b", "c", "d"];
    for _ in 0..PER_KEY {
        for key in keys {
            assert!(send(&mut svc, key, 0).await);
        }
    }
    let snap = monitor.snapshot();
    let layer = snap.layer("per_key").unwrap();
    assert_eq!(
        layer.requests - before.requests,
        4 * PER_KEY,
        "the layer's count is exact"
    );
    assert_eq!(layer.limited, 0);
    let mut followed = 0;
    for key in keys {
        let k = snap.key(&key.to_owned()).unwrap();
        // About 781 of 25 000 followed per key, standard deviation about
        // 28 (3.5 %): 20 % off never happens by chance.
        for (what, n) in [("requests", k.requests), ("completed", k.completed)] {
            assert!(
                n.is_multiple_of(32),
                "{key} {what}: followed requests count 32 each"
            );
            let off = n.abs_diff(PER_KEY) as f64 / PER_KEY as f64;
            assert!(off < 0.2, "{key} {what}: {n} estimated for {PER_KEY}");
        }
        assert_eq!(k.limited, 0);
        followed += k.requests / 32;
    }
    // Sampled, not counted: four exact figures would be a one-in-a-
    // hundred-million chance.
    assert!(
        keys.iter()
            .any(|k| snap.key(&k.to_string()).unwrap().requests != PER_KEY)
    );
    // The layer's completions are the followed ones', weighted the same.
    assert_eq!(layer.completed - before.completed, followed * 32);
}

/// Sampling never touches what is refused: limited requests are counted
/// exactly per key and per layer, and only admitted ones are estimated.
#[tokio::test(start_paused = true)]
async fn busy_threads_count_limited_requests_exactly() {
    let monitor = Monitor::new();
    let mut svc = keyed(Quota::per_minute(5), monitor.clone());
    // Keys of their own: each admitted 5 times a minute.
    let warm: Vec<&'static str> = (0..200).map(|i| &*format!("w{i}").leak()).collect();
    for i in 0..BUSY as usize {
        assert!(send(&mut svc, warm[i % 200], 0).await);
    }
    advance(SPAN).await;
    assert!(
        !send(&mut svc, warm[0], 0).await,
        "limited: not followed, nor counted as pace"
    );
    let before = monitor.snapshot().layer("per_key").unwrap().clone();
    // The first admitted request is followed (the pace is measured at
    // followed requests) and turns sampling on; the 4 others are sampled.
    for _ in 0..1_000 {
        send(&mut svc, "mallory", 0).await;
    }
    let snap = monitor.snapshot();
    let layer = snap.layer("per_key").unwrap();
    assert_eq!(
        (
            layer.requests - before.requests,
            layer.limited - before.limited
        ),
        (1_000, 995)
    );
    let k = snap.key(&"mallory".to_owned()).unwrap();
    assert_eq!(k.limited, 995);
    let sampled = k.requests - 995 - 1;
    assert!(sampled.is_multiple_of(32) && sampled <= 4 * 32, "{sampled}");
    assert!(k.limited_rate > 0.8, "{}", k.limited_rate);
}

/// A quiet thread has every request followed (exact figures), and a
/// thread that was busy follows every request again once it is quiet.
#[tokio::test(start_paused = true)]
async fn quiet_threads_follow_every_request() {
    let monitor = Monitor::new();
    let mut svc = keyed(Quota::per_second(1_000_000_000), monitor.clone());
    // 1 000 a second (a millisecond each): exact.
    for i in 0..3_000u64 {
        assert!(send(&mut svc, if i % 3 == 0 { "a" } else { "b" }, 1).await);
    }
    let a = monitor.key(&"a").unwrap();
    assert_eq!((a.requests, a.completed), (1_000, 1_000));
    assert_eq!(monitor.key(&"b").unwrap().requests, 2_000);
    make_busy(&mut svc).await;
    // Five a second: the first followed request (one in 32 while
    // sampling) finds the last span quiet.
    for _ in 0..2_000 {
        advance(Duration::from_millis(200)).await;
        assert!(send(&mut svc, "c", 0).await);
    }
    let before = monitor.key(&"c").map_or(0, |k| k.requests);
    for _ in 0..100 {
        advance(Duration::from_millis(200)).await;
        assert!(send(&mut svc, "c", 0).await);
    }
    assert_eq!(
        monitor.key(&"c").unwrap().requests - before,
        100,
        "exact again"
    );
}

/// A quiet thread has every call timed, by a per-key layer and by a
/// breaker alike: the response-time averages are exact without
/// `sample_one_in(1)`.
#[tokio::test(start_paused = true)]
async fn quiet_threads_time_every_call() {
    let monitor = Monitor::new();
    let mut keyed = keyed(Quota::per_second(1_000), monitor.clone());
    let mut breaker = CircuitBreakerLayer::default()
        .observer(monitor.clone())
        .layer(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, Infallible>(())
        }));
    for ms in [10, 20, 30] {
        assert!(send(&mut keyed, "k", ms).await);
        within(breaker.ready().await.unwrap().call(ms))
            .await
            .unwrap();
    }
    // EWMA (α 0.1) of 10, 20 and 30 ms.
    let expected = 0.0129;
    let secs = |d: Option<Duration>| d.expect("timed").as_secs_f64();
    let snap = monitor.snapshot();
    for (what, ewma) in [
        ("key", secs(snap.key(&"k".to_owned()).unwrap().latency_ewma)),
        ("per_key", secs(snap.layer("per_key").unwrap().latency_ewma)),
        (
            "breaker",
            secs(snap.layer("circuit_breaker").unwrap().latency_ewma),
        ),
    ] {
        assert!((ewma - expected).abs() < 1e-6, "{what}: {ewma}");
    }
}

/// `sample_one_in(1)` follows every request, `0` every request untimed.
#[tokio::test(start_paused = true)]
async fn unsampled_monitors_count_every_key_request() {
    for (n, timed) in [(1, true), (0, false)] {
        let monitor = Monitor::builder().sample_one_in(n).build();
        let mut svc = keyed(Quota::per_second(1_000_000), monitor.clone());
        for i in 0..100u64 {
            assert!(send(&mut svc, if i % 4 == 0 { "a" } else { "b" }, 2).await);
        }
        let snap = monitor.snapshot();
        let (a, b) = (
            snap.key(&"a".to_owned()).unwrap(),
            snap.key(&"b".to_owned()).unwrap(),
        );
        assert_eq!(
            (a.requests, a.completed, b.requests, b.completed),
            (25, 25, 75, 75),
            "one in {n}"
        );
        assert_eq!(a.latency_ewma.is_some(), timed, "one in {n}");
        assert_eq!(snap.layer("per_key").unwrap().completed, 100);
    }
}

// ---------------------------------------------------------------------------
// alerts

#[tokio::test(start_paused = true)]
async fn limited_rate_alert_fires_once_and_rearms() {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    // Every request followed: the rates below are exact.
    let monitor = Monitor::builder()
        .sample_one_in(1)
        .window(Duration::from_secs(10))
        .alert(
            AlertRule::limited_rate(0.5)
                .min_requests(4)
                .rearm_below(0.2),
            move |a: &Alert| {
                if let Alert::LimitedRate { key, rate, .. } = a {
                    f.lock().unwrap().push((key.clone(), *rate));
                }
            },
        )
        .build();
    let mut svc = keyed(Quota::per_second(2), monitor.clone());
    // 2 fit, 2 limited: the 4th request makes 50% of 4.
    for _ in 0..3 {
        send(&mut svc, "k", 0).await;
    }
    assert!(monitor.flush_alerts(WAIT));
    assert!(fired.lock().unwrap().is_empty(), "fired before the minimum");
    for _ in 0..20 {
        send(&mut svc, "k", 0).await;
    }
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(*fired.lock().unwrap(), [("\"k\"".to_owned(), 0.5)]);
    assert!(monitor.key(&"k").unwrap().alerting);
    // Quiet for two windows: it reads as recovered before any request...
    advance(Duration::from_secs(25)).await;
    assert!(!monitor.key(&"k").unwrap().alerting);
    // ...and a polite request re-arms the rule...
    assert!(send(&mut svc, "k", 0).await);
    assert!(!monitor.key(&"k").unwrap().alerting);
    // ...and fires again when it floods again.
    for _ in 0..20 {
        send(&mut svc, "k", 0).await;
    }
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(fired.lock().unwrap().len(), 2);
    // An innocent key never fired.
    send(&mut svc, "other", 0).await;
    assert_eq!(monitor.snapshot().alerts_fired, 2);
}

/// On a busy thread a key's rate rule judges the sampled estimate (its
/// limited requests exact, its admitted ones counted 32 at a time): a
/// key that starts being refused fires once, an innocent one never.
#[tokio::test(start_paused = true)]
async fn limited_rate_alert_fires_once_on_a_busy_thread() {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let monitor = Monitor::builder()
        .alert(
            AlertRule::limited_rate(0.2).min_requests(100),
            move |a: &Alert| {
                if let Alert::LimitedRate { key, .. } = a {
                    f.lock().unwrap().push(key.clone());
                }
            },
        )
        .build();
    // A burst of 3 000 per key, then 1 a minute.
    let mut svc = keyed(Quota::per_minute(1).with_burst(3_000), monitor.clone());
    make_busy(&mut svc).await;
    // 3 000 admitted (sampled), then 2 000 refused (exact).
    for _ in 0..5_000 {
        send(&mut svc, "mallory", 0).await;
    }
    for _ in 0..2_000 {
        assert!(send(&mut svc, "alice", 0).await);
    }
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(*fired.lock().unwrap(), ["\"mallory\"".to_owned()]);
    let mallory = monitor.key(&"mallory").unwrap();
    assert_eq!(mallory.limited, 2_000);
    assert!(mallory.alerting);
    assert!(!monitor.key(&"alice").unwrap().alerting);
}

#[tokio::test(start_paused = true)]
async fn breaker_alert_fires_once_per_opening() {
    let opened = Arc::new(AtomicUsize::new(0));
    let o = opened.clone();
    let monitor = Monitor::builder()
        .alert(AlertRule::breaker_opened(), move |_| {
            o.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let mut svc = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .open_duration(WAIT)
        .open_jitter(0.0)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
        .observer(monitor.clone())
        .layer(upstream(MS));
    let _ = within(svc.ready().await.unwrap().call(false)).await; // opens
    advance(WAIT).await;
    let _ = within(svc.ready().await.unwrap().call(false)).await; // half-open -> open
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(
        opened.load(Ordering::Relaxed),
        1,
        "open, half-open, open: one alert"
    );
    advance(WAIT * 3).await;
    let _ = within(svc.ready().await.unwrap().call(true)).await; // closes
    let _ = within(svc.ready().await.unwrap().call(false)).await; // opens again
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(opened.load(Ordering::Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn panicking_alert_callback_does_not_break_requests() {
    let later = Arc::new(AtomicUsize::new(0));
    let l = later.clone();
    let monitor = Monitor::builder()
        .sample_one_in(1)
        .alert(AlertRule::limited_rate(0.1).min_requests(2), |_: &Alert| {
            panic!("callback bug")
        })
        .alert(AlertRule::breaker_opened(), move |_| {
            l.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let mut svc = keyed(Quota::per_minute(1), monitor.clone());
    let mut ok = 0;
    for _ in 0..10 {
        ok += usize::from(send(&mut svc, "k", 0).await);
    }
    assert_eq!(ok, 1, "requests were decided as usual");
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(monitor.snapshot().alert_panics, 1);
    // The alert thread survived: a later alert is delivered.
    let mut breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap()
        .observer(monitor.clone())
        .layer(upstream(MS));
    let _ = within(breaker.ready().await.unwrap().call(false)).await;
    assert!(monitor.flush_alerts(WAIT));
    assert_eq!(later.load(Ordering::Relaxed), 1);
    // And requests still go through the monitor.
    assert_eq!(monitor.key(&"k").unwrap().requests, 10);
}

#[tokio::test(start_paused = true)]
async fn slow_alert_callback_does_not_block_requests() {
    let monitor = Monitor::builder()
        .alert(AlertRule::limited_rate(0.1).min_requests(1), |_: &Alert| {
            std::thread::sleep(Duration::from_millis(300));
        })
        .build();
    let mut svc = keyed(Quota::per_minute(1), monitor.clone());
    let start = std::time::Instant::now();
    for k in ["a", "b", "c", "d", "e"] {
        send(&mut svc, k, 0).await;
        send(&mut svc, k, 0).await;
    }
    assert!(
        start.elapsed() < Duration::from_millis(250),
        "requests waited for the callback: {:?}",
        start.elapsed()
    );
    assert!(monitor.flush_alerts(Duration::from_secs(10)));
    assert_eq!(monitor.snapshot().alerts_fired, 5);
}

#[tokio::test(start_paused = true)]
async fn key_table_is_bounded() {
    // Every key's request followed into the table.
    let monitor = Monitor::builder().max_keys(16).sample_one_in(1).build();
    let mut svc = PerKeyLayer::new(Quota::per_minute(1), |r: &u32| Some(*r))
        .observer(monitor.clone())
        .layer(service_fn(|_: u32| async { Ok::<_, Infallible>(()) }));
    for k in 0..100u32 {
        within(svc.ready().await.unwrap().call(k)).await.unwrap();
    }
    let snap = monitor.snapshot();
    assert!(snap.keys.len() <= 16, "{} keys kept", snap.keys.len());
    assert_eq!(snap.keys.len() as u64 + snap.evicted_keys, 100);
    // The last key is always there (eviction takes the least recent).
    assert!(snap.key(&99u32).is_some());
    assert_eq!(snap.layer("per_key").unwrap().requests, 100);
}

// ---------------------------------------------------------------------------
// shadow mode

/// Runs `n` requests (keys alternating a, a, b) through a per-key layer;
/// returns which were refused (enforcing) or reported (shadow), and which
/// reached the service.
async fn per_key_run(shadow: bool) -> (Vec<usize>, Vec<usize>) {
    let reported = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Vec::new()));
    let (r, s) = (reported.clone(), served.clone());
    let index = Arc::new(AtomicUsize::new(0));
    let i = index.clone();
    let mut layer = PerKeyLayer::new(Quota::per_second(3), |r: &(usize, &'static str)| {
        Some(r.1.to_owned())
    })
    .observer(move |e: &Event<'_>| {
        if let Event::Limited { enforced, .. } = e {
            assert_eq!(*enforced, !shadow);
            r.lock().unwrap().push(i.load(Ordering::Relaxed));
        }
    });
    if shadow {
        layer = layer.shadow();
    }
    let mut svc = layer.layer(service_fn(move |r: (usize, &'static str)| {
        s.lock().unwrap().push(r.0);
        async { Ok::<_, Infallible>(()) }
    }));
    for n in 0..12 {
        index.store(n, Ordering::Relaxed);
        let key = if n % 3 == 2 { "b" } else { "a" };
        let _ = within(svc.ready().await.unwrap().call((n, key))).await;
        if n == 7 {
            advance(Duration::from_millis(400)).await;
        }
    }
    let r = reported.lock().unwrap().clone();
    let s = served.lock().unwrap().clone();
    (r, s)
}

#[tokio::test(start_paused = true)]
async fn shadow_reports_exactly_what_enforcing_refuses() {
    let (refused, served) = per_key_run(false).await;
    let (would, all) = per_key_run(true).await;
    assert!(!refused.is_empty());
    assert_eq!(would, refused);
    assert_eq!(
        all,
        (0..12).collect::<Vec<_>>(),
        "shadow lets everything through"
    );
    assert_eq!(served.len() + refused.len(), 12);

    // rate_limit: the same.
    for shadow in [false, true] {
        let log = Log::default();
        let layer = RateLimitLayer::new(Quota::per_second(2)).observer(log.observer());
        let layer = if shadow {
            layer.shadow()
        } else {
            layer.reject()
        };
        let mut svc = layer.layer(upstream(MS));
        let mut ok = 0;
        for _ in 0..5 {
            ok += usize::from(within(svc.ready().await.unwrap().call(true)).await.is_ok());
        }
        assert_eq!(ok, if shadow { 5 } else { 2 });
        let limited = log.take().iter().filter(|e| e.contains("limited")).count();
        assert_eq!(limited, 3);
    }
}

/// A per-key layer refuses a request without a key and one over its key's
/// in-flight cap. In shadow mode both reach the service, and the Monitor
/// counts them as `shadow_limited`, never as `limited`; an enforcing layer
/// refuses them and counts them as `limited`. Observers are told which.
#[tokio::test(start_paused = true)]
async fn shadow_per_key_counts_missing_key_and_in_flight_as_shadow_limited() {
    use tower_sluice::per_key::Policy;
    for shadow in [true, false] {
        let monitor = Monitor::builder().sample_one_in(1).build();
        let log = Log::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (g, hits) = (gate.clone(), Arc::new(AtomicUsize::new(0)));
        let h = hits.clone();
        let policy = Policy::new(Quota::per_second(100)).max_in_flight(1);
        let layer = PerKeyLayer::new(policy, |r: &Option<&'static str>| r.map(str::to_owned))
            .observer(Fanout::new().with(monitor.clone()).with(log.observer()));
        let layer = if shadow { layer.shadow() } else { layer };
        let mut svc = layer.layer(service_fn(move |_: Option<&'static str>| {
            h.fetch_add(1, Ordering::Relaxed);
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(())
            }
        }));
        // "a" holds its one slot while a second "a" and a keyless request
        // arrive.
        let first = svc.ready().await.unwrap().call(Some("a"));
        let second = svc.ready().await.unwrap().call(Some("a"));
        let keyless = svc.ready().await.unwrap().call(None);
        gate.add_permits(3);
        let (second, keyless) = within(async { (second.await, keyless.await) }).await;
        within(first).await.unwrap();
        assert_eq!(second.is_ok(), shadow);
        assert_eq!(keyless.is_ok(), shadow);
        assert_eq!(hits.load(Ordering::Relaxed), if shadow { 3 } else { 1 });

        let snap = monitor.snapshot();
        let layer = snap.layer("per_key").unwrap();
        let (limited, shadow_limited) = if shadow { (0, 2) } else { (2, 0) };
        assert_eq!(
            (layer.requests, layer.limited, layer.shadow_limited),
            (3, limited, shadow_limited),
            "shadow={shadow}"
        );
        let a = snap.key(&"a").unwrap();
        assert_eq!(
            (a.requests, a.limited, a.shadow_limited),
            (2, limited / 2, shadow_limited / 2),
            "shadow={shadow}"
        );
        let enforced = format!("enforced: {}", !shadow);
        let refusals: Vec<String> = log
            .take()
            .into_iter()
            .filter(|e| e.starts_with("InFlightLimited") || e.starts_with("MissingKey"))
            .collect();
        assert_eq!(refusals.len(), 2, "{refusals:?}");
        assert!(
            refusals.iter().all(|e| e.contains(&enforced)),
            "{refusals:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn shadow_breaker_reports_what_it_would_refuse() {
    async fn run(shadow: bool) -> (Vec<String>, usize) {
        let log = Log::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .open_duration(WAIT)
            .open_jitter(0.0)
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap()
            .observer(log.observer());
        let layer = if shadow { layer.shadow() } else { layer };
        let mut svc = ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |ok: bool| {
                h.fetch_add(1, Ordering::Relaxed);
                async move {
                    if ok {
                        Ok("ok")
                    } else {
                        Err::<_, BoxError>("boom".into())
                    }
                }
            }));
        // fail, fail (opens), 3 refused, then after the open time a
        // successful trial closes it.
        for ok in [false, false, false, true, true] {
            let _ = within(svc.ready().await.unwrap().call(ok)).await;
        }
        advance(WAIT).await;
        let _ = within(svc.ready().await.unwrap().call(true)).await;
        let events = log
            .take()
            .into_iter()
            .map(|e| {
                e.replace(" enforced=false", "")
                    .replace(" enforced=true", "")
            })
            .filter(|e| !e.starts_with("breaker call"))
            .collect();
        (events, hits.load(Ordering::Relaxed))
    }
    let (enforcing, enforcing_hits) = run(false).await;
    let (shadow, shadow_hits) = run(true).await;
    assert_eq!(shadow, enforcing, "same decisions and state changes");
    assert_eq!(
        enforcing.iter().filter(|e| e.contains("rejected")).count(),
        3
    );
    assert_eq!((enforcing_hits, shadow_hits), (3, 6));
}

/// By default a Monitor times one call in 16: every call is still
/// counted, exactly, and the EWMAs are over the timed ones.
#[tokio::test(start_paused = true)]
async fn sampled_latency_counts_every_call() {
    let monitor = Monitor::new();
    assert_eq!(
        tower_sluice::observe::Observer::latency_one_in(&monitor),
        32
    );
    let timed = Arc::new(AtomicUsize::new(0));
    let untimed = Arc::new(AtomicUsize::new(0));
    let (t, u) = (timed.clone(), untimed.clone());
    let counter = move |e: &Event<'_>| {
        if let Event::Completed { latency, .. } = e {
            match latency {
                Some(l) => {
                    assert_eq!(*l, 5 * MS);
                    t.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    u.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // A counting observer asking for the Monitor's sampling.
    struct Sampled<F>(F);
    impl<F: Fn(&Event<'_>) + Send + Sync + 'static> tower_sluice::observe::Observer for Sampled<F> {
        fn on_event(&self, event: &Event<'_>) {
            (self.0)(event)
        }
        fn latency_one_in(&self) -> u32 {
            16
        }
    }
    let both = Fanout::new().with(monitor.clone()).with(Sampled(counter));
    let mut svc = keyed(Quota::per_second(1_000_000), both);
    const N: usize = 4_000;
    for _ in 0..N {
        assert!(send(&mut svc, "k", 5).await);
    }
    let k = monitor.key(&"k").unwrap();
    assert_eq!((k.requests, k.completed), (N as u64, N as u64));
    // Every timed call took 5 ms: so does the EWMA over them.
    assert_eq!(k.latency_ewma, Some(5 * MS));
    let timed = timed.load(Ordering::Relaxed);
    assert_eq!(timed + untimed.load(Ordering::Relaxed), N);
    // 250 expected (one in 16); ±8 standard deviations.
    assert!((130..=370).contains(&timed), "{timed} of {N} timed");

    // With an observer that wants every call, every call is timed.
    let log = Log::default();
    let mut svc = keyed(
        Quota::per_second(1_000_000),
        Fanout::new().with(monitor.clone()).with(log.observer()),
    );
    for _ in 0..10 {
        send(&mut svc, "every", 1).await;
    }
    let completed = log.take();
    assert_eq!(
        completed
            .iter()
            .filter(|e| e.contains("completed \"every\" 1ms"))
            .count(),
        10
    );
    assert_eq!(monitor.key(&"every").unwrap().latency_ewma, Some(MS));
}

#[tokio::test(start_paused = true)]
async fn fanout_feeds_every_observer() {
    let monitor = Monitor::new();
    let log = Log::default();
    let mut svc = RateLimitLayer::new(Quota::per_second(1))
        .reject()
        .observer(Fanout::new().with(monitor.clone()).with(log.observer()))
        .layer(upstream(MS));
    for _ in 0..2 {
        let _ = within(svc.ready().await.unwrap().call(true)).await;
    }
    assert_eq!(log.take().len(), 2);
    assert_eq!(monitor.snapshot().layer("rate_limit").unwrap().limited, 1);
}

#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn snapshot_serializes() {
    let monitor = Monitor::new();
    let mut svc = keyed(Quota::per_minute(1), monitor.clone());
    send(&mut svc, "k", 0).await;
    send(&mut svc, "k", 0).await;
    let json = serde_json::to_value(monitor.snapshot()).unwrap();
    assert_eq!(json["keys"][0]["key"], "\"k\"");
    assert_eq!(json["keys"][0]["limited"], 1);
    assert_eq!(json["layers"][0]["name"], "per_key");
}

#[test]
fn observers_are_shareable() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    ok::<Monitor>();
    ok::<Fanout>();
    let _ = Instant::now();
}
