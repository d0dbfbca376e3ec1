//! The response future of [`Queue`](super::Queue).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::core::{Attempt, Core, InFlight, InnerCell, Key, LAYER};
use crate::BoxError;
use crate::error::{QueueClosed, QueueTimeout};
use crate::observe::Event;

pin_project! {
    /// The response future of [`Queue`](super::Queue).
    ///
    /// While its request waits in the queue, this future holds the request
    /// and its place; when its turn comes, polling it sends the request to
    /// the inner service (so a waiting request is sent only while its future
    /// is polled). Dropping it leaves the queue at once; dropping it after
    /// the request was sent frees its concurrency slot.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req>,
        // Wakes a waiting request at its deadline or when the pacer allows
        // the next dispatch.
        #[pin]
        sleep: Option<Sleep>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req>
    where
        S: Service<Req>,
    {
        Waiting { waiter: Option<Waiter<S, Req>> },
        Called { #[pin] future: S::Future, slot: Option<InFlight> },
        Failed { error: Option<BoxError> },
    }
}

/// A queued request.
pub(crate) struct Waiter<S, Req> {
    ticket: Ticket,
    inner: Arc<InnerCell<S>>,
    req: Option<Req>,
    enqueued: Instant,
    deadline: Option<Instant>,
}

/// A place in the queue, given back when dropped.
struct Ticket {
    core: Arc<Core>,
    key: Key,
    queued: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.queued {
            let waker = {
                let mut st = self.core.lock();
                st.counters.cancelled += 1;
                self.core.remove(&mut st, self.key)
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

enum Turn<F> {
    Sent(F),
    Failed(BoxError),
    /// Not yet; sleep until this instant if given.
    Wait(Option<Instant>),
}

impl<S, Req> Waiter<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    pub(crate) fn new(
        core: Arc<Core>,
        key: Key,
        inner: Arc<InnerCell<S>>,
        req: Req,
        enqueued: Instant,
    ) -> Self {
        let deadline = core.config.max_wait.map(|d| enqueued + d);
        Waiter {
            ticket: Ticket {
                core,
                key,
                queued: true,
            },
            inner,
            req: Some(req),
            enqueued,
            deadline,
        }
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Turn<S::Future> {
        let core = self.ticket.core.clone();
        let key = self.ticket.key;
        let mut st = core.lock();
        debug_assert!(core.contains(&st, key));

        if let Some(closed) = self.inner.failed.get() {
            st.counters.failed += 1;
            let waker = core.remove(&mut st, key);
            drop(st);
            self.ticket.queued = false;
            wake(waker);
            return Turn::Failed(closed.clone().into());
        }

        // A request may still be sent at its deadline, not after; one that
        // cannot go then times out.
        let now = self.deadline.map(|_| Instant::now());
        let (expired, late) = match (self.deadline, now) {
            (Some(d), Some(now)) => (now >= d, now > d),
            _ => (false, false),
        };

        let attempt = if !late && core.next(&st) == Some(key) {
            let units = st.units_of(key);
            Some(core.try_send(&mut st, &self.inner, cx, &mut self.req, units))
        } else {
            None
        };
        match attempt {
            Some(Attempt::Sent(future)) => {
                let waker = core.remove_sent(&mut st, key);
                let depth = st.len();
                drop(st);
                self.ticket.queued = false;
                wake(waker);
                if core.observers.is_set() {
                    let waited = self.enqueued.elapsed();
                    tracing::debug!(
                        target: "tower_sluice::queue",
                        waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                        depth,
                        "dequeued"
                    );
                    core.observers.emit(&Event::Dequeued {
                        layer: LAYER,
                        waited,
                        depth,
                        queued: true,
                    });
                }
                Turn::Sent(future)
            }
            Some(Attempt::Failed(closed)) => {
                st.counters.failed += 1;
                let waker = core.remove(&mut st, key);
                drop(st);
                self.ticket.queued = false;
                wake(waker);
                core.fail(&closed);
                Turn::Failed(closed.into())
            }
            _ if expired => {
                st.counters.timed_out += 1;
                let waker = core.remove(&mut st, key);
                let depth = st.len();
                drop(st);
                self.ticket.queued = false;
                wake(waker);
                let error = QueueTimeout::new(core.config.max_wait.unwrap_or_default(), false);
                tracing::info!(
                    target: "tower_sluice::queue",
                    max_wait_ms = u64::try_from(error.max_wait().as_millis()).unwrap_or(u64::MAX),
                    depth,
                    "timed out in the queue"
                );
                core.observers.emit(&Event::QueueTimedOut {
                    layer: LAYER,
                    error: &error,
                    depth,
                });
                Turn::Failed(error.into())
            }
            Some(Attempt::PaceIn(nanos)) => {
                core.set_waker(&mut st, key, cx.waker());
                drop(st);
                let at = now.unwrap_or_else(Instant::now) + std::time::Duration::from_nanos(nanos);
                Turn::Wait(Some(self.deadline.map_or(at, |d| d.min(at))))
            }
            Some(Attempt::Busy | Attempt::NotReady) | None => {
                core.set_waker(&mut st, key, cx.waker());
                Turn::Wait(self.deadline)
            }
        }
    }
}

fn wake(waker: Option<std::task::Waker>) {
    if let Some(w) = waker {
        w.wake();
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn called(future: S::Future, slot: InFlight) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                slot: Some(slot),
            },
            sleep: None,
        }
    }

    pub(crate) fn waiting(waiter: Waiter<S, Req>) -> Self {
        ResponseFuture {
            kind: Kind::Waiting {
                waiter: Some(waiter),
            },
            sleep: None,
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            kind: Kind::Failed { error: Some(error) },
            sleep: None,
        }
    }

    pub(crate) fn closed(error: QueueClosed) -> Self {
        Self::failed(error.into())
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.kind.as_mut().project() {
                KindProj::Called { future, slot } => {
                    let result = ready!(future.poll(cx));
                    drop(slot.take());
                    return Poll::Ready(result.map_err(Into::into));
                }
                KindProj::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .expect("ResponseFuture polled after completion")));
                }
                KindProj::Waiting { waiter } => {
                    let w = waiter
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    match w.poll_turn(cx) {
                        Turn::Sent(future) => {
                            let core = w.ticket.core.clone();
                            this.sleep.set(None);
                            this.kind.set(Kind::Called {
                                future,
                                slot: Some(InFlight::new(core)),
                            });
                        }
                        Turn::Failed(error) => {
                            this.sleep.set(None);
                            this.kind.set(Kind::Failed { error: Some(error) });
                        }
                        Turn::Wait(None) => return Poll::Pending,
                        Turn::Wait(Some(at)) => {
                            match this.sleep.as_mut().as_pin_mut() {
                                Some(sleep) => {
                                    if sleep.deadline() != at {
                                        sleep.reset(at);
                                    }
                                }
                                None => this.sleep.set(Some(tokio::time::sleep_until(at))),
                            }
                            let sleep = this.sleep.as_mut().as_pin_mut().expect("just set");
                            if sleep.poll(cx).is_pending() {
                                return Poll::Pending;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Waiting { .. } => "Waiting",
            Kind::Called { .. } => "Called",
            Kind::Failed { .. } => "Failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
