//! What a `check_all` refusal reports: which limit refused, how long to
//! wait, and the rate limit error behind it.

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
