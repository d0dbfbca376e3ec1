//! The header codec: the rate-limit fields a limiter writes ([`fields`]:
//! `Retry-After`, `RateLimit-Policy`, `RateLimit`, `X-RateLimit-*`), the
//! waits an upstream's answer asks for (`hints`), the one bound on every
//! wait taken from an upstream ([`MAX_UPSTREAM_WAIT`]), what an AI
//! provider says about its request and token budgets (`provider`), and the
//! grammar of the numbers in those fields.

use std::time::Duration;

#[cfg(feature = "http")]
pub mod fields;
#[cfg(feature = "http")]
pub(crate) mod hints;
#[cfg(feature = "http")]
mod kept;
#[cfg(feature = "http")]
pub(crate) mod provider;

/// The default bound on every wait an upstream can impose on a client: 60
/// seconds.
///
/// A wait taken from an upstream (`Retry-After`, the `t` of an IETF
/// `RateLimit` field, `X-RateLimit-Reset`, `grpc-retry-pushback-ms`,
/// [`RateLimited::retry_after`](crate::RateLimited::retry_after), or a
/// quota the upstream says is spent until its reset) is cut to this bound,
/// so that a wrong or hostile answer cannot hold requests for a day. Each
/// layer that reads such hints has a setter to change it:
/// [`AimdLayer::max_pause`](crate::AimdLayer::max_pause) and
/// [`BackoffRetryLayer::max_retry_after`](crate::BackoffRetryLayer::max_retry_after).
/// Arithmetic on an upstream's numbers saturates, and a malformed value
/// (one that is not digits, such as `+5`) is ignored.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::AimdLayer;
/// use tower_sluice::{MAX_UPSTREAM_WAIT, Quota};
///
/// assert_eq!(MAX_UPSTREAM_WAIT, Duration::from_secs(60));
/// // An upstream whose daily quota resets at midnight: wait for it, up to an hour.
/// let aimd = AimdLayer::new(Quota::per_minute(60)).max_pause(Duration::from_secs(3_600));
/// # let _ = aimd;
/// ```
pub const MAX_UPSTREAM_WAIT: Duration = Duration::from_secs(60);

/// A duration in nanoseconds, saturating at `u64::MAX`.
pub(crate) fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `1*DIGIT`: ASCII digits only (no sign, no space), saturating at
/// `u64::MAX`. `None` when `s` is empty or holds anything else.
#[cfg(feature = "http")]
pub(crate) fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `["-"] 1*DIGIT`, saturating at `i64::MIN` and `i64::MAX`. A leading `+`
/// is malformed, as in the grammars of `Retry-After` (digits),
/// `grpc-retry-pushback-ms` (digits, or a negative number) and Structured
/// Field integers.
#[cfg(feature = "http")]
pub(crate) fn integer(s: &str) -> Option<i64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let n = i64::try_from(digits(rest)?).unwrap_or(i64::MAX);
    Some(if negative { -n } else { n })
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(digits("0"), Some(0));
        assert_eq!(digits("0042"), Some(42));
        assert_eq!(digits("18446744073709551615"), Some(u64::MAX));
        assert_eq!(digits("99999999999999999999999999"), Some(u64::MAX));
        for bad in ["", "+5", "-5", " 5", "5 ", "5.0", "0x5", "５", "5a"] {
            assert_eq!(digits(bad), None, "{bad:?}");
        }
        assert_eq!(integer("-5"), Some(-5));
        assert_eq!(integer("12"), Some(12));
        assert_eq!(integer("-99999999999999999999"), Some(-i64::MAX));
        assert_eq!(integer("99999999999999999999"), Some(i64::MAX));
        for bad in ["", "-", "+5", "--5", "-+5", "+-5", " -5"] {
            assert_eq!(integer(bad), None, "{bad:?}");
        }
    }
}
