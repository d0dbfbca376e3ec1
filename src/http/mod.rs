//! HTTP integration: key extractors, rejections as responses (429 with
//! `Retry-After` and the IETF `RateLimit` fields), and the layer that puts
//! a per-key limit on an axum router with one `.layer(...)`.
//!
//! | piece | what it does |
//! |---|---|
//! | [`PeerIp`] | keys by the connection's peer address |
//! | [`ForwardedIp`] + [`TrustedProxies`] | keys by the client address behind your proxies, believing `X-Forwarded-For` / `Forwarded` only from them |
//! | [`HeaderKey`] | keys by a header, such as `x-api-key` |
//! | [`PerKeyLayer::http`](crate::PerKeyLayer::http) → [`HttpLimitLayer`] | rejections become responses; the service's error type stays the inner one's (axum's `Infallible`) |
//! | [`Responder`] | the responses: status, `Retry-After`, [`headers`], body |
//! | [`Rejection`] | a limiter error classified for any protocol |
//! | `handle_error` (`axum`) | the same responses from a `HandleErrorLayer` |
//! | `grpc` (`tonic`) | `RESOURCE_EXHAUSTED` / `UNAVAILABLE` statuses with retry pushback |
//!
//! Any closure `|req: &http::Request<B>| -> Option<K>` is a key extractor
//! too, for keys made of several parts (an API key and a route, say).
//!
//! # Example
//!
//! An axum app limited to 2 requests per minute per API key, answering 429
//! with `Retry-After` and `RateLimit` fields:
//!
//! ```
//! use axum::{Router, body::Body, routing::get};
//! use http::{Request, StatusCode};
//! use tower::{Service, ServiceExt};
//! use tower_sluice::{PerKeyLayer, Quota};
//! use tower_sluice::http::HeaderKey;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(PerKeyLayer::new(Quota::per_minute(2), HeaderKey::from_static("x-api-key")).http());
//! let mut app = app.into_service::<Body>();
//!
//! let request = || Request::get("/").header("x-api-key", "k-1").body(Body::empty());
//! let ok = app.ready().await?.call(request()?).await?;
//! assert_eq!(ok.status(), StatusCode::OK);
//! assert_eq!(ok.headers()["ratelimit-policy"], r#""per-minute";q=2;w=60"#);
//! assert_eq!(ok.headers()["ratelimit"], r#""per-minute";r=1;t=30"#);
//!
//! app.ready().await?.call(request()?).await?;
//! let limited = app.ready().await?.call(request()?).await?;
//! assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
//! assert_eq!(limited.headers()["retry-after"], "30");
//! assert_eq!(limited.headers()["ratelimit"], r#""per-minute";r=0;t=30"#);
//!
//! // No key: 400.
//! let anonymous = Request::get("/").body(Body::empty())?;
//! assert_eq!(app.ready().await?.call(anonymous).await?.status(), StatusCode::BAD_REQUEST);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! [`HttpLimitLayer`]'s service never fails for a limit: every limiter
//! error becomes a response, and the inner service's errors pass through
//! unchanged. To map errors of other layers (such as
//! [`RateLimitLayer::reject`](crate::RateLimitLayer::reject)), use
//! [`Responder::error_response`] or, in axum, `handle_error`.

pub mod future;
pub use crate::headers::fields as headers;
mod key;
mod layer;
mod rejection;
mod respond;
mod service;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod axum;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use self::axum::handle_error;
pub use key::{
    ForwardedHeader, ForwardedIp, FromHeader, HeaderKey, InvalidProxy, MAX_KEY_LEN, PeerIp,
    TrustedProxies, peer_ip,
};
pub use layer::HttpLimitLayer;
pub use rejection::{Rejection, RejectionKind};
pub use respond::{Limits, Respond, Responder, SuccessHeaders};
pub use service::HttpLimit;
