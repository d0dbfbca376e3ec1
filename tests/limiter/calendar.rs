//! Calendar quotas on tokio's paused clock: boundaries crossed exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower_sluice::limits::check_all;
use tower_sluice::per_key::Policy;
use tower_sluice::{Calendar, Limiter, PerKeyLayer, Quota, RateLimited, calendar};

const S: Duration = Duration::from_secs(1);

/// UTC `y-m-d h:mi:s` as a `SystemTime` (a small model, independent of the
/// crate's conversion: days counted year by year and month by month).
fn utc(y: i64, m: u32, d: u32, h: u64, mi: u64, s: u64) -> SystemTime {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = 0u64;
    for year in 1970..y {
        days += if leap(year) { 366 } else { 365 };
    }
    let lens = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += lens[..(m - 1) as usize].iter().sum::<u64>();
    days += u64::from(d - 1);
    UNIX_EPOCH + Duration::from_secs(days * 86_400 + h * 3_600 + mi * 60 + s)
}

/// Spends `limiter` down to zero, checks a refusal waits exactly `left`,
/// crosses the boundary and checks the count starts again.
async fn crosses(limiter: &Limiter, limit: u32, left: Duration) {
    for _ in 0..limit {
        assert!(limiter.check().is_allowed());
    }
    let denied = limiter.check();
    assert!(!denied.is_allowed());
    assert_eq!(denied.retry_after(), left);
    assert_eq!(denied.reset_after(), left);
    assert_eq!(denied.remaining(), 0);
    tokio::time::advance(left - Duration::from_nanos(1)).await;
    assert!(!limiter.check().is_allowed(), "one nanosecond early");
    tokio::time::advance(Duration::from_nanos(1)).await;
    let fresh = limiter.check();
    assert!(fresh.is_allowed(), "the boundary resets the count");
    assert_eq!(fresh.remaining(), limit - 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_minute_resets_on_the_minute() {
    calendar::set_test_utc(utc(2024, 5, 17, 10, 41, 45));
    let limiter = Limiter::new(Quota::per_calendar_minute(5));
    crosses(&limiter, 5, 15 * S).await;
    // The next minute is a whole minute long.
    assert_eq!(limiter.check().reset_after(), 60 * S);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_hour_resets_on_the_hour() {
    calendar::set_test_utc(utc(2024, 5, 17, 10, 59, 0));
    let limiter = Limiter::new(Quota::per_calendar_hour(3));
    crosses(&limiter, 3, 60 * S).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_day_resets_at_midnight_utc_after_feb_29() {
    // 2024 is a leap year: Feb 29 is a day of its own.
    calendar::set_test_utc(utc(2024, 2, 28, 23, 0, 0));
    let limiter = Limiter::new(Quota::per_calendar_day(2));
    crosses(&limiter, 2, 3_600 * S).await;
    // Now Feb 29, 00:00:00: its day ends 24 h later, on Mar 1.
    let d = limiter.check();
    assert_eq!(d.reset_after(), 86_400 * S);
    let usage = limiter.usage();
    assert_eq!(usage[0].resets_at(), utc(2024, 3, 1, 0, 0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_month_resets_on_the_first() {
    // February 2024 has 29 days: from Feb 10 noon, 19.5 days to Mar 1.
    calendar::set_test_utc(utc(2024, 2, 10, 12, 0, 0));
    let limiter = Limiter::new(Quota::per_calendar_month(1_000_000));
    assert!(limiter.check_n(1_000_000).unwrap().is_allowed());
    let denied = limiter.check();
    let to_march = Duration::from_secs(19 * 86_400 + 12 * 3_600);
    assert_eq!(denied.retry_after(), to_march);
    let month = limiter.usage()[0];
    assert_eq!((month.used(), month.remaining()), (1_000_000, 0));
    assert_eq!(month.resets_at(), utc(2024, 3, 1, 0, 0, 0));
    assert_eq!(month.resets_in(), to_march);
    tokio::time::advance(to_march).await;
    assert!(limiter.check().is_allowed());
    // March has 31 days.
    assert_eq!(limiter.usage()[0].resets_at(), utc(2024, 4, 1, 0, 0, 0));
    assert_eq!(limiter.usage()[0].used(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn december_rolls_over_into_january() {
    calendar::set_test_utc(utc(2025, 12, 31, 23, 59, 59));
    let limiter = Limiter::new(Quota::per_calendar_month(1))
        .and(Quota::per_calendar_day(1))
        .and(Quota::per_calendar_hour(1))
        .and(Quota::per_calendar_minute(1));
    assert!(limiter.check().is_allowed());
    let denied = limiter.check();
    assert_eq!(denied.retry_after(), S);
    tokio::time::advance(S).await;
    // 2026-01-01 00:00:00: every period starts again at once.
    assert!(limiter.check().is_allowed());
    let ends: Vec<SystemTime> = limiter.usage().iter().map(|u| u.resets_at()).collect();
    assert_eq!(
        ends,
        [
            utc(2026, 2, 1, 0, 0, 0),
            utc(2026, 1, 2, 0, 0, 0),
            utc(2026, 1, 1, 1, 0, 0),
            utc(2026, 1, 1, 0, 1, 0),
        ]
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refusal_consumes_nothing_across_rolling_and_calendar() {
    calendar::set_test_utc(utc(2024, 6, 1, 8, 0, 0));
    // 10 a second rolling AND 12 a calendar minute.
    let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_calendar_minute(12));
    assert!(limiter.check_n(10).unwrap().is_allowed());
    // Refused by the rolling quota: the minute's count is untouched.
    let d = limiter.check();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), Quota::per_second(10));
    assert_eq!(limiter.usage()[0].used(), 10);
    tokio::time::advance(S).await;
    // Refused by the calendar quota (3 > 2 left): the bucket is untouched.
    let d = limiter.check_n(3).unwrap();
    assert!(!d.is_allowed());
    assert_eq!(d.quota(), Quota::per_calendar_minute(12));
    assert_eq!(d.retry_after(), 59 * S);
    // Peeking at one more: 1 left after it (the tighter of 9 and 1).
    assert_eq!(limiter.peek().remaining(), 1);
    assert!(limiter.check_n(2).unwrap().is_allowed());
    assert_eq!(limiter.usage()[0].used(), 12);
    // The same through check_all, beside a per-key calendar quota.
    let layer = PerKeyLayer::new(Quota::per_calendar_hour(1), |k: &u8| Some(*k));
    let users = layer.handle();
    let global = Limiter::new(Quota::per_calendar_day(100));
    check_all(&[&users.limit(&1), &global]).unwrap();
    let refused = check_all(&[&users.limit(&1), &global]).unwrap_err();
    let limited: &RateLimited = refused.rate_limited().unwrap();
    // 08:00:01: 59 min 59 s to the hour.
    assert_eq!(limited.retry_after(), 3_599 * S);
    assert_eq!(global.usage()[0].used(), 1, "the refusal charged nothing");
    assert_eq!(users.usage(&1)[0].used(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn per_key_usage_and_reset() {
    calendar::set_test_utc(utc(2024, 1, 31, 23, 59, 0));
    let policy = Policy::new(Quota::per_minute(600))
        .and(Quota::per_calendar_month(3))
        .unwrap();
    let layer = PerKeyLayer::new(policy, |k: &&str| Some(k.to_string()));
    let h = layer.handle();
    let ann = "ann".to_string();
    for _ in 0..3 {
        check_all(&[&h.limit(&ann)]).unwrap();
    }
    assert!(check_all(&[&h.limit(&ann)]).is_err());
    let month = h.usage(&ann)[0];
    assert_eq!(month.quota().calendar(), Some(Calendar::Month));
    assert_eq!((month.used(), month.remaining()), (3, 0));
    assert_eq!(month.resets_at(), utc(2024, 2, 1, 0, 0, 0));
    tokio::time::advance(60 * S).await;
    assert_eq!(h.usage(&ann)[0].used(), 0, "a new month");
    check_all(&[&h.limit(&ann)]).unwrap();
    assert_eq!(h.usage(&ann)[0].resets_at(), utc(2024, 3, 1, 0, 0, 0));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_waiting_layer_waits_for_the_next_window() {
    use tower::{ServiceExt, service_fn};
    calendar::set_test_utc(utc(2024, 5, 17, 10, 41, 50));
    let layer = tower_sluice::RateLimitLayer::new(Quota::per_calendar_minute(2));
    let svc = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: ()| async { Ok::<_, tower::BoxError>(()) }));
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        svc.clone().oneshot(()).await.unwrap();
    }
    // The third waited for 10:42:00.
    assert_eq!(start.elapsed(), 10 * S);
}

/// Many threads charge one calendar quota at once: exactly its limit
/// passes, never more.
#[test]
fn threads_never_exceed_a_calendar_quota() {
    for _ in 0..20 {
        let limiter = Arc::new(
            Limiter::new(Quota::per_calendar_day(1_000)).and(Quota::per_calendar_month(1_200)),
        );
        let admitted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (limiter, admitted) = (limiter.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..400 {
                        let cost = 1 + (i % 3);
                        if limiter.check_n(cost).unwrap().is_allowed() {
                            admitted.fetch_add(u64::from(cost), Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let admitted = admitted.load(Ordering::Relaxed);
        let used = limiter.usage()[0].used();
        // Unless a day boundary fell inside the test, every unit counted.
        if limiter.usage()[0].resets_in() > Duration::from_secs(60) {
            assert_eq!(u64::from(used), admitted);
            assert!(admitted <= 1_000, "{admitted}");
            assert!(admitted >= 998, "costs of 1 fill the rest: {admitted}");
        }
    }
}
