use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tower_layer::Layer;

use super::{Backoff, BackoffRetry, CloneRequests, ConfigError, DefaultRetry, RetryBudget};
use crate::clock::Clock;
use crate::key::NoKey;
use crate::observe::{Observer, Observers};

/// The settings a response future carries by value: a request that
/// succeeds at once touches no shared state for them.
///
/// Aligned to 16 bytes so that, wherever a future's state puts it, the
/// moves that build the future copy it in the same 16-byte pieces (a
/// piece read across two pieces just written cannot be forwarded from
/// the stores and stalls the copy).
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
pub(crate) struct Settings {
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_retry_after: Duration,
}

impl Shared {
    /// Whether a retry needs more than the [`Settings`]: a
    /// budget, an observer, numbered jitter streams or the clock of
    /// `max_elapsed`. If not, response futures do not hold this.
    pub(crate) fn needed(&self) -> bool {
        self.budget.is_some()
            || self.observers.is_set()
            || self.settings.backoff.is_seeded()
            || self.max_elapsed.is_some()
    }
}

/// Settings and shared state of the services a layer makes.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) observers: Observers,
    pub(crate) clock: Clock,
    /// Numbers the requests that retry, for seeded jitter.
    pub(crate) streams: Arc<AtomicU64>,
}

/// Retries failed requests with backoff and jitter, within a budget.
///
/// See the [module docs](crate::retry) for the rules and an example.
///
/// # Sharing
///
/// The [`RetryBudget`] (and the numbering of seeded jitter streams) is
/// shared by every service the layer makes and all their clones; pass one
/// budget to several layers with [`budget`](Self::budget) to share it
/// further.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::retry::Backoff;
/// use tower_sluice::BackoffRetryLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let calls = Arc::new(AtomicU32::new(0));
/// let seen = calls.clone();
/// let flaky = service_fn(move |_: ()| {
///     let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
///     async move {
///         if first {
///             Err::<&str, BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
///         } else {
///             Ok("ok")
///         }
///     }
/// });
/// let svc = ServiceBuilder::new()
///     .layer(BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(100))))
///     .service(flaky);
/// assert_eq!(svc.oneshot(()).await.unwrap(), "ok");
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # }
/// ```
pub struct BackoffRetryLayer<C = DefaultRetry, P = CloneRequests, X = NoKey> {
    backoff: Backoff,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
    budget: Option<RetryBudget>,
    observers: Observers,
    streams: Arc<AtomicU64>,
    classifier: C,
    requests: P,
    keys: X,
}

impl BackoffRetryLayer {
    /// Retries with `backoff`, 3 attempts in all, the default
    /// [`RetryBudget`], the [`DefaultRetry`] classifier and
    /// [`CloneRequests`].
    ///
    /// # Panics
    ///
    /// If `backoff` is invalid (see [`Backoff::validate`]); use
    /// [`try_new`](Self::try_new) to get the error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::Backoff;
    ///
    /// let layer = BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(200)))
    ///     .max_attempts(5)
    ///     .max_elapsed(Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub fn new(backoff: Backoff) -> Self {
        match Self::try_new(backoff) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`new`](Self::new), returning an error that names the invalid
    /// backoff setting.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the invalid [`Backoff`] setting (see
    /// [`Backoff::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::Backoff;
    ///
    /// // A factor read from configuration: refuse a bad one instead of panicking.
    /// let backoff = Backoff::exponential(Duration::from_millis(100)).factor(0.5);
    /// let err = BackoffRetryLayer::try_new(backoff).unwrap_err();
    /// assert_eq!(err.field(), "factor");
    /// ```
    pub fn try_new(backoff: Backoff) -> Result<Self, ConfigError> {
        Ok(BackoffRetryLayer {
            backoff: backoff.validate()?,
            max_attempts: 3,
            max_elapsed: None,
            max_retry_after: crate::headers::MAX_UPSTREAM_WAIT,
            budget: Some(RetryBudget::default()),
            observers: Observers::default(),
            streams: Arc::new(AtomicU64::new(0)),
            classifier: DefaultRetry,
            requests: CloneRequests,
            keys: NoKey,
        })
    }
}

impl Default for BackoffRetryLayer {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

#[cfg(feature = "http")]
impl<C, P, X> BackoffRetryLayer<C, P, X> {
    /// For HTTP clients whose requests can be copied ([`HttpRequest`](super::HttpRequest):
    /// `http::Request` with a `Clone` body such as `Full<Bytes>`, `Empty` or
    /// `String`, and `reqwest::Request` with the `reqwest` feature, a streamed
    /// body being sent once): retries transient errors and 429, 502, 503, 504
    /// responses honouring their `Retry-After` ([`HttpRetry`](super::HttpRetry)),
    /// for idempotent methods only ([`HttpClone`](super::HttpClone); pass
    /// another to [`clone_request`](Self::clone_request) to opt other
    /// methods in).
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Request, Response, StatusCode};
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let client = ServiceBuilder::new()
    ///     .layer(BackoffRetryLayer::default().http())
    ///     .service(service_fn(|_: Request<String>| async {
    ///         Ok::<_, BoxError>(Response::builder().status(503).body(String::new())?)
    ///     }));
    /// // A GET is retried; the last 503 is returned as a response.
    /// let res = client.clone().oneshot(Request::get("/").body(String::new())?).await?;
    /// assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http(self) -> BackoffRetryLayer<super::HttpRetry, super::HttpClone, X> {
        self.classify(super::HttpRetry)
            .clone_request(super::HttpClone::new())
    }

    /// As [`http`](Self::http), for bodies that are not `Clone`: the inner
    /// service receives each body as a [`ReplayBody`](super::ReplayBody)
    /// that keeps up to 64 KiB for a replay ([`HttpReplay`](super::HttpReplay)).
    ///
    /// # Examples
    ///
    /// ```
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use bytes::Bytes;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::ReplayBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let client = ServiceBuilder::new()
    ///     .layer(BackoffRetryLayer::default().http_replay())
    ///     .service(service_fn(|req: Request<ReplayBody<Full<Bytes>>>| async move {
    ///         let body = req.into_body().collect().await?.to_bytes();
    ///         Ok::<_, BoxError>(Response::new(body))
    ///     }));
    /// let res = client.oneshot(Request::put("/").body(Full::new(Bytes::from("hi")))?).await?;
    /// assert_eq!(res.into_body(), "hi");
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http_replay(self) -> BackoffRetryLayer<super::HttpRetry, super::HttpReplay, X> {
        self.classify(super::HttpRetry)
            .clone_request(super::HttpReplay::new())
    }
}

impl<C, P, X> BackoffRetryLayer<C, P, X> {
    /// At most `n` attempts in all, the first included (default 3; 0 is
    /// taken as 1, which never retries).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::{Backoff, RetriesExhausted};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let svc = ServiceBuilder::new()
    ///     .layer(BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10))).max_attempts(4))
    ///     .service(service_fn(|_: ()| async {
    ///         Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    ///     }));
    /// let err = svc.oneshot(()).await.unwrap_err();
    /// assert_eq!(err.downcast_ref::<RetriesExhausted>().unwrap().attempts(), 4);
    /// # }
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Gives up once `d` has passed since the first attempt started, and
    /// at once, without sleeping, when the next wait would end after that
    /// (default: no limit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::Backoff;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let layer = BackoffRetryLayer::new(Backoff::constant(Duration::from_secs(1)))
    ///     .max_attempts(100)
    ///     .max_elapsed(Duration::from_millis(2_500));
    /// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_: ()| async {
    ///     Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::TimedOut).into())
    /// }));
    /// let start = Instant::now();
    /// svc.oneshot(()).await.unwrap_err();
    /// // Retries at 1 s and 2 s; a third at 3 s would be too late, so it gives up at once.
    /// # #[cfg(feature = "test-util")]
    /// assert!(start.elapsed() < Duration::from_millis(2_500));
    /// # }
    /// ```
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }

    /// The longest wait an upstream may impose (`Retry-After`, `RateLimit`
    /// `t=`, `X-RateLimit-Reset`, `grpc-retry-pushback-ms`,
    /// `RateLimited::retry_after`, ...); longer requests are cut to it
    /// (default [`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT), 60 s), and
    /// to the backoff's `max_delay`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BackoffRetryLayer;
    ///
    /// // An upstream asking for `Retry-After: 3600` is waited on for 5 s at most.
    /// let layer = BackoffRetryLayer::default().max_retry_after(Duration::from_secs(5));
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Uses `budget` (shared with whoever else holds a clone of it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::RetryBudget;
    ///
    /// let budget = RetryBudget::new(Duration::from_secs(10), 0.1, 1)?;
    /// let layer = BackoffRetryLayer::default().budget(budget.clone());
    /// assert_eq!(layer.get_budget().unwrap().remaining(), budget.remaining());
    /// # Ok::<_, tower_sluice::error::ConfigError>(())
    /// ```
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No retry budget: every request may make all its attempts.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BackoffRetryLayer;
    ///
    /// // Attempts are bounded by `max_attempts` only.
    /// let layer = BackoffRetryLayer::default().max_attempts(3).no_budget();
    /// assert!(layer.get_budget().is_none());
    /// ```
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Reports scheduled retries, give-ups and an exhausted budget to
    /// `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::observe::{Event, Monitor};
    /// use tower_sluice::retry::Backoff;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let layer = BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10)))
    ///     .observer(monitor.clone());
    /// // Or a closure: `.observer(|e: &Event<'_>| println!("{e:?}"))`.
    /// # let _ = |e: &Event<'_>| ();
    /// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_: ()| async {
    ///     Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into())
    /// }));
    /// svc.oneshot(()).await.unwrap_err();
    /// assert_eq!(monitor.snapshot().layer("retry").unwrap().retries, 2);
    /// # }
    /// ```
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer, super::future::LAYER);
        self
    }

    /// Decides what is retried with `classifier`: any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// `Result<Response, BoxError>` (its error boxed, whatever its type),
    /// such as a closure returning an
    /// [`Outcome`](crate::classify::Outcome) or a
    /// [`Verdict`](crate::classify::Verdict), or
    /// `classify::HttpStatus`. The same value fits a
    /// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer) and the adaptive
    /// layers around the same service.
    ///
    /// [`Failure`](crate::classify::Outcome::Failure)s and
    /// [`Overloaded`](crate::classify::Outcome::Overloaded) refusals are
    /// retried, waiting at least the verdict's
    /// [`retry_after`](crate::classify::Verdict::retry_after) or the wait
    /// the error carries ([`error_hints`](crate::classify::error_hints));
    /// other outcomes are returned as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::BackoffRetryLayer;
    /// use tower_sluice::retry::Backoff;
    /// use tower_sluice::classify::Outcome;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // Responses are status codes; retry 503s.
    /// let layer = BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10)))
    ///     .classify(|r: &Result<u16, tower_sluice::BoxError>| match r {
    ///         Ok(503) => Outcome::Overloaded,
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::Ignore,
    ///     });
    /// let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_: ()| async { Ok::<_, std::io::Error>(503) }));
    /// // Three attempts, then the last response is returned.
    /// assert_eq!(svc.oneshot(()).await.unwrap(), 503);
    /// # }
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classifier: C2) -> BackoffRetryLayer<C2, P, X> {
        self.with_parts(|_, p, x| (classifier, p, x))
    }

    /// Keeps requests for another attempt with `policy` (a
    /// [`CloneRequest`](super::CloneRequest), or a closure `Fn(&Req) -> Option<Req>`).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::BackoffRetryLayer;
    ///
    /// /// A request that is not `Clone`, but can sometimes be copied
    /// /// (as `reqwest::Request::try_clone`).
    /// struct Upload { body: Option<Vec<u8>> }
    /// impl Upload {
    ///     fn try_clone(&self) -> Option<Upload> {
    ///         Some(Upload { body: Some(self.body.as_ref()?.clone()) })
    ///     }
    /// }
    ///
    /// let layer = BackoffRetryLayer::default().clone_request(|r: &Upload| r.try_clone());
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn clone_request<P2>(self, policy: P2) -> BackoffRetryLayer<C, P2, X> {
        self.with_parts(|c, _, x| (c, policy, x))
    }

    /// Names the key of each request that retries with `keys` (a
    /// [`KeyExtractor`](crate::per_key::KeyExtractor): a closure
    /// `Fn(&Req) -> Option<K>`, or an HTTP extractor such as
    /// `http::HeaderKey` (feature `http`)), so that retry events carry it
    /// and a [`Monitor`](crate::observe::Monitor) counts retries per key
    /// (per upstream host, per user, ...).
    ///
    /// The key is taken from the request about to be sent again, once, when
    /// its first retry is scheduled: requests that succeed at once pay
    /// nothing. A give-up before any retry was scheduled (the first
    /// attempt's error is not retryable, or the request cannot be replayed)
    /// is reported without a key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::observe::Monitor;
    /// use tower_sluice::retry::Backoff;
    /// use tower_sluice::BackoffRetryLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let monitor = Monitor::new();
    /// let layer = BackoffRetryLayer::new(Backoff::constant(Duration::from_millis(10)))
    ///     .max_attempts(3)
    ///     .key(|host: &&str| Some(host.to_string()))
    ///     .observer(monitor.clone());
    /// let down = service_fn(|_: &str| async {
    ///     Err::<(), BoxError>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    /// });
    /// assert!(layer.layer(down).oneshot("db-1").await.is_err());
    /// let db = monitor.key(&"db-1").unwrap();
    /// assert_eq!((db.retries, db.gave_up), (2, 1));
    /// # }
    /// ```
    #[must_use]
    pub fn key<X2>(self, keys: X2) -> BackoffRetryLayer<C, P, X2> {
        self.with_parts(|c, p, _| (c, p, keys))
    }

    /// The same settings with the classifier, request policy and key
    /// extractor `f` makes of the current ones.
    fn with_parts<C2, P2, X2>(
        self,
        f: impl FnOnce(C, P, X) -> (C2, P2, X2),
    ) -> BackoffRetryLayer<C2, P2, X2> {
        let (classifier, requests, keys) = f(self.classifier, self.requests, self.keys);
        BackoffRetryLayer {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            observers: self.observers,
            streams: self.streams,
            classifier,
            requests,
            keys,
        }
    }

    /// The retry budget, if any (by default [`RetryBudget::default`]; none
    /// after [`no_budget`](Self::no_budget)).
    pub fn get_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

impl<S, C: Clone, P: Clone, X: Clone> Layer<S> for BackoffRetryLayer<C, P, X> {
    type Service = BackoffRetry<S, C, P, X>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = Shared {
            settings: Settings {
                backoff: self.backoff,
                max_attempts: self.max_attempts,
                max_retry_after: self.max_retry_after,
            },
            max_elapsed: self.max_elapsed,
            budget: self.budget.clone(),
            observers: self.observers.clone(),
            clock: Clock::new(),
            streams: self.streams.clone(),
        };
        BackoffRetry::new(
            inner,
            Arc::new(shared),
            self.classifier.clone(),
            self.requests.clone(),
            self.keys.clone(),
        )
    }
}

impl<C: Clone, P: Clone, X: Clone> Clone for BackoffRetryLayer<C, P, X> {
    fn clone(&self) -> Self {
        BackoffRetryLayer {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
            budget: self.budget.clone(),
            observers: self.observers.clone(),
            streams: self.streams.clone(),
            classifier: self.classifier.clone(),
            requests: self.requests.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<C, P, X> fmt::Debug for BackoffRetryLayer<C, P, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackoffRetryLayer")
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("max_retry_after", &self.max_retry_after)
            .field("budget", &self.budget)
            .field("classifier", &std::any::type_name::<C>())
            .field("requests", &std::any::type_name::<P>())
            .field("keys", &std::any::type_name::<X>())
            .finish()
    }
}
