//! [`Respond`]: how rejections become responses and what admitted responses
//! carry; [`Responder`], the HTTP one.

mod limits;
mod problem;
mod responder;
mod success;

use http::Response;

use super::rejection::Rejection;

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

pub use limits::Limits;
pub use responder::Responder;
pub use success::SuccessHeaders;
