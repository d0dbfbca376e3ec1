//! [`Respond`]: how rejections become responses and what admitted responses
//! carry; [`Responder`], the HTTP one.

use std::fmt;
use std::fmt::Write as _;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::rejection::{Rejection, RejectionKind};
use crate::gcra::Decision;
use crate::headers::fields::{self as headers, Item, NameRef};
use crate::policy::Policy;
use crate::policy::QuotaStates;

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
///
/// let limiter = tower_sluice::Limiter::new(tower_sluice::Quota::per_minute(1));
/// limiter.check();
/// let err: tower_sluice::BoxError = limiter.check().into_result().unwrap_err().into();
/// let response = Json.reject(&Rejection::new(&*err));
/// assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert!(response.body().starts_with(r#"{"error":"slow down","wait":"#));
/// ```
///
/// Put it on a layer with
/// [`HttpLimitLayer::responder`](super::HttpLimitLayer::responder); the
/// examples of [`admitted`](Self::admitted) and [`Limits`] show admitted
/// responses getting headers of your own.
pub trait Respond<ResBody>: Send + Sync + 'static {
    /// What an admitted request's response receives (headers, usually);
    /// `()` for nothing.
    ///
    /// # Examples
    ///
    /// [`Responder`]'s are [`SuccessHeaders`] (the [`admitted`](Self::admitted)
    /// examples show others):
    ///
    /// ```
    /// use std::any::type_name;
    /// use tower_sluice::http::{Respond, Responder, SuccessHeaders};
    ///
    /// fn headers_of<R: Respond<String>>(_: &R) -> &'static str {
    ///     type_name::<R::Headers>()
    /// }
    /// assert_eq!(headers_of(&Responder::new()), type_name::<SuccessHeaders>());
    /// ```
    type Headers: Send + 'static;

    /// Called when a request is admitted, before the inner service is
    /// called: what its response will receive. `None` leaves it unchanged.
    ///
    /// # Examples
    ///
    /// Admitted responses say how many requests are left, in a header of
    /// our own:
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::{HeaderValue, Response};
    /// use tower::ServiceExt;
    /// use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// struct Remaining;
    ///
    /// impl Respond<Body> for Remaining {
    ///     type Headers = u32;
    ///
    ///     fn admitted(&self, limits: &Limits<'_>) -> Option<u32> {
    ///         Some(limits.decision().remaining())
    ///     }
    ///
    ///     fn add_headers(remaining: u32, response: &mut Response<Body>) {
    ///         response.headers_mut().insert("x-remaining", HeaderValue::from(remaining));
    ///     }
    ///
    ///     fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    ///         Responder::new().rejection_response(rejection)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .responder(Remaining);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = || http::Request::get("/").header("x-api-key", "k-1").body(Body::empty());
    /// assert_eq!(app.clone().oneshot(req()?).await?.headers()["x-remaining"], "59");
    /// assert_eq!(app.oneshot(req()?).await?.headers()["x-remaining"], "58");
    /// # Ok(())
    /// # }
    /// ```
    fn admitted(&self, limits: &Limits<'_>) -> Option<Self::Headers>;

    /// Adds what [`admitted`](Self::admitted) returned to the inner
    /// service's response.
    ///
    /// # Examples
    ///
    /// Wrapping [`Responder`] to add a header of our own next to its
    /// `RateLimit` fields:
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::{HeaderValue, Response};
    /// use tower::ServiceExt;
    /// use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// use tower_sluice::http::SuccessHeaders;
    ///
    /// struct Tagged(Responder);
    ///
    /// impl Respond<Body> for Tagged {
    ///     type Headers = SuccessHeaders;
    ///
    ///     fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
    ///         Respond::<Body>::admitted(&self.0, limits)
    ///     }
    ///
    ///     fn add_headers(headers: SuccessHeaders, response: &mut Response<Body>) {
    ///         response.headers_mut().insert("x-limited-by", HeaderValue::from_static("sluice"));
    ///         <Responder as Respond<Body>>::add_headers(headers, response);
    ///     }
    ///
    ///     fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    ///         self.0.rejection_response(rejection)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .responder(Tagged(Responder::new()));
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.headers()["x-limited-by"], "sluice");
    /// assert_eq!(res.headers()["ratelimit"], r#""per-minute";r=59;t=1"#);
    /// # Ok(())
    /// # }
    /// ```
    fn add_headers(headers: Self::Headers, response: &mut Response<ResBody>);

    /// The response for a request the limiter turned away.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::{Rejection, Respond, Responder};
    /// use tower_sluice::{BoxError, Limiter, Quota};
    ///
    /// let limiter = Limiter::new(Quota::per_minute(1));
    /// limiter.check();
    /// let err: BoxError = limiter.check().into_result().unwrap_err().into();
    /// let response: http::Response<String> = Responder::new().reject(&Rejection::new(&*err));
    /// assert_eq!(response.status(), 429);
    /// assert_eq!(response.headers()["retry-after"], "60");
    /// ```
    fn reject(&self, rejection: &Rejection<'_>) -> Response<ResBody>;
}

/// An admitted request's key's limits: its policy and the state of its
/// quotas right after the decision.
///
/// Handed to [`Respond::admitted`].
///
/// # Examples
///
/// A responder telling the client its tier and what is left of each quota:
///
/// ```
/// use axum::{Router, body::Body, routing::get};
/// use http::{HeaderValue, Response};
/// use tower::ServiceExt;
/// use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
/// use tower_sluice::per_key::Policy;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// struct Summary;
///
/// impl Respond<Body> for Summary {
///     type Headers = String;
///
///     fn admitted(&self, limits: &Limits<'_>) -> Option<String> {
///         let tier = limits.policy().name().unwrap_or("default");
///         let left: Vec<String> = limits.states().iter().map(|d| d.remaining().to_string()).collect();
///         Some(format!("{tier}: {}", left.join(" ")))
///     }
///
///     fn add_headers(summary: String, response: &mut Response<Body>) {
///         response.headers_mut().insert("x-quota", HeaderValue::try_from(summary).unwrap());
///     }
///
///     fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
///         Responder::new().rejection_response(rejection)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let free = Policy::new(Quota::per_minute(10)).and(Quota::per_day(100))?.named("free");
/// let limit = PerKeyLayer::new(free, HeaderKey::from_static("x-api-key")).http().responder(Summary);
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
/// assert_eq!(app.oneshot(req).await?.headers()["x-quota"], "free: 9 99");
/// # Ok(())
/// # }
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::{Router, body::Body, routing::get};
    /// # use http::{HeaderValue, Response};
    /// # use tower::ServiceExt;
    /// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// struct Echo;
    ///
    /// impl Respond<Body> for Echo {
    ///     type Headers = String;
    ///
    ///     fn admitted(&self, limits: &Limits<'_>) -> Option<String> {
    ///         limits.policy().name().map(str::to_owned)
    ///     }
    /// #   fn add_headers(value: String, response: &mut Response<Body>) {
    /// #       response.headers_mut().insert("x-echo", HeaderValue::try_from(value).unwrap());
    /// #   }
    /// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    /// #       Responder::new().rejection_response(rejection)
    /// #   }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new(Quota::per_minute(60)).named("free");
    /// let limit = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key")).http().responder(Echo);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.headers()["x-echo"], "free");
    /// # Ok(())
    /// # }
    /// ```
    pub fn policy(&self) -> &'a Policy {
        self.policy
    }

    /// The decision of the key's tightest quota.
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::{Router, body::Body, routing::get};
    /// # use http::{HeaderValue, Response};
    /// # use tower::ServiceExt;
    /// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// struct Echo;
    ///
    /// impl Respond<Body> for Echo {
    ///     type Headers = u32;
    ///
    ///     fn admitted(&self, limits: &Limits<'_>) -> Option<u32> {
    ///         Some(limits.decision().remaining())
    ///     }
    /// #   fn add_headers(value: u32, response: &mut Response<Body>) {
    /// #       response.headers_mut().insert("x-echo", HeaderValue::from(value));
    /// #   }
    /// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    /// #       Responder::new().rejection_response(rejection)
    /// #   }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // The tightest quota: the hourly one, after this request.
    /// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_hour(5))?;
    /// let limit = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key")).http().responder(Echo);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.headers()["x-echo"], "4");
    /// # Ok(())
    /// # }
    /// ```
    pub fn decision(&self) -> &'a Decision {
        self.decision
    }

    /// The state of each quota of the policy. Free for a policy of one
    /// quota; for several, read from the backend without consuming (a
    /// remote backend's grant gives the tightest quota only).
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::{Router, body::Body, routing::get};
    /// # use http::{HeaderValue, Response};
    /// # use tower::ServiceExt;
    /// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder};
    /// # use tower_sluice::per_key::Policy;
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// struct Echo;
    ///
    /// impl Respond<Body> for Echo {
    ///     type Headers = String;
    ///
    ///     fn admitted(&self, limits: &Limits<'_>) -> Option<String> {
    ///         let limits: Vec<String> = limits.states().iter().map(|d| format!("{}/{}", d.remaining(), d.limit())).collect();
    ///         Some(limits.join(", "))
    ///     }
    /// #   fn add_headers(value: String, response: &mut Response<Body>) {
    /// #       response.headers_mut().insert("x-echo", HeaderValue::try_from(value).unwrap());
    /// #   }
    /// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    /// #       Responder::new().rejection_response(rejection)
    /// #   }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let policy = Policy::new(Quota::per_minute(60)).and(Quota::per_hour(500))?;
    /// let limit = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key")).http().responder(Echo);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.headers()["x-echo"], "59/60, 499/500");
    /// # Ok(())
    /// # }
    /// ```
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
                limit: headers::rate_limit_one(fields, policy, decision),
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
///
/// Made by [`Responder`]'s [`Respond::admitted`]; a responder wrapping
/// [`Responder`] passes them on (see [`Respond::add_headers`]).
///
/// # Examples
///
/// ```
/// # use axum::{Router, body::Body, routing::get};
/// # use http::{HeaderValue, Response};
/// # use tower::ServiceExt;
/// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder, SuccessHeaders};
/// # use tower_sluice::{PerKeyLayer, Quota};
/// /// Responder's fields on successes only (2xx).
/// struct OnSuccess(Responder);
///
/// impl Respond<Body> for OnSuccess {
///     type Headers = SuccessHeaders;
///
///     fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
///         Respond::<Body>::admitted(&self.0, limits)
///     }
///
///     fn add_headers(headers: SuccessHeaders, response: &mut Response<Body>) {
///         if response.status().is_success() {
///             headers.apply(response.headers_mut());
///         }
///     }
/// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
/// #       self.0.rejection_response(rejection)
/// #   }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
///     .http()
///     .responder(OnSuccess(Responder::new()));
/// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
/// let req = |path| http::Request::get(path).header("x-api-key", "k-1").body(Body::empty());
/// let found = app.clone().oneshot(req("/")?).await?;
/// assert_eq!(found.headers()["ratelimit"], r#""per-minute";r=59;t=1"#);
/// let missing = app.oneshot(req("/nowhere")?).await?;
/// assert_eq!(missing.status(), 404);
/// assert!(missing.headers().get("ratelimit").is_none());
/// # Ok(())
/// # }
/// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::{Router, body::Body, routing::get};
    /// # use http::Response;
    /// # use tower::ServiceExt;
    /// # use tower_sluice::http::{HeaderKey, Limits, Rejection, Respond, Responder, SuccessHeaders};
    /// # use tower_sluice::{PerKeyLayer, Quota};
    /// struct Outer(Responder);
    ///
    /// impl Respond<Body> for Outer {
    ///     type Headers = SuccessHeaders;
    /// #   fn admitted(&self, limits: &Limits<'_>) -> Option<SuccessHeaders> {
    /// #       Respond::<Body>::admitted(&self.0, limits)
    /// #   }
    ///
    ///     fn add_headers(headers: SuccessHeaders, response: &mut Response<Body>) {
    ///         headers.apply(response.headers_mut());
    ///     }
    /// #   fn reject(&self, rejection: &Rejection<'_>) -> Response<Body> {
    /// #       self.0.rejection_response(rejection)
    /// #   }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Two limits on one route: both are listed.
    /// let key = || HeaderKey::from_static("x-api-key");
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(PerKeyLayer::new(Quota::per_second(5), key()).http())
    ///     .layer(PerKeyLayer::new(Quota::per_hour(100), key()).http().responder(Outer(Responder::new())));
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// let limits: Vec<_> = res.headers().get_all("ratelimit").iter().collect();
    /// assert_eq!(limits, [r#""per-second";r=4;t=1"#, r#""per-hour";r=99;t=36"#]);
    /// # Ok(())
    /// # }
    /// ```
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
