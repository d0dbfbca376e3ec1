use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tower_layer::Layer;

use super::{Backoff, BackoffRetry, CloneRequests, ConfigError, DefaultRetry, NoKey, RetryBudget};
use crate::clock::Clock;
use crate::observe::{Observer, Observers};

/// Settings and shared state of the services a layer makes.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) max_retry_after: Duration,
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
/// further.
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
    pub fn new(backoff: Backoff) -> Self {
        match Self::try_new(backoff) {
            Ok(layer) => layer,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`new`](Self::new), returning an error that names the invalid
    /// backoff setting.
    pub fn try_new(backoff: Backoff) -> Result<Self, ConfigError> {
        Ok(BackoffRetryLayer {
            backoff: backoff.validate()?,
            max_attempts: 3,
            max_elapsed: None,
            max_retry_after: Duration::from_secs(60),
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
    /// For HTTP clients whose request bodies are `Clone` (`Full<Bytes>`,
    /// `Empty`, `String`): retries transient errors and 429, 502, 503, 504
    /// responses honouring their `Retry-After` ([`HttpRetry`](super::HttpRetry)),
    /// for idempotent methods only ([`HttpClone`](super::HttpClone); pass
    /// another to [`clone_request`](Self::clone_request) to opt other
    /// methods in).
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http(self) -> BackoffRetryLayer<super::HttpRetry, super::HttpClone, X> {
        self.retry_if(super::HttpRetry)
            .clone_request(super::HttpClone::new())
    }

    /// As [`http`](Self::http), for bodies that are not `Clone`: the inner
    /// service receives each body as a [`ReplayBody`](super::ReplayBody)
    /// that keeps up to 64 KiB for a replay ([`HttpReplay`](super::HttpReplay)).
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn http_replay(self) -> BackoffRetryLayer<super::HttpRetry, super::HttpReplay, X> {
        self.retry_if(super::HttpRetry)
            .clone_request(super::HttpReplay::new())
    }
}

impl<C, P, X> BackoffRetryLayer<C, P, X> {
    /// At most `n` attempts in all, the first included (default 3; 0 is
    /// taken as 1, which never retries).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Gives up once `d` has passed since the first attempt started, and
    /// at once, without sleeping, when the next wait would end after that
    /// (default: no limit).
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = Some(d);
        self
    }

    /// The longest wait an upstream may impose (`Retry-After`,
    /// `RateLimited::retry_after`, ...); longer requests are cut to it
    /// (default 60 s), and to the backoff's `max_delay`.
    #[must_use]
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Uses `budget` (shared with whoever else holds a clone of it).
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// No retry budget: every request may make all its attempts.
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self
    }

    /// Reports scheduled retries, give-ups and an exhausted budget to
    /// `observer`.
    #[must_use]
    pub fn observer(mut self, observer: impl Observer) -> Self {
        self.observers = Observers::new(observer);
        self
    }

    /// Decides what is retried with `classifier` (a [`ClassifyRetry`](super::ClassifyRetry), a
    /// closure returning an [`Outcome`](super::Outcome), or
    /// [`FromClassify`](super::FromClassify) around a shared `Classify`).
    #[must_use]
    pub fn retry_if<C2>(self, classifier: C2) -> BackoffRetryLayer<C2, P, X> {
        BackoffRetryLayer {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            observers: self.observers,
            streams: self.streams,
            classifier,
            requests: self.requests,
            keys: self.keys,
        }
    }

    /// Keeps requests for another attempt with `policy` (a
    /// [`CloneRequest`](super::CloneRequest), or a closure `Fn(&Req) -> Option<Req>`).
    #[must_use]
    pub fn clone_request<P2>(self, policy: P2) -> BackoffRetryLayer<C, P2, X> {
        BackoffRetryLayer {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            observers: self.observers,
            streams: self.streams,
            classifier: self.classifier,
            requests: policy,
            keys: self.keys,
        }
    }

    /// Names the key of each request that retries with `keys` (a
    /// [`KeyExtractor`](crate::per_key::KeyExtractor): a closure
    /// `Fn(&Req) -> Option<K>`, or an HTTP extractor such as
    /// [`HeaderKey`](crate::http::HeaderKey)), so that retry events carry it
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
        BackoffRetryLayer {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
            budget: self.budget,
            observers: self.observers,
            streams: self.streams,
            classifier: self.classifier,
            requests: self.requests,
            keys,
        }
    }

    /// The retry budget, if any.
    pub fn get_budget(&self) -> Option<&RetryBudget> {
        self.budget.as_ref()
    }
}

impl<S, C: Clone, P: Clone, X: Clone> Layer<S> for BackoffRetryLayer<C, P, X> {
    type Service = BackoffRetry<S, C, P, X>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = Shared {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
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
