//! [`QueueHandle`]: read a queue's depth and counters from outside.

use std::fmt;

use super::core::Core;
use crate::slot::Slot;

/// Reads the queue shared by a layer and all its services.
///
/// Cheap to clone. From [`QueueLayer::handle`](crate::QueueLayer::handle)
/// or [`Queue::handle`](crate::Queue::handle).
///
/// # Examples
///
/// ```
/// use std::future::pending;
/// use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
/// use tower_sluice::QueueLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let queue = QueueLayer::new(10).concurrency(1);
/// let handle = queue.handle();
/// let mut svc = ServiceBuilder::new()
///     .layer(queue)
///     .service(service_fn(|_: u32| pending::<Result<(), BoxError>>()));
/// let _first = tokio::spawn(svc.ready().await?.call(1));
/// let _second = tokio::spawn(svc.ready().await?.call(2));
/// tokio::task::yield_now().await;
/// assert_eq!(handle.in_flight(), 1); // the first is with the inner service
/// assert_eq!(handle.depth(), 1); // the second waits
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct QueueHandle {
    pub(crate) core: Slot<Core>,
}

impl QueueHandle {
    /// Requests waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.core.load().depth()
    }

    /// Requests sent to the inner service whose response futures have not
    /// completed or been dropped yet.
    pub fn in_flight(&self) -> usize {
        self.core.load().in_flight()
    }

    /// The most requests that may wait.
    pub fn capacity(&self) -> usize {
        self.core.load().config.capacity
    }

    /// The current depth and in-flight count, and the counters since the
    /// layer was made.
    pub fn stats(&self) -> QueueStats {
        let core = self.core.load();
        let c = core.lock().counters;
        QueueStats {
            depth: core.depth(),
            in_flight: core.in_flight(),
            dispatched: c.dispatched,
            queued: c.queued,
            rejected_full: c.rejected_full,
            timed_out: c.timed_out,
            cancelled: c.cancelled,
            failed: c.failed,
        }
    }
}

impl fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueHandle")
            .field("stats", &self.stats())
            .finish()
    }
}

/// A snapshot of a queue, from [`QueueHandle::stats`].
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::QueueLayer;
/// use tower_sluice::queue::QueueStats;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let queue = QueueLayer::new(10);
/// let handle = queue.handle();
/// let svc = ServiceBuilder::new()
///     .layer(queue)
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// svc.clone().oneshot(1).await?;
/// svc.clone().oneshot(2).await?;
/// let stats: QueueStats = handle.stats();
/// // Both went straight through: none waited, none was refused.
/// assert_eq!((stats.dispatched, stats.queued, stats.rejected_full), (2, 0, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Requests waiting now.
    pub depth: usize,
    /// Requests in flight to the inner service now.
    pub in_flight: usize,
    /// Requests sent to the inner service (at once or after waiting).
    pub dispatched: u64,
    /// Requests that had to wait in the queue.
    pub queued: u64,
    /// Requests refused with [`QueueFull`](crate::QueueFull).
    pub rejected_full: u64,
    /// Requests that failed with [`QueueTimeout`](crate::QueueTimeout),
    /// after waiting or up front.
    pub timed_out: u64,
    /// Queued requests whose callers dropped their futures.
    pub cancelled: u64,
    /// Requests refused because the inner service failed
    /// ([`QueueClosed`](crate::error::QueueClosed)).
    pub failed: u64,
}
