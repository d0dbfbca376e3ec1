use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use super::core::{Config, Core};
use super::{NoKey, NoPriority, Queue, QueueHandle};
use crate::cost::One;
use crate::observe::{Observer, Observers};
use crate::quota::Quota;
use crate::slot::Slot;

/// Puts a bounded queue in front of a service, shared by every service the
/// layer makes and all their clones.
///
/// See the [module docs](crate::queue).
///
/// # Sharing
///
/// The layer owns one queue (with its concurrency cap and pacer): every
/// service it wraps, every clone and every handle see the same one. Two
/// layers made by two calls to [`new`](Self::new) are independent.
///
/// Setters never panic and may come in any order, before or after
/// [`handle`](Self::handle) or a clone: a setter applies to the layer and
/// its clones, and a handle always reads the queue that the services made
/// by the layer use. Configure the layer before wrapping services: a
/// service keeps the queue the layer had when it was made (a setter makes
/// a new, empty queue with the new settings).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::{Quota, QueueLayer};
///
/// async fn handler(n: u32) -> Result<u32, BoxError> {
///     Ok(n * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let queue = QueueLayer::new(100)
///     .concurrency(4)
///     .pace(Quota::per_second(50))
///     .max_wait(Duration::from_secs(5));
/// let handle = queue.handle();
/// let svc = ServiceBuilder::new().layer(queue).service(service_fn(handler));
/// assert_eq!(svc.clone().oneshot(21).await.unwrap(), 42);
/// assert_eq!(handle.depth(), 0);
/// # }
/// ```
pub struct QueueLayer<P = NoPriority, K = NoKey, C = One> {
    core: Slot<Core>,
    priority: P,
    key: K,
    cost: C,
}

impl QueueLayer {
    /// A queue in which at most `capacity` requests wait; served in arrival
    /// order; a request arriving when it is full fails at once with
    /// [`QueueFull`](crate::QueueFull).
    ///
    /// With `capacity` 0 nothing waits: a request is sent at once or
    /// refused (load shedding). Requests sent at once do not count against
    /// the capacity; requests in flight are bounded by
    /// [`concurrency`](Self::concurrency).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    ///
    /// // Up to 1000 requests wait; 16 are in flight at once.
    /// let queue = QueueLayer::new(1_000).concurrency(16);
    /// assert_eq!(queue.handle().capacity(), 1_000);
    /// ```
    pub fn new(capacity: usize) -> Self {
        QueueLayer {
            core: Slot::new(Core::new(Config::new(capacity), Observers::default())),
            priority: NoPriority,
            key: NoKey,
            cost: One,
        }
    }
}

impl<P, K, C> QueueLayer<P, K, C> {
    /// Replaces the shared queue with a new, empty one whose settings are
    /// edited by `f`.
    fn edit(self, f: impl FnOnce(&mut Config, &mut Observers)) -> Self {
        self.core.replace(
            |core| {
                let mut config = core.config.clone();
                let mut observers = core.observers.clone();
                f(&mut config, &mut observers);
                Core::new(config, observers)
            },
            |_| {},
        );
        self
    }

    /// A request that has waited `max_wait` in the queue fails with
    /// [`QueueTimeout`](crate::QueueTimeout). With [`pace`](Self::pace), a
    /// request whose predicted wait is already longer fails at once
    /// (`predicted() == true`): the prediction counts the pacer's schedule
    /// for the requests ahead of it, so it never overstates the wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::{QueueLayer, Quota};
    ///
    /// // A client paced at 60 a minute that gives up on a request after 30 s in
    /// // the queue, or at once when the 31st request in line is queued.
    /// let queue = QueueLayer::new(100)
    ///     .pace(Quota::per_minute(60).with_burst(1))
    ///     .max_wait(Duration::from_secs(30));
    /// # let _ = queue;
    /// ```
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.edit(|c, _| c.max_wait = Some(max_wait))
    }

    /// At most `n` requests in flight to the inner service (sent, and their
    /// response futures neither completed nor dropped). The next waiting
    /// request goes as soon as one completes. Unlimited by default (the
    /// inner service's `poll_ready` still applies).
    ///
    /// `n` is at least 1: `concurrency(0)` is taken as `concurrency(1)`
    /// (with 0 nothing could ever be sent), as every count setter of the
    /// crate clamps to its valid range.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::QueueLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let queue = QueueLayer::new(10).concurrency(2);
    /// let handle = queue.handle();
    /// let svc = ServiceBuilder::new().layer(queue).service(service_fn(|_: u32| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await;
    ///     Ok::<_, BoxError>(())
    /// }));
    /// let start = tokio::time::Instant::now();
    /// let tasks: Vec<_> = (0..4).map(|n| tokio::spawn(svc.clone().oneshot(n))).collect();
    /// for task in tasks {
    ///     task.await??;
    /// }
    /// // Two at a time: two rounds of one second.
    /// assert_eq!(start.elapsed(), Duration::from_secs(2));
    /// assert_eq!(handle.stats().queued, 2);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn concurrency(self, n: usize) -> Self {
        self.edit(|c, _| c.concurrency = Some(n.max(1)))
    }

    /// Sends requests evenly at `quota`'s rate: up to its burst at once,
    /// then one per emission interval (`period / limit`). A request
    /// cancelled while waiting takes no slot: slots are taken when requests
    /// are sent, not when they join. A calendar quota
    /// ([`Quota::per_calendar_minute`] and the like) paces by its windows:
    /// its allowance goes at once, then requests wait for the next window.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::{QueueLayer, Quota};
    ///
    /// // Never more than 60 a minute upstream, and never 2 back to back:
    /// // one request a second, the rest wait their turn.
    /// let queue = QueueLayer::new(1_000).pace(Quota::per_minute(60).with_burst(1));
    /// # let _ = queue;
    /// ```
    #[must_use]
    pub fn pace(self, quota: Quota) -> Self {
        self.edit(|c, _| c.pace = Some(quota))
    }

    /// Charges each request its cost on the [pace](Self::pace): a pace
    /// that counts a unit ([`Quota::counting`]) sends requests so that
    /// their costs (tokens, bytes) stay within its rate, a pace of
    /// requests charges 1 each. A request of cost 0 is not paced. A cost
    /// above the pace's burst could never be sent: it fails at once with
    /// [`ExceedsBurst`](crate::ExceedsBurst), without joining the queue.
    ///
    /// With [`max_wait`](Self::max_wait), the predicted wait counts the
    /// costs of the requests ahead. Without a pace, the cost is not used.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::{ExceedsBurst, QueueLayer, Quota};
    ///
    /// struct Prompt { tokens: u32 }
    ///
    /// # #[cfg(not(feature = "test-util"))] fn main() {}
    /// # #[cfg(feature = "test-util")]
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// // A model allowing 60 000 tokens a minute (1 000 a second), 10 000 at once.
    /// let queue = QueueLayer::new(100)
    ///     .pace(Quota::per_minute(60_000).with_burst(10_000).counting("tokens"))
    ///     .cost(|p: &Prompt| p.tokens);
    /// let client = ServiceBuilder::new()
    ///     .layer(queue)
    ///     .service(service_fn(|p: Prompt| async move { Ok::<_, BoxError>(p.tokens) }));
    /// let start = tokio::time::Instant::now();
    /// client.clone().oneshot(Prompt { tokens: 8_000 }).await?;
    /// // 2 000 tokens left at once: 5 000 more wait 3 s for theirs.
    /// client.clone().oneshot(Prompt { tokens: 5_000 }).await?;
    /// assert_eq!(start.elapsed(), Duration::from_secs(3));
    /// // More than the burst could never be sent.
    /// let err = client.clone().oneshot(Prompt { tokens: 20_000 }).await.unwrap_err();
    /// assert!(err.is::<ExceedsBurst>());
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn cost<C2>(self, cost: C2) -> QueueLayer<P, K, C2> {
        QueueLayer {
            core: self.core,
            priority: self.priority,
            key: self.key,
            cost,
        }
    }

    /// Serves requests by class: `priority(&req)` gives a class (`u8`),
    /// higher classes go first, and requests of one class go in arrival
    /// order. To keep the lowest classes from starving, every
    /// [`oldest_every`](Self::oldest_every)-th request sent from the queue
    /// (default 8) is the oldest waiting request, whatever its class.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    ///
    /// struct Job { interactive: bool }
    ///
    /// // Interactive jobs jump ahead of batch jobs.
    /// let queue = QueueLayer::new(100)
    ///     .concurrency(4)
    ///     .priority(|job: &Job| if job.interactive { 1 } else { 0 });
    /// # let _ = queue;
    /// ```
    #[must_use]
    pub fn priority<P2>(self, priority: P2) -> QueueLayer<P2, K, C> {
        QueueLayer {
            core: self.core,
            priority,
            key: self.key,
            cost: self.cost,
        }
        .edit(|_, _| {})
    }

    /// Every `n`-th request sent from the queue is the oldest waiting one,
    /// whatever its class, so a request waits at most about `n` times the
    /// requests older than it (default 8). `1` serves in arrival order
    /// regardless of class; `0` turns the guard off (strict priority: a
    /// steady flow of high-class requests can starve lower classes).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    ///
    /// // Strict priority, except that every 4th request sent is the oldest.
    /// let queue = QueueLayer::new(100)
    ///     .priority(|class: &u8| *class)
    ///     .oldest_every(4);
    /// # let _ = queue;
    /// ```
    #[must_use]
    pub fn oldest_every(self, n: u32) -> Self {
        self.edit(|c, _| c.oldest_every = n)
    }

    /// At most `max` requests of one key wait at once (the key is
    /// `key(&req)`, any `Hash` value, told apart by a 64-bit hash); one
    /// more fails with [`QueueFull`](crate::QueueFull) whose `capacity` is
    /// `max`. Keeps one client from filling the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    ///
    /// struct Req { tenant: u32 }
    ///
    /// // 1000 places in all, at most 50 of them for any one tenant.
    /// let queue = QueueLayer::new(1_000).max_per_key(50, |req: &Req| req.tenant);
    /// # let _ = queue;
    /// ```
    #[must_use]
    pub fn max_per_key<K2>(self, max: usize, key: K2) -> QueueLayer<P, K2, C> {
        QueueLayer {
            core: self.core,
            priority: self.priority,
            key,
            cost: self.cost,
        }
        .edit(|c, _| c.max_per_key = Some(max))
    }

    /// Reports queued, dequeued, refused and timed-out requests and a
    /// failed inner service to `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    /// use tower_sluice::observe::{Event, Monitor};
    ///
    /// let monitor = Monitor::new();
    /// let queue = QueueLayer::new(100).observer(monitor.clone());
    /// // Or a closure:
    /// let logged = QueueLayer::new(100).observer(|e: &Event<'_>| {
    ///     if let Event::QueueFull { .. } = e {
    ///         eprintln!("queue full: shedding load");
    ///     }
    /// });
    /// # let _ = (queue, logged);
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        let observer = Observers::new(observer, super::core::LAYER);
        self.edit(|_, o| *o = observer)
    }

    /// A handle on the shared queue: depth, in flight, counters.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::QueueLayer;
    ///
    /// let queue = QueueLayer::new(100);
    /// let handle = queue.handle();
    /// // Setters may come after `handle()`: the handle follows the layer.
    /// let queue = queue.concurrency(8);
    /// assert_eq!((handle.depth(), handle.in_flight()), (0, 0));
    /// # let _ = queue;
    /// ```
    pub fn handle(&self) -> QueueHandle {
        QueueHandle {
            core: self.core.clone(),
        }
    }
}

impl<S, P: Clone, K: Clone, C: Clone> Layer<S> for QueueLayer<P, K, C> {
    type Service = Queue<S, P, K, C>;

    fn layer(&self, inner: S) -> Queue<S, P, K, C> {
        Queue::new(
            inner,
            self.core.get(),
            self.priority.clone(),
            self.key.clone(),
            self.cost.clone(),
        )
    }
}

impl<P: Clone, K: Clone, C: Clone> Clone for QueueLayer<P, K, C> {
    fn clone(&self) -> Self {
        QueueLayer {
            core: self.core.clone(),
            priority: self.priority.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<P, K, C> fmt::Debug for QueueLayer<P, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.core.load();
        f.debug_struct("QueueLayer")
            .field("config", &core.config)
            .field("observer", &core.observers)
            .field("priority", &std::any::type_name::<P>())
            .field("key", &std::any::type_name::<K>())
            .field("cost", &std::any::type_name::<C>())
            .finish()
    }
}
