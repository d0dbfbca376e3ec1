//! CircuitBreakerLayer on tokio's paused clock (feature `test-util`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util_lite::poll_once;
use tokio::sync::oneshot;
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_sluice::circuit_breaker::{CircuitBreakerHandle, CircuitState, SlidingWindow};
use tower_sluice::classify::Outcome;
use tower_sluice::observe::Event;
use tower_sluice::{CircuitBreaker, CircuitBreakerLayer, CircuitOpen};

mod accessors;

mod futures_util_lite {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// Polls a future once, without a waker that does anything.
    pub fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        Pin::new(f).poll(&mut Context::from_waker(Waker::noop()))
    }
}

/// What the upstream does with a request.
#[derive(Debug)]
enum Call {
    Ok,
    Fail,
    /// Ignored by the test classifier.
    Shed,
    /// Succeeds after a while.
    Slow(Duration),
    /// Answers when told (true = success).
    Wait(oneshot::Receiver<bool>),
}

type Upstream = tower::util::BoxCloneSyncService<Call, &'static str, BoxError>;

fn upstream(hits: Arc<AtomicUsize>) -> Upstream {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |call: Call| {
        hits.fetch_add(1, Ordering::SeqCst);
        async move {
            match call {
                Call::Ok => Ok("ok"),
                Call::Fail => Err("upstream failed".into()),
                Call::Shed => Ok("shed"),
                Call::Slow(d) => {
                    tokio::time::sleep(d).await;
                    Ok("slow")
                }
                Call::Wait(rx) => match rx.await {
                    Ok(true) => Ok("ok"),
                    _ => Err("upstream failed".into()),
                },
            }
        }
    }))
}

type Classifier = fn(&Result<&'static str, BoxError>) -> Outcome;

fn classify(r: &Result<&'static str, BoxError>) -> Outcome {
    match r {
        Ok("shed") => Outcome::Ignore,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

struct Fixture {
    svc: CircuitBreaker<Upstream, Classifier>,
    handle: CircuitBreakerHandle,
    hits: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<(CircuitState, CircuitState)>>>,
}

fn fixture(builder: tower_sluice::circuit_breaker::CircuitBreakerBuilder) -> Fixture {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let layer = builder
        .build()
        .unwrap()
        .observer(move |e: &Event<'_>| {
            if let Event::BreakerStateChanged { from, to, .. } = e {
                seen.lock().unwrap().push((*from, *to));
            }
        })
        .classify(classify as Classifier);
    let hits = Arc::new(AtomicUsize::new(0));
    Fixture {
        svc: layer.layer(upstream(hits.clone())),
        handle: layer.handle(),
        hits,
        events,
    }
}

impl Fixture {
    async fn call(&mut self, call: Call) -> Result<&'static str, BoxError> {
        self.svc.ready().await.unwrap().call(call).await
    }

    async fn run(&mut self, calls: impl IntoIterator<Item = Call>) {
        for c in calls {
            let _ = self.call(c).await;
        }
    }

    fn state(&self) -> CircuitState {
        self.handle.state()
    }
}

fn is_open(r: &Result<&'static str, BoxError>) -> Option<Duration> {
    r.as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .map(|e| e.retry_after())
}

fn count(n: u32, min: u32) -> tower_sluice::circuit_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .window(SlidingWindow::Count(n))
        .minimum_calls(min)
        .failure_rate_threshold(50.0)
        .open_duration(Duration::from_secs(5))
        .open_jitter(0.0)
        .permitted_calls_in_half_open(2)
}

const SEC: Duration = Duration::from_secs(1);

async fn open_it(f: &mut Fixture) {
    f.run((0..10).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Open, "{:?}", f.handle.stats());
}

#[tokio::test(start_paused = true)]
async fn opens_exactly_at_the_threshold_after_minimum_calls() {
    let mut f = fixture(count(20, 10));
    // 9 calls, all failures: below minimum_calls, no judgement.
    f.run((0..9).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    assert_eq!(f.handle.stats().failures, 9);
    f.handle.reset();
    // 6 successes then 4 failures: 40% of 10, stays closed.
    f.run((0..6).map(|_| Call::Ok)).await;
    f.run((0..4).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    let stats = f.handle.stats();
    assert_eq!((stats.calls, stats.failures), (10, 4));
    assert_eq!(stats.failure_rate(), 40.0);
    // The 5th failure makes 9 of 11 calls... 5 of 11 = 45%: still closed.
    f.run([Call::Fail]).await;
    assert_eq!(f.state(), CircuitState::Closed);
    // 6 of 12 = 50%: opens exactly there.
    f.run([Call::Fail]).await;
    assert_eq!(f.state(), CircuitState::Open);
    assert_eq!(
        *f.events.lock().unwrap(),
        [(CircuitState::Closed, CircuitState::Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_success_that_completes_the_minimum_is_judged() {
    // 4 failures, then a success: 5 calls, the minimum, at 80 % failures.
    let mut f = fixture(count(10, 5));
    f.run((0..4).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Open, "{:?}", f.handle.stats());
    // The next call never reaches the failing upstream.
    let hits = f.hits.load(Ordering::SeqCst);
    assert!(is_open(&f.call(Call::Ok).await).is_some());
    assert_eq!(f.hits.load(Ordering::SeqCst), hits);

    // The same on a time window.
    let mut f = fixture(
        CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: 10 * SEC,
                buckets: 10,
            })
            .minimum_calls(5)
            .failure_rate_threshold(50.0),
    );
    f.run((0..3).map(|_| Call::Fail)).await;
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed); // 4 calls: below the minimum
    f.run([Call::Ok]).await; // 3 of 5 = 60 %
    assert_eq!(f.state(), CircuitState::Open, "{:?}", f.handle.stats());
}

#[tokio::test(start_paused = true)]
async fn a_success_after_old_successes_left_the_window_is_judged() {
    let mut f = fixture(
        CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: 10 * SEC,
                buckets: 10,
            })
            .minimum_calls(4)
            .failure_rate_threshold(50.0),
    );
    // 6 successes, then 3 failures 5 s later: 3 of 9, closed.
    f.run((0..6).map(|_| Call::Ok)).await;
    advance(5 * SEC).await;
    f.run((0..3).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    // The successes leave the window; the next success makes 3 of 4.
    advance(5 * SEC).await;
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Open, "{:?}", f.handle.stats());
}

#[tokio::test(start_paused = true)]
async fn successes_over_a_clean_window_never_open_it() {
    let mut f = fixture(count(10, 5));
    // A failure, then enough successes to push it out of the window.
    f.run([Call::Fail]).await;
    f.run((0..30).map(|_| Call::Ok)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    let stats = f.handle.stats();
    assert_eq!((stats.calls, stats.failures), (10, 0));
    // 4 failures of 10: still closed, the 5th of 10 opens it.
    f.run((0..4).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Closed);
    f.run([Call::Fail]).await;
    assert_eq!(f.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn does_not_open_below_the_threshold_and_ignores_shed_calls() {
    let mut f = fixture(count(10, 10));
    for _ in 0..100 {
        f.run([Call::Ok, Call::Fail, Call::Ok, Call::Shed, Call::Shed])
            .await;
    }
    // 1 in 3 recorded calls failed; sheds are not recorded.
    assert_eq!(f.state(), CircuitState::Closed);
    let stats = f.handle.stats();
    assert_eq!(stats.calls, 10);
    assert!(stats.failure_rate() < 50.0);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_it() {
    let mut f = fixture(
        count(10, 4)
            .slow_call_duration(SEC)
            .slow_call_rate_threshold(75.0),
    );
    f.run([Call::Slow(2 * SEC), Call::Slow(2 * SEC), Call::Ok])
        .await;
    f.run([Call::Slow(SEC / 2)]).await;
    assert_eq!(f.state(), CircuitState::Closed);
    assert_eq!(f.handle.stats().slow_calls, 2);
    f.run([Call::Slow(SEC)]).await; // exactly the duration: slow.
    f.run([Call::Slow(3 * SEC)]).await; // 4 of 6 = 66%
    assert_eq!(f.state(), CircuitState::Closed);
    f.run([Call::Slow(3 * SEC)]).await; // 5 of 7 = 71%
    f.run([Call::Slow(3 * SEC)]).await; // 6 of 8 = 75%
    assert_eq!(f.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn consecutive_mode_opens_after_n_failures_in_a_row() {
    let mut f = fixture(
        CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .open_jitter(0.0),
    );
    f.run([Call::Fail, Call::Fail, Call::Ok, Call::Fail, Call::Fail])
        .await;
    assert_eq!(f.state(), CircuitState::Closed);
    assert_eq!(f.handle.stats().consecutive_failures, 2);
    f.run([Call::Fail]).await;
    assert_eq!(f.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn open_refuses_without_calling_then_half_opens_after_the_duration() {
    let mut f = fixture(count(10, 10));
    open_it(&mut f).await;
    let hits = f.hits.load(Ordering::SeqCst);
    advance(2 * SEC).await;
    let r = f.call(Call::Ok).await;
    assert_eq!(is_open(&r), Some(3 * SEC));
    assert_eq!(
        f.hits.load(Ordering::SeqCst),
        hits,
        "no call reached upstream"
    );
    assert_eq!(f.handle.retry_after(), Some(3 * SEC));
    advance(3 * SEC).await;
    // No traffic, yet the state reads half-open on time.
    assert_eq!(f.state(), CircuitState::HalfOpen);
    assert_eq!(f.handle.retry_after(), None);
    f.run([Call::Ok, Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed);
    assert_eq!(
        *f.events.lock().unwrap(),
        [
            (CircuitState::Closed, CircuitState::Open),
            (CircuitState::Open, CircuitState::HalfOpen),
            (CircuitState::HalfOpen, CircuitState::Closed),
        ]
    );
    // Closing empties the window.
    assert_eq!(f.handle.stats().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_permitted_calls_at_once() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(3));
    open_it(&mut f).await;
    advance(5 * SEC).await;
    let mut trials = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = oneshot::channel();
        f.svc.ready().await.unwrap();
        let mut fut = f.svc.call(Call::Wait(rx));
        assert!(poll_once(&mut fut).is_pending());
        trials.push(fut);
        answers.push(tx);
    }
    let hits = f.hits.load(Ordering::SeqCst);
    for _ in 0..5 {
        let r = f.call(Call::Ok).await;
        assert!(is_open(&r).is_some(), "extra call admitted in half-open");
    }
    assert_eq!(f.hits.load(Ordering::SeqCst), hits);
    assert_eq!(f.state(), CircuitState::HalfOpen);
    for tx in answers {
        tx.send(true).unwrap();
    }
    for t in trials {
        t.await.unwrap();
    }
    assert_eq!(f.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_with_a_doubled_duration_reset_on_close() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(2));
    open_it(&mut f).await;
    advance(5 * SEC).await;
    // One failure of 2 trials = 50%: reopens at once.
    f.run([Call::Fail]).await;
    assert_eq!(f.state(), CircuitState::Open);
    assert_eq!(f.handle.retry_after(), Some(10 * SEC));
    advance(10 * SEC).await;
    f.run([Call::Ok, Call::Fail]).await;
    assert_eq!(f.handle.retry_after(), Some(20 * SEC));
    advance(20 * SEC).await;
    f.run([Call::Ok, Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed);
    // Opening again starts from the first duration.
    open_it(&mut f).await;
    assert_eq!(f.handle.retry_after(), Some(5 * SEC));
}

#[tokio::test(start_paused = true)]
async fn calls_from_an_earlier_state_do_not_count() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(1));
    // A call admitted while closed, still running when the breaker opens.
    let (tx, rx) = oneshot::channel();
    f.svc.ready().await.unwrap();
    let mut old = f.svc.call(Call::Wait(rx));
    assert!(poll_once(&mut old).is_pending());
    open_it(&mut f).await;
    advance(5 * SEC).await;
    assert_eq!(f.state(), CircuitState::HalfOpen);
    // Its failure lands in half-open: it must not reopen the breaker.
    tx.send(false).unwrap();
    assert!(old.await.is_err());
    assert_eq!(f.state(), CircuitState::HalfOpen);
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_trial_frees_its_slot() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(1));
    open_it(&mut f).await;
    advance(5 * SEC).await;
    let (_tx, rx) = oneshot::channel();
    f.svc.ready().await.unwrap();
    let mut trial = f.svc.call(Call::Wait(rx));
    assert!(poll_once(&mut trial).is_pending());
    assert!(is_open(&f.call(Call::Ok).await).is_some(), "slot taken");
    drop(trial);
    assert_eq!(f.state(), CircuitState::HalfOpen);
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_shed_trial_frees_its_slot_too() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(1));
    open_it(&mut f).await;
    advance(5 * SEC).await;
    f.run([Call::Shed]).await;
    assert_eq!(f.state(), CircuitState::HalfOpen);
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn hanging_trials_do_not_leave_it_stuck_half_open() {
    let mut f = fixture(
        count(10, 10)
            .permitted_calls_in_half_open(2)
            .half_open_timeout(10 * SEC),
    );
    open_it(&mut f).await;
    advance(5 * SEC).await;
    let (_tx, rx) = oneshot::channel();
    f.svc.ready().await.unwrap();
    let mut hung = f.svc.call(Call::Wait(rx));
    assert!(poll_once(&mut hung).is_pending());
    advance(10 * SEC).await;
    // No trial completed within the timeout: open again (doubled).
    assert_eq!(f.state(), CircuitState::Open);
    assert_eq!(f.handle.retry_after(), Some(10 * SEC));

    // With one success in, the timeout judges what completed: closes.
    advance(10 * SEC).await;
    let (_tx, rx) = oneshot::channel();
    f.svc.ready().await.unwrap();
    let mut hung = f.svc.call(Call::Wait(rx));
    assert!(poll_once(&mut hung).is_pending());
    f.run([Call::Ok]).await;
    assert_eq!(f.state(), CircuitState::HalfOpen);
    advance(10 * SEC).await;
    assert_eq!(f.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_time_window_forgets_old_buckets() {
    let mut f = fixture(
        CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: 10 * SEC,
                buckets: 10,
            })
            .minimum_calls(10),
    );
    f.run((0..4).map(|_| Call::Fail)).await;
    advance(5 * SEC).await;
    f.run((0..5).map(|_| Call::Ok)).await;
    assert_eq!(f.handle.stats().calls, 9);
    advance(5 * SEC).await;
    // The 4 failures are 10 s old: forgotten.
    let stats = f.handle.stats();
    assert_eq!((stats.calls, stats.failures), (5, 0));
    // 5 failures now: 5 of 10 = 50%, only counting the live buckets.
    f.run((0..5).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn force_open_force_closed_and_reset() {
    let mut f = fixture(count(10, 10));
    f.handle.force_open();
    assert_eq!(f.state(), CircuitState::ForcedOpen);
    advance(3600 * SEC).await;
    assert!(is_open(&f.call(Call::Ok).await).is_some());
    assert_eq!(f.hits.load(Ordering::SeqCst), 0);
    f.handle.force_closed();
    f.run((0..50).map(|_| Call::Fail)).await;
    assert_eq!(f.state(), CircuitState::ForcedClosed);
    assert_eq!(f.hits.load(Ordering::SeqCst), 50);
    f.handle.reset();
    assert_eq!(f.state(), CircuitState::Closed);
    assert_eq!(f.handle.stats().calls, 0);
    open_it(&mut f).await;
    f.handle.reset();
    assert_eq!(f.call(Call::Ok).await.unwrap(), "ok");
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_breaker() {
    let f = fixture(count(10, 10));
    let mut clones: Vec<_> = (0..10).map(|_| f.svc.clone()).collect();
    for svc in &mut clones {
        let _ = svc.ready().await.unwrap().call(Call::Fail).await;
    }
    assert_eq!(f.state(), CircuitState::Open);
    let r = clones[0].ready().await.unwrap().call(Call::Ok).await;
    assert!(is_open(&r).is_some());
}

#[tokio::test(start_paused = true)]
async fn open_calls_never_reach_a_server_that_goes_down_and_comes_back() {
    // The "server": down for 20 s, then up. Counts what reaches it.
    let down_until = tokio::time::Instant::now() + 20 * SEC;
    let reached_while_open = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::builder()
        .window(SlidingWindow::Count(10))
        .minimum_calls(5)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let h = handle.clone();
    let reached = reached_while_open.clone();
    let mut client = layer.layer(tower::service_fn(move |_: ()| {
        if h.state() == CircuitState::Open {
            reached.fetch_add(1, Ordering::SeqCst);
        }
        async move {
            if tokio::time::Instant::now() < down_until {
                Err::<(), BoxError>("connection refused".into())
            } else {
                Ok(())
            }
        }
    }));
    let mut refused = 0;
    let mut ok = 0;
    for _ in 0..600 {
        match client.ready().await.unwrap().call(()).await {
            Ok(()) => ok += 1,
            Err(e) if e.is::<CircuitOpen>() => refused += 1,
            Err(_) => {}
        }
        advance(SEC / 10).await;
    }
    assert_eq!(reached_while_open.load(Ordering::SeqCst), 0);
    assert!(refused > 150, "refused {refused}");
    // Down until 20 s; probes at 5.5 s, 15.5 s (fail) and 35.5 s (succeeds).
    assert!(ok > 240, "ok {ok}");
    assert_eq!(handle.state(), CircuitState::Closed);
}

proptest::proptest! {
    /// Through the service, with the breaker held closed: the count
    /// window's stats agree with the last N recorded outcomes of a `Vec`
    /// (ignored calls are not recorded).
    #[test]
    fn count_window_stats_match_a_naive_last_n(
        n in 1u32..30,
        calls in proptest::collection::vec(0u8..3, 0..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let mut f = fixture(count(n, 1));
            f.handle.force_closed();
            let mut naive: Vec<bool> = Vec::new();
            for c in calls {
                let call = match c {
                    0 => Call::Ok,
                    1 => Call::Fail,
                    _ => Call::Shed,
                };
                let _ = f.call(call).await;
                if c < 2 {
                    naive.push(c == 1);
                }
                let last = &naive[naive.len().saturating_sub(n as usize)..];
                let stats = f.handle.stats();
                assert_eq!(stats.calls as usize, last.len());
                assert_eq!(stats.failures as usize, last.iter().filter(|f| **f).count());
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_the_open_duration_by_at_most_its_fraction() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut f = fixture(count(10, 10).open_jitter(0.5));
        open_it(&mut f).await;
        let wait = f.handle.retry_after().unwrap();
        assert!(wait <= 5 * SEC && wait >= 5 * SEC / 2, "{wait:?}");
        seen.insert(wait);
    }
    assert!(seen.len() > 1, "no spread: {seen:?}");
}

/// Many threads through every state at once: no panic (counters never
/// underflow), no stuck state, and a healthy upstream closes it at the end.
#[test]
fn concurrent_traffic_through_every_state() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = CircuitBreakerLayer::builder()
            .window(SlidingWindow::Count(20))
            .minimum_calls(5)
            .open_duration(Duration::from_millis(2))
            .max_open_duration(Duration::from_millis(4))
            .half_open_timeout(Duration::from_millis(5))
            .build()
            .unwrap();
        let handle = layer.handle();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = failing.clone();
        let svc = layer.layer(tower::service_fn(move |n: u32| {
            let fail = flag.load(Ordering::Relaxed) && !n.is_multiple_of(3);
            async move {
                tokio::task::yield_now().await;
                if fail {
                    Err::<u32, BoxError>("down".into())
                } else {
                    Ok(n)
                }
            }
        }));
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let mut svc = svc.clone();
                tokio::spawn(async move {
                    for i in 0..2_000u32 {
                        let call = svc.ready().await.unwrap().call(i + t);
                        if i.is_multiple_of(7) {
                            // Cancel some calls mid-flight.
                            let _ = tokio::time::timeout(Duration::from_micros(1), call).await;
                        } else {
                            let _ = call.await;
                        }
                        if i.is_multiple_of(50) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        failing.store(false, Ordering::Relaxed);
        let mut svc = svc;
        for i in 0..200 {
            let _ = svc.ready().await.unwrap().call(i).await;
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        assert_eq!(handle.state(), CircuitState::Closed);
    });
}

// ---------------------------------------------------------------------------
// with no observer (closed calls read the breaker's cheaper clock, which
// follows tokio's under `test-util` just as the precise one does)

/// A breaker with no observer, its handle and the upstream's hit counter.
fn plain(
    builder: tower_sluice::circuit_breaker::CircuitBreakerBuilder,
) -> (CircuitBreaker<Upstream, Classifier>, CircuitBreakerHandle) {
    let layer = builder.build().unwrap().classify(classify as Classifier);
    let handle = layer.handle();
    (layer.layer(upstream(Arc::new(AtomicUsize::new(0)))), handle)
}

async fn call(
    svc: &mut CircuitBreaker<Upstream, Classifier>,
    c: Call,
) -> Result<&'static str, BoxError> {
    svc.ready().await.unwrap().call(c).await
}

#[tokio::test(start_paused = true)]
async fn the_default_window_forgets_a_bucket_exactly_30_s_after_it_began() {
    // Default window: 30 s in 10 buckets of 3 s.
    let (mut svc, handle) = plain(CircuitBreakerLayer::builder().minimum_calls(1000));
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    advance(2 * SEC).await; // t = 2 s, still the first bucket [0, 3 s)
    call(&mut svc, Call::Ok).await.unwrap();
    advance(SEC).await; // t = 3 s: the second bucket
    call(&mut svc, Call::Ok).await.unwrap();
    call(&mut svc, Call::Fail).await.unwrap_err();
    let s = handle.stats();
    assert_eq!((s.calls, s.failures), (6, 4));
    advance(26 * SEC).await; // t = 29 s
    let s = handle.stats();
    assert_eq!((s.calls, s.failures), (6, 4));
    advance(SEC - Duration::from_nanos(1)).await; // t = 30 s - 1 ns
    assert_eq!(handle.stats().calls, 6);
    advance(Duration::from_nanos(1)).await; // t = 30 s: [0, 3 s) is gone
    let s = handle.stats();
    assert_eq!((s.calls, s.failures), (2, 1));
    // A record at t = 31 s reuses the first bucket's slot: it counts only
    // itself, not what the slot held 30 s ago.
    advance(SEC).await;
    call(&mut svc, Call::Fail).await.unwrap_err();
    let s = handle.stats();
    assert_eq!((s.calls, s.failures), (3, 2));
    advance(2 * SEC).await; // t = 33 s: the [3 s, 6 s) bucket is gone
    let s = handle.stats();
    assert_eq!((s.calls, s.failures), (1, 1));
    advance(60 * SEC).await;
    assert_eq!(handle.stats().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn the_time_window_still_judges_and_times_slow_calls_without_an_observer() {
    let (mut svc, handle) = plain(
        CircuitBreakerLayer::builder()
            .window(SlidingWindow::Time {
                size: 10 * SEC,
                buckets: 5,
            })
            .minimum_calls(4)
            .slow_call_duration(SEC)
            .slow_call_rate_threshold(50.0)
            .open_jitter(0.0),
    );
    call(&mut svc, Call::Slow(SEC)).await.unwrap(); // exactly the duration: slow
    call(&mut svc, Call::Slow(SEC - Duration::from_millis(1)))
        .await
        .unwrap();
    call(&mut svc, Call::Ok).await.unwrap();
    let s = handle.stats();
    assert_eq!(
        (s.calls, s.slow_calls, s.state),
        (3, 1, CircuitState::Closed)
    );
    // 2 slow of 4 = 50%.
    call(&mut svc, Call::Slow(2 * SEC)).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
}

// ---------------------------------------------------------------------------
// subscriptions

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tower_sluice::circuit_breaker::{ChangeReason, StateChange};

fn drain(rx: &mut tokio::sync::broadcast::Receiver<StateChange>) -> Vec<StateChange> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(c) => out.push(c),
            Err(TryRecvError::Empty) => return out,
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn transitions(changes: &[StateChange]) -> Vec<(CircuitState, CircuitState, ChangeReason)> {
    changes.iter().map(|c| (c.from, c.to, c.reason)).collect()
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_sees_closed_open_half_open_closed_exactly() {
    use CircuitState::*;
    let (mut svc, handle) = plain(count(4, 4));
    let mut rx = handle.subscribe();
    let t0 = tokio::time::Instant::now();
    for c in [Call::Ok, Call::Fail, Call::Ok] {
        let _ = call(&mut svc, c).await;
    }
    assert!(drain(&mut rx).is_empty());
    call(&mut svc, Call::Fail).await.unwrap_err(); // 2 of 4: opens
    advance(5 * SEC).await;
    assert_eq!(handle.state(), HalfOpen);
    call(&mut svc, Call::Ok).await.unwrap();
    call(&mut svc, Call::Ok).await.unwrap(); // 2 trials passed: closes
    let changes = drain(&mut rx);
    assert_eq!(
        transitions(&changes),
        [
            (Closed, Open, ChangeReason::FailureRate),
            (Open, HalfOpen, ChangeReason::OpenDurationElapsed),
            (HalfOpen, Closed, ChangeReason::TrialsSucceeded),
        ]
    );
    assert_eq!(changes[0].at, t0);
    assert_eq!(changes[1].at, t0 + 5 * SEC);
    assert_eq!(changes[2].at, t0 + 5 * SEC);
    // Nothing more, and nothing for calls that change no state.
    for _ in 0..10 {
        call(&mut svc, Call::Ok).await.unwrap();
    }
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test(start_paused = true)]
async fn subscribers_are_told_why() {
    use CircuitState::*;
    let (mut svc, handle) = plain(
        count(4, 4)
            .slow_call_duration(SEC)
            .half_open_timeout(10 * SEC),
    );
    let mut rx = handle.subscribe();
    for _ in 0..4 {
        call(&mut svc, Call::Slow(2 * SEC)).await.unwrap();
    }
    advance(5 * SEC).await;
    call(&mut svc, Call::Fail).await.unwrap_err(); // 1 of 2 trials: reopens
    advance(10 * SEC).await;
    assert_eq!(handle.state(), HalfOpen);
    advance(10 * SEC).await; // no trial within the timeout: reopens
    assert_eq!(handle.state(), Open);
    handle.force_closed();
    handle.force_open();
    handle.reset();
    handle.reset(); // already closed: no transition
    assert_eq!(
        transitions(&drain(&mut rx)),
        [
            (Closed, Open, ChangeReason::SlowCallRate),
            (Open, HalfOpen, ChangeReason::OpenDurationElapsed),
            (HalfOpen, Open, ChangeReason::TrialsFailed),
            (Open, HalfOpen, ChangeReason::OpenDurationElapsed),
            (HalfOpen, Open, ChangeReason::HalfOpenTimeout),
            (Open, ForcedClosed, ChangeReason::ForcedClosed),
            (ForcedClosed, ForcedOpen, ChangeReason::ForcedOpen),
            (ForcedOpen, Closed, ChangeReason::Reset),
        ]
    );

    let (mut svc, handle) = plain(CircuitBreakerLayer::builder().consecutive_failures(2));
    let mut rx = handle.subscribe();
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(
        transitions(&drain(&mut rx)),
        [(Closed, Open, ChangeReason::ConsecutiveFailures)]
    );
}

#[tokio::test(start_paused = true)]
async fn lagging_and_dropped_subscribers_do_not_affect_calls() {
    let (mut svc, handle) = plain(count(10, 10));
    let mut lagging = handle.subscribe();
    drop(handle.subscribe());
    let mut keeping_up = handle.subscribe();
    let mut seen = 0;
    for _ in 0..100 {
        handle.force_open();
        assert!(is_open(&call(&mut svc, Call::Ok).await).is_some());
        handle.reset();
        assert_eq!(call(&mut svc, Call::Ok).await.unwrap(), "ok");
        seen += drain(&mut keeping_up).len();
    }
    assert_eq!(seen, 200);
    // The lagging one lost all but the last 64, and is told how many.
    assert_eq!(lagging.recv().await, Err(RecvError::Lagged(200 - 64)));
    let kept = drain(&mut lagging);
    assert_eq!(kept.len(), 64);
    assert_eq!(
        (kept[63].from, kept[63].to),
        (CircuitState::ForcedOpen, CircuitState::Closed)
    );
    // Once everything holding the breaker is gone, receivers are told.
    drop((svc, handle));
    assert_eq!(lagging.recv().await, Err(RecvError::Closed));
}

#[tokio::test(start_paused = true)]
async fn subscribers_and_observers_see_the_same_transitions() {
    let mut f = fixture(count(10, 10).permitted_calls_in_half_open(1));
    let mut rx = f.handle.subscribe();
    open_it(&mut f).await;
    advance(5 * SEC).await;
    f.run([Call::Fail]).await;
    advance(10 * SEC).await;
    f.run([Call::Ok]).await;
    let from_subscriber: Vec<_> = drain(&mut rx).iter().map(|c| (c.from, c.to)).collect();
    assert_eq!(from_subscriber.len(), 5);
    assert_eq!(from_subscriber, *f.events.lock().unwrap());
}
