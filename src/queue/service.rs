use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;
use tower_service::Service;

use super::core::{Attempt, Core, InFlight, InnerCell, LAYER};
use super::future::{ResponseFuture, Waiter};
use super::{NoKey, NoPriority, Priority, QueueHandle, QueueKey};
use crate::BoxError;
use crate::cost::{Cost, One};
use crate::error::{QueueFull, QueueTimeout};
use crate::observe::Event;

/// Queues requests to the inner service: bounded, in order, with optional
/// max wait, concurrency cap, pacing and priorities.
///
/// Made by [`QueueLayer`](crate::QueueLayer); see the
/// [module docs](crate::queue).
///
/// # Sharing
///
/// `Queue` is `Clone` whatever the inner service (which need only be
/// `Send` to make the queue `Send + Sync`): clones share the inner service,
/// behind a lock, and the queue. All services made by one layer share the
/// queue; each keeps its own inner service.
///
/// # The inner service
///
/// Unlike the crate's other services, `Queue` has no `get_ref` or
/// `get_mut`: its inner service sits behind a lock shared by every clone
/// and by the queued requests' futures (a waiting request calls the inner
/// service from its own future when its turn comes), so a plain reference
/// to it cannot be handed out. [`try_into_inner`](Self::try_into_inner)
/// gives it back once nothing else shares it.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::{Queue, QueueLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // An inner service that is neither `Clone` nor `Sync`...
/// let calls = Cell::new(0);
/// let inner = service_fn(move |n: u32| {
///     calls.set(calls.get() + 1);
///     async move { Ok::<_, BoxError>(n) }
/// });
/// // ...shared by clones of the queue.
/// let svc: Queue<_> = QueueLayer::new(10).layer(inner);
/// assert_eq!(svc.clone().oneshot(1).await?, 1);
/// assert_eq!(svc.clone().oneshot(2).await?, 2);
/// # Ok(())
/// # }
/// ```
pub struct Queue<S, P = NoPriority, K = NoKey, C = One> {
    inner: Arc<InnerCell<S>>,
    core: Arc<Core>,
    priority: P,
    key: K,
    cost: C,
}

impl<S, P, K, C> Queue<S, P, K, C> {
    pub(crate) fn new(inner: S, core: Arc<Core>, priority: P, key: K, cost: C) -> Self {
        Queue {
            inner: Arc::new(InnerCell::new(inner)),
            core,
            priority,
            key,
            cost,
        }
    }

    /// The inner service, when no clone of this service and no queued
    /// request shares it any more; otherwise the service itself, unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer};
    /// use tower_sluice::QueueLayer;
    ///
    /// let svc = QueueLayer::new(10).layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// let copy = svc.clone();
    /// // Shared with `copy`: given back.
    /// let svc = svc.try_into_inner().unwrap_err();
    /// drop(copy);
    /// let _inner = svc.try_into_inner().ok().expect("no longer shared");
    /// ```
    pub fn try_into_inner(self) -> Result<S, Self> {
        match Arc::try_unwrap(self.inner) {
            Ok(cell) => Ok(cell.into_inner()),
            Err(inner) => Err(Queue {
                inner,
                core: self.core,
                priority: self.priority,
                key: self.key,
                cost: self.cost,
            }),
        }
    }

    /// A handle on the shared queue: depth, requests in flight, counters
    /// (the same queue as the layer's [`handle`](crate::QueueLayer::handle)).
    pub fn handle(&self) -> QueueHandle {
        QueueHandle {
            core: crate::slot::Slot::from_arc(self.core.clone()),
        }
    }
}

impl<S, P, K, C, Req> Service<Req> for Queue<S, P, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Priority<Req>,
    K: QueueKey<Req>,
    C: Cost<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    /// Always ready, unless the inner service has failed (then the error is
    /// [`QueueClosed`](crate::error::QueueClosed)): a full queue refuses in
    /// `call`, and a queued request waits in its response future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.failed.get() {
            Some(closed) => Poll::Ready(Err(closed.clone().into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let core = &self.core;
        if let Some(closed) = self.inner.failed.get() {
            core.lock().counters.failed += 1;
            return ResponseFuture::closed(closed.clone());
        }
        // What the pacer charges it; a cost above the pace's burst could
        // never be sent.
        let units = match core.pace_units(self.cost.cost(&req)) {
            Ok(units) => units,
            Err(error) => return exceeds(&core.observers, error),
        };
        let class = self.priority.priority(&req);
        let key_hash = self.key.key_hash(&req, core.hasher());
        let mut req = Some(req);
        let mut st = core.lock();

        // Nobody waits: send it now if there is room.
        if st.len() == 0 {
            let mut cx = Context::from_waker(Waker::noop());
            match core.try_send(&mut st, &self.inner, &mut cx, &mut req, units) {
                Attempt::Sent(future) => {
                    drop(st);
                    if core.observers.is_set() {
                        core.observers.emit(&Event::Dequeued {
                            layer: LAYER,
                            waited: Duration::ZERO,
                            depth: 0,
                            queued: false,
                        });
                    }
                    return ResponseFuture::called(future, InFlight::new(core.clone()));
                }
                Attempt::Failed(closed) => {
                    st.counters.failed += 1;
                    drop(st);
                    core.fail(&closed);
                    return ResponseFuture::closed(closed);
                }
                Attempt::Busy | Attempt::PaceIn(_) | Attempt::NotReady => {}
            }
        }

        let config = &core.config;
        let full = if st.len() >= config.capacity {
            Some(config.capacity)
        } else {
            match (config.max_per_key, key_hash) {
                (Some(max), Some(h)) if core.queued_for(&st, h) >= max => Some(max),
                _ => None,
            }
        };
        if let Some(capacity) = full {
            st.counters.rejected_full += 1;
            drop(st);
            let error = QueueFull::new(capacity);
            tracing::info!(target: "tower_sluice::queue", capacity, "queue full; request refused");
            core.observers.emit(&Event::QueueFull {
                layer: LAYER,
                error: &error,
            });
            return ResponseFuture::failed(error.into());
        }
        if let Some(max_wait) = config.max_wait {
            let predicted = core.predicted_wait(&st, class, units);
            if u128::from(predicted) > max_wait.as_nanos() {
                st.counters.timed_out += 1;
                let depth = st.len();
                drop(st);
                let error = QueueTimeout::new(max_wait, true);
                tracing::info!(
                    target: "tower_sluice::queue",
                    max_wait_ms = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
                    predicted_ms = predicted / 1_000_000,
                    depth,
                    "predicted wait too long; request refused"
                );
                core.observers.emit(&Event::QueueTimedOut {
                    layer: LAYER,
                    error: &error,
                    depth,
                });
                return ResponseFuture::failed(error.into());
            }
        }
        let key = core.push(&mut st, class, key_hash, units);
        let depth = st.len();
        let enqueued = Instant::now();
        drop(st);
        tracing::debug!(target: "tower_sluice::queue", depth, "queued");
        core.observers.emit(&Event::Queued {
            layer: LAYER,
            depth,
        });
        let req = req.take().expect("request not sent");
        ResponseFuture::waiting(Waiter::new(
            core.clone(),
            key,
            self.inner.clone(),
            req,
            enqueued,
        ))
    }
}

impl<S, P: Clone, K: Clone, C: Clone> Clone for Queue<S, P, K, C> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
            core: self.core.clone(),
            priority: self.priority.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
        }
    }
}

impl<S, P, K, C> fmt::Debug for Queue<S, P, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("inner", &std::any::type_name::<S>())
            .field("core", &self.core)
            .field("priority", &std::any::type_name::<P>())
            .field("key", &std::any::type_name::<K>())
            .field("cost", &std::any::type_name::<C>())
            .finish()
    }
}

/// A request whose cost is above the pace's burst: it could never be sent,
/// so it fails at once, never waiting in the queue.
#[cold]
#[inline(never)]
fn exceeds<S: Service<Req>, Req>(
    observers: &crate::observe::Observers,
    error: crate::error::ExceedsBurst,
) -> ResponseFuture<S, Req> {
    tracing::warn!(target: "tower_sluice::queue", %error, "request can never pass");
    observers.emit(&Event::TooLarge {
        layer: LAYER,
        key: None,
        error: &error,
        enforced: true,
    });
    ResponseFuture::failed(error.into())
}
