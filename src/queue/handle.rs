//! [`QueueHandle`]: read a queue's depth and counters from outside.

use std::fmt;
use std::sync::Arc;

use super::core::Core;

/// Reads the queue shared by a layer and all its services.
///
/// Cheap to clone. From [`QueueLayer::handle`](crate::QueueLayer::handle)
/// or [`Queue::handle`](crate::Queue::handle).
#[derive(Clone)]
pub struct QueueHandle {
    pub(crate) core: Arc<Core>,
}

impl QueueHandle {
    /// Requests waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.core.depth()
    }

    /// Requests sent to the inner service whose response futures have not
    /// completed or been dropped yet.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// The most requests that may wait.
    pub fn capacity(&self) -> usize {
        self.core.config.capacity
    }

    /// The current depth and in-flight count, and the counters since the
    /// layer was made.
    pub fn stats(&self) -> QueueStats {
        let c = self.core.lock().counters;
        QueueStats {
            depth: self.core.depth(),
            in_flight: self.core.in_flight(),
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
