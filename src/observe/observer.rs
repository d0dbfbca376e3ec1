//! [`Observer`](crate::observe::Observer): what receives events, and [`Fanout`](crate::observe::Fanout) to several.

use std::fmt;
use std::sync::Arc;

use super::Event;

/// Receives [`Event`](crate::observe::Event)s. Implemented for every
/// `Fn(&Event<'_>) + Send + Sync + 'static` closure.
///
/// # Examples
///
/// An observer of your own, with state:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_sluice::observe::{Event, Observer};
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// #[derive(Default)]
/// struct Refusals(AtomicU64);
///
/// impl Observer for Refusals {
///     fn on_event(&self, event: &Event<'_>) {
///         if let Event::Limited { enforced: true, .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// let layer = RateLimitLayer::new(Quota::per_second(10)).observer(Refusals::default());
/// # let _ = layer;
/// ```
pub trait Observer: Send + Sync + 'static {
    /// Called for each event, synchronously, on the request path.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Fanout, Monitor, Observer};
    ///
    /// // Observers can be called by hand, to forward events from your own one.
    /// struct Forward(Fanout);
    /// impl Observer for Forward {
    ///     fn on_event(&self, event: &tower_sluice::observe::Event<'_>) {
    ///         self.0.on_event(event);
    ///     }
    /// }
    /// let forward = Forward(Fanout::new().with(Monitor::new()));
    /// # let _ = forward;
    /// ```
    fn on_event(&self, event: &Event<'_>);

    /// How many calls per timed call this observer wants: the latency in
    /// [`Event::Completed`] and [`Event::BreakerCall`] is measured for
    /// about one call in `n` (chosen at random, independently per call;
    /// the others carry `None`), and never with `0`. The default, `1`,
    /// times every call.
    ///
    /// Timing a call costs two reads of the precise clock (tens of
    /// nanoseconds); an observer that only keeps an average, such as the
    /// [`Monitor`](crate::observe::Monitor), can ask for a sample. Layers ask once, when the
    /// observer is set.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Event, Observer};
    ///
    /// /// Logs the latency of about one call in a hundred.
    /// struct Sampled;
    /// impl Observer for Sampled {
    ///     fn on_event(&self, event: &Event<'_>) {
    ///         if let Event::Completed { latency: Some(latency), .. } = event {
    ///             eprintln!("took {latency:?}");
    ///         }
    ///     }
    ///     fn latency_one_in(&self) -> u32 {
    ///         100
    ///     }
    /// }
    /// # let _ = Sampled;
    /// ```
    fn latency_one_in(&self) -> u32 {
        1
    }
}

impl<F> Observer for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// Sends every event to several observers, in the order they were added.
///
/// # Examples
///
/// ```
/// use tower_sluice::observe::{Event, Fanout, Monitor};
/// use tower_sluice::{Quota, RateLimitLayer};
///
/// let monitor = Monitor::new();
/// let both = Fanout::new()
///     .with(monitor.clone())
///     .with(|event: &Event<'_>| eprintln!("{event:?}"));
/// let layer = RateLimitLayer::new(Quota::per_second(10)).observer(both);
/// # let _ = layer;
/// ```
#[derive(Clone, Default)]
pub struct Fanout(Vec<Arc<dyn Observer>>);

impl Fanout {
    /// No observers yet.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::observe::{Event, Fanout};
    ///
    /// let fanout = Fanout::new().with(|e: &Event<'_>| eprintln!("{e:?}"));
    /// # let _ = fanout;
    /// ```
    pub fn new() -> Self {
        Fanout(Vec::new())
    }

    /// Adds `observer` after the others.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::observe::{Fanout, Monitor};
    /// use tower_sluice::{Quota, RateLimitLayer};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let (a, b) = (Monitor::new(), Monitor::new());
    /// let svc = ServiceBuilder::new()
    ///     .layer(RateLimitLayer::new(Quota::per_second(10)).reject().observer(Fanout::new().with(a.clone()).with(b.clone())))
    ///     .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// svc.oneshot(()).await.unwrap();
    /// // Both saw the request.
    /// assert_eq!(a.snapshot().totals.requests, 1);
    /// assert_eq!(b.snapshot().totals.requests, 1);
    /// # }
    /// ```
    #[must_use]
    pub fn with(mut self, observer: impl Observer) -> Self {
        self.0.push(Arc::new(observer));
        self
    }
}

impl Observer for Fanout {
    #[inline]
    fn on_event(&self, event: &Event<'_>) {
        for o in &self.0 {
            o.on_event(event);
        }
    }

    /// The most frequent timing any of the observers wants.
    fn latency_one_in(&self) -> u32 {
        self.0
            .iter()
            .map(|o| o.latency_one_in())
            .filter(|&n| n > 0)
            .min()
            .unwrap_or(0)
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("observers", &self.0.len())
            .finish()
    }
}
