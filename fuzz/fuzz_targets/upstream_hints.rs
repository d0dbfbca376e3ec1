//! Every public reader of upstream hints over responses with arbitrary
//! status and header values: `retry::response_hints` (`Retry-After`,
//! `RateLimit`, `X-RateLimit-Reset`, `grpc-retry-pushback-ms`),
//! `classify::upstream_quota` (`RateLimit`, `X-RateLimit-*`,
//! `RateLimit-*`), and the classifiers that read them (`HttpRetry`,
//! `HttpStatus`). No panic; the classifiers agree with the readers; no
//! wait is longer than what the response wrote (a number of seconds in a
//! field, or the span of HTTP dates).

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_sluice::BoxError;
use tower_sluice::classify::{Classify, HttpStatus, Outcome, upstream_quota};
use tower_sluice::retry::{Hint, HttpRetry, response_hints};

const NAMES: [&str; 11] = [
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "grpc-retry-pushback-ms",
    "grpc-status",
    "date",
];

/// From 1970 to the end of year 9999, the span of HTTP dates.
const DATE_SPAN: Duration = Duration::from_secs(253_402_300_800);

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    status: u16,
    fields: Vec<(u8, &'a [u8])>,
}

/// The largest run of digits in any value, as seconds (saturating).
fn largest_number(res: &Response<()>) -> Duration {
    let mut largest = 0u64;
    for value in res.headers().values() {
        for run in value.as_bytes().split(|b| !b.is_ascii_digit()) {
            let n = run.iter().fold(0u64, |n, b| {
                n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
            });
            largest = largest.max(n);
        }
    }
    Duration::from_secs(largest)
}

fuzz_target!(|input: Input<'_>| {
    let status = StatusCode::from_u16(100 + input.status % 500).unwrap();
    let mut res = Response::builder().status(status).body(()).unwrap();
    for (name, value) in &input.fields {
        let name = HeaderName::from_static(NAMES[usize::from(*name) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            res.headers_mut().append(name, value);
        }
    }
    let bound = largest_number(&res).max(DATE_SPAN);

    let hint = response_hints(res.headers());
    let wait = match hint {
        Hint::After(d) => {
            assert!(d <= bound, "{d:?} beyond what {res:?} wrote");
            Some(d)
        }
        _ => None,
    };
    let quota = upstream_quota(res.headers());
    if let Some(u) = quota {
        assert!(u.reset <= bound, "{u:?} beyond what {res:?} wrote");
    }

    let result: Result<Response<()>, BoxError> = Ok(res);
    let verdict = HttpRetry.verdict(&result);
    if matches!(verdict.outcome(), Outcome::Failure | Outcome::Overloaded) {
        if hint == Hint::Stop {
            assert!(verdict.is_do_not_retry(), "{verdict:?} {hint:?}");
        }
        if let Some(w) = verdict.retry_after() {
            assert!(wait.is_some_and(|d| w <= d), "{verdict:?} {hint:?}");
        }
    } else {
        assert_eq!(verdict.retry_after(), None);
    }

    let feedback = HttpStatus.verdict(&result);
    assert_eq!(feedback.outcome(), HttpStatus.classify(&result));
    if let Some(w) = feedback.retry_after() {
        assert!(
            matches!(feedback.outcome(), Outcome::Failure | Outcome::Overloaded),
            "{feedback:?}"
        );
        assert!(wait.is_some_and(|d| w <= d), "{feedback:?} {hint:?}");
    }
    if let Some(u) = feedback.upstream() {
        assert!(u.reset <= bound, "{u:?}");
        // Read again a moment later: a reset given as a time of day (with
        // no `Date` field) is relative to this machine's clock.
        let q = quota.expect("the classifier read a quota the reader did not");
        assert_eq!(u.remaining, q.remaining);
        assert!(
            u.reset <= q.reset && q.reset - u.reset < Duration::from_secs(1),
            "{u:?} {q:?}"
        );
    }
});
