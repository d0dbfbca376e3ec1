//! gRPC (tonic): rejected calls become `RESOURCE_EXHAUSTED` (rate limits)
//! or `UNAVAILABLE` (circuit open, queue full) statuses, with the wait in
//! `grpc-retry-pushback-ms` metadata.
//!
//! Put [`PerKeyLayer::grpc`](crate::PerKeyLayer::grpc) on a tonic server
//! and rejections are answered as gRPC statuses (a trailers-only response)
//! that tonic clients see as `Status`; or map errors yourself with
//! [`status_for`] / [`into_status`].
//!
//! ```no_run
//! use tower_sluice::{PerKeyLayer, Quota};
//! use tower_sluice::http::HeaderKey;
//!
//! // A tonic server, limited per `x-api-key` metadata:
//! let api_key = HeaderKey::from_static("x-api-key");
//! let limit = PerKeyLayer::new(Quota::per_minute(600), api_key).grpc();
//! # fn serve<L>(_: L) {}
//! // tonic::transport::Server::builder().layer(limit).add_service(...).serve(addr)
//! # serve(limit);
//! ```
//!
//! | rejection | code | `grpc-retry-pushback-ms` |
//! |---|---|---|
//! | rate limited | `RESOURCE_EXHAUSTED` | the wait, rounded up |
//! | too many in flight | `RESOURCE_EXHAUSTED` | — |
//! | too many keys | `RESOURCE_EXHAUSTED` | the wait |
//! | no key | `INVALID_ARGUMENT` | — |
//! | unavailable (later: circuit open, queue) | `UNAVAILABLE` | the wait, when known |

use std::time::Duration;

use http::Response;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use super::{HttpLimitLayer, Limits, Rejection, RejectionKind, Respond};
use crate::BoxError;
use crate::per_key::PerKeyLayer;

/// The metadata key of gRPC's retry pushback (gRFC A6): milliseconds the
/// client should wait before retrying.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::grpc::{RETRY_PUSHBACK, status_for};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_second(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let status = status_for(&*err).unwrap();
/// let ms: u64 = status.metadata().get(RETRY_PUSHBACK).unwrap().to_str()?.parse()?;
/// assert!(ms > 900 && ms <= 1_000);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The status for `rejection`, or `None` when it is not a limiter error.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::Rejection;
/// use tower_sluice::http::grpc::{RETRY_PUSHBACK, status};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_minute(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let status = status(&Rejection::new(&*err)).unwrap();
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert!(status.message().starts_with("rate limit exceeded"));
/// assert!(status.metadata().get(RETRY_PUSHBACK).is_some());
///
/// // Not a limiter error: no status.
/// let err: BoxError = "connection reset".into();
/// assert!(tower_sluice::http::grpc::status(&Rejection::new(&*err)).is_none());
/// ```
pub fn status(rejection: &Rejection<'_>) -> Option<Status> {
    let code = match rejection.kind() {
        RejectionKind::RateLimited
        | RejectionKind::TooManyInFlight
        | RejectionKind::TooManyKeys => Code::ResourceExhausted,
        RejectionKind::MissingKey | RejectionKind::TooLarge => Code::InvalidArgument,
        RejectionKind::Unavailable => Code::Unavailable,
        _ => return None,
    };
    let mut status = Status::new(code, rejection.cause().to_string());
    if let Some(wait) = rejection.retry_after() {
        let ms = pushback_ms(wait);
        status
            .metadata_mut()
            .insert(RETRY_PUSHBACK, MetadataValue::from(ms));
    }
    Some(status)
}

/// The status for a limiter error anywhere in `error`'s source chain, or
/// `None` for other errors.
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::error::MissingKey;
/// use tower_sluice::http::grpc::status_for;
///
/// let err: BoxError = MissingKey::default().into();
/// assert_eq!(status_for(&*err).unwrap().code(), tonic::Code::InvalidArgument);
/// ```
pub fn status_for(error: &(dyn std::error::Error + 'static)) -> Option<Status> {
    status(&Rejection::new(error))
}

/// The status for any error a layer returned: limiter errors as
/// [`status_for`], others as tonic's [`Status::from_error`] would.
///
/// # Examples
///
/// ```
/// use tower_sluice::BoxError;
/// use tower_sluice::error::MissingKey;
/// use tower_sluice::http::grpc::into_status;
///
/// let missing: BoxError = MissingKey::default().into();
/// assert_eq!(into_status(missing).code(), tonic::Code::InvalidArgument);
/// let other: BoxError = "connection reset".into();
/// assert_eq!(into_status(other).code(), tonic::Code::Unknown);
/// ```
pub fn into_status(error: BoxError) -> Status {
    match status_for(&*error) {
        Some(status) => status,
        None => Status::from_error(error),
    }
}

/// Milliseconds, rounded up, at least 1.
fn pushback_ms(wait: Duration) -> u64 {
    let ms = wait.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The gRPC [`Respond`]er: rejections become trailers-only gRPC responses
/// carrying the [`status`]; admitted responses are unchanged. Other errors
/// (from a remote backend) become `UNKNOWN`.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::grpc::GrpcResponder;
/// use tower_sluice::http::{Rejection, Respond};
/// use tower_sluice::{BoxError, Limiter, Quota};
///
/// let limiter = Limiter::new(Quota::per_second(1));
/// limiter.check();
/// let err: BoxError = limiter.check().into_result().unwrap_err().into();
/// let response: http::Response<String> = GrpcResponder::default().reject(&Rejection::new(&*err));
/// assert_eq!(response.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
/// assert_eq!(response.headers()["content-type"], "application/grpc");
/// ```
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct GrpcResponder;

impl<B: Default> Respond<B> for GrpcResponder {
    type Headers = ();

    #[inline]
    fn admitted(&self, _: &Limits<'_>) -> Option<()> {
        None
    }

    #[inline]
    fn add_headers(_: (), _: &mut Response<B>) {}

    fn reject(&self, rejection: &Rejection<'_>) -> Response<B> {
        status(rejection)
            .unwrap_or_else(|| Status::unknown("rate limiter failed"))
            .into_http()
    }
}

impl<K, X, B> PerKeyLayer<K, X, B> {
    /// Answers rejections with gRPC statuses ([`GrpcResponder`]) instead
    /// of errors, for tonic servers: `RESOURCE_EXHAUSTED` with
    /// `grpc-retry-pushback-ms` when a key is over its limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
    /// use tower_sluice::http::HeaderKey;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(1), HeaderKey::from_static("x-api-key")).grpc();
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(limit)
    ///     .service(service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::new())) }));
    /// let call = || Request::post("/echo.Echo/Say").header("x-api-key", "k-1").body(());
    /// let ok = svc.ready().await?.call(call()?).await?;
    /// assert!(ok.headers().get("grpc-status").is_none());
    /// let limited = svc.ready().await?.call(call()?).await?;
    /// // Trailers-only: HTTP 200 with grpc-status 8, RESOURCE_EXHAUSTED.
    /// assert_eq!(limited.status(), 200);
    /// assert_eq!(limited.headers()["grpc-status"], "8");
    /// assert!(limited.headers().contains_key("grpc-retry-pushback-ms"));
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    #[must_use]
    pub fn grpc(self) -> HttpLimitLayer<K, X, B, GrpcResponder> {
        HttpLimitLayer::with_responder(self, GrpcResponder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushback_rounds_up() {
        assert_eq!(pushback_ms(Duration::ZERO), 1);
        assert_eq!(pushback_ms(Duration::from_micros(1)), 1);
        assert_eq!(pushback_ms(Duration::from_micros(1_001)), 2);
        assert_eq!(pushback_ms(Duration::from_secs(3)), 3_000);
    }
}
