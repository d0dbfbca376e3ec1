//! [`Respond`]: how rejections become responses and what admitted responses
//! carry; [`Responder`], the HTTP one.

use std::fmt;
use std::fmt::Write as _;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::headers::{self, Item, NameRef};
use super::rejection::{Rejection, RejectionKind};
use crate::Decision;
use crate::backend::QuotaStates;
use crate::per_key::Policy;

/// Turns a request the limiter rejected into a response, and decides what
/// an admitted request's response carries (such as `RateLimit` headers).
///
/// [`Responder`] is the HTTP implementation (429 / 400 / 503 with
/// `Retry-After` and `RateLimit` fields);
/// `grpc::GrpcResponder` (with the `tonic` feature) makes gRPC statuses.
/// Implement it to answer in your own format, and pass it to
/// [`HttpLimitLayer::responder`](super::HttpLimitLayer::responder).
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_sluice::http::{Limits, Rejection, Respond};
///
/// /// Rejections as JSON of our own shape; admitted responses unchanged.
/// struct Json;
///
/// impl Respond<String> for Json {
///     type Headers = ();
///
///     fn admitted(&self, _: &Limits<'_>) -> Option<()> {
///         None
///     }
///
///     fn add_headers(_: (), _: &mut Response<String>) {}
///
///     fn reject(&self, rejection: &Rejection<'_>) -> Response<String> {
///         let wait = rejection.retry_after().map_or(0, |d| d.as_secs());
///         let mut response = Response::new(format!(r#"{{"error":"slow down","wait":{wait}}}"#));
///         *response.status_mut() = rejection.kind().status();
///         response
///     }
/// }
/// ```
pub trait Respond<ResBody>: Send + Sync + 'static {
    /// What an admitted request's response receives (headers, usually);
    /// `()` for nothing.
    type Headers: Send + 'static;

    /// Called when a request is admitted, before the inner service is
    /// called: what its response will receive. `None` leaves it unchanged.
    fn admitted(&self, limits: &Limits<'_>) -> Option<Self::Headers>;

    /// Adds what [`admitted`](Self::admitted) returned to the inner
    /// service's response.
    fn add_headers(headers: Self::Headers, response: &mut Response<ResBody>);

    /// The response for a request the limiter turned away.
    fn reject(&self, rejection: &Rejection<'_>) -> Response<ResBody>;
}

/// An admitted request's key's limits: its policy and the state of its
/// quotas right after the decision.
pub struct Limits<'a> {
    policy: &'a Policy,
    decision: &'a Decision,
    lookup: Option<&'a dyn Fn() -> QuotaStates>,
}

impl<'a> Limits<'a> {
    pub(crate) fn new(
        policy: &'a Policy,
        decision: &'a Decision,
        lookup: Option<&'a dyn Fn() -> QuotaStates>,
    ) -> Self {
        Limits {
            policy,
            decision,
            lookup,
        }
    }

    /// The key's policy.
    pub fn policy(&self) -> &'a Policy {
        self.policy
    }

    /// The decision of the key's tightest quota.
    pub fn decision(&self) -> &'a Decision {
        self.decision
    }

    /// The state of each quota of the policy. Free for a policy of one
    /// quota; for several, read from the backend without consuming (a
    /// remote backend's grant gives the tightest quota only).
    pub fn states(&self) -> QuotaStates {
        match (self.single(), self.lookup) {
            (None, Some(lookup)) => lookup(),
            _ => {
                let mut states = QuotaStates::default();
                states.push(*self.decision);
                states
            }
        }
    }

    /// The one state [`states`](Self::states) would hold, without
    /// building them: a policy of one quota, or a grant with no lookup.
    #[inline]
    pub(crate) fn single(&self) -> Option<&'a Decision> {
        match self.lookup {
            Some(_) if self.policy.len() > 1 => None,
            _ => Some(self.decision),
        }
    }
}

impl fmt::Debug for Limits<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("policy", &self.policy)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// The HTTP [`Respond`]er: rejections become 429 (rate limited, too many in
/// flight, too many keys), 400 (no key; configurable) or 503 (unavailable)
/// responses with `Retry-After` (whole seconds, rounded up, at least 1) and
/// the `RateLimit-Policy` / `RateLimit` fields of the key's policy (see
/// [`headers`](super::headers)); admitted responses carry the same fields.
///
/// The body is the error's message as `text/plain`, or an RFC 9457 problem
/// details object (`application/problem+json`) with
/// [`problem_details`](Self::problem_details). Other errors (not from the
/// limiter) become a bare 500 that does not reveal the message.
///
/// ```
/// use http::StatusCode;
/// use tower_sluice::http::Responder;
///
/// let responder = Responder::new()
///     .legacy_headers(true)
///     .problem_details(true)
///     .missing_key_status(StatusCode::UNAUTHORIZED);
/// # let _ = responder;
/// ```
#[derive(Debug, Clone)]
pub struct Responder {
    success_headers: bool,
    legacy_headers: bool,
    problem_details: bool,
    missing_key_status: StatusCode,
}

impl Default for Responder {
    fn default() -> Self {
        Responder {
            success_headers: true,
            legacy_headers: false,
            problem_details: false,
            missing_key_status: StatusCode::BAD_REQUEST,
        }
    }
}

/// The `type` of RFC 9457 problems from a quota (draft-10, section 5.1).
const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The `type` of RFC 9457 problems from reduced capacity (section 5.2).
const REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

impl Responder {
    /// The defaults: `RateLimit` fields on admitted responses too, no
    /// legacy fields, plain-text bodies, 400 for a missing key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether admitted responses carry `RateLimit-Policy` and `RateLimit`
    /// (default `true`).
    #[must_use]
    pub fn success_headers(mut self, on: bool) -> Self {
        self.success_headers = on;
        self
    }

    /// Whether responses also carry the legacy `X-RateLimit-Limit`,
    /// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (delay-seconds) of
    /// the tightest quota, for old clients (default `false`).
    #[must_use]
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }

    /// Whether rejection bodies are RFC 9457 problem details
    /// (`application/problem+json`, with the `violated-policies` member of
    /// the draft's quota-exceeded type) instead of plain text (default
    /// `false`).
    #[must_use]
    pub fn problem_details(mut self, on: bool) -> Self {
        self.problem_details = on;
        self
    }

    /// The status for a request without a key (default 400 Bad Request;
    /// 401 suits a missing API key).
    #[must_use]
    pub fn missing_key_status(mut self, status: StatusCode) -> Self {
        self.missing_key_status = status;
        self
    }

    /// The response for any error a layer returned: limiter errors as
    /// described [above](Self), other errors as a bare 500. For
    /// `HandleErrorLayer` and hand-written error handlers.
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::MissingKey;
    /// use tower_sluice::http::Responder;
    ///
    /// let err: BoxError = MissingKey::default().into();
    /// let response: http::Response<String> = Responder::new().error_response(&*err);
    /// assert_eq!(response.status(), 400);
    /// ```
    pub fn error_response<B: From<String>>(
        &self,
        error: &(dyn std::error::Error + 'static),
    ) -> Response<B> {
        self.rejection_response(&Rejection::new(error))
    }

    /// The response for `rejection`.
    pub fn rejection_response<B: From<String>>(&self, rejection: &Rejection<'_>) -> Response<B> {
        let kind = rejection.kind();
        let status = match kind {
            RejectionKind::MissingKey => self.missing_key_status,
            kind => kind.status(),
        };
        let mut headers = HeaderMap::new();
        let retry_secs = rejection.retry_after().map(headers::delay_seconds);
        if let Some(secs) = retry_secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        let mut violated = Vec::new();
        self.limit_fields(rejection, retry_secs, &mut headers, &mut violated);
        let body = if kind == RejectionKind::Other {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            "internal server error\n".to_string()
        } else if self.problem_details {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            );
            problem(kind, status, rejection, retry_secs, &violated)
        } else {
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            format!("{}\n", rejection.cause())
        };
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// `RateLimit-Policy`, `RateLimit` (and legacy) fields of a rejection;
    /// collects the names of the violated policy items.
    fn limit_fields(
        &self,
        rejection: &Rejection<'_>,
        retry_secs: Option<u64>,
        headers: &mut HeaderMap,
        violated: &mut Vec<String>,
    ) {
        let kind = rejection.kind();
        if !matches!(
            kind,
            RejectionKind::RateLimited | RejectionKind::TooManyInFlight
        ) {
            return;
        }
        let limited = rejection.rate_limited();
        // Without the key's policy (an error mapped after the fact), the
        // denying quota alone stands for it.
        let fallback;
        let policy = match (rejection.policy(), limited) {
            (Some(policy), _) => policy,
            (None, Some(limited)) => {
                let p = Policy::new(limited.quota());
                fallback = match limited.policy() {
                    Some(name) => p.named(name),
                    None => p,
                };
                &fallback
            }
            (None, None) => return,
        };
        let fields = policy.http_fields();
        let mut items: Vec<Item<'_>> = match rejection.states() {
            Some(states) => states
                .iter()
                .map(|d| Item::from_decision(fields, policy, d))
                .collect(),
            None => Vec::new(),
        };
        if let Some(limited) = limited {
            // The denying quota: as the decision saw it, whatever the
            // clock says since.
            let quota = limited.quota();
            let index = policy.quotas().position(|q| q == quota);
            let name = match index {
                Some(i) => NameRef::Borrowed(&fields.names[i]),
                None => NameRef::Owned(headers::quoted(
                    policy.name(),
                    &headers::period_name(quota.period()),
                )),
            };
            violated.push(unquote(match &name {
                NameRef::Borrowed(s) => s,
                NameRef::Owned(s) => s,
            }));
            let item = Item {
                name,
                quota: Some(quota),
                remaining: u64::from(limited.remaining()),
                reset: Some(headers::delay_seconds(limited.retry_after())),
            };
            match items.iter_mut().find(|i| i.quota == Some(quota)) {
                Some(slot) => *slot = item,
                None => items.push(item),
            }
        }
        if let Some(secs) = retry_secs {
            // No exhausted item says to come back before Retry-After.
            for item in items.iter_mut().filter(|i| i.remaining == 0) {
                item.reset = Some(item.reset.unwrap_or(0).max(secs));
            }
        }
        if kind == RejectionKind::TooManyInFlight
            && let Some(name) = &fields.concurrency
        {
            violated.push(unquote(name));
            items.push(Item {
                name: NameRef::Borrowed(name),
                quota: None,
                remaining: 0,
                reset: None,
            });
        }
        headers.insert(headers::RATELIMIT_POLICY, fields.policy.clone());
        if self.legacy_headers {
            headers::insert_legacy(headers, &items);
        }
        if !items.is_empty() {
            headers.insert(headers::RATELIMIT, headers::format_items(items));
        }
    }

    /// The fields of an admitted response.
    fn success_fields(&self, limits: &Limits<'_>) -> SuccessHeaders {
        let policy = limits.policy();
        let fields = policy.http_fields();
        if !self.legacy_headers
            && let Some(decision) = limits.single()
        {
            // One item (the common case), formatted straight into its value.
            return SuccessHeaders {
                policy: fields.policy.clone(),
                limit: headers::format_item(&Item::from_decision(fields, policy, decision)),
                legacy: None,
            };
        }
        let states = limits.states();
        let items = || {
            states
                .iter()
                .map(|d| Item::from_decision(fields, policy, d))
        };
        let legacy = if self.legacy_headers {
            let items: Vec<Item<'_>> = items().collect();
            headers::tightest(&items)
                .and_then(headers::legacy)
                .map(Box::new)
        } else {
            None
        };
        SuccessHeaders {
            policy: fields.policy.clone(),
            limit: headers::format_items(items()),
            legacy,
        }
    }
}

/// The fields an admitted request's response receives from [`Responder`].
#[derive(Debug, Clone)]
pub struct SuccessHeaders {
    policy: HeaderValue,
    limit: HeaderValue,
    legacy: Option<Box<[(HeaderName, HeaderValue); 3]>>,
}

impl SuccessHeaders {
    /// Adds the fields to `headers`: `RateLimit-Policy` and `RateLimit`
    /// appended (so limits of outer layers stay listed), legacy fields set
    /// unless already present.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.append(headers::RATELIMIT_POLICY, self.policy);
        headers.append(headers::RATELIMIT, self.limit);
        if let Some(legacy) = self.legacy {
            for (name, value) in *legacy {
                headers.entry(name).or_insert(value);
            }
        }
    }
}

impl<B: From<String>> Respond<B> for Responder {
    type Headers = SuccessHeaders;

    #[inline]
    fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
        self.success_headers.then(|| self.success_fields(limits))
    }

    #[inline]
    fn add_headers(headers: SuccessHeaders, response: &mut Response<B>) {
        headers.apply(response.headers_mut());
    }

    fn reject(&self, rejection: &Rejection<'_>) -> Response<B> {
        self.rejection_response(rejection)
    }
}

/// An item name without its quotes and escapes.
fn unquote(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// An RFC 9457 problem details object.
fn problem(
    kind: RejectionKind,
    status: StatusCode,
    rejection: &Rejection<'_>,
    retry_secs: Option<u64>,
    violated: &[String],
) -> String {
    let (kind_uri, title) = match kind {
        RejectionKind::RateLimited | RejectionKind::TooManyInFlight => (
            QUOTA_EXCEEDED,
            "Request cannot be satisfied as assigned quota has been exceeded",
        ),
        RejectionKind::Unavailable => (
            REDUCED_CAPACITY,
            "Request cannot be satisfied due to temporary server capacity constraints",
        ),
        _ => ("about:blank", status.canonical_reason().unwrap_or("Error")),
    };
    let mut out = String::with_capacity(256);
    out.push_str("{\"type\":");
    json_string(&mut out, kind_uri);
    out.push_str(",\"title\":");
    json_string(&mut out, title);
    let _ = write!(out, ",\"status\":{}", status.as_u16());
    out.push_str(",\"detail\":");
    json_string(&mut out, &rejection.cause().to_string());
    if !violated.is_empty() {
        out.push_str(",\"violated-policies\":[");
        for (i, name) in violated.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
        }
        out.push(']');
    }
    if let Some(secs) = retry_secs {
        let _ = write!(out, ",\"retry-after\":{secs}");
    }
    out.push_str("}\n");
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn names_unquote() {
        assert_eq!(unquote(r#""free-per-minute""#), "free-per-minute");
        assert_eq!(unquote(r#""a\"b\\c""#), r#"a"b\c"#);
    }
}
