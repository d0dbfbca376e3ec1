//! axum helpers: [`handle_error`] for `HandleErrorLayer`.

use axum::response::Response;

use super::Responder;
use crate::BoxError;

/// An error handler for axum's `HandleErrorLayer`: limiter errors become
/// their responses (429 with `Retry-After` and `RateLimit` fields, 400 for
/// a missing key, 503 when unavailable), any other error a bare 500. For
/// layers that return errors, such as
/// [`RateLimitLayer::reject`](crate::RateLimitLayer::reject) or a plain
/// [`PerKeyLayer`](crate::PerKeyLayer); `PerKeyLayer::http()` needs no
/// handler at all, and knows every quota of the key's policy where this
/// sees only the one that denied.
///
/// ```
/// use axum::{Router, error_handling::HandleErrorLayer, routing::get};
/// use tower::ServiceBuilder;
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(HandleErrorLayer::new(tower_sluice::http::handle_error))
///             .layer(RateLimitLayer::new(Quota::per_second(100)).reject()),
///     );
/// # let _ = app;
/// ```
pub async fn handle_error(error: BoxError) -> Response {
    Responder::new().error_response(&*error)
}
