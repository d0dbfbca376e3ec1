//! Quotas of cost on the calendar: 60 requests a minute, 100 000 tokens a
//! minute and 1 000 000 tokens a calendar day, decided together on tokio's
//! paused clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower::{BoxError, ServiceExt, service_fn};
use tower_sluice::per_key::Policy;
use tower_sluice::{Calendar, ExceedsBurst, Limiter, PerKeyLayer, Quota, RateLimited, calendar};

const S: Duration = Duration::from_secs(1);
const MIN: Duration = Duration::from_secs(60);

/// 2024-03-10 `h:mi:00` UTC (1 710 028 800 s is 2024-03-10 00:00 UTC).
fn march_10(h: u64, mi: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_710_028_800 + h * 3_600 + mi * 60)
}

fn requests() -> Quota {
    Quota::per_minute(60)
}

fn tokens() -> Quota {
    Quota::per_minute(100_000).counting("tokens")
}

fn daily() -> Quota {
    Quota::per_calendar_day(1_000_000).counting("tokens")
}

#[test]
fn the_daily_token_quota_parses_displays_and_round_trips() {
    let q = daily();
    assert_eq!(q.unit(), "tokens");
    assert_eq!(q.calendar(), Some(Calendar::Day));
    assert_eq!(q.to_string(), "1000000 tokens/calendar-day");
    assert_eq!("1000000 tokens/calendar-day".parse::<Quota>(), Ok(q));
    let month = Quota::per_calendar_month(1_000_000).counting("tokens");
    assert_eq!(month.to_string(), "1000000 tokens/calendar-month");
    assert_eq!(month.to_string().parse::<Quota>(), Ok(month));
    // Counting a unit keeps the calendar, and a calendar keeps the unit.
    assert_ne!(month, Quota::per_calendar_month(1_000_000));
    assert!(!month.counts_requests());
    assert_eq!(month.burst(), 1_000_000);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_limiter_charges_requests_one_and_token_quotas_the_cost() {
    calendar::set_test_utc(march_10(23, 40));
    let limiter = Limiter::new(requests()).and(tokens()).and(daily());

    let d = limiter.check_cost(60_000).unwrap();
    assert!(d.is_allowed());
    let left: Vec<u32> = limiter.states().iter().map(|d| d.remaining()).collect();
    assert_eq!(left, [59, 40_000, 940_000]);
    assert_eq!(limiter.usage()[0].used(), 60_000);

    // Refused by the minute's tokens (40 000 left): nothing is charged.
    let d = limiter.check_cost(50_000).unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), tokens());
    assert_eq!(d.remaining(), 40_000);
    assert_eq!(d.retry_after(), 6 * S, "10 000 tokens at 100 000 a minute");
    let left: Vec<u32> = limiter.states().iter().map(|d| d.remaining()).collect();
    assert_eq!(left, [59, 40_000, 940_000]);

    // Nine full minutes of 100 000 tokens: 960 000 used today.
    for _ in 0..9 {
        tokio::time::advance(MIN).await;
        assert!(limiter.check_cost(100_000).unwrap().is_allowed());
    }
    tokio::time::advance(MIN).await; // 23:50
    let day = limiter.usage()[0];
    assert_eq!((day.used(), day.remaining()), (960_000, 40_000));
    assert_eq!(day.resets_at(), march_10(24, 0));

    // Refused by the day: the minute has room, the day 40 000 left, and
    // the day resets at midnight, 10 minutes away.
    let d = limiter.check_cost(50_000).unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), daily());
    assert_eq!(d.remaining(), 40_000);
    assert_eq!(d.retry_after(), 10 * MIN);
    assert_eq!(d.reset_after(), 10 * MIN);
    assert!(!limiter.peek_cost(40_001).unwrap().is_allowed());
    assert!(limiter.check_cost(40_000).unwrap().is_allowed());
    assert!(!limiter.check_cost(1).unwrap().is_allowed());
    // Cost 0 passes, charging nothing.
    assert!(limiter.check_cost(0).unwrap().is_allowed());
    assert_eq!(limiter.usage()[0].used(), 1_000_000);

    // More tokens than the minute's burst can never pass.
    let err = limiter.check_cost(100_001).unwrap_err();
    assert_eq!(err.quota(), tokens());

    // Midnight: a new day, whatever the minute's bucket says.
    tokio::time::advance(10 * MIN).await;
    assert!(limiter.check_cost(100_000).unwrap().is_allowed());
    let day = limiter.usage()[0];
    assert_eq!(day.used(), 100_000);
    assert_eq!(day.resets_at(), march_10(48, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_request_quota_counts_requests_not_tokens() {
    calendar::set_test_utc(march_10(12, 0));
    let limiter = Limiter::new(requests()).and(tokens()).and(daily());
    for _ in 0..60 {
        assert!(limiter.check_cost(10).unwrap().is_allowed());
    }
    // The 61st request is refused by the request quota, 600 tokens in.
    let d = limiter.check_cost(10).unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), requests());
    assert_eq!(d.retry_after(), S);
    assert_eq!(limiter.usage()[0].used(), 600);
    // check_n charges a batch to every quota, requests included.
    tokio::time::advance(2 * S).await;
    assert!(limiter.check_n(2).unwrap().is_allowed());
    assert_eq!(limiter.usage()[0].used(), 602);
}

type Req = (&'static str, u32);

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_per_key_layer_charges_each_key_its_tokens_per_calendar_day() {
    calendar::set_test_utc(march_10(23, 54));
    let policy = Policy::new(requests())
        .and(tokens())
        .unwrap()
        .and(daily())
        .unwrap();
    assert_eq!(policy.max_cost(), 100_000);
    let layer = PerKeyLayer::new(policy, |r: &Req| Some(r.0)).cost(|r: &Req| r.1);
    let handle = layer.handle();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|r: Req| async move { Ok::<_, BoxError>(r.1) }));
    let call = |r: Req| svc.clone().oneshot(r);

    // ann spends 100 000 tokens a minute for 5 minutes (23:54 to 23:58).
    for _ in 0..5 {
        assert_eq!(call(("ann", 100_000)).await.unwrap(), 100_000);
        tokio::time::advance(MIN).await;
    }
    // 23:59:59: ann's minute is full again, but 500 000 tokens of the
    // day are spent: 600 000 more are refused by the minute first (an
    // error: more than its burst), 100 000 pass.
    tokio::time::advance(59 * S).await;
    let err = call(("ann", 600_000)).await.unwrap_err();
    let err = err.downcast_ref::<ExceedsBurst>().expect("413");
    assert_eq!((err.cost(), err.quota()), (600_000, tokens()));
    assert!(call(("ann", 100_000)).await.is_ok());
    assert_eq!(handle.usage(&"ann")[0].used(), 600_000);
    // bob has his own day.
    assert!(call(("bob", 100_000)).await.is_ok());
    assert_eq!(handle.usage(&"bob")[0].used(), 100_000);

    // A request refused by the tokens per minute charges nothing.
    let err = call(("ann", 1)).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("a refusal");
    assert_eq!(limited.quota(), tokens());
    assert_eq!(handle.usage(&"ann")[0].used(), 600_000);
    // Cost 0 is free.
    assert!(call(("ann", 0)).await.is_ok());

    // Midnight: ann's day starts again.
    tokio::time::advance(S).await;
    assert_eq!(handle.usage(&"ann")[0].used(), 0);
    assert_eq!(handle.usage(&"ann")[0].resets_at(), march_10(48, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_per_key_layer_refuses_by_the_day_until_midnight() {
    calendar::set_test_utc(march_10(14, 0));
    // A small day, to spend it quickly: 250 000 tokens.
    let daily = Quota::per_calendar_day(250_000).counting("tokens");
    let policy = Policy::new(requests())
        .and(tokens())
        .unwrap()
        .and(daily)
        .unwrap();
    let layer = PerKeyLayer::new(policy, |r: &Req| Some(r.0)).cost(|r: &Req| r.1);
    let handle = layer.handle();
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|r: Req| async move { Ok::<_, BoxError>(r.1) }));
    for _ in 0..2 {
        svc.clone().oneshot(("ann", 100_000)).await.unwrap();
        tokio::time::advance(MIN).await;
    }
    // 14:02: 50 000 left today; 60 000 are refused until midnight.
    let err = svc.clone().oneshot(("ann", 60_000)).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().expect("a refusal");
    assert_eq!(limited.quota(), daily);
    assert_eq!(limited.remaining(), 50_000);
    assert_eq!(limited.retry_after(), 10 * 3_600 * S - 2 * MIN);
    let usage = handle.usage(&"ann")[0];
    assert_eq!((usage.used(), usage.remaining()), (200_000, 50_000));
    svc.clone().oneshot(("ann", 50_000)).await.unwrap();
    assert_eq!(handle.usage(&"ann")[0].remaining(), 0);
}
