//! [`AdaptiveThrottleLayer`]: client-side adaptive throttling, as in the
//! Google SRE book ("Handling Overload").

mod layer;
mod service;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tower_layer::Layer;
use tower_service::Service;

use super::classify::DefaultFeedback;
use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::clock::Clock;
use crate::error::Throttled;
use crate::future::ResponseFuture;
use crate::future::Track;
use crate::observe::{Event, Observer, Observers};
use crate::slot::Slot;
use crate::util::IgnorePoison;
use crate::util::rng::SharedRng;

const LAYER: &str = "adaptive_throttle";
const BUCKETS: usize = 20;

pub use layer::*;
pub use service::*;

/// How important a request is: under throttling, less critical requests
/// are shed first. Each class has its own multiplier `K` in the rejection
/// formula (see [`AdaptiveThrottleLayer::class_k`]).
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
///
/// struct Req { background: bool }
///
/// // Background refreshes are shed before user requests.
/// let layer = AdaptiveThrottleLayer::new().criticality(|req: &Req| {
///     if req.background { Criticality::Sheddable } else { Criticality::Critical }
/// });
/// assert!(Criticality::CriticalPlus < Criticality::Sheddable); // ordered from most to least critical
/// # let _ = layer;
/// ```
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
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{Criticality, CriticalityOf};
///
/// /// Health checks are never important.
/// #[derive(Clone)]
/// struct ByPath;
/// impl CriticalityOf<String> for ByPath {
///     fn criticality(&self, path: &String) -> Criticality {
///         if path == "/health" { Criticality::Sheddable } else { Criticality::Critical }
///     }
/// }
///
/// assert_eq!(ByPath.criticality(&"/health".to_string()), Criticality::Sheddable);
/// ```
pub trait CriticalityOf<Req> {
    /// The request's class.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::adaptive::{Criticality, CriticalityOf};
    ///
    /// let by_flag = |urgent: &bool| if *urgent { Criticality::CriticalPlus } else { Criticality::Critical };
    /// assert_eq!(by_flag.criticality(&true), Criticality::CriticalPlus);
    /// ```
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
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{AllCritical, Criticality, CriticalityOf};
///
/// assert_eq!(CriticalityOf::<u32>::criticality(&AllCritical, &7), Criticality::Critical);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllCritical;

impl<Req> CriticalityOf<Req> for AllCritical {
    #[inline]
    fn criticality(&self, _: &Req) -> Criticality {
        Criticality::Critical
    }
}

struct Core {
    clock: Clock,
    shadow: bool,
    class_k: [f64; 4],
    bucket: u64,
    ring: Mutex<Ring>,
    rng: SharedRng,
    observers: Observers,
}

struct Ring {
    slots: [(u64, u64); BUCKETS],
    head: u64,
    requests: u64,
    accepts: u64,
}

impl Ring {
    fn empty() -> Self {
        Ring {
            slots: [(0, 0); BUCKETS],
            head: 0,
            requests: 0,
            accepts: 0,
        }
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
    /// A core with the same settings and an empty window, for a setter to
    /// edit.
    fn fresh(&self) -> Core {
        Core {
            clock: self.clock.clone(),
            shadow: self.shadow,
            class_k: self.class_k,
            bucket: self.bucket,
            ring: Mutex::new(Ring::empty()),
            rng: self.rng.fork(),
            observers: self.observers.clone(),
        }
    }

    /// The ring, advanced to `now`.
    fn lock(&self, now: u64) -> MutexGuard<'_, Ring> {
        let mut r = self.ring.lock().ignore_poison();
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
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let layer = AdaptiveThrottleLayer::new();
/// let handle = layer.handle();
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// svc.oneshot(1).await?;
/// assert_eq!(handle.counts(), (1, 1)); // one request, accepted
/// assert_eq!(handle.probability(Criticality::Critical), 0.0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ThrottleHandle {
    core: Slot<Core>,
}

impl ThrottleHandle {
    /// `(requests, accepts)` counted in the window now.
    pub fn counts(&self) -> (u64, u64) {
        let core = self.core.load();
        let r = core.lock(core.clock.now());
        (r.requests, r.accepts)
    }

    /// The probability with which a request of `class` is rejected now.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::{AdaptiveThrottleLayer, Criticality};
    /// let handle = AdaptiveThrottleLayer::new().handle();
    /// assert_eq!(handle.probability(Criticality::Sheddable), 0.0); // nothing refused yet
    /// ```
    pub fn probability(&self, class: Criticality) -> f64 {
        let core = self.core.load();
        let r = core.lock(core.clock.now());
        core.probability(&r, class)
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("core", &self.core)
            .finish()
    }
}
