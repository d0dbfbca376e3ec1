//! QueueLayer on tokio's paused clock (feature `test-util`), plus a
//! multi-thread and a real-time test.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_test::task;
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::error::QueueClosed;
use tower_sluice::observe::Event;
use tower_sluice::{QueueFull, QueueLayer, QueueTimeout, Quota};

/// Records what the upstream sees: the order and time of calls, and the
/// most calls in flight at once.
#[derive(Clone)]
struct Probe {
    calls: Arc<Mutex<Vec<(u32, Duration)>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    start: Instant,
}

impl Probe {
    fn new() -> Self {
        Probe {
            calls: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            start: Instant::now(),
        }
    }

    fn order(&self) -> Vec<u32> {
        self.calls.lock().unwrap().iter().map(|c| c.0).collect()
    }

    fn times(&self) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|c| c.1).collect()
    }

    fn max(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// An upstream that yields a few times while in flight.
    fn yielding_upstream(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let probe = self.clone();
        service_fn(move |n: u32| {
            let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let in_flight = probe.in_flight.clone();
            async move {
                for _ in 0..(n % 4) {
                    tokio::task::yield_now().await;
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n)
            }
        })
    }

    /// An upstream that takes `work` (on tokio's clock) per request.
    fn upstream(
        &self,
        work: Duration,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let probe = self.clone();
        service_fn(move |n: u32| {
            probe.calls.lock().unwrap().push((n, probe.start.elapsed()));
            let now = probe.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            probe.max_in_flight.fetch_max(now, Ordering::SeqCst);
            let in_flight = probe.in_flight.clone();
            async move {
                if !work.is_zero() {
                    sleep(work).await;
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, BoxError>(n)
            }
        })
    }
}

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(start_paused = true)]
async fn fifo_under_contention() {
    let probe = Probe::new();
    let layer = QueueLayer::new(100).concurrency(2);
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::from_millis(10)));
    // Calls in order 0..60; their futures run on 60 tasks at once.
    let tasks: Vec<_> = (0..60)
        .map(|i| tokio::spawn(svc.call(i)))
        .collect::<Vec<_>>();
    assert_eq!(handle.depth(), 58);
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap().unwrap(), i as u32);
    }
    assert_eq!(probe.order(), (0..60).collect::<Vec<_>>());
    assert_eq!(probe.max(), 2);
    let stats = handle.stats();
    assert_eq!(
        (stats.depth, stats.in_flight, stats.dispatched, stats.queued),
        (0, 0, 60, 58)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_and_concurrency_cap_across_threads() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10_000).concurrency(3);
    let handle = layer.handle();
    let svc = layer.layer(probe.upstream(Duration::ZERO));
    // Arrivals are serialized by `arrivals`, so their order is known; the
    // futures are then polled by tasks on four threads.
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..16u32 {
        let mut svc = svc.clone();
        let arrivals = arrivals.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100u32 {
                let n = t * 1000 + i;
                svc.ready().await.unwrap();
                let fut = {
                    let mut a = arrivals.lock().unwrap();
                    a.push(n);
                    svc.call(n)
                };
                // Slow the callers a little so calls overlap.
                tokio::task::yield_now().await;
                assert_eq!(fut.await.unwrap(), n);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(probe.max() <= 3, "max in flight {}", probe.max());
    assert_eq!(probe.order(), *arrivals.lock().unwrap());
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.depth(), 0);
    assert_eq!(handle.stats().dispatched, 1600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_cap_never_exceeded_across_threads() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10_000).concurrency(3);
    let handle = layer.handle();
    let svc = layer.layer(probe.yielding_upstream());
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200u32 {
                let n = t * 1000 + i;
                assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(probe.max(), 3, "the cap is reached and never exceeded");
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.stats().dispatched, 32 * 200);
}

#[tokio::test(start_paused = true)]
async fn full_queue_fails_at_once() {
    let probe = Probe::new();
    let layer = QueueLayer::new(2).concurrency(1);
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(HOUR));
    let mut a = task::spawn(svc.call(1));
    let mut b = task::spawn(svc.call(2));
    let mut c = task::spawn(svc.call(3));
    let mut d = task::spawn(svc.call(4));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_pending!(c.poll());
    let err = assert_ready_err!(d.poll());
    assert_eq!(err.downcast_ref::<QueueFull>().unwrap().capacity(), 2);
    assert_eq!(handle.depth(), 2);
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(handle.stats().rejected_full, 1);
    assert_eq!(probe.order(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn capacity_zero_sheds_load() {
    let probe = Probe::new();
    let mut svc = QueueLayer::new(0)
        .concurrency(1)
        .layer(probe.upstream(Duration::from_secs(1)));
    let a = svc.call(1);
    let err = svc.call(2).await.unwrap_err();
    assert!(err.is::<QueueFull>());
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(svc.call(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn times_out_after_max_wait() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10)
        .concurrency(1)
        .max_wait(Duration::from_secs(5));
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::from_secs(10)));
    let start = Instant::now();
    let a = tokio::spawn(svc.call(1));
    let b = svc.call(2);
    let err = b.await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let timeout = err.downcast_ref::<QueueTimeout>().unwrap();
    assert!(!timeout.predicted());
    assert_eq!(timeout.max_wait(), Duration::from_secs(5));
    assert_eq!(handle.depth(), 0);
    assert_eq!(handle.stats().timed_out, 1);
    // A request that gets its turn in time (here: at its deadline, 10 s)
    // is not timed out.
    let c = tokio::spawn(svc.call(3));
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(c.await.unwrap().unwrap(), 3);
    assert_eq!(probe.times(), vec![Duration::ZERO, Duration::from_secs(10)]);
}

#[tokio::test(start_paused = true)]
async fn predicted_wait_longer_than_max_wait_fails_at_once() {
    let probe = Probe::new();
    let layer = QueueLayer::new(100)
        .pace(Quota::per_minute(60).with_burst(5))
        .max_wait(Duration::from_secs(3));
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::ZERO));
    let tasks: Vec<_> = (0..8).map(|i| tokio::spawn(svc.call(i))).collect();
    // 5 sent at once, 3 queued for 1, 2 and 3 s: the next would wait 4 s.
    assert_eq!(handle.depth(), 3);
    let mut ninth = task::spawn(svc.call(8));
    let err = assert_ready_err!(ninth.poll());
    let timeout = err.downcast_ref::<QueueTimeout>().unwrap();
    assert!(timeout.predicted());
    assert_eq!(handle.stats().timed_out, 1);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let s = Duration::from_secs;
    assert_eq!(
        probe.times(),
        vec![s(0), s(0), s(0), s(0), s(0), s(1), s(2), s(3)]
    );
}

#[tokio::test(start_paused = true)]
async fn pacing_sends_one_per_second_after_the_burst() {
    let probe = Probe::new();
    let mut svc = QueueLayer::new(100)
        .pace(Quota::per_minute(60).with_burst(5))
        .layer(probe.upstream(Duration::from_millis(300)));
    let tasks: Vec<_> = (0..20).map(|i| tokio::spawn(svc.call(i))).collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let expected: Vec<Duration> = (0..20u64)
        .map(|i| Duration::from_secs(i.saturating_sub(4)))
        .collect();
    assert_eq!(probe.times(), expected);
    assert_eq!(probe.order(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_takes_no_pacing_slot() {
    let probe = Probe::new();
    let mut svc = QueueLayer::new(10)
        .pace(Quota::per_second(1))
        .layer(probe.upstream(Duration::ZERO));
    let a = svc.call(1);
    let b = tokio::spawn(svc.call(2));
    let c = tokio::spawn(svc.call(3));
    a.await.unwrap();
    sleep(Duration::from_millis(500)).await;
    b.abort();
    c.await.unwrap().unwrap();
    assert_eq!(probe.order(), vec![1, 3]);
    assert_eq!(probe.times(), vec![Duration::ZERO, Duration::from_secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn cancellations_leak_no_capacity() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10).concurrency(1);
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(HOUR));
    let mut first = task::spawn(svc.call(0));
    assert_pending!(first.poll());
    for round in 0..200u32 {
        let mut waiting: Vec<_> = (0..10)
            .map(|i| task::spawn(svc.call(round * 100 + i)))
            .collect();
        for w in &mut waiting {
            assert_pending!(w.poll());
        }
        // Full now.
        assert!(svc.call(9999).await.unwrap_err().is::<QueueFull>());
        assert_eq!(handle.depth(), 10);
        // Drop them in a different order each round, head included.
        let k = (round as usize * 7) % 10;
        waiting.rotate_left(k);
        if round % 2 == 1 {
            waiting.reverse();
        }
        drop(waiting);
        assert_eq!(handle.depth(), 0);
    }
    let stats = handle.stats();
    assert_eq!(stats.cancelled, 2000);
    assert_eq!(stats.rejected_full, 200);
    // Still the full capacity, served in order once the first completes.
    let waiting: Vec<_> = (0..10).map(|i| tokio::spawn(svc.call(i + 1))).collect();
    assert!(svc.call(9999).await.unwrap_err().is::<QueueFull>());
    drop(first);
    for (i, w) in waiting.into_iter().enumerate() {
        // Each takes an hour; the queue moves on as each completes.
        assert_eq!(w.await.unwrap().unwrap(), i as u32 + 1);
    }
    assert_eq!(probe.order(), (0..=10).collect::<Vec<_>>());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_sent_request_frees_its_slot() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10).concurrency(1);
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(HOUR));
    let a = svc.call(1);
    let mut b = task::spawn(svc.call(2));
    assert_pending!(b.poll());
    assert_eq!(handle.in_flight(), 1);
    drop(a);
    assert!(b.is_woken());
    assert_pending!(b.poll());
    assert_eq!(probe.order(), vec![1, 2]);
    assert_eq!(handle.in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_queue() {
    let probe = Probe::new();
    let layer = QueueLayer::new(3).concurrency(1);
    let handle = layer.handle();
    let svc = layer.layer(probe.upstream(HOUR));
    // Five clones, one request each: one sent, three queued, one refused.
    let mut results = Vec::new();
    let mut futures = Vec::new();
    for i in 0..5 {
        let mut clone = svc.clone();
        let mut fut = task::spawn(clone.call(i));
        results.push(fut.poll().is_ready());
        futures.push(fut);
    }
    assert_eq!(results, vec![false, false, false, false, true]);
    assert_eq!(handle.depth(), 3);
    // Two services made by one layer share it too.
    let mut other = layer.layer(probe.upstream(HOUR));
    assert!(other.call(9).await.unwrap_err().is::<QueueFull>());
}

/// Neither `Clone` nor `Sync`.
struct NotClone {
    count: std::cell::Cell<u32>,
}

impl Service<u32> for NotClone {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.count.set(self.count.get() + 1);
        std::future::ready(Ok(n + self.count.get() * 1000))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_clone_service_is_shared() {
    let svc = QueueLayer::new(64).layer(NotClone {
        count: std::cell::Cell::new(0),
    });
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for j in 0..10 {
                got.push(svc.clone().oneshot(i * 10 + j).await.unwrap() / 1000);
            }
            got
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.extend(t.await.unwrap());
    }
    counts.sort();
    // One inner service saw all 80 calls.
    assert_eq!(counts, (1..=80).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_is_respected() {
    let (mock, mut upstream) = tower_test::mock::pair::<u32, u32>();
    let layer = QueueLayer::new(10);
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    upstream.allow(0);
    let mut a = task::spawn(svc.call(1));
    let mut b = task::spawn(svc.call(2));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(handle.depth(), 2);
    upstream.allow(1);
    assert!(a.is_woken());
    assert_pending!(a.poll());
    let (req, send) = upstream.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_response(10);
    assert_eq!(assert_ready_ok!(a.poll()), 10);
    assert_eq!(handle.depth(), 1);
    assert!(b.is_woken());
    assert_pending!(b.poll());
    upstream.allow(1);
    assert_pending!(b.poll());
    let (req, send) = upstream.next_request().await.unwrap();
    assert_eq!(req, 2);
    send.send_response(20);
    assert_eq!(assert_ready_ok!(b.poll()), 20);
}

/// Pending until told, then fails in `poll_ready`.
#[derive(Clone, Default)]
struct Breaks {
    broken: Arc<AtomicBool>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Breaks {
    fn break_now(&self) {
        self.broken.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }
}

impl Service<u32> for Breaks {
    type Response = u32;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<u32, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err("connection refused".into()));
        }
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }

    fn call(&mut self, _: u32) -> Self::Future {
        unreachable!("never ready")
    }
}

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_error_reaches_every_waiter() {
    let closed = Arc::new(AtomicUsize::new(0));
    let seen = closed.clone();
    let layer = QueueLayer::new(10).observer(move |e: &Event<'_>| {
        if let Event::QueueClosed { error, .. } = e {
            assert_eq!(error.cause().to_string(), "connection refused");
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    let handle = layer.handle();
    let breaks = Breaks::default();
    let mut svc = layer.layer(breaks.clone());
    let mut waiting: Vec<_> = (0..3).map(|i| task::spawn(svc.call(i))).collect();
    for w in &mut waiting {
        assert_pending!(w.poll());
    }
    breaks.break_now();
    for w in &mut waiting {
        assert!(w.is_woken());
        let err = assert_ready_err!(w.poll());
        let closed = err.downcast_ref::<QueueClosed>().expect("QueueClosed");
        let source = std::error::Error::source(closed).unwrap();
        assert_eq!(source.to_string(), "connection refused");
    }
    assert_eq!(closed.load(Ordering::SeqCst), 1, "reported once");
    assert_eq!(handle.depth(), 0);
    assert_eq!(handle.stats().failed, 3);
    // Later calls fail at once, and readiness says so too.
    let err = std::future::poll_fn(|cx| svc.poll_ready(cx))
        .await
        .unwrap_err();
    assert!(err.is::<QueueClosed>());
    assert!(svc.call(9).await.unwrap_err().is::<QueueClosed>());
}

#[tokio::test(start_paused = true)]
async fn priorities_go_first_and_the_lowest_is_not_starved() {
    let probe = Probe::new();
    // Class = hundreds digit: 0xx low, 1xx mid, 2xx high.
    let mut svc = QueueLayer::new(100)
        .concurrency(1)
        .priority(|n: &u32| (n / 100) as u8)
        .oldest_every(4)
        .layer(probe.upstream(Duration::from_millis(1)));
    let first = svc.call(999 % 100);
    let mut tasks = Vec::new();
    for i in 1..=4 {
        tasks.push(tokio::spawn(svc.call(i))); // low
    }
    for i in 101..=3 + 100 {
        tasks.push(tokio::spawn(svc.call(i))); // mid
    }
    for i in 201..=10 + 200 {
        tasks.push(tokio::spawn(svc.call(i))); // high
    }
    first.await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every 4th dispatch from the queue is the oldest waiter: the low ones,
    // in order, are not starved by the stream of higher classes.
    assert_eq!(
        probe.order(),
        vec![
            99, 201, 202, 203, 1, 204, 205, 206, 2, 207, 208, 209, 3, 210, 101, 102, 4, 103
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn strict_priorities_without_the_guard() {
    let probe = Probe::new();
    let mut svc = QueueLayer::new(100)
        .concurrency(1)
        .priority(|n: &u32| (n / 100) as u8)
        .oldest_every(0)
        .layer(probe.upstream(Duration::from_millis(1)));
    let first = svc.call(0);
    let tasks: Vec<_> = [1, 101, 2, 201, 102, 202]
        .into_iter()
        .map(|n| tokio::spawn(svc.call(n)))
        .collect();
    first.await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(probe.order(), vec![0, 201, 202, 101, 102, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn per_key_bound() {
    let probe = Probe::new();
    let layer = QueueLayer::new(100)
        .concurrency(1)
        .max_per_key(2, |n: &u32| n % 10);
    let mut svc = layer.layer(probe.upstream(HOUR));
    let _sent = svc.call(0);
    let _a = svc.call(1);
    let _b = svc.call(11);
    let err = svc.call(21).await.unwrap_err();
    assert_eq!(err.downcast_ref::<QueueFull>().unwrap().capacity(), 2);
    // Another key still queues; a freed place can be taken again.
    let mut other = task::spawn(svc.call(2));
    assert_pending!(other.poll());
    drop(_a);
    let mut again = task::spawn(svc.call(31));
    assert_pending!(again.poll());
}

#[tokio::test(start_paused = true)]
async fn events_report_queued_and_dequeued() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let layer = QueueLayer::new(1)
        .concurrency(1)
        .observer(move |e: &Event<'_>| {
            let line = match e {
                Event::Queued { depth, .. } => format!("queued {depth}"),
                Event::Dequeued {
                    waited,
                    queued: false,
                    ..
                } => format!("sent {waited:?}"),
                Event::Dequeued { waited, .. } => format!("dequeued {waited:?}"),
                Event::QueueFull { .. } => "full".to_string(),
                other => format!("{other:?}"),
            };
            seen.lock().unwrap().push(line);
        });
    let probe = Probe::new();
    let mut svc = layer.layer(probe.upstream(Duration::from_secs(2)));
    let a = svc.call(1);
    let b = tokio::spawn(svc.call(2));
    assert!(svc.call(3).await.is_err());
    a.await.unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        vec!["sent 0ns", "queued 1", "full", "dequeued 2s"]
    );
}

/// Real time: dispatches stay within a few milliseconds of the schedule.
#[test]
fn pacing_in_real_time() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let probe = Probe::new();
        let svc = QueueLayer::new(100)
            .pace(Quota::per_second(20).with_burst(1))
            .layer(probe.upstream(Duration::ZERO));
        let start = std::time::Instant::now();
        let tasks: Vec<_> = (0..10)
            .map(|i| tokio::spawn(svc.clone().oneshot(i)))
            .collect();
        let mut done = Vec::new();
        for t in tasks {
            t.await.unwrap().unwrap();
            done.push(start.elapsed());
        }
        let times = probe.times();
        assert_eq!(times.len(), 10);
        // Never faster than the pace (burst 1: 50 ms apart), and not much
        // slower: a late wake-up delays the rest (GCRA does not catch up
        // beyond its burst), so the gaps are judged, generously.
        for (i, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap + Duration::from_millis(1) >= Duration::from_millis(50)
                    && gap <= Duration::from_millis(120),
                "gap {i} was {gap:?} (all: {times:?})"
            );
        }
        assert!(done.len() == 10 && *done.last().unwrap() < Duration::from_secs(2));
    });
}

// ------------------------------------------------- setters after handle()

#[tokio::test(start_paused = true)]
async fn setters_after_handle_and_clone_keep_the_handle_attached() {
    let probe = Probe::new();
    let layer = QueueLayer::new(2);
    let handle = layer.handle();
    let copy = layer.clone();
    // Setters after `handle()` and after a clone: no panic, and the handle
    // reads the queue the services use.
    let layer = layer.concurrency(1).max_wait(HOUR);
    let copy = copy.observer(|_: &Event<'_>| {});
    let mut svc = layer.layer(probe.upstream(HOUR));
    let mut a = task::spawn(svc.call(1));
    let mut b = task::spawn(svc.call(2));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!(handle.in_flight(), 1, "the handle sees the service's queue");
    assert_eq!(handle.depth(), 1);
    assert_eq!(handle.capacity(), 2);
    // The clone is the same queue: its settings apply to the layer too.
    assert_eq!(copy.handle().depth(), 1);
    // A service's own handle reads its queue.
    assert_eq!(svc.handle().in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrency_zero_is_taken_as_one() {
    let probe = Probe::new();
    let layer = QueueLayer::new(10).concurrency(0);
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::from_secs(1)));
    let mut a = task::spawn(svc.call(1));
    let mut b = task::spawn(svc.call(2));
    assert_pending!(a.poll());
    assert_pending!(b.poll());
    assert_eq!((handle.in_flight(), handle.depth()), (1, 1));
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(b.await.unwrap(), 2);
}

// ---------------------------------------------------------------------------
// Pacing by cost: each request is charged its cost on a pace of tokens.

/// 1 000 tokens a second, 1 000 at once; a request `n` costs `n` tokens.
fn token_pace()
-> QueueLayer<tower_sluice::queue::NoPriority, tower_sluice::queue::NoKey, fn(&u32) -> u32> {
    QueueLayer::new(100)
        .pace(Quota::per_second(1_000).counting("tokens"))
        .cost((|n: &u32| *n) as fn(&u32) -> u32)
}

#[tokio::test(start_paused = true)]
async fn pacing_by_cost_spaces_requests_by_their_tokens() {
    let probe = Probe::new();
    let mut svc = token_pace().layer(probe.upstream(Duration::ZERO));
    let tasks: Vec<_> = [600, 600, 300, 0, 1_000]
        .into_iter()
        .map(|n| tokio::spawn(svc.call(n)))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let ms = Duration::from_millis;
    // 600 at once; 600 more when 200 have come back; 300 at 0.5 s; the
    // free request right behind it (in order, unpaced); 1 000 when the
    // bucket is whole again.
    assert_eq!(probe.order(), [600, 600, 300, 0, 1_000]);
    assert_eq!(probe.times(), [ms(0), ms(200), ms(500), ms(500), ms(1_500)]);
    // The pace is spent until 2.5 s, but a request of cost 0 goes at once.
    svc.call(0).await.unwrap();
    assert_eq!(probe.times()[5], ms(1_500));
}

#[tokio::test(start_paused = true)]
async fn a_cost_above_the_pace_burst_fails_at_once() {
    let probe = Probe::new();
    let layer = token_pace();
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::ZERO));
    let mut too_big = task::spawn(svc.call(1_001));
    let err = assert_ready_err!(too_big.poll());
    let err = err
        .downcast_ref::<tower_sluice::ExceedsBurst>()
        .expect("ExceedsBurst");
    assert_eq!((err.cost(), err.quota().burst()), (1_001, 1_000));
    assert_eq!(err.quota().unit(), "tokens");
    assert_eq!(handle.depth(), 0);
    // It took nothing from the pace: a whole burst goes at once.
    svc.call(1_000).await.unwrap();
    assert_eq!(probe.times(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn a_pace_of_requests_charges_one_whatever_the_cost() {
    let probe = Probe::new();
    let mut svc = QueueLayer::new(100)
        .pace(Quota::per_second(2).with_burst(1))
        .cost(|n: &u32| *n)
        .layer(probe.upstream(Duration::ZERO));
    let tasks: Vec<_> = [500, 70_000, 1, 0]
        .into_iter()
        .map(|n| tokio::spawn(svc.call(n)))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let ms = Duration::from_millis;
    assert_eq!(probe.times(), [ms(0), ms(500), ms(1_000), ms(1_000)]);
}

#[tokio::test(start_paused = true)]
async fn the_predicted_wait_counts_the_costs_ahead() {
    let probe = Probe::new();
    let layer = token_pace().max_wait(Duration::from_secs(2));
    let handle = layer.handle();
    let mut svc = layer.layer(probe.upstream(Duration::ZERO));
    // 1 000 sent; 1 000 and 900 queued (sent at 1 s and 1.9 s).
    let tasks: Vec<_> = [1_000, 1_000, 900]
        .into_iter()
        .map(|n| tokio::spawn(svc.call(n)))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.depth(), 2);
    // 200 more would go at 2.1 s: past the 2 s wait, refused at once.
    let mut late = task::spawn(svc.call(200));
    let err = assert_ready_err!(late.poll());
    assert!(err.downcast_ref::<QueueTimeout>().unwrap().predicted());
    // 100 would go at exactly 2 s: it waits.
    let last = tokio::spawn(svc.call(100));
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    last.await.unwrap().unwrap();
    let ms = Duration::from_millis;
    assert_eq!(probe.times(), [ms(0), ms(1_000), ms(1_900), ms(2_000)]);
}

// ---------------------------------------------------------------------------
// Pacing by a calendar quota: its allowance goes at once, then requests wait
// for the next window.

/// 2024-03-10 12:00:50 UTC: the calendar minute ends in 10 s.
fn ten_seconds_before_the_minute() {
    tower_sluice::calendar::set_test_utc(
        std::time::UNIX_EPOCH + Duration::from_secs(1_710_072_000 + 50),
    );
}

#[tokio::test(start_paused = true)]
async fn a_calendar_pace_waits_for_the_next_window_not_a_rolling_refill() {
    ten_seconds_before_the_minute();
    let probe = Probe::new();
    let mut svc = QueueLayer::new(100)
        .pace(Quota::per_calendar_minute(1_000).counting("tokens"))
        .cost(|n: &u32| *n)
        .layer(probe.upstream(Duration::ZERO));
    let tasks: Vec<_> = [600, 300, 400, 700, 0]
        .into_iter()
        .map(|n| tokio::spawn(svc.call(n)))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let s = Duration::from_secs;
    // 600 and 300 at once; 400 does not fit the 100 left and waits for the
    // next minute, at 10 s (a rolling 1 000 a minute would send it at 18 s);
    // 700 does not fit beside it and waits for the minute after, at 70 s;
    // the free request goes right behind it.
    assert_eq!(probe.order(), [600, 300, 400, 700, 0]);
    assert_eq!(probe.times(), [s(0), s(0), s(10), s(70), s(70)]);
}

#[tokio::test(start_paused = true)]
async fn a_calendar_pace_predicts_the_wait_to_the_boundary() {
    ten_seconds_before_the_minute();
    let probe = Probe::new();
    let layer = QueueLayer::new(100)
        .pace(Quota::per_calendar_minute(2))
        .max_wait(Duration::from_secs(5));
    let mut svc = layer.layer(probe.upstream(Duration::ZERO));
    svc.call(1).await.unwrap();
    svc.call(2).await.unwrap();
    // The minute's allowance is spent: the next one would go in 10 s, past
    // the 5 s the caller waits, so it is refused at once.
    let mut late = task::spawn(svc.call(3));
    let err = assert_ready_err!(late.poll());
    assert!(err.downcast_ref::<QueueTimeout>().unwrap().predicted());
    // In the next minute the allowance is whole again.
    tokio::time::advance(Duration::from_secs(10)).await;
    svc.call(4).await.unwrap();
    svc.call(5).await.unwrap();
    assert_eq!(probe.order(), [1, 2, 4, 5]);
}
