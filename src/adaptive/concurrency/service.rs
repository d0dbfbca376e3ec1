//! The service of `adaptive::concurrency` and what its requests record.

use super::*;

/// Limits requests in flight adaptively. Made by
/// [`AdaptiveConcurrencyLayer`]; see the [module docs](crate::adaptive).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::adaptive::{AdaptiveConcurrency, AdaptiveConcurrencyLayer, GradientLimit};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let svc = AdaptiveConcurrencyLayer::new(GradientLimit::new())
///     .layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let _typed: &AdaptiveConcurrency<_, _> = &svc;
/// assert_eq!(svc.oneshot(3).await?, 3);
/// # Ok(())
/// # }
/// ```
pub struct AdaptiveConcurrency<S, C> {
    inner: S,
    core: Arc<Core>,
    classify: C,
    mode: Mode,
    /// `wait` mode: the slot taken in `poll_ready`.
    slot: Option<Slot>,
    waiting: Option<Waiting>,
}

impl<S, C> AdaptiveConcurrency<S, C> {
    pub(super) fn new(inner: S, core: Arc<Core>, classify: C, mode: Mode) -> Self {
        AdaptiveConcurrency {
            inner,
            core,
            classify,
            mode,
            slot: None,
            waiting: None,
        }
    }

    crate::inner_accessors!();
}

/// The slot an [`AdaptiveConcurrency`] request holds until its response
/// (or until its future is dropped).
///
/// It appears in [`AdaptiveConcurrency`]'s `Future` type; it is not made
/// or used directly.
pub struct ConcurrencyPermit<C> {
    slot: Slot,
    classify: C,
    started: u64,
}

impl<C, Res> Track<Res> for ConcurrencyPermit<C>
where
    C: Classify<Res, BoxError>,
{
    fn complete(&mut self, result: &Result<Res, BoxError>) {
        let outcome = self.classify.classify(result);
        self.slot
            .core
            .sample(self.started, self.slot.in_flight, outcome);
    }
}

impl<C> fmt::Debug for ConcurrencyPermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyPermit")
            .field("in_flight", &self.slot.in_flight)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for AdaptiveConcurrency<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ConcurrencyPermit<C>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.mode == Mode::Wait && self.slot.is_none() {
            let slot = match self.core.try_acquire() {
                Ok(slot) => slot,
                Err(_) => {
                    let registered = self.waiting.as_ref().map(|w| w.id);
                    let id = self.core.register(registered, cx.waker());
                    match &mut self.waiting {
                        Some(w) => w.id = id,
                        None => {
                            self.waiting = Some(Waiting {
                                core: self.core.clone(),
                                id,
                            })
                        }
                    }
                    // A slot may have come free before the registration.
                    match self.core.try_acquire() {
                        Ok(slot) => slot,
                        Err(_) => return Poll::Pending,
                    }
                }
            };
            self.slot = Some(slot);
            self.waiting = None;
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let slot = match self.slot.take() {
            Some(slot) => Ok(slot),
            None if self.mode == Mode::Wait => {
                panic!("AdaptiveConcurrency::call without poll_ready returning Ready(Ok(())) first")
            }
            None => self.core.try_acquire(),
        };
        match slot {
            Ok(slot) => {
                let permit = ConcurrencyPermit {
                    slot,
                    classify: self.classify.clone(),
                    started: self.core.clock.now(),
                };
                ResponseFuture::called(self.inner.call(req), permit)
            }
            Err(limit) => {
                let error = ConcurrencyLimited::new(limit);
                let enforced = self.mode != Mode::Shadow;
                self.core.observers.emit(&Event::AdaptiveRejected {
                    layer: LAYER,
                    error: &error,
                    enforced,
                });
                if enforced {
                    return ResponseFuture::refused(error.into());
                }
                let permit = ConcurrencyPermit {
                    slot: self.core.force_acquire(),
                    classify: self.classify.clone(),
                    started: self.core.clock.now(),
                };
                ResponseFuture::called(self.inner.call(req), permit)
            }
        }
    }
}

impl<S: Clone, C: Clone> Clone for AdaptiveConcurrency<S, C> {
    /// Shares the limit; the clone holds no slot of its own.
    fn clone(&self) -> Self {
        AdaptiveConcurrency::new(
            self.inner.clone(),
            self.core.clone(),
            self.classify.clone(),
            self.mode,
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveConcurrency<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveConcurrency")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .field("mode", &self.mode)
            .field("has_slot", &self.slot.is_some())
            .finish_non_exhaustive()
    }
}
