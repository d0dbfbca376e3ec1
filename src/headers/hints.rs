//! The waits a response asks for: [`response_hints`] reads `Retry-After`,
//! `RateLimit`, `X-RateLimit-Reset` and `grpc-retry-pushback-ms`.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::integer;

/// What a response says about retrying.
///
/// # Examples
///
/// ```
/// use http::HeaderMap;
/// use tower_sluice::retry::{response_hints, Hint};
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(response_hints(&headers), Hint::None);
/// headers.insert("grpc-retry-pushback-ms", "-1".parse().unwrap());
/// assert_eq!(response_hints(&headers), Hint::Stop);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hint {
    /// Nothing.
    None,
    /// Wait at least this long.
    After(Duration),
    /// Do not retry (a negative or unparsable `grpc-retry-pushback-ms`).
    Stop,
}

/// The wait a response's headers ask for, as the upstream said it: the
/// layers cut it to their bound ([`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT)
/// by default). Numbers are digits only (`+5` is malformed) and saturate.
///
/// * `grpc-retry-pushback-ms`: milliseconds; negative or unparsable
///   (`+100` included) means [`Hint::Stop`]. Wins over the others.
/// * `Retry-After`: delay-seconds, or an HTTP-date taken relative to the
///   response's `Date` (or to this machine's clock without one), which
///   limits clock skew. A negative value or a date in the past is 0; a
///   malformed value (`+5`, `1.5`) is ignored.
/// * `RateLimit` (draft-ietf-httpapi-ratelimit-headers): the largest `t`
///   of the items with `r=0` (or without `r`).
/// * `X-RateLimit-Reset`: seconds, or a Unix time when it is larger than
///   10⁹ (taken relative to `Date`, as above).
///
/// The first of the last three that is present and valid is used.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_sluice::retry::{response_hints, Hint};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "3".parse().unwrap());
/// assert_eq!(response_hints(&headers), Hint::After(Duration::from_secs(3)));
/// headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT".parse().unwrap());
/// headers.insert("date", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
/// assert_eq!(response_hints(&headers), Hint::After(Duration::from_secs(10)));
/// ```
pub fn response_hints(headers: &HeaderMap) -> Hint {
    if let Some(v) = headers.get("grpc-retry-pushback-ms") {
        return match v.to_str().ok().and_then(|s| integer(s.trim())) {
            Some(ms) if ms >= 0 => Hint::After(Duration::from_millis(ms.unsigned_abs())),
            _ => Hint::Stop,
        };
    }
    let now = || super::fields::response_now(headers);
    if let Some(d) = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| retry_after(s.trim(), now))
    {
        return Hint::After(d);
    }
    if let Some(d) = headers
        .get(super::fields::RATELIMIT)
        .and_then(|v| v.to_str().ok())
        .and_then(ratelimit_t)
    {
        return Hint::After(d);
    }
    if let Some(d) = headers
        .get(super::fields::X_RATELIMIT_RESET)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| integer(s.trim()))
    {
        return Hint::After(super::fields::reset_delay(d, now));
    }
    Hint::None
}

fn retry_after(s: &str, now: impl FnOnce() -> SystemTime) -> Option<Duration> {
    if let Some(secs) = integer(s) {
        return Some(Duration::from_secs(secs.max(0).unsigned_abs()));
    }
    let at = httpdate::parse_http_date(s).ok()?;
    Some(at.duration_since(now()).unwrap_or(Duration::ZERO))
}

/// The largest `t` among `RateLimit` items that have no requests left.
fn ratelimit_t(s: &str) -> Option<Duration> {
    super::fields::ratelimit_items(s)
        .filter_map(|(r, t)| matches!(r, None | Some(0)).then_some(t?))
        .max()
        .map(Duration::from_secs)
}
