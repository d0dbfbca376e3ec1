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

pub(super) fn retry_after(s: &str, now: impl FnOnce() -> SystemTime) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(pairs: &[(&'static str, &'static str)]) -> Hint {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        response_hints(&h)
    }

    #[test]
    fn parses_the_fields() {
        let s = |n| Hint::After(Duration::from_secs(n));
        assert_eq!(hint(&[("retry-after", "7")]), s(7));
        assert_eq!(hint(&[("retry-after", "-3")]), s(0));
        assert_eq!(hint(&[("retry-after", "soon")]), Hint::None);
        assert_eq!(
            hint(&[
                ("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT")
            ]),
            s(0)
        );
        assert_eq!(
            hint(&[("ratelimit", r#""per-minute";r=0;t=12, "per-day";r=5;t=800"#)]),
            s(12)
        );
        assert_eq!(
            hint(&[("ratelimit", r#""per-minute";r=3;t=12"#)]),
            Hint::None
        );
        assert_eq!(hint(&[("x-ratelimit-reset", "4")]), s(4));
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset", "1445412500"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT")
            ]),
            s(20)
        );
        assert_eq!(
            hint(&[("grpc-retry-pushback-ms", "250"), ("retry-after", "9")]),
            Hint::After(Duration::from_millis(250))
        );
        assert_eq!(hint(&[("grpc-retry-pushback-ms", "-1")]), Hint::Stop);
        assert_eq!(hint(&[("grpc-retry-pushback-ms", "x")]), Hint::Stop);
        // The grammars are digits only: a `+` is malformed.
        assert_eq!(hint(&[("grpc-retry-pushback-ms", "+100")]), Hint::Stop);
        assert_eq!(hint(&[("retry-after", "+5")]), Hint::None);
        assert_eq!(
            hint(&[("retry-after", "+5"), ("x-ratelimit-reset", "2")]),
            s(2)
        );
        assert_eq!(hint(&[("x-ratelimit-reset", "+4")]), Hint::None);
        assert_eq!(hint(&[("ratelimit", r#""a";r=0;t=+12"#)]), Hint::None);
        // Huge values saturate; the layers cap them.
        assert_eq!(
            hint(&[("retry-after", "99999999999999999999999")]),
            s(i64::MAX as u64)
        );
        assert_eq!(
            hint(&[("grpc-retry-pushback-ms", "99999999999999999999")]),
            Hint::After(Duration::from_millis(i64::MAX as u64))
        );
        assert!(matches!(
            hint(&[("x-ratelimit-reset", "9223372036854775807")]),
            Hint::After(d) if d > Duration::from_secs(1 << 40)
        ));
        // A malformed Retry-After falls through to the next field.
        assert_eq!(
            hint(&[("retry-after", "1.5"), ("x-ratelimit-reset", "2")]),
            s(2)
        );
    }
}
