//! [`QuotaError`]: why a quota could not be built or parsed.

use std::fmt;
use std::time::Duration;

/// Why a [`Quota`](super::Quota) could not be built or parsed.
///
/// The message names the field (or quotes the input) and says what is
/// accepted.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::{Quota, QuotaError};
///
/// assert_eq!(Quota::try_new(0, Duration::from_secs(1)), Err(QuotaError::ZeroLimit));
/// let err = "60 per minute".parse::<Quota>().unwrap_err();
/// assert!(matches!(err, QuotaError::Parse { .. }));
/// // The message quotes the input and shows the accepted syntax.
/// assert!(err.to_string().contains("expected LIMIT/[COUNT]UNIT"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// `limit` was 0: a quota must admit at least one request per period.
    ZeroLimit,
    /// `period` was zero.
    ZeroPeriod,
    /// `burst` was 0: a quota must admit at least one request at once.
    ZeroBurst,
    /// More than one request per nanosecond: `limit` exceeds `period` in
    /// nanoseconds, which no clock can enforce.
    TooFast {
        /// The requested limit.
        limit: u32,
        /// The requested period.
        period: Duration,
    },
    /// The spacing between requests, `period / limit`, is kept as a whole
    /// number of nanoseconds, and rounding it up would make the quota
    /// admit more than 1 % fewer requests than asked
    /// (`4294967295/4294967296ns` would be enforced at half the asked
    /// rate). Use a longer period or a smaller limit.
    Inexact {
        /// The requested limit.
        limit: u32,
        /// The requested period.
        period: Duration,
        /// The spacing the quota would be enforced with.
        interval: Duration,
    },
    /// The burst window `burst * period / limit` is longer than about 146
    /// years (or the period itself does not fit in 64-bit nanoseconds).
    TooLong {
        /// The requested period.
        period: Duration,
    },
    /// A unit name given to [`Quota::counting`](super::Quota::counting)
    /// was refused.
    BadUnit {
        /// The name, as given.
        unit: String,
        /// Why it was refused.
        reason: String,
    },
    /// A string did not parse as a quota.
    Parse {
        /// The input, as given.
        input: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuotaError::ZeroLimit => f.write_str("invalid quota: `limit` must be at least 1"),
            QuotaError::ZeroPeriod => {
                f.write_str("invalid quota: `period` must be longer than zero")
            }
            QuotaError::ZeroBurst => f.write_str("invalid quota: `burst` must be at least 1"),
            QuotaError::TooFast { limit, period } => write!(
                f,
                "invalid quota: `limit` {limit} per {period:?} is more than one per nanosecond; \
                 use a longer `period`"
            ),
            QuotaError::Inexact {
                limit,
                period,
                interval,
            } => {
                let interval_ns = interval.as_nanos().max(1);
                let enforced = period.as_nanos() / interval_ns;
                let slower = 100.0
                    * (1.0 - period.as_nanos() as f64 / (interval_ns * u128::from(*limit)) as f64);
                write!(
                    f,
                    "invalid quota: {limit} per {period:?} would be enforced as one request every \
                     {interval:?} ({enforced} per {period:?}), {slower:.1} % slower than asked, as \
                     the spacing between requests is a whole number of nanoseconds; use a longer \
                     `period` or a smaller `limit`"
                )
            }
            QuotaError::TooLong { period } => write!(
                f,
                "invalid quota: `period` {period:?} (times `burst` / `limit`) is longer than \
                 146 years; use a shorter `period`"
            ),
            QuotaError::BadUnit { reason, .. } => write!(
                f,
                "invalid quota: {reason}; a unit of cost is a name such as \"tokens\" or \"bytes\""
            ),
            QuotaError::Parse { input, reason } => write!(
                f,
                "invalid quota {input:?}: {reason}; expected LIMIT/[COUNT]UNIT[;burst=B] such as \
                 \"10/s\", \"60/min\", \"100/10s\", \"1000/day\", \"60/min;burst=10\" or \
                 \"100000 tokens/min\" \
                 (units: ns, us, ms, s, min, h, day, week, month = 30 days)"
            ),
        }
    }
}

impl std::error::Error for QuotaError {}
