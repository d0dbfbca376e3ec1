//! A bounded queue in front of a service: arrival order, max wait,
//! concurrency cap, pacing and priorities, shared by every clone.
//!
//! [`QueueLayer::new(capacity)`](QueueLayer::new) makes a [`Queue`]:
//!
//! * at most `capacity` requests wait; one more fails at once with
//!   [`QueueFull`](crate::QueueFull);
//! * waiting requests are sent in arrival order;
//! * [`.max_wait(d)`](QueueLayer::max_wait): a request that has waited `d`
//!   fails with [`QueueTimeout`](crate::QueueTimeout); with pacing, one
//!   whose predicted wait is already longer fails at once;
//! * [`.concurrency(n)`](QueueLayer::concurrency): at most `n` requests in
//!   flight to the inner service; a slot is freed when a response future
//!   completes or is dropped;
//! * [`.pace(quota)`](QueueLayer::pace): requests are sent evenly at the
//!   quota's rate, with its burst (the queue that keeps a client under
//!   60 requests per minute);
//! * [`.cost(|req| tokens)`](QueueLayer::cost): each request is charged its
//!   cost on a pace that counts a unit (`Quota::per_minute(100_000)
//!   .counting("tokens")`), 1 on a pace of requests; cost 0 is not paced,
//!   and a cost above the pace's burst fails at once with
//!   [`ExceedsBurst`](crate::ExceedsBurst);
//! * [`.priority(|req| class)`](QueueLayer::priority): higher classes
//!   first, arrival order within a class, and every
//!   [`oldest_every`](QueueLayer::oldest_every)-th request sent is the
//!   oldest waiting one so no class starves;
//! * [`.max_per_key(n, |req| key)`](QueueLayer::max_per_key): at most `n`
//!   waiting requests per key;
//! * [`QueueHandle`] (from [`QueueLayer::handle`]): depth, requests in
//!   flight, counters; events through an
//!   [`Observer`](crate::observe::Observer).
//!
//! A caller that drops its response future leaves the queue at once and
//! frees its place; with pacing, it takes no dispatch slot (a slot is
//! taken when a request is sent, not when it joins).
//!
//! # Sharing
//!
//! The service is `Clone` even when the inner service is not (it must be
//! `Send` for the queue to be `Send + Sync`), so it can replace
//! `tower::buffer::Buffer`: clones share the inner service and the queue.
//! All services made by one layer share its queue, concurrency cap and
//! pacer (each with its own inner service).
//!
//! # How it works, and what it costs
//!
//! There is no worker task and no channel. When nobody waits and there is
//! room, `call` sends the request itself, under a lock: one uncontended
//! lock and the inner service's `poll_ready` and `call`, so a request
//! costs a few tens of nanoseconds where `Buffer` sends it to a worker task
//! (see the README's performance section). Otherwise the request waits in
//! its response future; when its turn comes, that future sends it (so the
//! inner service's `poll_ready` is polled by one waiter at a time, the one
//! whose turn it is) and wakes the next one.
//!
//! So a queued request is sent only while its response future is polled:
//! await it (or spawn it) rather than leaving it unpolled while awaiting a
//! later one, or the requests behind it wait too.
//!
//! # Backpressure
//!
//! `poll_ready` is always ready (unless the inner service failed): a full
//! queue refuses in `call`, and a queued request waits in its response
//! future. That suits axum and tonic routers, which never wait for
//! `poll_ready`. The inner service's `poll_ready` is respected: the next
//! request waits until it is ready.
//!
//! # Errors
//!
//! [`QueueFull`](crate::QueueFull), [`QueueTimeout`](crate::QueueTimeout)
//! (HTTP 503 through the `http` module),
//! [`ExceedsBurst`](crate::ExceedsBurst) for a cost above the pace's
//! burst, and
//! [`QueueClosed`](crate::error::QueueClosed) when the inner service
//! fails in `poll_ready`: the request that met the failure and every
//! request waiting for that service get it, with the service's error as
//! its `source`; the failure is logged (`tracing`, error level) and
//! reported as [`Event::QueueClosed`](crate::observe::Event::QueueClosed).
//! Errors of the inner service's calls pass through unchanged.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//! use tower_sluice::{Quota, QueueLayer};
//!
//! # #[cfg(not(feature = "test-util"))] fn main() {} // paced on tokio's paused clock
//! # #[cfg(feature = "test-util")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // A client of an API allowing 60 requests per minute, 5 at once:
//! // up to 100 requests wait their turn, none for more than two minutes.
//! let queue = QueueLayer::new(100)
//!     .pace(Quota::per_minute(60).with_burst(5))
//!     .max_wait(Duration::from_secs(120));
//! let handle = queue.handle();
//! let client = ServiceBuilder::new()
//!     .layer(queue)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//!
//! let start = tokio::time::Instant::now();
//! let mut tasks = Vec::new();
//! for n in 0..8 {
//!     let mut client = client.clone();
//!     tasks.push(tokio::spawn(async move { client.ready().await?.call(n).await }));
//! }
//! for task in tasks {
//!     task.await??;
//! }
//! // 5 at once, then one per second.
//! # #[cfg(feature = "test-util")]
//! assert_eq!(start.elapsed(), Duration::from_secs(3));
//! assert_eq!(handle.stats().dispatched, 8);
//! # Ok(())
//! # }
//! ```

mod core;
pub mod future;
mod handle;
mod layer;
mod service;

use std::hash::{BuildHasher, Hash};

pub use handle::{QueueHandle, QueueStats};
pub use layer::QueueLayer;
pub use service::Queue;

/// The default of [`QueueLayer::oldest_every`].
pub(crate) const DEFAULT_OLDEST_EVERY: u32 = 8;

/// Gives a request its priority class: higher classes are served first.
///
/// Implemented for closures `Fn(&Req) -> u8` and for [`NoPriority`].
///
/// # Examples
///
/// ```
/// use tower_sluice::QueueLayer;
/// use tower_sluice::queue::Priority;
///
/// /// Paying customers first.
/// #[derive(Clone)]
/// struct ByPlan;
/// impl Priority<(String, bool)> for ByPlan {
///     fn priority(&self, (_, paid): &(String, bool)) -> u8 {
///         u8::from(*paid)
///     }
/// }
///
/// assert_eq!(ByPlan.priority(&("ann".into(), true)), 1);
/// let queue = QueueLayer::new(100).priority(ByPlan);
/// # let _ = queue;
/// ```
pub trait Priority<Req> {
    /// The request's class.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::queue::Priority;
    ///
    /// let urgent_first = |req: &&str| if req.starts_with("urgent") { 9 } else { 0 };
    /// assert_eq!(urgent_first.priority(&"urgent: disk full"), 9);
    /// ```
    fn priority(&self, req: &Req) -> u8;
}

/// Every request in one class (the default).
///
/// # Examples
///
/// ```
/// use tower_sluice::queue::{NoPriority, Priority};
///
/// assert_eq!(Priority::<u32>::priority(&NoPriority, &7), 0);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPriority;

impl<Req> Priority<Req> for NoPriority {
    #[inline]
    fn priority(&self, _: &Req) -> u8 {
        0
    }
}

impl<Req, F> Priority<Req> for F
where
    F: Fn(&Req) -> u8,
{
    #[inline]
    fn priority(&self, req: &Req) -> u8 {
        self(req)
    }
}

/// Finds a request's key for [`QueueLayer::max_per_key`].
///
/// Implemented for closures `Fn(&Req) -> T` where `T: Hash`, and for
/// [`NoKey`].
///
/// # Examples
///
/// ```
/// use tower_sluice::QueueLayer;
///
/// // Any closure returning a `Hash` value is a `QueueKey`.
/// let queue = QueueLayer::new(100).max_per_key(10, |req: &(String, u32)| req.0.clone());
/// # let _ = queue;
/// ```
pub trait QueueKey<Req> {
    /// The hash of the request's key, `None` for no key (no per-key
    /// bound).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::hash::RandomState;
    /// use tower_sluice::queue::QueueKey;
    ///
    /// let tenant = |req: &(u32, &str)| req.0;
    /// let hasher = RandomState::new();
    /// assert_eq!(tenant.key_hash(&(1, "a"), &hasher), tenant.key_hash(&(1, "b"), &hasher));
    /// ```
    fn key_hash(&self, req: &Req, hasher: &impl BuildHasher) -> Option<u64>;
}

/// No per-key bound (the default).
///
/// # Examples
///
/// ```
/// use std::hash::RandomState;
/// use tower_sluice::queue::{NoKey, QueueKey};
///
/// assert_eq!(QueueKey::<u32>::key_hash(&NoKey, &7, &RandomState::new()), None);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> QueueKey<Req> for NoKey {
    #[inline]
    fn key_hash(&self, _: &Req, _: &impl BuildHasher) -> Option<u64> {
        None
    }
}

impl<Req, F, T> QueueKey<Req> for F
where
    F: Fn(&Req) -> T,
    T: Hash,
{
    fn key_hash(&self, req: &Req, hasher: &impl BuildHasher) -> Option<u64> {
        Some(hasher.hash_one(self(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        fn ok<T: Clone + Send + Sync + 'static>() {}
        ok::<QueueLayer>();
        ok::<QueueHandle>();
        // Not Clone, not Sync: the queue is both.
        #[allow(dead_code)]
        struct NotClone(std::cell::Cell<u8>);
        ok::<Queue<NotClone>>();
        ok::<QueueLayer<fn(&u8) -> u8, fn(&u8) -> u8>>();
    }
}
