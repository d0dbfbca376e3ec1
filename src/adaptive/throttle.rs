//! [`AdaptiveThrottleLayer`]: client-side adaptive throttling, as in the
//! Google SRE book ("Handling Overload").

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::classify::{ClassifyFeedback, DefaultFeedback, Signal};
use super::future::{ResponseFuture, Track};
use super::rng::Rng;
use crate::BoxError;
use crate::clock::Clock;
use crate::error::Throttled;
use crate::observe::{Event, Observer, Observers};

const LAYER: &str = "adaptive_throttle";
const BUCKETS: usize = 20;

/// How important a request is: under throttling, less critical requests
/// are shed first. Each class has its own multiplier `K` in the rejection
/// formula (see [`AdaptiveThrottleLayer::class_k`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Criticality {
    /// Shed last: `K × 2` by default.
    CriticalPlus,
    /// The default class: `K`.
    #[default]
    Critical,
    /// `K × 0.75` by default.
    SheddablePlus,
    /// Shed first: `K × 0.5` by default.
    Sheddable,
}

impl Criticality {
    fn index(self) -> usize {
        self as usize
    }
}

/// Finds a request's [`Criticality`]. Implemented for closures
/// `Fn(&Req) -> Criticality` and for [`AllCritical`].
pub trait CriticalityOf<Req> {
    /// The request's class.
    fn criticality(&self, req: &Req) -> Criticality;
}

impl<F, Req> CriticalityOf<Req> for F
where
    F: Fn(&Req) -> Criticality,
{
    #[inline]
    fn criticality(&self, req: &Req) -> Criticality {
        self(req)
    }
}

/// Every request is [`Criticality::Critical`] (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllCritical;

impl<Req> CriticalityOf<Req> for AllCritical {
    #[inline]
    fn criticality(&self, _: &Req) -> Criticality {
        Criticality::Critical
    }
}

/// Rejects requests locally, before they reach an upstream that is
/// refusing them, with probability
///
/// ```text
/// max(0, (requests - K × accepts) / (requests + 1))
/// ```
///
/// over a sliding window (default 2 minutes), where `requests` counts every
/// request the application made (those rejected here included) and
/// `accepts` those the upstream accepted ([`Signal::Success`] and
/// [`Signal::Ignore`]; failures and overloads are not accepts). With
/// `K = 2` (the default) the upstream keeps receiving about twice what it
/// accepts, enough to notice quickly when it recovers. Rejected requests
/// fail at once with [`Throttled`] (HTTP 503).
///
/// Classes ([`Criticality`], found by [`criticality`](Self::criticality))
/// have their own `K`, so sheddable requests are rejected first and
/// critical ones last.
///
/// See the [module docs](super).
///
/// # Sharing
///
/// Every service made by the layer, and every clone, shares one window.
pub struct AdaptiveThrottleLayer<P = AllCritical, C = DefaultFeedback> {
    core: Arc<Core>,
    criticality: P,
    classify: C,
}

struct Core {
    clock: Clock,
    shadow: bool,
    class_k: [f64; 4],
    bucket: u64,
    ring: Mutex<Ring>,
    rng: Rng,
    observers: Observers,
}

struct Ring {
    slots: [(u64, u64); BUCKETS],
    head: u64,
    requests: u64,
    accepts: u64,
}

impl Default for AdaptiveThrottleLayer {
    fn default() -> Self {
        AdaptiveThrottleLayer::new()
    }
}

impl AdaptiveThrottleLayer {
    /// `K = 2` over a window of 2 minutes.
    pub fn new() -> Self {
        AdaptiveThrottleLayer {
            core: Arc::new(Core {
                clock: Clock::new(),
                shadow: false,
                class_k: class_k(2.0),
                bucket: window_to_bucket(Duration::from_secs(120)),
                ring: Mutex::new(Ring {
                    slots: [(0, 0); BUCKETS],
                    head: 0,
                    requests: 0,
                    accepts: 0,
                }),
                rng: Rng::from_entropy(),
                observers: Observers::default(),
            }),
            criticality: AllCritical,
            classify: DefaultFeedback,
        }
    }
}

fn class_k(k: f64) -> [f64; 4] {
    [k * 2.0, k, k * 0.75, k * 0.5]
}

fn window_to_bucket(window: Duration) -> u64 {
    (u64::try_from(window.as_nanos()).unwrap_or(u64::MAX) / BUCKETS as u64).max(1)
}

impl<P, C> AdaptiveThrottleLayer<P, C> {
    fn edit(mut self, f: impl FnOnce(&mut Core)) -> Self {
        match Arc::get_mut(&mut self.core) {
            Some(core) => f(core),
            None => panic!(
                "AdaptiveThrottleLayer: configure the layer before calling `handle()` or cloning it"
            ),
        }
        self
    }

    /// The multiplier `K` (default 2; at least 1): lower rejects sooner,
    /// higher lets more through to the upstream. Sets every class's `K`
    /// from it (×2, ×1, ×0.75, ×0.5).
    ///
    /// # Panics
    ///
    /// When called after [`handle`](Self::handle) or after cloning the layer
    /// (as every setter).
    #[must_use]
    pub fn k(self, k: f64) -> Self {
        let k = if k.is_nan() { 2.0 } else { k.max(1.0) };
        self.edit(|c| c.class_k = class_k(k))
    }

    /// One class's own `K` (at least 0.5).
    #[must_use]
    pub fn class_k(self, class: Criticality, k: f64) -> Self {
        let k = if k.is_nan() { 2.0 } else { k.max(0.5) };
        self.edit(|c| c.class_k[class.index()] = k)
    }

    /// The window requests and accepts are counted over (default 2
    /// minutes), in 20 buckets.
    #[must_use]
    pub fn window(self, window: Duration) -> Self {
        self.edit(|c| c.bucket = window_to_bucket(window))
    }

    /// Shadow (dry-run) mode: requests are drawn and refusals reported
    /// ([`Event::AdaptiveRejected`] with `enforced: false`), but every
    /// request is sent.
    #[must_use]
    pub fn shadow(self) -> Self {
        self.edit(|c| c.shadow = true)
    }

    /// Seeds the random draws, for reproducible tests.
    #[must_use]
    pub fn seed(self, seed: u64) -> Self {
        self.edit(|c| c.rng = Rng::new(seed))
    }

    /// Reports rejections ([`Event::AdaptiveRejected`]) to `observer`.
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit(|c| c.observers = Observers::new(observer))
    }

    /// Finds each request's class (default: all
    /// [`Critical`](Criticality::Critical)).
    pub fn criticality<P2>(self, criticality: P2) -> AdaptiveThrottleLayer<P2, C> {
        AdaptiveThrottleLayer {
            core: self.core,
            criticality,
            classify: self.classify,
        }
    }

    /// Reads responses with `classify` (default [`DefaultFeedback`]; use
    /// `HttpFeedback` (feature `http`) for HTTP clients).
    pub fn classify<C2>(self, classify: C2) -> AdaptiveThrottleLayer<P, C2> {
        AdaptiveThrottleLayer {
            core: self.core,
            criticality: self.criticality,
            classify,
        }
    }

    /// A handle to read the counts and the rejection probability.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            core: self.core.clone(),
        }
    }
}

impl<P: Clone, C: Clone> Clone for AdaptiveThrottleLayer<P, C> {
    fn clone(&self) -> Self {
        AdaptiveThrottleLayer {
            core: self.core.clone(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, P: Clone, C: Clone> Layer<S> for AdaptiveThrottleLayer<P, C> {
    type Service = AdaptiveThrottle<S, P, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveThrottle {
            inner,
            core: self.core.clone(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<P, C> fmt::Debug for AdaptiveThrottleLayer<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleLayer")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.lock(self.clock.now());
        f.debug_struct("AdaptiveThrottle")
            .field("k", &self.class_k)
            .field(
                "window",
                &Duration::from_nanos(self.bucket * BUCKETS as u64),
            )
            .field("requests", &r.requests)
            .field("accepts", &r.accepts)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// The ring, advanced to `now`.
    fn lock(&self, now: u64) -> MutexGuard<'_, Ring> {
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let at = now / self.bucket;
        if at > r.head {
            let stale = (at - r.head).min(BUCKETS as u64);
            for i in 1..=stale {
                let slot = ((r.head + i) % BUCKETS as u64) as usize;
                let (req, acc) = std::mem::take(&mut r.slots[slot]);
                r.requests -= req;
                r.accepts -= acc;
            }
            r.head = at;
        }
        r
    }

    fn probability(&self, r: &Ring, class: Criticality) -> f64 {
        let requests = r.requests as f64;
        let k = self.class_k[class.index()];
        ((requests - k * r.accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// Counts a request; `Err` with the probability when it is rejected.
    fn admit(&self, class: Criticality) -> Result<(), f64> {
        let now = self.clock.now();
        let mut r = self.lock(now);
        let p = self.probability(&r, class);
        let slot = (r.head % BUCKETS as u64) as usize;
        r.slots[slot].0 += 1;
        r.requests += 1;
        drop(r);
        if p > 0.0 && self.rng.next_f64() < p {
            Err(p)
        } else {
            Ok(())
        }
    }

    fn accepted(&self) {
        let now = self.clock.now();
        let mut r = self.lock(now);
        let slot = (r.head % BUCKETS as u64) as usize;
        r.slots[slot].1 += 1;
        r.accepts += 1;
    }
}

/// Reads an [`AdaptiveThrottleLayer`]'s window. Cheap to clone.
#[derive(Clone)]
pub struct ThrottleHandle {
    core: Arc<Core>,
}

impl ThrottleHandle {
    /// Requests and accepts in the window now.
    pub fn counts(&self) -> (u64, u64) {
        let r = self.core.lock(self.core.clock.now());
        (r.requests, r.accepts)
    }

    /// The probability with which a request of `class` is rejected now.
    pub fn probability(&self, class: Criticality) -> f64 {
        let r = self.core.lock(self.core.clock.now());
        self.core.probability(&r, class)
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("core", &self.core)
            .finish()
    }
}

/// Throttles requests locally. Made by [`AdaptiveThrottleLayer`]; see the
/// [module docs](super).
pub struct AdaptiveThrottle<S, P, C> {
    inner: S,
    core: Arc<Core>,
    criticality: P,
    classify: C,
}

impl<S, P, C> AdaptiveThrottle<S, P, C> {
    crate::inner_accessors!();
}

/// The record an [`AdaptiveThrottle`] request keeps until its response.
pub struct ThrottleTrack<C> {
    core: Arc<Core>,
    classify: C,
}

impl<C, Res> Track<Res> for ThrottleTrack<C>
where
    C: ClassifyFeedback<Res>,
{
    fn complete(self, result: &Result<Res, BoxError>) {
        if matches!(
            self.classify.feedback(result).signal(),
            Signal::Success | Signal::Ignore
        ) {
            self.core.accepted();
        }
    }
}

impl<C> fmt::Debug for ThrottleTrack<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleTrack").finish_non_exhaustive()
    }
}

impl<S, P, C, Req> Service<Req> for AdaptiveThrottle<S, P, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: CriticalityOf<Req>,
    C: ClassifyFeedback<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ThrottleTrack<C>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let class = self.criticality.criticality(&req);
        match self.core.admit(class) {
            Ok(()) => {
                let track = ThrottleTrack {
                    core: self.core.clone(),
                    classify: self.classify.clone(),
                };
                ResponseFuture::called(self.inner.call(req), track)
            }
            Err(p) => {
                let error = Throttled::new(p);
                let enforced = !self.core.shadow;
                self.core.observers.emit(&Event::AdaptiveRejected {
                    layer: LAYER,
                    error: &error,
                    enforced,
                });
                if enforced {
                    return ResponseFuture::rejected(error.into());
                }
                let track = ThrottleTrack {
                    core: self.core.clone(),
                    classify: self.classify.clone(),
                };
                ResponseFuture::called(self.inner.call(req), track)
            }
        }
    }
}

impl<S: Clone, P: Clone, C: Clone> Clone for AdaptiveThrottle<S, P, C> {
    fn clone(&self) -> Self {
        AdaptiveThrottle {
            inner: self.inner.clone(),
            core: self.core.clone(),
            criticality: self.criticality.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S: fmt::Debug, P, C> fmt::Debug for AdaptiveThrottle<S, P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
