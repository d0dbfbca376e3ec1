//! RateLimitLayer on tokio's paused clock (feature `test-util`).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::observe::Event;
use tower_sluice::{Limiter, Quota, RateLimit, RateLimitLayer, RateLimited};

mod accessors;

type Echo = tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, Infallible>>>;

fn echo() -> Echo {
    service_fn(|n| std::future::ready(Ok(n)))
}

fn limited(layer: RateLimitLayer) -> RateLimit<Echo> {
    ServiceBuilder::new().layer(layer).service(echo())
}

fn downcast(err: BoxError) -> RateLimited {
    match err.downcast::<RateLimited>() {
        Ok(e) => *e,
        Err(other) => panic!("expected RateLimited, got {other}"),
    }
}

const SEC: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn waiting_mode_paces_burst_then_rate() {
    // 60/min with burst 10.
    let mut svc = limited(RateLimitLayer::new(Quota::per_minute(60).with_burst(10)));
    let start = Instant::now();
    let mut passed_at = Vec::new();
    for i in 0..100 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
        passed_at.push(start.elapsed());
    }
    // The first 10 pass at once, then one per second.
    assert!(passed_at[..10].iter().all(|t| t.is_zero()), "{passed_at:?}");
    assert_eq!(passed_at[10], SEC);
    for (i, t) in passed_at.iter().enumerate().skip(10) {
        assert_eq!(*t, SEC * (i as u32 - 9), "request {i}");
    }
    assert_eq!(start.elapsed(), Duration::from_secs(90));
}

#[tokio::test(start_paused = true)]
async fn concurrent_clones_wait_in_order_and_share_one_bucket() {
    let svc = limited(RateLimitLayer::new(Quota::per_second(2)));
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut svc = svc.clone();
        let times = times.clone();
        tasks.push(tokio::spawn(async move {
            svc.ready().await.unwrap().call(i).await.unwrap();
            times.lock().unwrap().push(start.elapsed());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = times.lock().unwrap().clone();
    times.sort();
    let want: Vec<Duration> = [0, 0, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000]
        .into_iter()
        .map(Duration::from_millis)
        .collect();
    assert_eq!(times, want);
}

#[tokio::test(start_paused = true)]
async fn pending_poll_ready_registers_the_waker() {
    let mut svc = tokio_test::task::spawn(limited(RateLimitLayer::new(Quota::per_second(1))));
    assert_ready_ok!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!(svc.call(1).await.unwrap(), 1);
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    // Polling again while pending stays pending and keeps one reservation.
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert!(!svc.is_woken());
    advance(Duration::from_millis(999)).await;
    assert!(!svc.is_woken());
    advance(Duration::from_millis(1)).await;
    assert!(
        svc.is_woken(),
        "the timer must wake the task when the slot is due"
    );
    assert_ready_ok!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!(svc.call(2).await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn reject_mode_denies_at_once_with_exact_retry_after() {
    let mut svc = limited(RateLimitLayer::new(Quota::per_minute(60).with_burst(5)).reject());
    for i in 0..5 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    let start = Instant::now();
    let err = downcast(svc.ready().await.unwrap().call(5).await.unwrap_err());
    assert_eq!(start.elapsed(), Duration::ZERO, "reject never waits");
    assert_eq!(err.retry_after(), SEC);
    assert_eq!(err.limit(), 60);
    assert_eq!(err.remaining(), 0);
    assert_eq!(err.reset_after(), Duration::from_secs(5));
    assert_eq!(
        err.to_string(),
        "rate limit exceeded: 60 per 1m (burst 5); retry after 1s"
    );
    // Denials consume nothing: after exactly retry_after, one passes.
    let _ = svc.ready().await.unwrap().call(6).await.unwrap_err();
    advance(Duration::from_millis(999)).await;
    assert!(svc.ready().await.unwrap().call(7).await.is_err());
    advance(Duration::from_millis(1)).await;
    assert_eq!(svc.ready().await.unwrap().call(8).await.unwrap(), 8);
    assert!(svc.ready().await.unwrap().call(9).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn max_wait_waits_up_to_the_budget_then_fails_fast() {
    let layer = RateLimitLayer::new(Quota::per_second(1)).max_wait(Duration::from_millis(2_500));
    let limiter = layer.limiter().clone();
    let svc = limited(layer);
    let start = Instant::now();
    // Three requests at once: waits of 0, 1 s and 2 s fit the budget...
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.ready().await.unwrap().call(i).await.unwrap();
            start.elapsed()
        }));
    }
    tokio::task::yield_now().await;
    // ...a fourth would wait 3 s: it fails at once and consumes nothing.
    let before = limiter.peek();
    let mut fourth = svc.clone();
    let err = downcast(fourth.ready().await.unwrap().call(3).await.unwrap_err());
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(err.retry_after(), Duration::from_secs(3));
    assert_eq!(limiter.peek(), before);
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    assert_eq!(done, vec![Duration::ZERO, SEC, 2 * SEC]);
}

#[tokio::test(start_paused = true)]
async fn clones_share_one_bucket() {
    let svc = limited(RateLimitLayer::new(Quota::per_second(3)).reject());
    let mut ok = 0;
    for i in 0..10 {
        // A fresh clone for every request, as axum does.
        let mut clone = svc.clone();
        if clone.ready().await.unwrap().call(i).await.is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    // Services made by the same layer share it too.
    let layer = RateLimitLayer::new(Quota::per_second(2)).reject();
    let mut a = ServiceBuilder::new().layer(layer.clone()).service(echo());
    let mut b = ServiceBuilder::new().layer(layer).service(echo());
    assert!(a.ready().await.unwrap().call(1).await.is_ok());
    assert!(b.ready().await.unwrap().call(2).await.is_ok());
    assert!(a.ready().await.unwrap().call(3).await.is_err());
    assert!(b.ready().await.unwrap().call(4).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_readied_service_dropped_without_call_gives_its_slot_back() {
    let layer = RateLimitLayer::new(Quota::per_second(1));
    let svc = limited(layer);
    {
        let mut readied = svc.clone();
        readied.ready().await.unwrap();
        // Dropped without `call`.
    }
    let mut next = svc.clone();
    let start = Instant::now();
    next.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "the unused slot was refunded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_while_pending_gives_its_slot_back() {
    let svc = limited(RateLimitLayer::new(Quota::per_second(1)));
    let mut first = svc.clone();
    first.ready().await.unwrap().call(0).await.unwrap();
    {
        // Reserves the slot at 1 s, then gives up (a timeout, say).
        let mut waiter = svc.clone();
        let gave_up = tokio::time::timeout(Duration::from_millis(100), waiter.ready())
            .await
            .is_err();
        assert!(gave_up);
    }
    // The next caller gets the 1 s slot, not the 2 s one.
    let start = Instant::now();
    let mut next = svc.clone();
    next.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(900));
}

#[tokio::test(start_paused = true)]
async fn several_quotas_the_day_quota_stops_after_the_minute_ones_allow() {
    let limiter = Arc::new(
        Limiter::new(Quota::per_minute(2))
            .and(Quota::per_hour(100))
            .and(Quota::per_day(5)),
    );
    let mut svc = limited(RateLimitLayer::with_limiter(limiter.clone()).reject());
    let mut allowed = 0;
    for minute in 0..10u32 {
        for i in 0..3 {
            match svc.ready().await.unwrap().call(minute * 3 + i).await {
                Ok(_) => allowed += 1,
                Err(e) => {
                    let e = downcast(e);
                    if allowed < 5 {
                        // Denied by the minute quota: wait for the minute.
                        assert_eq!(e.quota(), Quota::per_minute(2));
                    } else {
                        assert_eq!(e.quota(), Quota::per_day(5));
                        // 5/day frees one slot every 4.8 h.
                        let due = Duration::from_secs(24 * 3600 / 5);
                        let elapsed = Duration::from_secs(60 * u64::from(minute));
                        assert_eq!(e.retry_after(), due - elapsed);
                    }
                }
            }
        }
        advance(Duration::from_secs(60)).await;
    }
    assert_eq!(allowed, 5);
    // Denials consumed nothing from the minute or hour quota.
    let d = limiter.peek();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), Quota::per_day(5));
}

#[tokio::test(start_paused = true)]
async fn observer_sees_allowed_limited_and_waited() {
    #[derive(Default, Debug, PartialEq)]
    struct Counts {
        allowed: u32,
        limited: u32,
        waited: Vec<Duration>,
        remaining: Vec<u32>,
    }
    let counts = Arc::new(Mutex::new(Counts::default()));
    let c = counts.clone();
    let observer = move |e: &Event<'_>| {
        let mut c = c.lock().unwrap();
        assert_eq!(e.layer(), "rate_limit");
        match e {
            Event::Allowed { decision, .. } => {
                c.allowed += 1;
                c.remaining.push(decision.remaining());
            }
            Event::Limited { error, .. } => {
                c.limited += 1;
                assert_eq!(error.retry_after(), Duration::from_millis(500));
            }
            Event::Waited { waited, .. } => c.waited.push(*waited),
            _ => unreachable!("no other events from this layer"),
        }
    };
    let mut svc = limited(RateLimitLayer::new(Quota::per_second(2)).observer(observer.clone()));
    for i in 0..3 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    let mut rejecting = limited(
        RateLimitLayer::new(Quota::per_second(2))
            .reject()
            .observer(observer),
    );
    for i in 0..3 {
        let _ = rejecting.ready().await.unwrap().call(i).await;
    }
    let c = counts.lock().unwrap();
    assert_eq!(c.allowed, 5);
    assert_eq!(c.limited, 1);
    assert_eq!(c.waited, vec![Duration::from_millis(500)]);
    assert_eq!(c.remaining, vec![1, 0, 0, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Upstream(&'static str);
    impl std::fmt::Display for Upstream {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Upstream {}
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(Quota::per_second(5)))
        .service(service_fn(|_: ()| async { Err::<(), _>(Upstream("boom")) }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Upstream>(), Some(&Upstream("boom")));
}

#[tokio::test(start_paused = true)]
async fn accessors_and_debug() {
    let mut svc = limited(RateLimitLayer::new(Quota::per_second(5)));
    let _: &Echo = svc.get_ref();
    let _: &mut Echo = svc.get_mut();
    assert_eq!(
        svc.limiter().quotas().collect::<Vec<_>>(),
        vec![Quota::per_second(5)]
    );
    let dbg = format!("{svc:?}");
    assert!(dbg.contains("RateLimit") && dbg.contains("Idle"), "{dbg}");
    let _inner: Echo = svc.into_inner();
}

#[test]
fn layer_and_service_satisfy_axum_bounds() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    ok::<RateLimitLayer>();
    ok::<RateLimit<Echo>>();
    fn send<T: Send + 'static>() {}
    send::<tower_sluice::future::ResponseFuture<std::future::Ready<Result<u32, Infallible>>>>();
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_reports_but_never_enforces() {
    let reports = Arc::new(Mutex::new(Vec::new()));
    let l = reports.clone();
    let layer =
        RateLimitLayer::new(Quota::per_second(2))
            .shadow()
            .observer(move |e: &Event<'_>| {
                if let Event::Limited {
                    error, enforced, ..
                } = e
                {
                    l.lock().unwrap().push((error.retry_after(), *enforced));
                }
            });
    let limiter = layer.limiter().clone();
    let mut svc = limited(layer);
    for i in 0..5 {
        assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
    }
    // Three would have been denied; none was, and each was reported.
    let half = Duration::from_millis(500);
    assert_eq!(*reports.lock().unwrap(), vec![(half, false); 3]);
    // Admitted requests consumed quota, the "denied" ones did not.
    let d = limiter.peek();
    assert_eq!(d.retry_after(), half);
    advance(half).await;
    assert!(limiter.peek().is_allowed());
}

/// One service, called on and on while the quota changes under it (its
/// own copy of the quota is refreshed on the next call), in rejecting and
/// shadow mode, and with several quotas.
#[tokio::test(start_paused = true)]
async fn one_service_follows_every_quota_change_between_its_calls() {
    let layer = RateLimitLayer::new(Quota::per_minute(1)).reject();
    let mut svc = limited(layer.clone());
    assert_eq!(svc.ready().await.unwrap().call(1).await.unwrap(), 1);
    let err = downcast(svc.ready().await.unwrap().call(2).await.unwrap_err());
    assert_eq!(err.quota(), Quota::per_minute(1));
    for quota in [
        Quota::per_second(10),
        Quota::per_hour(1),
        Quota::per_second(100).with_burst(5),
    ] {
        // The bucket is kept empty across the change; a whole burst later
        // it is full again.
        layer.limiter().set_quota(quota).unwrap();
        advance(quota.emission_interval() * quota.burst()).await;
        for i in 0..quota.burst() {
            assert_eq!(svc.ready().await.unwrap().call(i).await.unwrap(), i);
        }
        let err = downcast(svc.ready().await.unwrap().call(99).await.unwrap_err());
        assert_eq!(err.quota(), quota, "the service decides with the new quota");
    }

    // Shadow mode: the refusal is reported with the new quota, the call passes.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = RateLimitLayer::new(Quota::per_hour(1))
        .shadow()
        .observer(move |e: &Event<'_>| {
            if let Event::Limited { error, .. } = e {
                log.lock().unwrap().push(error.quota());
            }
        });
    let mut svc = limited(layer.clone());
    svc.ready().await.unwrap().call(1).await.unwrap();
    layer.limiter().set_quota(Quota::per_day(1)).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(*seen.lock().unwrap(), [Quota::per_day(1)]);

    // Several quotas: decided as the limiter decides, changes included.
    let limiter = Arc::new(Limiter::new(Quota::per_second(10)).and(Quota::per_minute(2)));
    let mut svc = limited(RateLimitLayer::with_limiter(limiter.clone()).reject());
    for i in 0..2 {
        svc.ready().await.unwrap().call(i).await.unwrap();
    }
    let err = downcast(svc.ready().await.unwrap().call(2).await.unwrap_err());
    assert_eq!(err.quota(), Quota::per_minute(2));
    limiter
        .set_quotas([Quota::per_second(10), Quota::per_minute(3)])
        .unwrap();
    advance(Duration::from_secs(20)).await;
    svc.ready().await.unwrap().call(3).await.unwrap();
    let err = downcast(svc.ready().await.unwrap().call(4).await.unwrap_err());
    assert_eq!(err.quota(), Quota::per_minute(3));
}

// ---------------------------------------------------------------------------
// Cost.

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn by_cost_waits_for_the_cost_quota_and_never_for_the_impossible() {
    use tower::{BoxError, ServiceExt, service_fn};
    use tower_sluice::{ExceedsBurst, Limiter, Quota, RateLimitLayer};

    // 100 requests a second and 1 000 bytes a second; a caller waits up to 2 s.
    let limiter =
        Limiter::new(Quota::per_second(100)).and(Quota::per_second(1_000).counting("bytes"));
    let layer = RateLimitLayer::with_limiter(std::sync::Arc::new(limiter))
        .max_wait(std::time::Duration::from_secs(2))
        .cost(|body: &Vec<u8>| body.len() as u32);
    let limiter = layer.limiter().clone();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|body: Vec<u8>| async move {
            Ok::<_, BoxError>(body.len())
        }));
    let start = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(vec![0; 1_000]).await.unwrap(), 1_000);
    // 500 bytes more wait half a second.
    assert_eq!(svc.clone().oneshot(vec![0; 500]).await.unwrap(), 500);
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(500));
    // More than the burst: an error at once, never a wait.
    let err = svc.clone().oneshot(vec![0; 1_001]).await.unwrap_err();
    assert!(err.is::<ExceedsBurst>());
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(500));
    // Cost 0 passes at once without a charge.
    svc.clone().oneshot(Vec::new()).await.unwrap();
    assert_eq!(
        limiter.states()[0].remaining(),
        99,
        "the free request charged no request"
    );
    // A waiting request dropped before its turn gives its bytes back.
    let waiting = svc.clone().oneshot(vec![0; 800]);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), waiting).await;
    assert!(
        limiter.peek_cost(1_000).unwrap().retry_after() <= std::time::Duration::from_millis(900)
    );
    // Four of 1 000 bytes at once: sent at 0, 1 s and 2 s; the fourth would wait 3 s.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    let start = tokio::time::Instant::now();
    let kb = || svc.clone().oneshot(vec![0; 1_000]);
    let (a, b, c, d) = tokio::join!(kb(), kb(), kb(), kb());
    assert!(a.is_ok() && b.is_ok() && c.is_ok());
    assert!(d.unwrap_err().is::<tower_sluice::RateLimited>());
    assert_eq!(start.elapsed(), std::time::Duration::from_secs(2));
}
