//! The HTTP fields a limiter sends: `Retry-After`, and the `RateLimit-Policy`
//! and `RateLimit` fields of [draft-ietf-httpapi-ratelimit-headers-10]
//! (Structured Field lists, one item per quota of the key's policy), plus
//! the legacy `X-RateLimit-Limit` / `-Remaining` / `-Reset` triple.
//!
//! ```text
//! RateLimit-Policy: "per-minute";q=60;w=60, "per-day";q=1000;w=86400
//! RateLimit: "per-minute";r=0;t=12, "per-day";r=950;t=87
//! Retry-After: 12
//! ```
//!
//! # Items
//!
//! Each quota is one item, named after its period: `per-second`,
//! `per-minute`, `per-hour`, `per-day`, `per-week`, otherwise `per-` and
//! the period (`per-10s`, `per-5m`); a [calendar](crate::calendar) quota's
//! item is `calendar-minute`, `calendar-hour`, `calendar-day` or
//! `calendar-month`; a quota of cost
//! ([`Quota::counting`](crate::Quota::counting)) is named after its unit
//! too (`tokens-per-minute`, `tokens-calendar-month`). When two quotas of
//! one policy would
//! share a name, the items are `q0`, `q1`, … in the policy's order. A
//! [named](crate::per_key::Policy::named) policy prefixes its name (`free-per-minute`),
//! so a client sees its tier. A cap on requests in flight adds a
//! `concurrency` item with `qu="concurrent-requests"`.
//!
//! `q` is the quota's limit and `w` its period in seconds (a period that is
//! not whole seconds is scaled to whole seconds: 10 per 100 ms is
//! `q=100;w=1`). A quota of cost adds its quota unit, `qu` (the draft's
//! parameter, a string; its registered values are `"requests"`, the
//! default, `"content-bytes"` and `"concurrent-requests"`, and a service
//! may name its own, such as `"tokens"`): `"tokens-per-minute";q=100000;
//! w=60;qu="tokens"`. The draft puts `qu` in `RateLimit-Policy` only;
//! a `RateLimit` item refers to its policy item by name, and its `r` counts
//! in that item's unit (tokens left, not requests). In `RateLimit`, `r` is
//! how many more requests would pass now and `t` the seconds (rounded up)
//! until one more would: the time until "additional quota is made
//! available", in the draft's words. `t` is left out when the quota is
//! full.
//!
//! A calendar quota's `w` is its period's nominal length (60, 3600, 86400,
//! or 2592000 for a month of 30 days; the draft's `w` is a whole number of
//! seconds), and its `t` is always the seconds (rounded up) until the
//! window ends and its count resets, full or not; a refusal's
//! `Retry-After` is that same time.
//!
//! # Rounding
//!
//! Every delay is rounded *up* to whole seconds, and `Retry-After` is at
//! least 1: a client that follows the fields never comes back early. On a
//! 429, every item with `r=0` has a `t` no earlier than `Retry-After`.
//!
//! [draft-ietf-httpapi-ratelimit-headers-10]: https://datatracker.ietf.org/doc/draft-ietf-httpapi-ratelimit-headers/10/

use std::fmt::Write as _;
use std::num::NonZeroU64;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::error::Human;
use crate::gcra::Decision;
use crate::policy::Policy;
use crate::policy::QuotaStates;
use crate::quota::Quota;

/// `RateLimit-Policy`: the quota policies a client's requests consume.
///
/// # Examples
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use tower::ServiceExt;
/// use tower_sluice::http::HeaderKey;
/// use tower_sluice::{PerKeyLayer, Quota};
/// use tower_sluice::http::headers::RATELIMIT_POLICY;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key")).http();
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
/// let res = app.oneshot(req).await?;
/// assert_eq!(res.headers()[RATELIMIT_POLICY], r#""per-minute";q=60;w=60"#);
/// # Ok(())
/// # }
/// ```
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`: what is left of each quota now.
///
/// # Examples
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use tower::ServiceExt;
/// use tower_sluice::http::HeaderKey;
/// use tower_sluice::{PerKeyLayer, Quota};
/// use tower_sluice::http::headers::RATELIMIT;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key")).http();
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
/// let res = app.oneshot(req).await?;
/// // 59 left; one more in a second.
/// assert_eq!(res.headers()[RATELIMIT], r#""per-minute";r=59;t=1"#);
/// # Ok(())
/// # }
/// ```
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// Legacy `X-RateLimit-Limit`: the tightest quota's limit.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::headers::X_RATELIMIT_LIMIT;
/// use tower_sluice::http::{Rejection, Responder};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let response: http::Response<String> =
///     Responder::new().legacy_headers(true).rejection_response(&Rejection::new(&*err));
/// assert_eq!(response.headers()[X_RATELIMIT_LIMIT], "1");
/// ```
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// Legacy `X-RateLimit-Remaining`: what is left of the tightest quota.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::headers::X_RATELIMIT_REMAINING;
/// use tower_sluice::http::{Rejection, Responder};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let response: http::Response<String> =
///     Responder::new().legacy_headers(true).rejection_response(&Rejection::new(&*err));
/// assert_eq!(response.headers()[X_RATELIMIT_REMAINING], "0");
/// ```
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// Legacy `X-RateLimit-Reset`: seconds until the tightest quota has one
/// more request (delay-seconds, not a timestamp).
///
/// # Examples
///
/// ```
/// use tower_sluice::http::headers::X_RATELIMIT_RESET;
/// use tower_sluice::http::{Rejection, Responder};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let response: http::Response<String> =
///     Responder::new().legacy_headers(true).rejection_response(&Rejection::new(&*err));
/// // Seconds from now, not a Unix time.
/// assert_eq!(response.headers()[X_RATELIMIT_RESET], "60");
/// ```
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A delay in whole seconds, rounded up, at least 1: the `Retry-After`
/// delay-seconds for a wait of `delay`.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::http::headers::delay_seconds;
///
/// assert_eq!(delay_seconds(Duration::from_millis(1)), 1);
/// assert_eq!(delay_seconds(Duration::from_millis(1_001)), 2);
/// assert_eq!(delay_seconds(Duration::from_secs(12)), 12);
/// assert_eq!(delay_seconds(Duration::ZERO), 1);
/// ```
pub fn delay_seconds(delay: Duration) -> u64 {
    ceil_secs(delay).max(1)
}

/// Seconds, rounded up (zero stays zero).
fn ceil_secs(d: Duration) -> u64 {
    let secs = d.as_secs();
    if d.subsec_nanos() > 0 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// The `Retry-After` value for a wait of `delay`:
/// [`delay_seconds`]`(delay)`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::http::headers::retry_after;
///
/// let mut response = http::Response::new(());
/// response.headers_mut().insert(http::header::RETRY_AFTER, retry_after(Duration::from_millis(1_500)));
/// assert_eq!(response.headers()["retry-after"], "2"); // rounded up
/// assert_eq!(retry_after(Duration::ZERO), "1"); // never 0
/// ```
pub fn retry_after(delay: Duration) -> HeaderValue {
    HeaderValue::from(delay_seconds(delay))
}

/// The `RateLimit-Policy` value of `policy`: one item per quota (and one
/// for its in-flight cap). Formatted once per policy and then shared.
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::http::headers::rate_limit_policy;
/// use tower_sluice::per_key::Policy;
///
/// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_day(1000))?;
/// assert_eq!(
///     rate_limit_policy(&policy),
///     r#""per-minute";q=60;w=60, "per-day";q=1000;w=86400"#
/// );
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub fn rate_limit_policy(policy: &Policy) -> HeaderValue {
    policy.http_fields().policy.clone()
}

/// The `RateLimit` value for `states` (from
/// [`PerKeyHandle::states`](crate::per_key::PerKeyHandle::states) or
/// [`Backend::states`](crate::backend::Backend::states)) of a key under
/// `policy`: one item per quota with `r` (remaining) and `t` (seconds until
/// one more request would pass, left out when the quota is full).
///
/// ```
/// use tower_sluice::{PerKeyLayer, Quota};
/// use tower_sluice::http::headers::rate_limit;
///
/// let layer = PerKeyLayer::new(Quota::per_minute(60), |key: &u32| Some(*key));
/// let handle = layer.handle();
/// let value = rate_limit(&handle.policy(&7), &handle.states(&7));
/// assert_eq!(value, r#""per-minute";r=60"#);
/// ```
pub fn rate_limit(policy: &Policy, states: &QuotaStates) -> HeaderValue {
    let fields = policy.http_fields();
    format_items(
        states
            .iter()
            .map(|d| Item::from_decision(fields, policy, d)),
    )
}

/// One `RateLimit` item.
#[derive(Debug, Clone)]
pub(crate) struct Item<'a> {
    /// The quoted item name.
    pub(crate) name: NameRef<'a>,
    pub(crate) quota: Option<Quota>,
    pub(crate) remaining: u64,
    /// Seconds until one more unit; `None` when full.
    pub(crate) reset: Option<u64>,
}

/// A quoted name, borrowed from a policy's fields or made for an error.
#[derive(Debug, Clone)]
pub(crate) enum NameRef<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl NameRef<'_> {
    fn as_str(&self) -> &str {
        match self {
            NameRef::Borrowed(s) => s,
            NameRef::Owned(s) => s,
        }
    }
}

impl<'a> Item<'a> {
    #[inline]
    pub(crate) fn from_decision(fields: &'a PolicyFields, policy: &Policy, d: &Decision) -> Self {
        let quota = d.quota();
        let name = match (0..policy.len()).position(|i| d.is_of(policy.params(i))) {
            Some(i) => NameRef::Borrowed(&fields.names[i]),
            None => NameRef::Owned(quoted(policy.name(), &quota_name(&quota))),
        };
        let (remaining, next) = d.remaining_and_next();
        Item {
            name,
            quota: Some(quota),
            remaining: u64::from(remaining),
            reset: (next > 0).then(|| next.div_ceil(NANOS_PER_SEC)),
        }
    }
}

/// Formats `RateLimit` items: `"per-minute";r=0;t=12, ...`.
pub(crate) fn format_items<'a>(items: impl IntoIterator<Item = Item<'a>>) -> HeaderValue {
    let mut out = ValueBuf::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b", ");
        }
        out.push(item.name.as_str().as_bytes());
        out.push(b";r=");
        out.push_u64(item.remaining);
        if let Some(t) = item.reset {
            out.push(b";t=");
            out.push_u64(t);
        }
    }
    out.into_value()
}

/// `r` and `t` of an admitted request's one item, when its policy has
/// one quota (the common case): without building an [`Item`] (one
/// division for both). `t` is `None` when the quota is full.
#[inline]
pub(crate) fn first_item(policy: &Policy, d: &Decision) -> Option<(u32, Option<NonZeroU64>)> {
    if policy.len() != 1 || !d.is_of(policy.first_params()) {
        return None;
    }
    let (remaining, next) = d.remaining_and_next();
    Some((remaining, NonZeroU64::new(next.div_ceil(NANOS_PER_SEC))))
}

/// The `RateLimit` value of a policy of one quota, from [`first_item`]:
/// its item's name is the first `name_len` bytes of the `RateLimit-Policy`
/// value `policy` (see [`PolicyFields::first_name_len`]).
#[inline]
pub(crate) fn format_first(
    policy: &HeaderValue,
    name_len: usize,
    remaining: u32,
    reset: Option<NonZeroU64>,
) -> HeaderValue {
    let name = policy.as_bytes().get(..name_len).unwrap_or_default();
    format_one(name, u64::from(remaining), reset.map(NonZeroU64::get))
}

/// Formats one `RateLimit` item.
#[cfg(test)]
fn format_item(item: &Item<'_>) -> HeaderValue {
    format_one(item.name.as_str().as_bytes(), item.remaining, item.reset)
}

/// Formats one `RateLimit` item on the stack, then copies it once into the
/// value (one allocation, sized exactly). A
/// name too long for the stack buffer goes through [`format_items`].
fn format_one(name: &[u8], remaining: u64, reset: Option<u64>) -> HeaderValue {
    // `;r=` and `;t=` with 20 digits each at most.
    let mut buf = [0u8; 128];
    if name.len() > buf.len() - 46 {
        return format_items([Item {
            name: NameRef::Owned(String::from_utf8_lossy(name).into_owned()),
            quota: None,
            remaining,
            reset,
        }]);
    }
    buf[..name.len()].copy_from_slice(name);
    let mut at = name.len();
    buf[at..at + 3].copy_from_slice(b";r=");
    at = write_decimal(&mut buf, at + 3, remaining);
    if let Some(t) = reset {
        buf[at..at + 3].copy_from_slice(b";t=");
        at = write_decimal(&mut buf, at + 3, t);
    }
    HeaderValue::from_bytes(&buf[..at]).expect("RateLimit items are visible ASCII")
}

/// Writes `n` in decimal into `buf` at `at` (room for its up to 20
/// digits); returns the end. `itoa` (already a dependency of `http`):
/// `core::fmt` costs more than the rest of a value.
#[inline]
fn write_decimal(buf: &mut [u8], at: usize, n: u64) -> usize {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    let end = at + digits.len();
    buf[at..end].copy_from_slice(digits);
    end
}

/// The tightest of `items` (fewest remaining, then the longest reset),
/// counting quotas only.
pub(crate) fn tightest<'i, 'a>(
    items: impl IntoIterator<Item = &'i Item<'a>>,
) -> Option<&'i Item<'a>>
where
    'a: 'i,
{
    items
        .into_iter()
        .filter(|i| i.quota.is_some())
        .min_by_key(|i| (i.remaining, std::cmp::Reverse(i.reset.unwrap_or(0))))
}

/// The legacy `X-RateLimit-*` triple of an item.
pub(crate) fn legacy(item: &Item<'_>) -> Option<[(HeaderName, HeaderValue); 3]> {
    let quota = item.quota?;
    Some([
        (X_RATELIMIT_LIMIT, HeaderValue::from(quota.limit())),
        (X_RATELIMIT_REMAINING, HeaderValue::from(item.remaining)),
        (
            X_RATELIMIT_RESET,
            HeaderValue::from(item.reset.unwrap_or(0)),
        ),
    ])
}

/// Sets the legacy `X-RateLimit-*` triple from the tightest item, unless
/// already set.
pub(crate) fn insert_legacy(headers: &mut HeaderMap, items: &[Item<'_>]) {
    if let Some(fields) = tightest(items).and_then(legacy) {
        for (name, value) in fields {
            headers.entry(name).or_insert(value);
        }
    }
}

/// A field value written on the stack while it is short (one allocation
/// for the `HeaderValue`, none for the writing), integers formatted by
/// hand (`core::fmt` costs more than the rest of the value).
struct ValueBuf {
    stack: [u8; 192],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl ValueBuf {
    fn new() -> Self {
        ValueBuf {
            stack: [0; 192],
            len: 0,
            heap: None,
        }
    }

    #[inline]
    fn push(&mut self, s: &[u8]) {
        if let Some(heap) = &mut self.heap {
            heap.extend_from_slice(s);
        } else if let Some(room) = self.stack.get_mut(self.len..self.len + s.len()) {
            room.copy_from_slice(s);
            self.len += s.len();
        } else {
            let mut heap = Vec::with_capacity(2 * (self.len + s.len()));
            heap.extend_from_slice(&self.stack[..self.len]);
            heap.extend_from_slice(s);
            self.heap = Some(heap);
        }
    }

    /// `n` in decimal.
    #[inline]
    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn into_value(self) -> HeaderValue {
        let value = match self.heap {
            Some(heap) => HeaderValue::try_from(heap),
            None => HeaderValue::from_bytes(&self.stack[..self.len]),
        };
        value.expect("RateLimit items are visible ASCII")
    }
}

/// A policy's field items, formatted once (cached in the policy).
#[derive(Debug)]
pub(crate) struct PolicyFields {
    /// The `RateLimit-Policy` value (kept: a copy per response is free).
    pub(crate) policy: HeaderValue,
    /// Each quota's quoted item name, in the policy's order.
    pub(crate) names: Vec<Box<str>>,
    /// The quoted name of the in-flight cap's item.
    pub(crate) concurrency: Option<Box<str>>,
}

impl PolicyFields {
    /// The length of the first item's name, which the `RateLimit-Policy`
    /// value starts with.
    #[inline]
    pub(crate) fn first_name_len(&self) -> usize {
        self.names[0].len()
    }

    pub(crate) fn new(policy: &Policy) -> Self {
        let quotas: Vec<Quota> = policy.quotas().collect();
        let mut bases: Vec<String> = quotas.iter().map(quota_name).collect();
        let ambiguous = (1..bases.len()).any(|i| bases[..i].contains(&bases[i]));
        if ambiguous {
            bases = (0..bases.len()).map(|i| format!("q{i}")).collect();
        }
        let names: Vec<Box<str>> = bases
            .iter()
            .map(|b| quoted(policy.name(), b).into_boxed_str())
            .collect();
        let concurrency = policy
            .in_flight_limit()
            .map(|_| quoted(policy.name(), "concurrency").into_boxed_str());
        let mut value = String::new();
        for (name, quota) in names.iter().zip(&quotas) {
            if !value.is_empty() {
                value.push_str(", ");
            }
            let (q, w) = quota_window(quota);
            let _ = write!(value, "{name};q={q};w={w}");
            if !quota.counts_requests() {
                // A token: checked when the unit was named (letters,
                // digits, `-`, `_`, `.`), so it needs no escaping.
                let _ = write!(value, ";qu=\"{}\"", quota.unit());
            }
        }
        if let (Some(name), Some(n)) = (&concurrency, policy.in_flight_limit()) {
            if !value.is_empty() {
                value.push_str(", ");
            }
            let _ = write!(value, "{name};q={n};qu=\"concurrent-requests\"");
        }
        PolicyFields {
            policy: super::kept::kept(value).expect("RateLimit-Policy items are visible ASCII"),
            names,
            concurrency,
        }
    }
}

/// `q` and `w` of a quota: the limit per period in whole seconds, scaled
/// when the period is not whole seconds.
fn quota_window(quota: &Quota) -> (u64, u64) {
    let period = quota.period();
    if period.subsec_nanos() == 0 {
        return (u64::from(quota.limit()), period.as_secs());
    }
    let w = ceil_secs(period).max(1);
    let q = u128::from(quota.limit()) * u128::from(w) * u128::from(NANOS_PER_SEC)
        / period.as_nanos().max(1);
    (u64::try_from(q).unwrap_or(u64::MAX), w)
}

/// An item's name before the policy's prefix: `calendar-day` (…`-minute`,
/// `-hour`, `-month`) for a calendar quota, else the name of its period;
/// after the unit for a quota of cost (`tokens-per-minute`,
/// `tokens-calendar-month`).
pub(crate) fn quota_name(quota: &Quota) -> String {
    let base = match quota.calendar() {
        Some(cal) => format!("calendar-{cal}"),
        None => period_name(quota.period()),
    };
    if quota.counts_requests() {
        base
    } else {
        format!("{}-{base}", quota.unit())
    }
}

/// `per-second`, `per-minute`, …, or `per-10s`.
pub(crate) fn period_name(period: Duration) -> String {
    match (period.as_secs(), period.subsec_nanos()) {
        (1, 0) => "per-second".into(),
        (60, 0) => "per-minute".into(),
        (3_600, 0) => "per-hour".into(),
        (86_400, 0) => "per-day".into(),
        (604_800, 0) => "per-week".into(),
        _ => format!("per-{}", Human(period)),
    }
}

/// A Structured Field string: `"prefix-base"`, quotes and backslashes
/// escaped, anything outside visible ASCII replaced by `_`.
pub(crate) fn quoted(prefix: Option<&str>, base: &str) -> String {
    let mut out = String::with_capacity(base.len() + 2 + prefix.map_or(0, |p| p.len() + 1));
    out.push('"');
    let mut push = |s: &str| {
        for c in s.chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                ' '..='~' => out.push(c),
                _ => out.push('_'),
            }
        }
    };
    if let Some(prefix) = prefix {
        push(prefix);
        push("-");
    }
    push(base);
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Reading an upstream's fields (retry waits, adaptive pacing).

/// The `(r, t)` of each item of an IETF `RateLimit` field, parsed as an
/// RFC 8941 structured field list (so a quoted name may hold `,` or `;`).
/// A field that is not a valid list yields nothing; a parameter that is
/// not a non-negative integer is `None`.
pub(crate) fn ratelimit_items(value: &str) -> impl Iterator<Item = (Option<u64>, Option<u64>)> {
    let list = sfv::Parser::new(value)
        .parse::<sfv::List>()
        .unwrap_or_default();
    list.into_iter().filter_map(|entry| match entry {
        sfv::ListEntry::Item(item) => {
            let (mut r, mut t) = (None, None);
            for (key, value) in &item.params {
                let n = value
                    .as_integer()
                    .and_then(|n| u64::try_from(i64::from(n)).ok());
                match key.as_str() {
                    "r" => r = n,
                    "t" => t = n,
                    _ => {}
                }
            }
            Some((r, t))
        }
        sfv::ListEntry::InnerList(_) => None,
    })
}

/// The response's `Date`, or the local clock when it has none: what an
/// upstream's absolute times are compared with, to limit clock skew.
pub(crate) fn response_now(headers: &HeaderMap) -> SystemTime {
    headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .unwrap_or_else(SystemTime::now)
}

/// An `X-RateLimit-Reset`-style value as a wait: seconds from now, or,
/// above 10^9, a Unix time compared with `now()`. Negative is 0; a time
/// past what the system clock can hold is `Duration::MAX` (a caller caps
/// it).
pub(crate) fn reset_delay(value: i64, now: impl FnOnce() -> SystemTime) -> Duration {
    if value > 1_000_000_000 {
        match SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(value as u64)) {
            Some(at) => at.duration_since(now()).unwrap_or(Duration::ZERO),
            None => Duration::MAX,
        }
    } else {
        Duration::from_secs(value.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcra::Params;

    #[test]
    fn ratelimit_items_are_structured_fields() {
        let items = |s: &str| ratelimit_items(s).collect::<Vec<_>>();
        // Quoted names may hold the separators.
        assert_eq!(
            items(r#""per,min;ute";r=0;t=12, "d\"ay";r=5;t=3600"#),
            [(Some(0), Some(12)), (Some(5), Some(3600))]
        );
        // Signed, fractional or missing parameters are malformed: None.
        assert_eq!(items(r#""a";r=-1;t=1.5"#), [(None, None)]);
        // Not a structured list at all: nothing.
        assert!(items(r#""a";r=0;t=12, "#).is_empty());
        assert!(items("a;r=0;t=+12").is_empty());
        assert!(items("\"unterminated;r=0").is_empty());
    }

    #[test]
    fn names_follow_the_period() {
        let cases = [
            (Duration::from_secs(1), "per-second"),
            (Duration::from_secs(60), "per-minute"),
            (Duration::from_secs(3_600), "per-hour"),
            (Duration::from_secs(86_400), "per-day"),
            (Duration::from_secs(604_800), "per-week"),
            (Duration::from_secs(10), "per-10s"),
            (Duration::from_secs(300), "per-5m"),
            (Duration::from_millis(1_500), "per-1.5s"),
        ];
        for (period, name) in cases {
            assert_eq!(period_name(period), name);
        }
    }

    #[test]
    fn decimals_are_exact() {
        let mut values = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 12_345, u64::MAX];
        values.extend((0..20).map(|i| 10u64.pow(i)));
        values.extend((1..20).map(|i| 10u64.pow(i) - 1));
        for n in values {
            let mut buf = [b'#'; 21];
            buf[0] = b'x';
            let end = write_decimal(&mut buf, 1, n);
            assert_eq!(&buf[..end], format!("x{n}").as_bytes());
        }
    }

    #[test]
    fn one_item_formats_as_many() {
        // A long tier name does not fit the stack buffer.
        let long = quoted(Some(&"t".repeat(120)), "per-minute");
        for name in [r#""free-per-minute""#, long.as_str()] {
            for (remaining, reset) in [
                (0, Some(12)),
                (59, None),
                (500_000_222, Some(1)),
                (u64::MAX, Some(u64::MAX)),
            ] {
                let item = Item {
                    name: NameRef::Borrowed(name),
                    quota: None,
                    remaining,
                    reset,
                };
                assert_eq!(format_item(&item), format_items([item.clone()]));
            }
        }
    }

    #[test]
    fn the_policy_value_starts_with_the_first_name() {
        // A one-quota response's `RateLimit` item takes its name from there.
        let policies = [
            Policy::new(Quota::per_minute(60)),
            Policy::new(Quota::per_hour(5)).named("a;b \"c\""),
            Policy::new(Quota::per_minute(100).counting("tokens")).max_in_flight(2),
            Policy::new(Quota::per_calendar_day(10)),
            Policy::new(Quota::per_second(10))
                .and(Quota::per_second(50))
                .unwrap()
                .named("free"),
        ];
        for policy in policies {
            let fields = policy.http_fields();
            let name = &fields.names[0];
            assert_eq!(fields.first_name_len(), name.len());
            assert!(fields.policy.as_bytes().starts_with(name.as_bytes()));
            let value = format_first(
                &fields.policy,
                fields.first_name_len(),
                3,
                NonZeroU64::new(2),
            );
            assert_eq!(value, format!("{name};r=3;t=2"));
        }
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quoted(None, "per-day"), r#""per-day""#);
        assert_eq!(quoted(Some("a\"b\\cé"), "per-day"), r#""a\"b\\c_-per-day""#);
    }

    #[test]
    fn sub_second_periods_scale_to_seconds() {
        let q = Quota::new(10, Duration::from_millis(100));
        assert_eq!(quota_window(&q), (100, 1));
        let q = Quota::new(3, Duration::from_millis(1_500));
        assert_eq!(quota_window(&q), (4, 2));
        assert_eq!(quota_window(&Quota::per_hour(5)), (5, 3_600));
    }

    #[test]
    fn ambiguous_names_become_indexes() {
        let policy = Policy::new(Quota::per_second(10))
            .and(Quota::per_second(50).with_burst(5))
            .unwrap()
            .max_in_flight(3)
            .named("free");
        assert_eq!(
            rate_limit_policy(&policy),
            r#""free-q0";q=10;w=1, "free-q1";q=50;w=1, "free-concurrency";q=3;qu="concurrent-requests""#
        );
    }

    #[test]
    fn quotas_of_cost_carry_their_unit() {
        let tokens = Quota::per_minute(100_000).counting("tokens");
        let policy = Policy::new(Quota::per_minute(60))
            .and(tokens)
            .unwrap()
            .and(Quota::per_day(1_000_000).counting("tokens"))
            .unwrap();
        assert_eq!(
            rate_limit_policy(&policy),
            r#""per-minute";q=60;w=60, "tokens-per-minute";q=100000;w=60;qu="tokens", "tokens-per-day";q=1000000;w=86400;qu="tokens""#
        );
        // `r` of a quota of cost counts its unit: 100 000 tokens, less 2 500.
        let p = Params::new(tokens);
        let d = Decision::allowed(&p, 0, 2_500 * p.emission);
        let fields = policy.http_fields();
        let item = Item::from_decision(fields, &policy, &d);
        assert_eq!(format_item(&item), r#""tokens-per-minute";r=97500;t=1"#);
        // The value is a valid structured field list with `qu` a string.
        let value = rate_limit_policy(&policy);
        let list = sfv::Parser::new(value.to_str().unwrap())
            .parse::<sfv::List>()
            .unwrap();
        assert_eq!(list.len(), 3);
    }

    #[test]
    fn calendar_quotas_of_cost_are_named_after_unit_and_calendar() {
        let policy = Policy::new(Quota::per_minute(60))
            .and(Quota::per_minute(100_000).counting("tokens"))
            .unwrap()
            .and(Quota::per_calendar_day(1_000_000).counting("tokens"))
            .unwrap()
            .and(Quota::per_calendar_month(3_000))
            .unwrap();
        assert_eq!(
            rate_limit_policy(&policy),
            concat!(
                r#""per-minute";q=60;w=60, "tokens-per-minute";q=100000;w=60;qu="tokens", "#,
                r#""tokens-calendar-day";q=1000000;w=86400;qu="tokens", "#,
                r#""calendar-month";q=3000;w=2592000"#
            )
        );
        assert_eq!(
            quota_name(&Quota::per_calendar_month(1_000_000).counting("tokens")),
            "tokens-calendar-month"
        );
    }
}
