//! `Responder`: the HTTP `Respond`er, its settings and the fields it writes.

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::problem::{problem, unquote};
use super::{Limits, Respond, SuccessHeaders};
use crate::headers::fields::{self as headers, Item, NameRef};
use crate::http::{Rejection, RejectionKind};
use crate::policy::Policy;

/// The HTTP [`Respond`]er: rejections become 429 (rate limited, too many in
/// flight, too many keys), 400 (no key; configurable) or 503 (unavailable)
/// responses with `Retry-After` (whole seconds, rounded up, at least 1) and
/// the `RateLimit-Policy` / `RateLimit` fields of the key's policy (see
/// [`headers`](crate::http::headers)); admitted responses carry the same fields.
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

impl Responder {
    /// The defaults: `RateLimit` fields on admitted responses too, no
    /// legacy fields, plain-text bodies, 400 for a missing key.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::MissingKey;
    /// use tower_sluice::http::{Rejection, Responder};
    ///
    /// let err: BoxError = MissingKey::default().into();
    /// let response: http::Response<String> = Responder::new().rejection_response(&Rejection::new(&*err));
    /// assert_eq!(response.status(), 400);
    /// assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether admitted responses carry `RateLimit-Policy` and `RateLimit`
    /// (default `true`).
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use tower::ServiceExt;
    /// use tower_sluice::http::{HeaderKey, Responder};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .responder(Responder::new().success_headers(false));
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.status(), 200);
    /// assert!(res.headers().get("ratelimit-policy").is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn success_headers(mut self, on: bool) -> Self {
        self.success_headers = on;
        self
    }

    /// Whether responses also carry the legacy `X-RateLimit-Limit`,
    /// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (delay-seconds) of
    /// the tightest quota, for old clients (default `false`).
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::{Rejection, Responder};
    /// use tower_sluice::{BoxError, Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err: BoxError = limiter.check().into_result().unwrap_err().into();
    /// let response: http::Response<String> =
    ///     Responder::new().legacy_headers(true).rejection_response(&Rejection::new(&*err));
    /// assert_eq!(response.headers()["x-ratelimit-limit"], "1");
    /// assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    /// assert_eq!(response.headers()["x-ratelimit-reset"], "60");
    /// ```
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.legacy_headers = on;
        self
    }

    /// Whether rejection bodies are RFC 9457 problem details
    /// (`application/problem+json`, with the `violated-policies` member of
    /// the draft's quota-exceeded type) instead of plain text (default
    /// `false`).
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::{Rejection, Responder};
    /// use tower_sluice::{BoxError, Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err: BoxError = limiter.check().into_result().unwrap_err().into();
    /// let response: http::Response<String> =
    ///     Responder::new().problem_details(true).rejection_response(&Rejection::new(&*err));
    /// assert_eq!(response.headers()["content-type"], "application/problem+json");
    /// assert!(response.body().contains(r#""status":429"#));
    /// assert!(response.body().contains(r#""violated-policies":["per-minute"]"#));
    /// assert!(response.body().contains(r#""retry-after":60"#));
    /// ```
    pub fn problem_details(mut self, on: bool) -> Self {
        self.problem_details = on;
        self
    }

    /// The status for a request without a key (default 400 Bad Request;
    /// 401 suits a missing API key).
    #[must_use]
    ///
    /// # Examples
    ///
    /// ```
    /// use http::StatusCode;
    /// use tower_sluice::BoxError;
    /// use tower_sluice::error::MissingKey;
    /// use tower_sluice::http::{Rejection, Responder};
    ///
    /// let err: BoxError = MissingKey::default().into();
    /// let responder = Responder::new().missing_key_status(StatusCode::UNAUTHORIZED);
    /// let response: http::Response<String> = responder.rejection_response(&Rejection::new(&*err));
    /// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::{Rejection, Responder};
    /// use tower_sluice::{BoxError, Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err: BoxError = limiter.check().into_result().unwrap_err().into();
    /// let response: http::Response<String> = Responder::new().rejection_response(&Rejection::new(&*err));
    /// assert_eq!(response.status(), 429);
    /// assert_eq!(response.headers()["retry-after"], "60");
    /// assert_eq!(response.headers()["ratelimit-policy"], r#""per-minute";q=1;w=60"#);
    /// assert_eq!(response.headers()["ratelimit"], r#""per-minute";r=0;t=60"#);
    /// assert!(response.body().starts_with("rate limit exceeded"));
    /// ```
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
                None => {
                    NameRef::Owned(headers::quoted(policy.name(), &headers::quota_name(&quota)))
                }
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
        if !self.legacy_headers
            && let Some((remaining, reset)) =
                limits.single().and_then(|d| headers::first_item(policy, d))
        {
            // One item (the common case): formatted when the response is
            // ready.
            return SuccessHeaders::one(policy, remaining, reset);
        }
        let fields = policy.http_fields();
        let states = limits.states();
        let items = || {
            states
                .iter()
                .map(|d| Item::from_decision(fields, policy, d))
        };
        let legacy = if self.legacy_headers {
            let items: Vec<Item<'_>> = items().collect();
            headers::tightest(&items).and_then(headers::legacy)
        } else {
            None
        };
        SuccessHeaders::formatted(
            fields.policy.clone(),
            headers::format_items(items()),
            legacy,
        )
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
