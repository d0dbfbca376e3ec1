//! HTTP responses, whatever the client: [`HttpResponse`] and the breaker's
//! [`HttpStatus`].

use std::any::Any;

use http::{HeaderMap, StatusCode};

use super::{Classify, Outcome};

/// A response of an HTTP client: its status and headers. The HTTP
/// classifiers ([`HttpStatus`], `retry::HttpRetry`, `adaptive::HttpFeedback`)
/// read responses through it, so they work with `http::Response` (hyper,
/// axum, tonic) and, with the `reqwest` feature, `reqwest::Response`.
///
/// # Examples
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_sluice::classify::{Classify, HttpResponse, HttpStatus, Outcome};
///
/// /// The response type of a client of your own.
/// struct MyResponse { code: u16, headers: HeaderMap }
///
/// impl HttpResponse for MyResponse {
///     fn status(&self) -> StatusCode {
///         StatusCode::from_u16(self.code).unwrap_or(StatusCode::BAD_GATEWAY)
///     }
///     fn headers(&self) -> &HeaderMap {
///         &self.headers
///     }
/// }
///
/// let res = MyResponse { code: 502, headers: HeaderMap::new() };
/// assert_eq!(HttpStatus.classify(&Ok::<_, std::io::Error>(res)), Outcome::Failure);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an HTTP response the HTTP classifiers can read",
    note = "they read `http::Response<B>`, and `reqwest::Response` with the `reqwest` feature; implement `HttpResponse` for another client's response type"
)]
pub trait HttpResponse {
    /// The response's status.
    fn status(&self) -> StatusCode;
    /// The response's headers.
    fn headers(&self) -> &HeaderMap;
}

impl<B> HttpResponse for http::Response<B> {
    #[inline]
    fn status(&self) -> StatusCode {
        http::Response::status(self)
    }

    #[inline]
    fn headers(&self) -> &HeaderMap {
        http::Response::headers(self)
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl HttpResponse for reqwest::Response {
    #[inline]
    fn status(&self) -> StatusCode {
        reqwest::Response::status(self)
    }

    #[inline]
    fn headers(&self) -> &HeaderMap {
        reqwest::Response::headers(self)
    }
}

/// The HTTP status an error carries, if it is one: a `reqwest::Error` made
/// by `error_for_status` (feature `reqwest`), as it is or boxed.
pub(crate) fn error_status<E: 'static>(error: &E) -> Option<StatusCode> {
    let any: &dyn Any = error;
    #[cfg(feature = "reqwest")]
    {
        if let Some(e) = any.downcast_ref::<reqwest::Error>() {
            return e.status();
        }
        if let Some(e) = any.downcast_ref::<crate::BoxError>() {
            return e
                .downcast_ref::<reqwest::Error>()
                .and_then(reqwest::Error::status);
        }
    }
    let _ = any;
    None
}

/// For HTTP clients: errors and 5xx responses are failures, except 429 and
/// 503, which the upstream sends when it sheds load on purpose and which
/// are ignored (it is alive, and saying so); other responses (1xx-4xx) are
/// successes. An error that carries a status (reqwest's `error_for_status`)
/// is judged by its status.
///
/// Works with any [`HttpResponse`] and any error type: one classifier for a
/// hyper client (`http::Response`) or a reqwest client (`reqwest::Response`,
/// feature `reqwest`).
///
/// # Examples
///
/// ```
/// use http::Response;
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::classify::{Classify, HttpStatus, Outcome};
///
/// let status = |code: u16| {
///     let res = Response::builder().status(code).body(()).unwrap();
///     HttpStatus.classify(&Ok::<_, std::io::Error>(res))
/// };
/// assert_eq!(status(404), Outcome::Success);
/// assert_eq!(status(500), Outcome::Failure);
/// assert_eq!(status(503), Outcome::Ignore);
///
/// // On an HTTP client's breaker (the same as `CircuitBreakerLayer::default().http()`):
/// let layer = CircuitBreakerLayer::default().classify(HttpStatus);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStatus;

impl HttpStatus {
    /// The outcome of a response with `status`.
    fn of(status: StatusCode) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            Outcome::Ignore
        } else if status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl<R: HttpResponse, E: 'static> Classify<R, E> for HttpStatus {
    fn classify(&self, result: &Result<R, E>) -> Outcome {
        match result {
            Ok(res) => Self::of(res.status()),
            Err(e) => error_status(e).map_or(Outcome::Failure, Self::of),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses() {
        let c = |code: u16| {
            let res = http::Response::builder().status(code).body(()).unwrap();
            HttpStatus.classify(&Ok::<_, ()>(res))
        };
        assert_eq!(c(200), Outcome::Success);
        assert_eq!(c(404), Outcome::Success);
        assert_eq!(c(429), Outcome::Ignore);
        assert_eq!(c(503), Outcome::Ignore);
        assert_eq!(c(500), Outcome::Failure);
        assert_eq!(c(502), Outcome::Failure);
        assert_eq!(
            HttpStatus.classify(&Err::<http::Response<()>, _>(())),
            Outcome::Failure
        );
    }
}
