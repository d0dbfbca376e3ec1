//! `SuccessHeaders`: the fields `Responder` gives admitted responses.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::headers::fields as headers;

/// The fields an admitted request's response receives from [`Responder`].
///
/// Made by [`Responder`]'s [`Respond::admitted`]; a responder wrapping
/// [`Responder`] passes them on (see [`Respond::add_headers`]).
///
/// [`Responder`]: super::Responder
/// [`Respond::admitted`]: super::Respond::admitted
/// [`Respond::add_headers`]: super::Respond::add_headers
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
    pub(super) policy: HeaderValue,
    pub(super) limit: HeaderValue,
    pub(super) legacy: Option<Box<[(HeaderName, HeaderValue); 3]>>,
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
