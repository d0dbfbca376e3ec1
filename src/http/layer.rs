use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use http::StatusCode;
use tower_layer::Layer;

use super::{HttpLimit, Responder};
use crate::backend::Memory;
use crate::per_key::PerKeyHandle;
use crate::per_key::PerKeyLayer;
use crate::per_key::core::Core;
use crate::per_key::layer::Config;

/// A [`PerKeyLayer`] whose rejections are responses: the service's error
/// type is the inner service's, so it fits axum's `Router::layer` (which
/// needs errors that are `Infallible`) with no error handler to write.
///
/// Made by [`PerKeyLayer::http`] (HTTP responses through [`Responder`]) or
/// `PerKeyLayer::grpc` (gRPC statuses, with the `tonic` feature); see the
/// [module docs](super).
///
/// # Sharing
///
/// Every service the layer makes shares the per-key layer's store and
/// policies; [`handle`](Self::handle) reconfigures them while serving.
///
/// # Examples
///
/// Two services from one layer share its limits:
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{Layer, ServiceExt, service_fn};
/// use tower_sluice::http::HeaderKey;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limit = PerKeyLayer::new(Quota::per_minute(1), HeaderKey::from_static("x-api-key")).http();
/// let hello = || service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(String::from("hello"))) });
/// let (v1, v2) = (limit.layer(hello()), limit.layer(hello()));
/// let req = || Request::get("/").header("x-api-key", "k-1").body(());
/// assert_eq!(v1.oneshot(req()?).await?.status(), StatusCode::OK);
/// let limited = v2.oneshot(req()?).await?;
/// assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(limited.headers()["retry-after"], "60");
/// # Ok(())
/// # }
/// ```
pub struct HttpLimitLayer<K, X, B = Memory<K>, R = Responder> {
    extractor: X,
    // Built once: axum may call `layer` for every request of a route whose
    // handler has not been given its state yet.
    shared: Arc<Shared<K, B, R>>,
    _key: PhantomData<fn() -> K>,
}

/// What every service of one [`HttpLimitLayer`] shares (one reference
/// count per service clone: axum clones a route's service per request).
pub(crate) struct Shared<K, B, R> {
    pub(crate) core: Arc<Core<K, B>>,
    pub(crate) config: Arc<Config<K>>,
    pub(crate) responder: Arc<R>,
}

impl<K, X, B> PerKeyLayer<K, X, B> {
    /// Answers rejections with HTTP responses instead of errors: 429 with
    /// `Retry-After` and the `RateLimit` fields, 400 for a missing key;
    /// admitted responses carry the `RateLimit` fields too. Configure the
    /// per-key layer (policies, `max_keys`, observer) first.
    ///
    /// ```
    /// use axum::{Router, routing::get};
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::PeerIp;
    ///
    /// let app: Router = Router::new()
    ///     .route("/", get(|| async { "hello" }))
    ///     .layer(PerKeyLayer::new(Quota::per_minute(60), PeerIp::new()).http());
    /// # let _ = app;
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http(self) -> HttpLimitLayer<K, X, B> {
        HttpLimitLayer::with_responder(self, Responder::new())
    }
}

impl<K, X, B, R> HttpLimitLayer<K, X, B, R> {
    /// Rejections answered by `responder`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::{HeaderKey, HttpLimitLayer, Responder};
    ///
    /// let per_key = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"));
    /// let limit = HttpLimitLayer::with_responder(per_key, Responder::new().legacy_headers(true));
    /// # let _ = limit;
    /// ```
    pub fn with_responder(layer: PerKeyLayer<K, X, B>, responder: R) -> Self {
        let (extractor, core, config) = layer.into_parts();
        HttpLimitLayer {
            extractor,
            shared: Arc::new(Shared {
                core,
                config,
                responder: Arc::new(responder),
            }),
            _key: PhantomData,
        }
    }

    /// Replaces the responder, for example with your own [`Respond`](super::Respond)
    /// implementation.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::StatusCode;
    /// use tower::ServiceExt;
    /// use tower_sluice::http::{HeaderKey, Responder};
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let responder = Responder::new().problem_details(true).missing_key_status(StatusCode::UNAUTHORIZED);
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .responder(responder);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let res = app.oneshot(http::Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    /// assert_eq!(res.headers()["content-type"], "application/problem+json");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// See [`Respond`](super::Respond) for a responder of your own.
    #[must_use]
    pub fn responder<R2>(self, responder: R2) -> HttpLimitLayer<K, X, B, R2> {
        HttpLimitLayer {
            extractor: self.extractor,
            shared: Arc::new(Shared {
                core: self.shared.core.clone(),
                config: self.shared.config.clone(),
                responder: Arc::new(responder),
            }),
            _key: PhantomData,
        }
    }

    /// A handle to inspect and reconfigure the limits while serving.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::HeaderKey;
    /// use tower_sluice::per_key::Policy;
    ///
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key")).http();
    /// let handle = limit.handle();
    /// // Raise the default for every key while serving.
    /// handle.set_default(Quota::per_minute(600));
    /// assert_eq!(handle.default_policy(), Policy::new(Quota::per_minute(600)));
    /// // Every handle of the layer sees the change.
    /// assert_eq!(limit.handle().policy(&"k-1".to_string()), Policy::new(Quota::per_minute(600)));
    /// # let _ = limit;
    /// ```
    pub fn handle(&self) -> PerKeyHandle<K, B>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        PerKeyHandle::new(self.shared.core.clone())
    }
}

impl<K, X, B> HttpLimitLayer<K, X, B, Responder> {
    fn edit(self, f: impl FnOnce(Responder) -> Responder) -> Self {
        let responder = f(Responder::clone(&self.shared.responder));
        self.responder(responder)
    }

    /// See [`Responder::success_headers`] (default `true`).
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use tower::ServiceExt;
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::HeaderKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .success_headers(false);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert!(res.headers().get("ratelimit").is_none());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn success_headers(self, on: bool) -> Self {
        self.edit(|r| r.success_headers(on))
    }

    /// See [`Responder::legacy_headers`] (default `false`).
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use tower::ServiceExt;
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::HeaderKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .legacy_headers(true);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let req = http::Request::get("/").header("x-api-key", "k-1").body(Body::empty())?;
    /// let res = app.oneshot(req).await?;
    /// assert_eq!(res.headers()["x-ratelimit-limit"], "60");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn legacy_headers(self, on: bool) -> Self {
        self.edit(|r| r.legacy_headers(on))
    }

    /// See [`Responder::problem_details`] (default `false`).
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use tower::ServiceExt;
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::HeaderKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .problem_details(true);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// // No key: a 400 with an RFC 9457 problem document.
    /// let res = app.oneshot(http::Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(res.headers()["content-type"], "application/problem+json");
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn problem_details(self, on: bool) -> Self {
        self.edit(|r| r.problem_details(on))
    }

    /// See [`Responder::missing_key_status`] (default 400).
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{Router, body::Body, routing::get};
    /// use http::StatusCode;
    /// use tower::ServiceExt;
    /// use tower_sluice::{PerKeyLayer, Quota};
    /// use tower_sluice::http::HeaderKey;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limit = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"))
    ///     .http()
    ///     .missing_key_status(StatusCode::UNAUTHORIZED);
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(limit);
    /// let res = app.oneshot(http::Request::get("/").body(Body::empty())?).await?;
    /// assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn missing_key_status(self, status: StatusCode) -> Self {
        self.edit(|r| r.missing_key_status(status))
    }
}

impl<K, X: Clone, B, R> Clone for HttpLimitLayer<K, X, B, R> {
    fn clone(&self) -> Self {
        HttpLimitLayer {
            extractor: self.extractor.clone(),
            shared: self.shared.clone(),
            _key: PhantomData,
        }
    }
}

impl<S, K, X: Clone, B, R> Layer<S> for HttpLimitLayer<K, X, B, R> {
    type Service = HttpLimit<S, K, X, B, R>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpLimit::new(inner, self.extractor.clone(), self.shared.clone())
    }
}

impl<K, X, B: fmt::Debug, R: fmt::Debug> fmt::Debug for HttpLimitLayer<K, X, B, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpLimitLayer")
            .field("extractor", &std::any::type_name::<X>())
            .field("core", &self.shared.core)
            .field("responder", &self.shared.responder)
            .finish_non_exhaustive()
    }
}
