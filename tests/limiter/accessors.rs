//! What a quota, a rate limit error and a `check_all` refusal report:
//! the quota's parts, which limit refused, how long to wait.

use std::time::Duration;

use tower_sluice::limits::check_all;
use tower_sluice::{Limiter, Quota};

#[test]
fn a_refusal_names_the_limit_needing_the_longest_wait() {
    let (user, global) = (
        Limiter::new(Quota::per_minute(1)),
        Limiter::new(Quota::per_hour(1)),
    );
    check_all(&[&user, &global]).unwrap();
    // Both refuse now; the global limit needs the longer wait.
    let refused = check_all(&[&user, &global]).unwrap_err();
    assert_eq!(refused.index(), 1);
    assert!(refused.retry_after() > Duration::from_secs(3599));
    assert!(refused.retry_after() <= Duration::from_secs(3600));
}

#[test]
fn a_refusal_by_a_quota_carries_its_rate_limit_error() {
    let limiter = Limiter::new(Quota::per_minute(1));
    check_all(&[&limiter]).unwrap();
    let refused = check_all(&[&limiter]).unwrap_err();
    assert_eq!(refused.index(), 0);
    let limited = refused.rate_limited().expect("a quota refused");
    assert_eq!(limited.quota(), Quota::per_minute(1));
    assert_eq!(limited.retry_after(), refused.retry_after());
}

#[test]
fn a_quota_reports_its_parts_with_the_defaults() {
    let q = Quota::per_hour(60);
    assert_eq!(q.limit(), 60);
    assert_eq!(q.period(), Duration::from_secs(3600));
    assert_eq!(q.burst(), 60, "the burst is the limit by default");
    assert_eq!(Quota::per_hour(60).with_burst(5).burst(), 5);
    assert_eq!(q.unit(), "requests");
    assert!(q.counts_requests());
    assert_eq!(q.calendar(), None, "a rolling quota");
    assert_eq!(q.emission_interval(), Duration::from_secs(60));

    let bytes = Quota::per_second(10_000).counting("bytes");
    assert_eq!(bytes.unit(), "bytes");
    assert!(!bytes.counts_requests());
    assert_eq!(
        Quota::per_calendar_day(10).calendar(),
        Some(tower_sluice::Calendar::Day)
    );
}

#[test]
fn the_emission_interval_rounds_up_to_the_nanosecond() {
    // 1 s / 3 is 333_333_333.3 ns: rounded up, three never take less than 1 s.
    let t = Quota::per_second(3).emission_interval();
    assert_eq!(t, Duration::from_nanos(333_333_334));
    assert!(t * 3 >= Duration::from_secs(1));
}

#[test]
fn a_rate_limit_error_reports_the_wait_and_the_quota_state() {
    let limiter = Limiter::new(Quota::per_minute(60).with_burst(2));
    limiter.check();
    limiter.check();
    let err = limiter.check().into_result().unwrap_err();
    assert_eq!(err.limit(), 60);
    assert_eq!(err.remaining(), 0);
    assert_eq!(err.quota(), Quota::per_minute(60).with_burst(2));
    assert_eq!(err.policy(), None, "a limiter has no policy name");
    // One slot comes back in a second, both within two.
    assert!(err.retry_after() > Duration::ZERO);
    assert!(err.retry_after() <= Duration::from_secs(1));
    assert!(err.reset_after() > err.retry_after());
    assert!(err.reset_after() <= Duration::from_secs(2));

    let minute = Limiter::new(Quota::per_minute(1));
    minute.check();
    let err = minute.check().into_result().unwrap_err();
    assert!(err.retry_after() > Duration::from_secs(59));
}

#[test]
fn a_costly_request_denied_leaves_remaining_for_cheaper_ones() {
    let limiter = Limiter::new(Quota::per_minute(60).with_burst(10));
    limiter.check_n(7).unwrap().into_result().unwrap();
    let err = limiter.check_n(5).unwrap().into_result().unwrap_err();
    assert_eq!(err.remaining(), 3);
}

#[test]
fn a_rate_limit_error_names_the_quota_that_ran_out() {
    let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_day(1));
    limiter.check();
    let err = limiter.check().into_result().unwrap_err();
    assert_eq!(err.quota(), Quota::per_day(1));
    assert_eq!(err.limit(), 1);
}

#[test]
fn a_cost_over_the_burst_reports_the_cost_and_the_quota() {
    let q = Quota::per_second(5);
    let err = Limiter::new(q).check_n(6).unwrap_err();
    assert_eq!(err.cost(), 6);
    assert_eq!(err.quota(), q);
}

#[test]
fn a_decision_reports_its_quota_what_remains_and_its_times() {
    let limiter = Limiter::new(Quota::per_minute(60).with_burst(10));
    let first = limiter.check();
    assert!(first.is_allowed());
    assert_eq!(first.limit(), 60);
    assert_eq!(first.quota(), Quota::per_minute(60).with_burst(10));
    assert_eq!(first.remaining(), 9);
    assert_eq!(first.retry_after(), Duration::ZERO);
    // One request used: full again after one emission interval (1 s).
    let reset = first.reset_after();
    assert!(reset > Duration::from_millis(990) && reset <= Duration::from_secs(1));
    assert_eq!(limiter.check().remaining(), 8);

    // A denial waits about one interval; with several quotas the one that
    // ran out decides.
    let limiter = Limiter::new(Quota::per_minute(1));
    limiter.check();
    let denied = limiter.check();
    assert!(!denied.is_allowed());
    assert!(denied.retry_after() > Duration::from_secs(59));
    assert!(denied.retry_after() <= Duration::from_secs(60));
    let limiter = Limiter::new(Quota::per_second(10)).and(Quota::per_day(1));
    assert_eq!(
        limiter.quotas().collect::<Vec<_>>(),
        [Quota::per_second(10), Quota::per_day(1)],
        "in the order they were added"
    );
    limiter.check();
    assert_eq!(limiter.check().quota(), Quota::per_day(1));
}
