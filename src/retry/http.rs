//! HTTP: request policies ([`HttpClone`], [`HttpReplay`]).

use http::{HeaderMap, Method, Request};

use super::body::ReplayBody;
use super::request::CloneRequest;

/// Which HTTP requests may be sent more than once.
///
/// By default only idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE,
/// TRACE). [`all_methods`](Self::all_methods) opts every method in;
/// [`idempotency_key`](Self::idempotency_key) opts in requests that carry
/// an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use tower_sluice::retry::{HttpClone, Idempotency};
///
/// let rules = Idempotency::new().idempotency_key(true);
/// let post = Request::post("/orders").body(()).unwrap();
/// let keyed = Request::post("/orders").header("idempotency-key", "8e03").body(()).unwrap();
/// assert!(!rules.allows(&post));
/// assert!(rules.allows(&keyed));
/// let policy = HttpClone::new().rules(rules);
/// # let _ = policy;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct Idempotency {
    all_methods: bool,
    idempotency_key: bool,
}

impl Idempotency {
    /// Only idempotent methods.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http::Request;
    /// # use tower_sluice::retry::Idempotency;
    /// let rules = Idempotency::new();
    /// assert!(rules.allows(&Request::get("/").body(()).unwrap()));
    /// assert!(!rules.allows(&Request::post("/").body(()).unwrap()));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries every method, POST and PATCH included (only if the upstream
    /// makes them safe to repeat).
    ///
    /// # Examples
    ///
    /// ```
    /// # use http::Request;
    /// # use tower_sluice::retry::Idempotency;
    /// let rules = Idempotency::new().all_methods(true);
    /// assert!(rules.allows(&Request::patch("/").body(()).unwrap()));
    /// ```
    pub fn all_methods(mut self, on: bool) -> Self {
        self.all_methods = on;
        self
    }

    /// Retries a non-idempotent request when it carries an
    /// `Idempotency-Key` header.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http::Request;
    /// # use tower_sluice::retry::Idempotency;
    /// let rules = Idempotency::new().idempotency_key(true);
    /// let req = Request::post("/pay").header("Idempotency-Key", "a1b2").body(()).unwrap();
    /// assert!(rules.allows(&req));
    /// ```
    pub fn idempotency_key(mut self, on: bool) -> Self {
        self.idempotency_key = on;
        self
    }

    /// Whether `req` may be sent again under these rules.
    ///
    /// # Examples
    ///
    /// ```
    /// # use http::Request;
    /// # use tower_sluice::retry::Idempotency;
    /// assert!(Idempotency::new().allows(&Request::delete("/item/1").body(()).unwrap()));
    /// ```
    pub fn allows<B>(&self, req: &Request<B>) -> bool {
        self.allows_parts(req.method(), req.headers())
    }

    fn allows_parts(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.all_methods
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::PUT
                    | Method::DELETE
                    | Method::TRACE
            )
            || (self.idempotency_key && headers.contains_key("idempotency-key"))
    }
}

/// The request policy of [`BackoffRetryLayer::http`](super::BackoffRetryLayer::http):
/// a request whose body is `Clone` is copied (one clone per attempt) when
/// its method may be retried ([`Idempotency`]); others are sent once.
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::{HttpClone, HttpRetry, Idempotency};
///
/// // What `.http()` does, with POST opted in.
/// let layer = BackoffRetryLayer::default()
///     .classify(HttpRetry)
///     .clone_request(HttpClone::new().rules(Idempotency::new().all_methods(true)));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct HttpClone {
    rules: Idempotency,
}

impl HttpClone {
    /// Idempotent methods only.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::HttpClone;
    /// assert_eq!(HttpClone::new(), HttpClone::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// With these method rules.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::{HttpClone, Idempotency};
    /// let policy = HttpClone::new().rules(Idempotency::new().idempotency_key(true));
    /// # let _ = policy;
    /// ```
    pub fn rules(mut self, rules: Idempotency) -> Self {
        self.rules = rules;
        self
    }
}

/// An HTTP request [`HttpClone`] can copy: an `http::Request` whose body is
/// `Clone` (`Full<Bytes>`, `Empty`, `String`), and, with the `reqwest`
/// feature, a `reqwest::Request` (copied with `try_clone`: a request whose
/// body is a stream cannot be, and is sent once, not retried).
///
/// # Examples
///
/// ```
/// use http::Request;
/// use tower_sluice::retry::HttpRequest;
///
/// let req = Request::get("/").body(String::from("q")).unwrap();
/// assert_eq!(req.try_copy().unwrap().body(), "q");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an HTTP request `.http()` can copy",
    note = "`.http()` copies `http::Request<B>` with a `Clone` body, and `reqwest::Request` with the `reqwest` feature; for a streamed `http::Request` body use `.http_replay()`"
)]
pub trait HttpRequest: Sized {
    /// The request's method.
    fn method(&self) -> &Method;
    /// The request's headers.
    fn headers(&self) -> &HeaderMap;
    /// A copy to send again, or `None` when it cannot be copied.
    fn try_copy(&self) -> Option<Self>;
}

impl<B: Clone> HttpRequest for Request<B> {
    fn method(&self) -> &Method {
        Request::method(self)
    }

    fn headers(&self) -> &HeaderMap {
        Request::headers(self)
    }

    fn try_copy(&self) -> Option<Self> {
        Some(self.clone())
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl HttpRequest for reqwest::Request {
    fn method(&self) -> &Method {
        reqwest::Request::method(self)
    }

    fn headers(&self) -> &HeaderMap {
        reqwest::Request::headers(self)
    }

    fn try_copy(&self) -> Option<Self> {
        self.try_clone()
    }
}

impl<Q: HttpRequest> CloneRequest<Q> for HttpClone {
    type Request = Q;
    type Saved = Q;

    fn first(&self, req: Q) -> (Q, Option<Q>) {
        let saved = if self.rules.allows_parts(req.method(), req.headers()) {
            req.try_copy()
        } else {
            None
        };
        (req, saved)
    }

    fn again(&self, saved: &Q) -> Option<Q> {
        saved.try_copy()
    }
}

/// The request policy of
/// [`BackoffRetryLayer::http_replay`](super::BackoffRetryLayer::http_replay):
/// for bodies that are not `Clone` (a streamed body, axum's `Body`), the
/// inner service receives a [`ReplayBody`] that keeps the bytes it streams
/// to the first attempt, up to [`max_bytes`](Self::max_bytes) (64 KiB by
/// default); a retry replays them. A body larger than that is streamed
/// once and the request is not retried. Requests the [`Idempotency`]
/// rules refuse are streamed without buffering.
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::{HttpReplay, HttpRetry};
///
/// // What `.http_replay()` does, keeping up to 1 MiB of each body.
/// let layer = BackoffRetryLayer::default()
///     .classify(HttpRetry)
///     .clone_request(HttpReplay::new().max_bytes(1 << 20));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct HttpReplay {
    rules: Idempotency,
    max_bytes: usize,
}

impl Default for HttpReplay {
    fn default() -> Self {
        HttpReplay {
            rules: Idempotency::default(),
            max_bytes: 64 * 1024,
        }
    }
}

impl HttpReplay {
    /// Idempotent methods only, bodies up to 64 KiB.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::HttpReplay;
    /// assert_eq!(HttpReplay::new(), HttpReplay::default());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// With these method rules.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::{HttpReplay, Idempotency};
    /// let policy = HttpReplay::new().rules(Idempotency::new().all_methods(true));
    /// # let _ = policy;
    /// ```
    pub fn rules(mut self, rules: Idempotency) -> Self {
        self.rules = rules;
        self
    }

    /// The most body bytes kept for a replay.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::retry::HttpReplay;
    /// // Bodies above 4 KiB are sent once and not retried.
    /// let policy = HttpReplay::new().max_bytes(4 * 1024);
    /// # let _ = policy;
    /// ```
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }
}

impl<B> CloneRequest<Request<B>> for HttpReplay
where
    B: http_body::Body,
{
    type Request = Request<ReplayBody<B>>;
    type Saved = (http::request::Parts, ReplayBody<B>);

    fn first(&self, req: Request<B>) -> (Self::Request, Option<Self::Saved>) {
        let (parts, body) = req.into_parts();
        if !self.rules.allows_parts(&parts.method, &parts.headers) {
            return (Request::from_parts(parts, ReplayBody::once(body)), None);
        }
        let body = ReplayBody::new(body, self.max_bytes);
        let saved = (parts.clone(), body.replay_handle());
        (Request::from_parts(parts, body), Some(saved))
    }

    fn again(&self, (parts, body): &Self::Saved) -> Option<Self::Request> {
        body.replay()
            .map(|body| Request::from_parts(parts.clone(), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_rules() {
        let req = |m: Method, key: bool| {
            let mut b = Request::builder().method(m);
            if key {
                b = b.header("idempotency-key", "abc");
            }
            b.body(()).unwrap()
        };
        let d = Idempotency::new();
        assert!(d.allows(&req(Method::GET, false)));
        assert!(d.allows(&req(Method::PUT, false)));
        assert!(!d.allows(&req(Method::POST, false)));
        assert!(!d.allows(&req(Method::POST, true)));
        assert!(d.idempotency_key(true).allows(&req(Method::POST, true)));
        assert!(!d.idempotency_key(true).allows(&req(Method::PATCH, false)));
        assert!(d.all_methods(true).allows(&req(Method::PATCH, false)));
    }
}
