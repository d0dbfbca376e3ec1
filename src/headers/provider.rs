//! What an AI provider's answer says about its budgets: [`ProviderLimits`]
//! reads OpenAI-style `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`,
//! Anthropic-style `anthropic-ratelimit-*` fields, the IETF `RateLimit` /
//! `RateLimit-Policy` fields, `Retry-After` and `retry-after-ms`.
//!
//! Every number is digits only and saturates; a malformed value is ignored
//! (as if absent); every wait is given as the upstream said it, and
//! [`ProviderLimits::pause`] cuts it to a bound.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::digits;

/// What an upstream said about one of its budgets (requests or tokens).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_sluice::adaptive::ProviderLimits;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit-tokens", "30000".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "29000".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "2s".parse().unwrap());
/// let tokens = ProviderLimits::from_headers(&headers).tokens.unwrap();
/// assert_eq!(tokens.limit, Some(30_000));
/// assert_eq!(tokens.remaining, Some(29_000));
/// assert_eq!(tokens.reset, Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct UpstreamBudget {
    /// The budget's size, as the upstream says (per its own window).
    pub limit: Option<u64>,
    /// What is left of it now.
    pub remaining: Option<u64>,
    /// How long until it is full again (or, for IETF fields, until more is
    /// available), from the response.
    pub reset: Option<Duration>,
}

impl UpstreamBudget {
    fn is_empty(&self) -> bool {
        self.limit.is_none() && self.remaining.is_none() && self.reset.is_none()
    }

    /// The tighter of two budgets: the one with fewer remaining.
    fn tighter(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let left = |x: &Self| x.remaining.unwrap_or(u64::MAX);
                Some(if left(&b) < left(&a) { b } else { a })
            }
            (a, b) => a.or(b),
        }
    }
}

/// The budgets and the wait an AI provider's response reports.
///
/// Read from, in this order of preference for each budget:
///
/// * OpenAI-style `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
///   `x-ratelimit-reset-requests` and the same with `-tokens`; resets are
///   durations such as `6m0s`, `1s`, `20ms` or `1m30.5s`
///   ([`parse_reset_duration`]).
/// * Anthropic-style `anthropic-ratelimit-requests-{limit,remaining,reset}`
///   and `anthropic-ratelimit-tokens-*`; resets are RFC 3339 times
///   ([`parse_rfc3339`]) taken relative to the response's `Date` (or this
///   machine's clock without one). Without `tokens-*`, the tighter of
///   `input-tokens-*` and `output-tokens-*` is the token budget.
/// * IETF `RateLimit` / `RateLimit-Policy`: an item whose policy has no
///   `qu` or `qu="requests"` is a request budget, one whose `qu` names
///   tokens is a token budget; the item with the fewest remaining wins.
///
/// `retry_after` is `retry-after-ms` (milliseconds) or else `Retry-After`
/// (delay-seconds or an HTTP date).
///
/// Numbers are digits only (`+5`, `-5`, `1e3` are malformed), saturating
/// at `u64::MAX`; a malformed value is ignored, as if absent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use tower_sluice::MAX_UPSTREAM_WAIT;
/// use tower_sluice::adaptive::ProviderLimits;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("anthropic-ratelimit-requests-remaining", "0".parse().unwrap());
/// headers.insert("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:12Z".parse().unwrap());
/// headers.insert("date", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
/// let limits = ProviderLimits::from_headers(&headers);
/// assert_eq!(limits.requests.unwrap().reset, Some(Duration::from_secs(12)));
/// // Spent until its reset: wait for it, at most the bound.
/// assert_eq!(limits.pause(MAX_UPSTREAM_WAIT), Some(Duration::from_secs(12)));
/// assert_eq!(limits.pause(Duration::from_secs(5)), Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProviderLimits {
    /// The request budget, if the response reports one.
    pub requests: Option<UpstreamBudget>,
    /// The token budget, if the response reports one.
    pub tokens: Option<UpstreamBudget>,
    /// The wait `Retry-After` (or `retry-after-ms`) asks for.
    pub retry_after: Option<Duration>,
}

impl ProviderLimits {
    /// Reads a response's headers. See the [type docs](Self).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::HeaderMap;
    /// use tower_sluice::adaptive::ProviderLimits;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after-ms", "250".parse().unwrap());
    /// headers.insert("x-ratelimit-reset-requests", "not a duration".parse().unwrap());
    /// let limits = ProviderLimits::from_headers(&headers);
    /// assert_eq!(limits.retry_after, Some(Duration::from_millis(250)));
    /// assert_eq!(limits.requests, None, "malformed values are ignored");
    /// ```
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let now = || super::fields::response_now(headers);
        let openai = |kind: &str| {
            budget(
                headers,
                &format!("x-ratelimit-limit-{kind}"),
                &format!("x-ratelimit-remaining-{kind}"),
                &format!("x-ratelimit-reset-{kind}"),
                parse_reset_duration,
            )
        };
        let anthropic = |kind: &str| {
            budget(
                headers,
                &format!("anthropic-ratelimit-{kind}-limit"),
                &format!("anthropic-ratelimit-{kind}-remaining"),
                &format!("anthropic-ratelimit-{kind}-reset"),
                |s| {
                    let at = parse_rfc3339(s)?;
                    Some(at.duration_since(now()).unwrap_or(Duration::ZERO))
                },
            )
        };
        let ietf = ietf(headers);
        let requests = openai("requests")
            .or_else(|| anthropic("requests"))
            .or(ietf.requests);
        let tokens = openai("tokens")
            .or_else(|| anthropic("tokens"))
            .or_else(|| {
                UpstreamBudget::tighter(anthropic("input-tokens"), anthropic("output-tokens"))
            })
            .or(ietf.tokens);
        let retry_after = header(headers, "retry-after-ms")
            .and_then(digits)
            .map(Duration::from_millis)
            .or_else(|| {
                let s = header(headers, http::header::RETRY_AFTER.as_str())?;
                super::hints::retry_after(s, now)
            });
        ProviderLimits {
            requests,
            tokens,
            retry_after,
        }
    }

    /// The wait this answer asks for, cut to `cap`: the longest of
    /// `retry_after` and the reset of every budget with nothing remaining.
    /// `None` when it asks for none.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use http::HeaderMap;
    /// use tower_sluice::adaptive::ProviderLimits;
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
    /// headers.insert("x-ratelimit-reset-tokens", "999999h".parse().unwrap());
    /// let cap = Duration::from_secs(60);
    /// assert_eq!(ProviderLimits::from_headers(&headers).pause(cap), Some(cap));
    /// ```
    pub fn pause(&self, cap: Duration) -> Option<Duration> {
        let spent =
            |b: &Option<UpstreamBudget>| b.filter(|b| b.remaining == Some(0)).and_then(|b| b.reset);
        [self.retry_after, spent(&self.requests), spent(&self.tokens)]
            .into_iter()
            .flatten()
            .max()
            .map(|d| d.min(cap))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn budget(
    headers: &HeaderMap,
    limit: &str,
    remaining: &str,
    reset: &str,
    parse_reset: impl FnOnce(&str) -> Option<Duration>,
) -> Option<UpstreamBudget> {
    let b = UpstreamBudget {
        limit: header(headers, limit).and_then(digits),
        remaining: header(headers, remaining).and_then(digits),
        reset: header(headers, reset).and_then(parse_reset),
    };
    (!b.is_empty()).then_some(b)
}

/// The request and token budgets of the IETF `RateLimit` field, sorted by
/// the `qu` of their `RateLimit-Policy` items.
fn ietf(headers: &HeaderMap) -> ProviderLimits {
    let mut out = ProviderLimits::default();
    let Some(value) = header(headers, super::fields::RATELIMIT.as_str()) else {
        return out;
    };
    let policies: Vec<(String, Option<u64>, Option<String>)> =
        header(headers, super::fields::RATELIMIT_POLICY.as_str())
            .map(|p| {
                items(p)
                    .map(|(name, params)| {
                        let q = param_int(&params, "q");
                        let qu =
                            params
                                .iter()
                                .find(|(k, _)| k.as_str() == "qu")
                                .and_then(|(_, v)| {
                                    v.as_string().map(|s| s.as_str().to_ascii_lowercase())
                                });
                        (name, q, qu)
                    })
                    .collect()
            })
            .unwrap_or_default();
    for (name, params) in items(value) {
        let policy = policies.iter().find(|(n, _, _)| *n == name);
        let qu = policy.and_then(|(_, _, qu)| qu.as_deref());
        let b = UpstreamBudget {
            limit: policy.and_then(|(_, q, _)| *q),
            remaining: param_int(&params, "r"),
            reset: param_int(&params, "t").map(Duration::from_secs),
        };
        if b.is_empty() {
            continue;
        }
        match qu {
            None | Some("requests") => {
                out.requests = UpstreamBudget::tighter(out.requests, Some(b));
            }
            Some(unit) if unit.contains("token") => {
                out.tokens = UpstreamBudget::tighter(out.tokens, Some(b));
            }
            Some(_) => {}
        }
    }
    out
}

/// The items of a Structured Field list: a string or token name and its
/// parameters. Not a valid list: nothing.
fn items(value: &str) -> impl Iterator<Item = (String, sfv::Parameters)> {
    let list = sfv::Parser::new(value)
        .parse::<sfv::List>()
        .unwrap_or_default();
    list.into_iter().filter_map(|entry| match entry {
        sfv::ListEntry::Item(item) => {
            let name = match &item.bare_item {
                sfv::BareItem::String(s) => s.as_str().to_owned(),
                sfv::BareItem::Token(t) => t.as_str().to_owned(),
                _ => return None,
            };
            Some((name, item.params))
        }
        sfv::ListEntry::InnerList(_) => None,
    })
}

/// A non-negative integer parameter.
fn param_int(params: &sfv::Parameters, key: &str) -> Option<u64> {
    params
        .iter()
        .find(|(k, _)| k.as_str() == key)
        .and_then(|(_, v)| v.as_integer())
        .and_then(|n| u64::try_from(i64::from(n)).ok())
}

/// A reset duration as OpenAI-style fields give it: a sequence of decimal
/// numbers, each with a unit (`h`, `m`, `s`, `ms`, `us` or `µs`, `ns`), as
/// in `6m0s`, `1s`, `20ms` or `1m30.5s`; or a bare number of seconds
/// (`2`, `0.5`). Saturates at about 584 years (`u64::MAX` nanoseconds).
/// `None` for anything else (a sign, a space, an unknown unit, empty).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::adaptive::parse_reset_duration;
///
/// assert_eq!(parse_reset_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_reset_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_reset_duration("1m30.5s"), Some(Duration::from_millis(90_500)));
/// assert_eq!(parse_reset_duration("2"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_reset_duration("-1s"), None);
/// assert_eq!(parse_reset_duration("soon"), None);
/// ```
pub fn parse_reset_duration(s: &str) -> Option<Duration> {
    const NS: u128 = 1;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    if s.is_empty() {
        return None;
    }
    let bytes = s.as_bytes();
    let mut at = 0;
    let mut total: u128 = 0;
    while at < bytes.len() {
        // The number: digits, then optionally `.` and digits.
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() {
            at += 1;
        }
        let whole = &s[start..at];
        let mut frac = "";
        if at < bytes.len() && bytes[at] == b'.' {
            at += 1;
            let f = at;
            while at < bytes.len() && bytes[at].is_ascii_digit() {
                at += 1;
            }
            frac = &s[f..at];
        }
        if whole.is_empty() && frac.is_empty() {
            return None;
        }
        // The unit: the letters up to the next digit or dot.
        let u = at;
        while at < bytes.len() && !bytes[at].is_ascii_digit() && bytes[at] != b'.' {
            at += 1;
        }
        let unit = match &s[u..at] {
            // A bare number is seconds, alone only.
            "" if start == 0 && at == bytes.len() => S,
            "h" => 3_600 * S,
            "m" => 60 * S,
            "s" => S,
            "ms" => MS,
            "us" | "µs" | "μs" => 1_000,
            "ns" => NS,
            _ => return None,
        };
        total = total.saturating_add(scaled(whole, frac, unit));
    }
    Some(Duration::from_nanos(
        u64::try_from(total).unwrap_or(u64::MAX),
    ))
}

/// `whole.frac` times `unit` nanoseconds, saturating; fraction digits past
/// the nanosecond are dropped.
fn scaled(whole: &str, frac: &str, unit: u128) -> u128 {
    let whole = whole.bytes().fold(0u128, |n, b| {
        n.saturating_mul(10).saturating_add(u128::from(b - b'0'))
    });
    let mut part = 0u128;
    let mut scale = 1u128;
    for b in frac.bytes().take(18) {
        part = part * 10 + u128::from(b - b'0');
        scale *= 10;
    }
    whole
        .saturating_mul(unit)
        .saturating_add(part.saturating_mul(unit) / scale)
}

/// An RFC 3339 date-time, as Anthropic-style reset fields give it:
/// `2024-05-01T12:00:30Z`, `2024-05-01T12:00:30.250+02:00` (`T` or `t`,
/// `Z` or `z`, or an offset). `None` for anything else, a leap second
/// included, or a time the system clock cannot hold.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_sluice::adaptive::parse_rfc3339;
///
/// let at = parse_rfc3339("1970-01-01T00:01:00.5Z").unwrap();
/// assert_eq!(at, SystemTime::UNIX_EPOCH + Duration::from_millis(60_500));
/// assert_eq!(parse_rfc3339("1970-01-01T01:01:00+01:00"), parse_rfc3339("1970-01-01T00:01:00Z"));
/// assert_eq!(parse_rfc3339("2024-02-30T00:00:00Z"), None);
/// assert_eq!(parse_rfc3339("tomorrow"), None);
/// ```
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || !b.is_ascii() {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0u32;
    if b[at] == b'.' {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return None;
        }
        let digits = &s[start..at.min(start + 9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
    }
    let offset: i64 = match &s[at..] {
        "Z" | "z" => 0,
        rest if rest.len() == 6 && matches!(rest.as_bytes()[3], b':') => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (num(at + 1..at + 3)?, num(at + 4..at + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * i64::from(h * 3_600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second) - offset;
    let at = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
    };
    at.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(pairs: &[(&str, &str)]) -> ProviderLimits {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        ProviderLimits::from_headers(&h)
    }

    #[test]
    fn durations() {
        let d = parse_reset_duration;
        assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(d("1s"), Some(Duration::from_secs(1)));
        assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(d("1m30.5s"), Some(Duration::from_millis(90_500)));
        assert_eq!(d("1h2m3s"), Some(Duration::from_secs(3_723)));
        assert_eq!(d("0.25s"), Some(Duration::from_millis(250)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("7us"), Some(Duration::from_micros(7)));
        assert_eq!(d("7µs"), Some(Duration::from_micros(7)));
        assert_eq!(d("9ns"), Some(Duration::from_nanos(9)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("1.5"), Some(Duration::from_millis(1_500)));
        assert_eq!(
            d("1.0000000001s"),
            Some(Duration::from_secs(1)),
            "past the nanosecond"
        );
        for bad in [
            "", "s", "-1s", "+1s", "1 s", " 1s", "1x", "1m 2s", "1.s.", ".", "1..5s", "1sm", "5m3",
            "1d", "1e3s", "１s",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        // Huge values saturate.
        assert_eq!(
            d("99999999999999999999999999h"),
            Some(Duration::from_nanos(u64::MAX))
        );
        assert_eq!(d(&"9".repeat(500)), Some(Duration::from_nanos(u64::MAX)));
    }

    #[test]
    fn rfc3339() {
        let at = |s| parse_rfc3339(s);
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(epoch));
        assert_eq!(
            at("2015-10-21T07:28:00Z"),
            Some(epoch + Duration::from_secs(1_445_412_480))
        );
        assert_eq!(
            at("2015-10-21t09:28:00.125+02:00"),
            Some(epoch + Duration::from_millis(1_445_412_480_125))
        );
        assert_eq!(
            at("2015-10-21T07:28:00.123456789123z"),
            Some(epoch + Duration::from_nanos(1_445_412_480_123_456_789))
        );
        assert!(at("2024-02-29T00:00:00Z").is_some());
        assert_eq!(
            at("1969-12-31T23:59:59Z"),
            epoch.checked_sub(Duration::from_secs(1))
        );
        for bad in [
            "",
            "2015-10-21",
            "2015-10-21T07:28:00",
            "2015-10-21 07:28:00Z",
            "2015-10-21T07:28:60Z",
            "2015-13-21T07:28:00Z",
            "2015-00-21T07:28:00Z",
            "2023-02-29T00:00:00Z",
            "2015-10-32T07:28:00Z",
            "2015-10-21T24:00:00Z",
            "2015-10-21T07:28:00.Z",
            "2015-10-21T07:28:00+0200",
            "2015-10-21T07:28:00+24:00",
            "2015-10-21T07:28:00Q",
            "+015-10-21T07:28:00Z",
            "2015-1a-21T07:28:00Z",
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "2015-10-21T07:28:00Z ",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn openai_fields() {
        let l = limits(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let r = l.requests.unwrap();
        assert_eq!(
            (r.limit, r.remaining, r.reset),
            (Some(500), Some(499), Some(Duration::from_millis(120)))
        );
        let t = l.tokens.unwrap();
        assert_eq!(
            (t.limit, t.remaining, t.reset),
            (Some(30_000), Some(0), Some(Duration::from_secs(360)))
        );
        assert_eq!(
            l.pause(Duration::from_secs(60)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            l.pause(Duration::from_secs(3_600)),
            Some(Duration::from_secs(360))
        );
        // Malformed values are absent; a budget of nothing is none.
        let l = limits(&[
            ("x-ratelimit-remaining-tokens", "-3"),
            ("x-ratelimit-reset-tokens", "soon"),
            ("x-ratelimit-limit-tokens", "+30000"),
        ]);
        assert_eq!(l.tokens, None);
        assert_eq!(l.pause(Duration::from_secs(60)), None);
        // A remaining count without a reset asks for no wait.
        let l = limits(&[("x-ratelimit-remaining-requests", "0")]);
        assert_eq!(l.pause(Duration::from_secs(60)), None);
        // Huge counts saturate.
        let l = limits(&[("x-ratelimit-remaining-tokens", "99999999999999999999999")]);
        assert_eq!(l.tokens.unwrap().remaining, Some(u64::MAX));
    }

    #[test]
    fn anthropic_fields() {
        let date = ("date", "Wed, 21 Oct 2015 07:28:00 GMT");
        let l = limits(&[
            date,
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:01Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "900"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2015-10-21T07:28:30Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "100"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2015-10-21T07:28:05Z",
            ),
        ]);
        let r = l.requests.unwrap();
        assert_eq!(
            (r.limit, r.remaining, r.reset),
            (Some(50), Some(49), Some(Duration::from_secs(1)))
        );
        // No `tokens-*`: the tighter of input and output.
        let t = l.tokens.unwrap();
        assert_eq!(
            (t.remaining, t.reset),
            (Some(100), Some(Duration::from_secs(5)))
        );
        // `tokens-*` wins; a reset in the past is no wait.
        let l = limits(&[
            date,
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T07:27:00Z"),
            ("anthropic-ratelimit-output-tokens-remaining", "5"),
        ]);
        let t = l.tokens.unwrap();
        assert_eq!((t.remaining, t.reset), (Some(0), Some(Duration::ZERO)));
        assert_eq!(l.pause(Duration::from_secs(60)), Some(Duration::ZERO));
        // A reset in the year 9999 is capped.
        let l = limits(&[
            date,
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z"),
        ]);
        assert_eq!(
            l.pause(Duration::from_secs(60)),
            Some(Duration::from_secs(60))
        );
        // OpenAI fields win over Anthropic's.
        let l = limits(&[
            ("x-ratelimit-remaining-requests", "7"),
            ("anthropic-ratelimit-requests-remaining", "3"),
        ]);
        assert_eq!(l.requests.unwrap().remaining, Some(7));
    }

    #[test]
    fn ietf_fields() {
        let l = limits(&[
            (
                "ratelimit-policy",
                r#""rpm";q=60;w=60, "tpm";q=100000;w=60;qu="tokens", "bytes";q=9;qu="content-bytes""#,
            ),
            (
                "ratelimit",
                r#""rpm";r=0;t=12, "tpm";r=5000;t=3, "bytes";r=0;t=99"#,
            ),
        ]);
        let r = l.requests.unwrap();
        assert_eq!(
            (r.limit, r.remaining, r.reset),
            (Some(60), Some(0), Some(Duration::from_secs(12)))
        );
        let t = l.tokens.unwrap();
        assert_eq!(
            (t.limit, t.remaining, t.reset),
            (Some(100_000), Some(5_000), Some(Duration::from_secs(3)))
        );
        assert_eq!(
            l.pause(Duration::from_secs(60)),
            Some(Duration::from_secs(12))
        );
        // Without a policy every item counts requests; the tightest wins.
        let l = limits(&[("ratelimit", r#""a";r=5;t=1, "b";r=2;t=9, "c";r=-1"#)]);
        assert_eq!(l.requests.unwrap().remaining, Some(2));
        // Not a structured list: nothing.
        assert_eq!(limits(&[("ratelimit", "a;r=+1")]).requests, None);
    }

    #[test]
    fn retry_after_fields() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(limits(&[("retry-after", "7")]).retry_after, s(7));
        assert_eq!(
            limits(&[("retry-after", "7"), ("retry-after-ms", "1500")]).retry_after,
            Some(Duration::from_millis(1_500))
        );
        assert_eq!(
            limits(&[("retry-after", "7"), ("retry-after-ms", "x")]).retry_after,
            s(7)
        );
        assert_eq!(limits(&[("retry-after", "+7")]).retry_after, None);
        assert_eq!(
            limits(&[
                ("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT")
            ])
            .retry_after,
            s(10)
        );
        let huge = limits(&[("retry-after", "99999999999999999999999")]);
        assert_eq!(huge.pause(Duration::from_secs(60)), s(60));
    }

    const NAMES: &[&str] = &[
        "retry-after",
        "retry-after-ms",
        "date",
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ];

    /// Values near the grammars: numbers of any size, units, dates, items.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9]{1,30}",
            "-?[0-9]{0,25}(\\.[0-9]{0,25})?(h|m|s|ms|us|µs|ns|d|)",
            "([0-9]{1,22}(h|m|s|ms)){1,4}",
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
            "\"[a-z]{1,3}\";r=-?[0-9]{1,25};t=-?[0-9]{1,25}(, \"[a-z]\";q=[0-9]{1,25};qu=\"tokens\")?",
            "[ -~]{0,40}",
        ]
    }

    proptest! {
        /// Whatever an upstream sends, reading it never panics, and the
        /// wait it asks for is never over the cap.
        #[test]
        fn arbitrary_values_are_bounded(
            fields in proptest::collection::vec((0..NAMES.len(), value()), 0..8),
            cap_ms in 0u64..120_000,
        ) {
            let mut h = HeaderMap::new();
            for (i, v) in &fields {
                if let Ok(v) = http::HeaderValue::from_str(v) {
                    h.append(NAMES[*i], v);
                }
            }
            let cap = Duration::from_millis(cap_ms);
            let limits = ProviderLimits::from_headers(&h);
            if let Some(pause) = limits.pause(cap) {
                prop_assert!(pause <= cap);
            }
        }

        #[test]
        fn durations_never_panic(s in "\\PC{0,40}") {
            let _ = parse_reset_duration(&s);
            let _ = parse_rfc3339(&s);
        }
    }
}
