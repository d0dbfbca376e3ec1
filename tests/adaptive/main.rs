//! Adaptive limits on tokio's paused clock (feature `test-util`): the
//! per-key formula, AIMD against a simulated upstream with a hidden limit,
//! header pacing, adaptive concurrency against a service with a latency
//! knee, and client-side throttling against an overloaded backend.
//!
//! Every simulation runs under a timeout on the paused clock: a deadlock
//! ends in a timeout failure, not a hang.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::adaptive::{
    AdaptiveConcurrencyLayer, AdaptivePolicy, AdaptiveThrottleLayer, AimdLayer, AimdLimit,
    Criticality, DefaultFormula, GradientLimit, KeyStats, LimitFormula,
};
use tower_sluice::classify::{Upstream, Verdict};
use tower_sluice::error::{ConcurrencyLimited, Throttled};
use tower_sluice::observe::Event;
use tower_sluice::{Limiter, Quota, RateLimited};

#[cfg(feature = "http")]
mod budget;
#[cfg(feature = "http")]
mod hints;

mod accessors;

/// Runs `f` on the paused clock, failing after `limit` of virtual time.
async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .expect("simulation did not finish in time (deadlock?)")
}

// ---------------------------------------------------------------- per key

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn formula_on_a_constructed_history() {
    let p = AdaptivePolicy::new(Quota::per_second(100), 1000);
    let secs = Duration::from_secs;
    // First response: sets the averages. success 1, latency 2 s:
    // multiplier (1 + 0.8) / 2 = 0.9 -> 190.
    assert_eq!(p.record(&"k", true, secs(2)), 190);
    // A failure at 4 s: success 1 + 0.1 (0 - 1) = 0.9, latency
    // 2 + 0.1 (4 - 2) = 2.2 s: (0.9 + 0.78) / 2 = 0.84 -> 184.
    assert_eq!(p.record(&"k", false, secs(4)), 184);
    let s = p.stats(&"k").unwrap();
    assert!(close(s.success_rate, 0.9), "{s:?}");
    assert!(close(s.avg_latency.as_secs_f64(), 2.2), "{s:?}");
    assert_eq!(s.samples, 2);
    // A success at 12 s: success 0.91, latency 3.18 s:
    // (0.91 + 0.682) / 2 = 0.796 -> 179.6 -> 179.
    assert_eq!(p.record(&"k", true, secs(12)), 179);
    assert_eq!(p.limit(&"k"), 179);
    // An unknown key is at the base.
    assert_eq!(p.limit(&"other"), 100);
    assert_eq!(p.stats(&"other"), None);
}

#[test]
fn smoothing_and_ceiling_are_configurable() {
    let p = AdaptivePolicy::new(Quota::per_minute(60), 1000)
        .smoothing(0.5)
        .latency_ceiling(Duration::from_secs(1));
    // success 1, latency 0.5 s of a 1 s ceiling: (1 + 0.5) / 2 -> 60 * 1.75.
    assert_eq!(p.record(&1, true, Duration::from_millis(500)), 105);
    // success 0.5, latency 0.75 s: (0.5 + 0.25) / 2 = 0.375 -> 82.5 -> 82.
    assert_eq!(p.record(&1, false, Duration::from_secs(1)), 82);
}

#[test]
fn bounds_are_never_crossed() {
    let p = AdaptivePolicy::new(Quota::per_second(100), 150);
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for _ in 0..20_000 {
        let key = next() % 50;
        let ok = next() % 3 != 0;
        let latency = Duration::from_millis(next() % 30_000);
        let limit = p.record(&key, ok, latency);
        assert!((100..=150).contains(&limit), "{limit}");
    }
    // A key that always fails slowly stays at the base.
    for _ in 0..100 {
        p.record(&999, false, Duration::from_secs(20));
    }
    assert_eq!(p.limit(&999), 100);
    // A key that always succeeds at once reaches the max.
    p.record(&1000, true, Duration::ZERO);
    assert_eq!(p.limit(&1000), 150);

    // A custom formula is clamped too.
    let wild = AdaptivePolicy::new(Quota::per_second(10), 20).formula(
        |_base: u32, _max: u32, s: &KeyStats| if s.success_rate > 0.5 { 1_000 } else { 0 },
    );
    assert_eq!(wild.record(&1, true, Duration::ZERO), 20);
    assert_eq!(wild.record(&2, false, Duration::ZERO), 10);
    let f = DefaultFormula::default();
    assert_eq!(f.limit(10, 20, &KeyStats::new(1.0, Duration::ZERO, 1)), 20);
}

#[test]
fn stats_memory_is_bounded() {
    let p = AdaptivePolicy::new(Quota::per_second(10), 20).max_keys(1_000);
    for key in 0..100_000 {
        p.record(&key, true, Duration::ZERO);
        assert!(p.len() <= 1_000, "{} keys held", p.len());
    }
    // The most recent keys are remembered.
    assert_eq!(p.limit(&99_999), 20);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_raised_limit_keeps_the_burst_in_time() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    // 10 per second, burst 10 (one second of requests), up to 20 per second.
    let adaptive = AdaptivePolicy::new(Quota::per_second(10), 20).observer(move |e: &Event<'_>| {
        if let Event::LimitChanged { key, old, new, .. } = e {
            seen.lock().unwrap().push((
                format!("{:?}", key.unwrap()),
                old.limit(),
                new.limit(),
                new.burst(),
            ));
        }
    });
    let key = |req: &String| Some(req.clone());
    let inner = service_fn(|_: String| async { Ok::<_, BoxError>(()) });
    let mut svc = adaptive
        .per_key_layer(key)
        .layer(adaptive.feedback_layer(key).layer(inner));

    let burst = |n: usize| {
        let mut svc = svc.clone();
        async move {
            let mut passed = 0;
            for _ in 0..n {
                match svc.ready().await.unwrap().call("a".to_string()).await {
                    Ok(()) => passed += 1,
                    Err(e) => assert!(e.is::<RateLimited>(), "{e}"),
                }
            }
            passed
        }
    };
    // The first response raises the limit to 20/s (an instant success),
    // with a burst of 20: still one second of requests. The first request
    // cost a tenth of that second, the others a twentieth each.
    let first = burst(30).await;
    assert_eq!(first, 1 + 18);
    assert_eq!(adaptive.limit(&"a".to_string()), 20);
    assert_eq!(
        events.lock().unwrap()[0],
        ("\"a\"".to_string(), 10, 20, 20),
        "one LimitChanged event with the key"
    );
    // Idle for long: the bucket is full again, one second of 20/s.
    sleep(Duration::from_secs(10)).await;
    assert_eq!(burst(50).await, 20, "a full bucket holds the burst only");
    let mut passed = 0;
    for _ in 0..100 {
        sleep(Duration::from_millis(10)).await;
        passed += burst(1).await;
    }
    assert!((19..=21).contains(&passed), "{passed} in 1 s at 20/s");
    let _ = svc.ready().await.unwrap();
}

/// Sends `n` requests of key "k" at once through `svc`; how many passed.
async fn send_at_once<S>(svc: &mut S, n: usize) -> usize
where
    S: Service<String, Response = (), Error = BoxError>,
{
    let mut passed = 0;
    for _ in 0..n {
        match svc.ready().await.unwrap().call("k".to_string()).await {
            Ok(()) => passed += 1,
            Err(e) => assert!(e.is::<RateLimited>(), "{e}"),
        }
    }
    passed
}

/// From now, the time until a request of key "k" passes (tried every
/// 100 ms; a refused try costs nothing).
async fn next_admission<S>(svc: &mut S) -> Duration
where
    S: Service<String, Response = (), Error = BoxError>,
{
    let start = Instant::now();
    while send_at_once(svc, 1).await == 0 {
        sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// A service over key "k", and what raises its limit.
type Raisable = (tower::util::BoxService<String, (), BoxError>, Box<dyn Fn()>);

/// A layer over key "k" at `base`, raised to `raised` by an adaptive
/// policy when `raise` is called (`None`: a plain layer at `base`).
fn raise_fixture(base: Quota, raised: Option<u32>) -> Raisable {
    let key = |req: &String| Some(req.clone());
    let inner = service_fn(|_: String| async { Ok::<_, BoxError>(()) });
    match raised {
        Some(raised) => {
            let adaptive = AdaptivePolicy::new(base, 1_000)
                .formula(move |_: u32, _: u32, _: &KeyStats| raised);
            let svc = adaptive.per_key_layer(key).layer(inner);
            let raise = move || {
                adaptive.record(&"k".to_string(), true, Duration::ZERO);
                assert_eq!(adaptive.limit(&"k".to_string()), raised);
            };
            (tower::util::BoxService::new(svc), Box::new(raise))
        }
        None => {
            let svc = tower_sluice::PerKeyLayer::new(base, key).layer(inner);
            (tower::util::BoxService::new(svc), Box::new(|| {}))
        }
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_raise_never_serves_a_key_worse_than_the_base() {
    let base = Quota::per_minute(10); // one every 6 s, burst 10 (60 s)
    for raised in [11, 13, 15, 20, 30, 37, 100] {
        // `spent` requests under the base, then the raise; then a burst at
        // once, or the wait for the next admission. The same arrivals
        // through a layer that keeps the base, on fresh layers each time.
        for spent in [0, 3, 9, 10] {
            let mut burst = [0; 2];
            let mut next = [Duration::ZERO; 2];
            for (i, r) in [Some(raised), None].into_iter().enumerate() {
                let (mut svc, raise) = raise_fixture(base, r);
                assert_eq!(send_at_once(&mut svc, spent).await, spent);
                raise();
                burst[i] = send_at_once(&mut svc, 500).await;

                let (mut svc, raise) = raise_fixture(base, r);
                assert_eq!(send_at_once(&mut svc, spent).await, spent);
                raise();
                next[i] = next_admission(&mut svc).await;
            }
            assert!(
                burst[0] >= burst[1],
                "x{raised}, after {spent}: burst {} < base {}",
                burst[0],
                burst[1]
            );
            assert!(
                next[0] <= next[1],
                "x{raised}, after {spent}: next {:?} > base {:?}",
                next[0],
                next[1]
            );
        }
        // From a full bucket, a raised key's burst spans the base's 60 s.
        let (mut svc, raise) = raise_fixture(base, Some(raised));
        raise();
        assert_eq!(
            send_at_once(&mut svc, 5_000).await,
            raised as usize,
            "x{raised}"
        );
    }
}

// ------------------------------------------------------------------ AIMD

/// An upstream with a hidden limit (GCRA, small burst): refuses with
/// `RateLimited` past it.
fn hidden_limit(
    quota: Quota,
) -> (
    impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone,
    Arc<AtomicU64>,
) {
    let limiter = Arc::new(Limiter::new(quota));
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let svc = service_fn(move |()| {
        let d = limiter.check();
        let count = count.clone();
        async move {
            d.into_result().map_err(BoxError::from)?;
            count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    });
    (svc, served)
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_finds_a_hidden_limit_and_stays_under_it() {
    const TRUE_LIMIT: f64 = 60.0;
    let (upstream, _) = hidden_limit(Quota::per_second(60).with_burst(5));
    let aimd = AimdLayer::new(Quota::per_second(100));
    let rate = aimd.handle();
    let mut client = aimd.layer(upstream);

    let start = Instant::now();
    let log = within(Duration::from_secs(400), async {
        let mut log = Vec::new();
        while start.elapsed() < Duration::from_secs(180) {
            let r = client.ready().await.unwrap().call(()).await;
            if let Err(e) = &r {
                assert!(e.is::<RateLimited>(), "{e}");
            }
            log.push((start.elapsed(), r.is_ok()));
        }
        log
    })
    .await;

    let limited: Vec<Duration> = log.iter().filter(|(_, ok)| !ok).map(|(t, _)| *t).collect();
    assert!(!limited.is_empty(), "the client starts above the limit");
    let after_first = limited.len() - 1;
    let last_minute = log
        .iter()
        .filter(|(t, ok)| *ok && *t >= Duration::from_secs(120))
        .count() as f64
        / 60.0;
    eprintln!(
        "429s: {} (at {:?}); throughput over the last minute {last_minute:.1}/s; rate {:.1}/s",
        limited.len(),
        limited,
        rate.rate()
    );
    assert!(after_first <= 8, "{after_first} 429s after the first");
    assert!(
        (TRUE_LIMIT * 0.9..=TRUE_LIMIT * 1.01).contains(&last_minute),
        "throughput {last_minute}/s against a true limit of {TRUE_LIMIT}/s"
    );
    assert!(rate.rate() <= TRUE_LIMIT * 1.05, "rate {}", rate.rate());
    let good = rate.good_rate().unwrap();
    assert!(
        (TRUE_LIMIT * 0.9..=TRUE_LIMIT).contains(&good),
        "good {good}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_shared_by_concurrent_callers_with_a_slow_upstream() {
    // 16 callers share one rate; the upstream takes 50 ms per request, so
    // many are in flight when a 429 comes back: one cut per episode.
    const TRUE_LIMIT: f64 = 60.0;
    let (upstream, served) = hidden_limit(Quota::per_second(60).with_burst(5));
    let upstream = tower::ServiceBuilder::new()
        .then(|r: Result<(), BoxError>| async move {
            sleep(Duration::from_millis(50)).await;
            r
        })
        .service(upstream);
    let aimd = AimdLayer::new(Quota::per_second(100));
    let rate = aimd.handle();
    let client = aimd.layer(upstream);
    let refused = Arc::new(AtomicU32::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = client.clone();
        let refused = refused.clone();
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(180) {
                let call = client.ready().await.unwrap().call(());
                if let Err(e) = call.await {
                    assert!(e.is::<RateLimited>(), "{e}");
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let mut at_120 = 0;
    within(Duration::from_secs(400), async {
        sleep(Duration::from_secs(120)).await;
        at_120 = served.load(Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    })
    .await;
    let last_minute = (served.load(Ordering::Relaxed) - at_120) as f64 / 60.0;
    let refused = refused.load(Ordering::Relaxed);
    eprintln!(
        "16 callers: {refused} 429s, last minute {last_minute:.1}/s, rate {:.1}/s",
        rate.rate()
    );
    assert!(refused <= 30, "{refused} 429s");
    assert!(
        (TRUE_LIMIT * 0.85..=TRUE_LIMIT * 1.01).contains(&last_minute),
        "throughput {last_minute}/s"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_cuts_pauses_for_retry_after_and_recovers_to_the_quota() {
    // Refuses once, asking for 5 s, then accepts everything.
    let refused = Arc::new(AtomicU32::new(0));
    let r = refused.clone();
    let upstream = service_fn(move |()| {
        let first = r.fetch_add(1, Ordering::Relaxed) == 0;
        async move { if first { Err::<(), _>("busy") } else { Ok(()) } }
    });
    let classify = |r: &Result<(), BoxError>| match r {
        Ok(()) => Verdict::success(),
        Err(_) => Verdict::overloaded().with_retry_after(Duration::from_secs(5)),
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let aimd = AimdLayer::new(Quota::per_second(10))
        .classify(classify)
        .observer(move |e: &Event<'_>| match e {
            Event::LimitChanged { old, new, .. } => {
                seen.lock()
                    .unwrap()
                    .push(format!("rate {} -> {}", old.limit(), new.limit()))
            }
            Event::Waited { waited, .. } if *waited >= Duration::from_secs(1) => {
                seen.lock().unwrap().push(format!("waited {waited:?}"))
            }
            _ => {}
        });
    let rate = aimd.handle();
    let mut client = aimd.layer(upstream);
    let start = Instant::now();
    within(Duration::from_secs(300), async {
        assert!(client.ready().await.unwrap().call(()).await.is_err());
        assert_eq!(rate.rate(), 5.0, "cut by half");
        assert_eq!(rate.paused_for(), Duration::from_secs(5));
        client.ready().await.unwrap().call(()).await.unwrap();
        let resumed = start.elapsed();
        assert!(
            resumed >= Duration::from_secs(5) && resumed < Duration::from_millis(5_010),
            "{resumed:?}"
        );
        while rate.rate() < 10.0 {
            client.ready().await.unwrap().call(()).await.unwrap();
        }
    })
    .await;
    // Back at the quota, never above.
    assert_eq!(rate.rate(), 10.0);
    let events = events.lock().unwrap();
    assert_eq!(events[..2], ["rate 10 -> 5", "waited 5s"], "{events:?}");
    assert_eq!(events.last().unwrap(), "rate 9 -> 10", "{events:?}");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_paces_to_upstream_remaining_and_reset() {
    // A fixed window of 10 requests every 2 s; each response says how many
    // remain and when the window resets. The client's quota (100/s) is far
    // above it, and the upstream would refuse the excess.
    const WINDOW: Duration = Duration::from_secs(2);
    const PER_WINDOW: u64 = 10;
    let start = Instant::now();
    let windows = Arc::new(Mutex::new(std::collections::BTreeMap::<u64, u64>::new()));
    let w = windows.clone();
    let upstream = service_fn(move |()| {
        let now = start.elapsed();
        let index = (now.as_nanos() / WINDOW.as_nanos()) as u64;
        let mut w = w.lock().unwrap();
        let used = w.entry(index).or_insert(0);
        *used += 1;
        let used = *used;
        let reset = WINDOW * (index as u32 + 1) - now;
        async move {
            if used > PER_WINDOW {
                Err::<Upstream, BoxError>("429".into())
            } else {
                Ok(Upstream {
                    remaining: PER_WINDOW - used,
                    reset,
                })
            }
        }
    });
    let classify = |r: &Result<Upstream, BoxError>| match r {
        Ok(u) => Verdict::success().with_upstream(*u),
        Err(_) => Verdict::overloaded(),
    };
    let aimd = AimdLayer::new(Quota::per_second(100)).classify(classify);
    let mut client = aimd.layer(upstream);
    let mut sent = Vec::new();
    within(Duration::from_secs(100), async {
        while start.elapsed() < Duration::from_secs(20) {
            client
                .ready()
                .await
                .unwrap()
                .call(())
                .await
                .expect("never refused: the client never sends more than remains");
            sent.push(start.elapsed());
        }
    })
    .await;
    let windows = windows.lock().unwrap();
    for (i, n) in windows.iter() {
        assert!(*n <= PER_WINDOW, "window {i}: {n}");
    }
    // It uses the quota, not much less: 10 per full window.
    let full = windows.range(0..9).map(|(_, n)| *n).sum::<u64>();
    assert_eq!(full, 90, "{windows:?}");
    // And spreads it: no more than 3 requests in any 200 ms after the
    // first window.
    let later: Vec<_> = sent.iter().filter(|t| **t >= WINDOW).collect();
    for pair in later.windows(4) {
        assert!(
            *pair[3] - *pair[0] >= Duration::from_millis(200),
            "bunched: {pair:?}"
        );
    }
}

// ----------------------------------------------------------- concurrency

/// A service whose latency grows past a concurrency knee:
/// `base × max(1, in_flight / knee)`.
#[derive(Clone)]
struct Knee {
    knee: Arc<AtomicU32>,
    in_flight: Arc<AtomicU32>,
}

impl Knee {
    fn new(knee: u32) -> Self {
        Knee {
            knee: Arc::new(AtomicU32::new(knee)),
            in_flight: Arc::new(AtomicU32::new(0)),
        }
    }

    fn service(
        &self,
    ) -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone + use<> {
        let this = self.clone();
        service_fn(move |()| {
            let this = this.clone();
            async move {
                let n = this.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                let knee = this.knee.load(Ordering::Relaxed);
                let factor = (f64::from(n) / f64::from(knee)).max(1.0);
                sleep(Duration::from_millis(10).mul_f64(factor)).await;
                this.in_flight.fetch_sub(1, Ordering::Relaxed);
                Ok::<_, BoxError>(())
            }
        })
    }
}

/// Drives `workers` closed-loop callers through `layer` for `phases`
/// (knee, duration); returns the mean limit over the last third of each
/// phase.
async fn drive_concurrency(layer: AdaptiveConcurrencyLayer, phases: &[(u32, u64)]) -> Vec<f64> {
    let handle = layer.handle();
    let knee = Knee::new(phases[0].0);
    let svc = layer.layer(knee.service());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut svc = svc.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match svc.ready().await.unwrap().call(()).await {
                    Ok(()) => {}
                    Err(e) => {
                        assert!(e.is::<ConcurrencyLimited>(), "{e}");
                        sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let mut means = Vec::new();
    for &(k, secs) in phases {
        knee.knee.store(k, Ordering::Relaxed);
        let (mut sum, mut n) = (0.0, 0.0);
        let steps = secs * 10;
        for step in 0..steps {
            sleep(Duration::from_millis(100)).await;
            if step >= steps * 2 / 3 {
                sum += f64::from(handle.limit());
                n += 1.0;
            }
        }
        means.push(sum / n);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    means
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn gradient_settles_near_the_knee_and_follows_it() {
    let layer = AdaptiveConcurrencyLayer::new(
        GradientLimit::new()
            .initial(5)
            .probe_interval(Duration::from_secs(10))
            .seed(42),
    );
    let means = within(
        Duration::from_secs(300),
        drive_concurrency(layer, &[(20, 30), (40, 30), (10, 30), (20, 180)]),
    )
    .await;
    eprintln!("gradient: mean limits {means:?} for knees 20, 40, 10, then 20 for 3 minutes");
    // Tolerance: the limit settles at about (1 + buffer) × knee + 1; we
    // accept 0.9 to 1.4 times the knee. The last phase, 3 minutes of
    // sustained overload (100 callers, 18 probes), checks that the limit
    // does not drift upward as Gradient2's does.
    for (mean, knee) in means.iter().zip([20.0, 40.0, 10.0, 20.0]) {
        assert!(
            *mean >= knee * 0.9 && *mean <= knee * 1.4,
            "mean limit {mean} for a knee at {knee}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_concurrency_settles_near_the_knee_and_follows_it() {
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_micros(12_500)).initial(5));
    let means = within(
        Duration::from_secs(300),
        drive_concurrency(layer, &[(20, 30), (40, 30), (10, 30)]),
    )
    .await;
    eprintln!("aimd: mean limits {means:?} for knees 20, 40, 10");
    // Cut when latency passes 1.25 × the no-load latency: the limit
    // oscillates between about 0.9 and 1.25 times the knee.
    for (mean, knee) in means.iter().zip([20.0, 40.0, 10.0]) {
        assert!(
            *mean >= knee * 0.8 && *mean <= knee * 1.3,
            "mean limit {mean} for a knee at {knee}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn over_the_limit_is_refused_at_once_and_slots_come_back() {
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(2).max(2));
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(100)).await;
        Ok::<_, BoxError>(())
    }));
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<ConcurrencyLimited>().unwrap().limit(), 2);
    assert_eq!(handle.in_flight(), 2);
    drop(a);
    assert_eq!(handle.in_flight(), 1, "a dropped future frees its slot");
    within(Duration::from_secs(1), b).await.unwrap();
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.limit(), 2);
}

// ------------------------------------------------- setters after handle()

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_setters_after_handle_and_clone_keep_the_handle_attached() {
    let layer = AimdLayer::new(Quota::per_minute(60));
    let handle = layer.handle();
    let copy = layer.clone();
    let layer = layer.initial(30).decrease(0.7).observer(|_: &Event<'_>| {});
    let _copy = copy.increase(2);
    assert_eq!(
        handle.quota(),
        Quota::per_minute(30),
        "the handle follows the layer"
    );
    let classify = |r: &Result<(), BoxError>| match r {
        Ok(()) => Verdict::success(),
        Err(_) => Verdict::overloaded(),
    };
    let mut svc = layer.classify(classify).layer(service_fn(|()| async {
        Err::<(), BoxError>("busy".into())
    }));
    let _ = svc.ready().await.unwrap().call(()).await;
    assert_eq!(
        handle.quota(),
        Quota::per_minute(21),
        "cut by 0.7 on the service's 429"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn concurrency_setter_after_handle_keeps_the_handle_attached() {
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(2).max(2));
    let handle = layer.handle();
    let _copy = layer.clone();
    let events = Arc::new(AtomicU32::new(0));
    let seen = events.clone();
    let layer = layer.observer(move |_: &Event<'_>| {
        seen.fetch_add(1, Ordering::Relaxed);
    });
    let mut svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(100)).await;
        Ok::<_, BoxError>(())
    }));
    let _a = svc.ready().await.unwrap().call(());
    let _b = svc.ready().await.unwrap().call(());
    svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(handle.in_flight(), 2, "the handle sees the service's slots");
    assert_eq!(handle.limit(), 2);
    assert!(
        events.load(Ordering::Relaxed) >= 1,
        "the observer set after handle() hears"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttle_setters_after_handle_keep_the_handle_attached() {
    let layer = AdaptiveThrottleLayer::new();
    let handle = layer.handle();
    let _copy = layer.clone();
    let layer = layer.k(1.5).window(Duration::from_secs(10)).seed(7);
    let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    svc.oneshot(1).await.unwrap();
    assert_eq!(
        handle.counts(),
        (1, 1),
        "the handle sees the service's window"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn policy_setters_after_clone_and_layers_apply_to_every_clone() {
    let policy = AdaptivePolicy::new(Quota::per_minute(100), 200);
    let copy = policy.clone();
    let feedback = policy.feedback_layer(|req: &String| Some(req.clone()));
    let policy = policy
        .smoothing(0.5)
        .latency_ceiling(Duration::from_secs(1));
    let svc = feedback.layer(service_fn(|_: String| async { Ok::<_, BoxError>(()) }));
    svc.oneshot("ann".to_string()).await.unwrap();
    let stats = copy
        .stats(&"ann".to_string())
        .expect("the clone sees the layer's stats");
    assert_eq!(stats.samples, 1);
    assert!(policy.limit(&"ann".to_string()) > 100);
}

// -------------------------------------------------------------- throttle

/// Drives `rate` requests per second for `secs` through a throttled
/// backend; returns per-second (requests, local rejections, sent, accepted)
/// for the last `tail` seconds, summed.
async fn drive_throttle<S>(
    mut svc: S,
    rate: u64,
    secs: u64,
    tail: u64,
    class: impl Fn(u64) -> Criticality,
) -> [u64; 4]
where
    S: Service<(u64, Criticality), Response = (), Error = BoxError>,
{
    let start = Instant::now();
    let mut totals = [0u64; 4];
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        sleep(Duration::from_nanos(1_000_000_000 / rate)).await;
        i += 1;
        let counting = start.elapsed() >= Duration::from_secs(secs - tail);
        let r = svc.ready().await.unwrap().call((i, class(i))).await;
        if counting {
            totals[0] += 1;
            match r {
                Err(e) if e.is::<Throttled>() => totals[1] += 1,
                Err(_) => totals[2] += 1,
                Ok(()) => {
                    totals[2] += 1;
                    totals[3] += 1;
                }
            }
        }
    }
    totals
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttling_against_a_backend_that_accepts_half() {
    let layer = AdaptiveThrottleLayer::new().seed(7);
    let handle = layer.handle();
    let flip = Arc::new(AtomicU64::new(0));
    let backend = service_fn(move |(_, _): (u64, Criticality)| {
        let accept = flip.fetch_add(1, Ordering::Relaxed).is_multiple_of(2);
        async move {
            if accept {
                Ok(())
            } else {
                Err::<(), BoxError>("overloaded".into())
            }
        }
    });
    let [requests, rejected, sent, accepted] = within(
        Duration::from_secs(1_000),
        drive_throttle(layer.layer(backend), 100, 360, 120, |_| {
            Criticality::Critical
        }),
    )
    .await;
    let p = handle.probability(Criticality::Critical);
    let (r, a) = handle.counts();
    let formula = ((r as f64 - 2.0 * a as f64) / (r as f64 + 1.0)).max(0.0);
    let observed = rejected as f64 / requests as f64;
    eprintln!(
        "half: p {p:.3}, formula {formula:.3}, observed {observed:.3}, sent {sent}, accepted {accepted}"
    );
    assert!(close(p, formula));
    assert!((observed - p).abs() < 0.03, "observed {observed} vs {p}");
    // The backend sees no more than K times what it accepts.
    assert!(
        sent as f64 <= 2.0 * accepted as f64 * 1.02 + 2.0,
        "{sent} sent, {accepted} accepted"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn throttling_converges_to_the_formula_against_a_saturated_backend() {
    // The backend accepts 20 per second; the client wants 100.
    let layer = AdaptiveThrottleLayer::new().seed(11);
    let handle = layer.handle();
    let capacity = Arc::new(Limiter::new(Quota::per_second(20)));
    let backend = service_fn(move |(_, _): (u64, Criticality)| {
        let ok = capacity.check().is_allowed();
        async move {
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>("overloaded".into())
            }
        }
    });
    let [requests, rejected, sent, accepted] = within(
        Duration::from_secs(1_000),
        drive_throttle(layer.layer(backend), 100, 480, 120, |_| {
            Criticality::Critical
        }),
    )
    .await;
    let observed = rejected as f64 / requests as f64;
    // (requests - 2 accepts) / (requests + 1) with 100/s and 20/s accepted.
    let expected = (100.0 - 2.0 * 20.0) / 100.0;
    eprintln!(
        "saturated: observed {observed:.3}, expected {expected:.3}, handle {:.3}, sent {sent}, accepted {accepted}",
        handle.probability(Criticality::Critical)
    );
    assert!((observed - expected).abs() < 0.05, "observed {observed}");
    assert!(
        sent as f64 <= 2.0 * accepted as f64 * 1.05,
        "{sent} sent, {accepted} accepted"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn sheddable_requests_are_shed_first() {
    let layer = AdaptiveThrottleLayer::new()
        .seed(3)
        .criticality(|req: &(u64, Criticality)| req.1);
    let capacity = Arc::new(Limiter::new(Quota::per_second(30)));
    let shed = Arc::new(Mutex::new([0u64; 4]));
    let backend = service_fn(move |(_, _): (u64, Criticality)| {
        let ok = capacity.check().is_allowed();
        async move {
            if ok {
                Ok(())
            } else {
                Err::<(), BoxError>("overloaded".into())
            }
        }
    });
    let mut svc = layer.layer(backend);
    within(Duration::from_secs(1_000), async {
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(300) {
            sleep(Duration::from_millis(10)).await;
            i += 1;
            let class = if i.is_multiple_of(2) {
                Criticality::Critical
            } else {
                Criticality::Sheddable
            };
            let r = svc.ready().await.unwrap().call((i, class)).await;
            if start.elapsed() >= Duration::from_secs(180) {
                let mut s = shed.lock().unwrap();
                let base = if class == Criticality::Critical { 0 } else { 2 };
                s[base] += 1;
                if matches!(&r, Err(e) if e.is::<Throttled>()) {
                    s[base + 1] += 1;
                }
            }
        }
    })
    .await;
    let s = shed.lock().unwrap();
    let critical = s[1] as f64 / s[0] as f64;
    let sheddable = s[3] as f64 / s[2] as f64;
    eprintln!("shed: critical {critical:.3}, sheddable {sheddable:.3}");
    assert!(
        sheddable > critical + 0.1,
        "critical {critical}, sheddable {sheddable}"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn waiting_mode_queues_behind_a_queue_layer() {
    use tower_sluice::QueueLayer;
    // A fixed limit of 2 (AIMD that cannot move), waiting for slots.
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(2).max(2))
            .wait();
    let handle = layer.handle();
    let in_flight = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let (p, f) = (peak.clone(), in_flight.clone());
    let inner = service_fn(move |()| {
        let (p, f) = (p.clone(), f.clone());
        async move {
            let n = f.fetch_add(1, Ordering::Relaxed) + 1;
            p.fetch_max(n, Ordering::Relaxed);
            sleep(Duration::from_millis(100)).await;
            f.fetch_sub(1, Ordering::Relaxed);
            Ok::<_, BoxError>(())
        }
    });
    let svc = QueueLayer::new(100).layer(layer.layer(inner));
    let start = Instant::now();
    let mut svc = svc;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let call = svc.ready().await.unwrap().call(());
        calls.push(tokio::spawn(call));
    }
    within(Duration::from_secs(10), async {
        for c in calls {
            c.await.unwrap().unwrap();
        }
    })
    .await;
    // Ten requests, two at a time, 100 ms each: 500 ms, none refused.
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    assert_eq!(peak.load(Ordering::Relaxed), 2);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_waiting_service_does_not_keep_the_slot() {
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(1).max(1))
            .wait();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(())
    }));
    let mut a = svc.clone();
    let mut b = svc.clone();
    let mut c = svc.clone();
    // a takes the only slot in poll_ready; b waits, then is dropped.
    a.ready().await.unwrap();
    let mut waiting = tokio_test::task::spawn(async move {
        b.ready().await.unwrap();
    });
    assert!(waiting.poll().is_pending());
    drop(waiting);
    // A readied service that is dropped gives its slot back.
    drop(a);
    assert_eq!(handle.in_flight(), 0);
    within(Duration::from_secs(1), async {
        c.ready().await.unwrap().call(()).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn events_report_changes_and_refusals() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_millis(50)).initial(2).max(2))
            .observer(move |e: &Event<'_>| {
                let text = match e {
                    Event::ConcurrencyLimitChanged { old, new, .. } => {
                        format!("limit {old} -> {new}")
                    }
                    Event::AdaptiveRejected { error, .. } => format!("rejected: {error}"),
                    _ => return,
                };
                assert_eq!(e.layer(), "adaptive_concurrency");
                assert!(e.key().is_none());
                s.lock().unwrap().push(text);
            });
    let mut svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(100)).await;
        Ok::<_, BoxError>(())
    }));
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    let c = svc.ready().await.unwrap().call(());
    assert!(c.await.is_err());
    within(Duration::from_secs(1), async {
        a.await.unwrap();
        b.await.unwrap();
    })
    .await;
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0],
        "rejected: adaptive concurrency limit reached (2 in flight); try again later or queue in front"
    );
    // The slow response (100 ms > 50 ms) cut the limit from 2 to 1, once.
    assert_eq!(seen[1..], ["limit 2 -> 1".to_string()]);
}

#[cfg(feature = "http")]
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn http_upstream_steers_the_rate_with_ratelimit_headers_and_retry_after() {
    use tower_sluice::classify::HttpStatus;
    use tower_sluice::http::{Rejection, RejectionKind};
    // An HTTP upstream with 10 requests per 5 s in fixed windows: it says
    // so in the IETF `RateLimit` field (`t` in whole seconds, rounded up),
    // and answers 429 with `Retry-After: 1` past it.
    let start = Instant::now();
    let used = Arc::new(Mutex::new((0u64, 0u64)));
    let refused = Arc::new(AtomicU32::new(0));
    let (u, r) = (used.clone(), refused.clone());
    let upstream = service_fn(move |()| {
        let now = start.elapsed();
        let window = now.as_secs() / 5;
        let mut used = u.lock().unwrap();
        if used.0 != window {
            *used = (window, 0);
        }
        used.1 += 1;
        let n = used.1;
        let reset = ((window + 1) * 5) as f64 - now.as_secs_f64();
        let res = if n > 10 {
            r.fetch_add(1, Ordering::Relaxed);
            http::Response::builder()
                .status(429)
                .header("retry-after", "1")
                .body(())
        } else {
            http::Response::builder()
                .header(
                    "ratelimit",
                    format!("\"default\";r={};t={}", 10 - n, reset.ceil() as u64),
                )
                .body(())
        };
        async move { Ok::<_, BoxError>(res.unwrap()) }
    });
    let aimd = AimdLayer::new(Quota::per_second(50)).classify(HttpStatus);
    let mut client = aimd.layer(upstream);
    let mut ok = 0;
    within(Duration::from_secs(100), async {
        while start.elapsed() < Duration::from_secs(20) {
            let res = client.ready().await.unwrap().call(()).await.unwrap();
            if res.status() == 200 {
                ok += 1;
            }
        }
    })
    .await;
    assert_eq!(refused.load(Ordering::Relaxed), 0, "headers were obeyed");
    // 40 are allowed in 20 s (and one more at 20 s, in the fifth window);
    // `t` rounded up to whole seconds may cost some.
    assert!((30..=41).contains(&ok), "{ok} in 20 s at 10 per 5 s");
    // Local refusals of the adaptive layers map to 503.
    let e: BoxError = "x".into();
    assert_eq!(Rejection::new(&*e).kind(), RejectionKind::Other);
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(1).max(1));
    let mut svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(())
    }));
    let _held = svc.ready().await.unwrap().call(());
    let e = svc.ready().await.unwrap().call(()).await.unwrap_err();
    let rejection = Rejection::new(&*e);
    assert_eq!(rejection.kind(), RejectionKind::Unavailable);
    assert_eq!(rejection.kind().status(), 503);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn shadow_modes_report_without_refusing() {
    let reported = Arc::new(AtomicU32::new(0));
    let r = reported.clone();
    let observer = move |e: &Event<'_>| {
        if let Event::AdaptiveRejected { enforced, .. } = e {
            assert!(!enforced);
            r.fetch_add(1, Ordering::Relaxed);
        }
    };
    let layer =
        AdaptiveConcurrencyLayer::new(AimdLimit::new(Duration::from_secs(1)).initial(1).max(1))
            .shadow()
            .observer(observer.clone());
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async {
        sleep(Duration::from_millis(10)).await;
        Ok::<_, BoxError>(())
    }));
    let a = svc.ready().await.unwrap().call(());
    let b = svc.ready().await.unwrap().call(());
    assert_eq!(handle.in_flight(), 2, "over the limit, let through");
    within(Duration::from_secs(1), async {
        a.await.unwrap();
        b.await.unwrap();
    })
    .await;
    assert_eq!(reported.load(Ordering::Relaxed), 1);

    // Throttling: a backend that refuses everything; nothing is shed.
    let layer = AdaptiveThrottleLayer::new()
        .seed(5)
        .shadow()
        .observer(observer);
    let mut svc = layer.layer(service_fn(|()| async { Err::<(), BoxError>("no".into()) }));
    for _ in 0..100 {
        let e = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(!e.is::<Throttled>());
    }
    assert!(
        reported.load(Ordering::Relaxed) > 50,
        "would have shed most"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn in_an_axum_router() {
    use axum::error_handling::HandleErrorLayer;
    use axum::http::StatusCode;
    use axum::routing::get;
    let adaptive = AdaptivePolicy::new(Quota::per_minute(60), 120);
    let key = |req: &axum::http::Request<axum::body::Body>| {
        req.headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let app = axum::Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    StatusCode::SERVICE_UNAVAILABLE
                }))
                .layer(AdaptiveThrottleLayer::new())
                .layer(AdaptiveConcurrencyLayer::new(GradientLimit::new()))
                .layer(adaptive.per_key_layer(key))
                .layer(adaptive.feedback_layer(key)),
        );
    let req = || {
        axum::http::Request::builder()
            .uri("/")
            .header("x-api-key", "k1")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let res = app.clone().oneshot(req()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        adaptive.limit(&"k1".to_string()) > 60,
        "learned from the response"
    );
}

#[test]
fn keys_of_two_types_are_apart_and_setters_restart_both() {
    let p = AdaptivePolicy::new(Quota::per_second(100), 1000);
    let secs = Duration::from_secs;
    assert_eq!(p.record(&7u64, true, secs(2)), 190);
    // A key of another type, even one that prints the same, has stats of its own.
    assert_eq!(p.stats(&"7"), None);
    assert_eq!(p.limit(&"7"), 100);
    assert_eq!(p.record(&"7", false, secs(2)), 140);
    assert_eq!(p.record(&"7", false, secs(2)), 140);
    assert_eq!(p.stats(&7u64).unwrap().samples, 1);
    assert_eq!(p.stats(&"7").unwrap().samples, 2);
    assert_eq!((p.limit(&7u64), p.limit(&"7")), (190, 140));
    assert_eq!(
        p.adapted(&7u64).unwrap().quotas().next().unwrap().limit(),
        190
    );
    assert_eq!(
        p.adapted(&"7").unwrap().quotas().next().unwrap().limit(),
        140
    );
    assert_eq!(p.len(), 2);
    // A third type seen only by readers holds nothing.
    assert_eq!(p.limit(&7u8), 100);
    assert_eq!(p.len(), 2);
    // A setter restarts the stats of every key type.
    let p = p.smoothing(0.5);
    assert!(p.is_empty());
    assert_eq!((p.limit(&7u64), p.limit(&"7")), (100, 100));
    assert_eq!(p.record(&"7", true, secs(2)), 190);
    assert_eq!(p.len(), 1);
}

#[test]
fn bounds() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    ok::<AimdLayer>();
    ok::<AdaptiveConcurrencyLayer>();
    ok::<AdaptiveThrottleLayer>();
    ok::<AdaptivePolicy>();
}

#[tokio::test(start_paused = true)]
async fn aimd_shadow_paces_and_reports_but_never_delays() {
    for shadow in [false, true] {
        let waits = Arc::new(Mutex::new(Vec::new()));
        let seen = waits.clone();
        let mut layer =
            AimdLayer::new(Quota::per_second(10))
                .burst(1)
                .observer(move |e: &Event<'_>| {
                    if let Event::Limited {
                        error, enforced, ..
                    } = e
                    {
                        assert!(!enforced, "only shadow mode reports Limited");
                        seen.lock().unwrap().push(error.retry_after());
                    }
                });
        if shadow {
            layer = layer.shadow();
        }
        let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
        let start = Instant::now();
        for n in 0..5 {
            svc.ready().await.unwrap().call(n).await.unwrap();
        }
        let ms = |n| Duration::from_millis(n);
        if shadow {
            assert_eq!(start.elapsed(), Duration::ZERO, "nothing delayed");
            assert_eq!(*waits.lock().unwrap(), [ms(100), ms(200), ms(300), ms(400)]);
        } else {
            assert_eq!(start.elapsed(), ms(400), "paced one per 100 ms");
            assert!(waits.lock().unwrap().is_empty());
        }
    }
}

/// A raised limit keeps what the base quota counts and how it resets: a
/// quota of tokens stays one of tokens, a calendar day stays a calendar day.
#[test]
fn a_raised_limit_keeps_the_base_quotas_unit_and_calendar() {
    let tokens = AdaptivePolicy::new(Quota::per_second(1_000).counting("tokens"), 2_000);
    assert!(tokens.record(&"a", true, Duration::ZERO) > 1_000);
    let raised = tokens
        .adapted(&"a")
        .expect("raised")
        .quotas()
        .next()
        .unwrap();
    assert!(raised.limit() > 1_000);
    assert_eq!(raised.unit(), "tokens");
    assert_eq!(raised.period(), Duration::from_secs(1));

    let daily = AdaptivePolicy::new(Quota::per_calendar_day(100), 200);
    assert!(daily.record(&"a", true, Duration::ZERO) > 100);
    let raised = daily
        .adapted(&"a")
        .expect("raised")
        .quotas()
        .next()
        .unwrap();
    assert!(raised.limit() > 100);
    assert_eq!(raised.calendar(), Some(tower_sluice::Calendar::Day));
    assert!(raised.counts_requests());
}
