//! The service of `adaptive::aimd` and what its requests record.

use super::*;

/// Paces requests to an adaptive rate. Made by [`AimdLayer`]; see the
/// [module docs](crate::adaptive).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::{Aimd, AimdLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let client = AimdLayer::new(Quota::per_second(10)).layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// let _typed: &Aimd<_, _> = &client;
/// assert_eq!(client.oneshot(3).await?, 3);
/// # Ok(())
/// # }
/// ```
pub struct Aimd<S, C> {
    inner: S,
    core: Arc<Core>,
    classify: C,
    slot: Option<(u64, bool)>,
    waited: u64,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> Aimd<S, C> {
    pub(super) fn new(inner: S, core: Arc<Core>, classify: C) -> Self {
        Aimd {
            inner,
            core,
            classify,
            slot: None,
            waited: 0,
            sleep: None,
        }
    }

    crate::inner_accessors!();
}

/// The record an [`Aimd`] request keeps until its response.
///
/// It appears in [`Aimd`]'s `Future` type; it is not made or used
/// directly.
pub struct AimdTrack<C> {
    core: Arc<Core>,
    classify: C,
    generation: u64,
}

impl<C, Res> Track<Res> for AimdTrack<C>
where
    C: Classify<Res, BoxError>,
{
    fn complete(&mut self, result: &Result<Res, BoxError>) {
        let mut verdict = self.classify.verdict(result);
        // The wait a `RateLimited` or `CircuitOpen` error asks for, if the
        // classifier did not say.
        if let Err(e) = result
            && verdict.outcome() == Outcome::Overloaded
            && verdict.retry_after().is_none()
            && let Some(wait) = crate::classify::error_hints(&**e)
        {
            verdict = verdict.with_retry_after(wait);
        }
        self.core.feedback(&verdict, self.generation);
    }
}

impl<C> Drop for AimdTrack<C> {
    fn drop(&mut self) {
        self.core.release();
    }
}

impl<C> fmt::Debug for AimdTrack<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimdTrack")
            .field("generation", &self.generation)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for Aimd<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, AimdTrack<C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match self.slot {
                None => {
                    let (wait, generation) = self.core.reserve();
                    if self.core.is_shadow() {
                        // Decided as usual; reported, never delayed.
                        if wait > 0 {
                            self.core.report_shadow_wait(wait);
                        }
                        self.slot = Some((generation, true));
                        continue;
                    }
                    self.slot = Some((generation, wait == 0));
                    self.waited = wait;
                    if wait > 0 {
                        let now = tokio::time::Instant::now();
                        // A nonsensical upstream reset must not overflow.
                        let deadline = now
                            .checked_add(Duration::from_nanos(wait))
                            .unwrap_or(now + Duration::from_secs(86_400 * 365));
                        match &mut self.sleep {
                            Some(sleep) => sleep.as_mut().reset(deadline),
                            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                        }
                    }
                }
                Some((generation, false)) => {
                    let sleep = self.sleep.as_mut().expect("a waiting service has a timer");
                    ready!(sleep.as_mut().poll(cx));
                    self.slot = Some((generation, true));
                    self.core.observers.emit(&Event::Waited {
                        layer: LAYER,
                        key: None,
                        waited: Duration::from_nanos(self.waited),
                    });
                }
                Some((_, true)) => return self.inner.poll_ready(cx).map_err(Into::into),
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some((generation, true)) = self.slot.take() else {
            panic!("Aimd::call without poll_ready returning Ready(Ok(())) first");
        };
        self.core.acquire();
        let track = AimdTrack {
            core: self.core.clone(),
            classify: self.classify.clone(),
            generation,
        };
        ResponseFuture::called(self.inner.call(req), track)
    }
}

impl<S: Clone, C: Clone> Clone for Aimd<S, C> {
    /// Shares the rate; the clone has no slot of its own.
    fn clone(&self) -> Self {
        Aimd::new(self.inner.clone(), self.core.clone(), self.classify.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Aimd<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aimd")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
