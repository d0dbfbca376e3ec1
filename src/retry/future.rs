//! The response future of [`BackoffRetry`](super::BackoffRetry).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::backoff::BackoffState;
use super::layer::{Settings, Shared};
use super::lease::Held;
use super::{CloneRequest, GiveUpReason, RetriesExhausted, RetryReason};
use crate::BoxError;
use crate::classify::{Classify, Outcome, error_hints};
use crate::key::KeyExtractor;
use crate::key::NoKey;
use crate::observe::{Event, EventKey, Observers};

pub(super) const LAYER: &str = "retry";

pin_project! {
    /// The response future of [`BackoffRetry`](super::BackoffRetry): the
    /// current attempt, or the wait before the next one.
    ///
    /// Dropping it cancels the pending wait and the attempt in flight; no
    /// further attempt is made.
    pub struct ResponseFuture<S, Req, C, P, X = NoKey>
    where
        P: CloneRequest<Req>,
        S: Service<P::Request>,
    {
        #[pin]
        state: State<S::Future>,
        retry: Option<RetryOf<S, Req, C, P, X>>,
        _req: PhantomData<fn(Req)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Called { #[pin] future: F },
        /// Between attempts: the wait and the next request are in
        /// [`Retry::between`].
        Between,
    }
}

/// The retry state of a request to `S` through policy `P`.
pub(crate) type RetryOf<S, Req, C, P, X> =
    Retry<S, C, P, <P as CloneRequest<Req>>::Saved, <P as CloneRequest<Req>>::Request, X>;

/// What a request that may be retried carries from its first attempt:
/// what deciding on a retry needs. What only a scheduled retry needs is in
/// [`Between`], made when the first retry is scheduled, so that a request
/// that succeeds at once writes and drops little.
pub(crate) struct Retry<S, C, P, K, R, X> {
    service: S,
    saved: K,
    classifier: C,
    policy: P,
    keys: X,
    /// Where the settings are read.
    config: Config,
    /// Attempts started so far.
    attempts: u32,
    /// Clock reading at the first attempt, when `max_elapsed` is set.
    start: Option<u64>,
    between: Cold<R>,
}

/// The layer's settings, as a response future holds them.
enum Config {
    /// A copy: the layer needs no shared state for a retry (no budget,
    /// observer, seeded jitter or `max_elapsed`), so the future holds no
    /// reference count.
    Copied(Settings),
    /// The layer's shared state ([`Shared::needed`]), settings included.
    Shared(Held),
}

impl Config {
    #[inline]
    fn settings(&self) -> &Settings {
        match self {
            Config::Copied(settings) => settings,
            Config::Shared(held) => &held.get().settings,
        }
    }

    #[inline]
    fn shared(&self) -> Option<&Shared> {
        match self {
            Config::Copied(_) => None,
            Config::Shared(held) => Some(held.get()),
        }
    }
}

/// What a scheduled retry holds ([`Between`]), made when the first one is
/// scheduled.
struct Cold<R>(Option<Pin<Box<Between<R>>>>);

impl<R> Drop for Cold<R> {
    /// A request that never retried checks one pointer; the rest is out of
    /// line.
    #[inline(always)]
    fn drop(&mut self) {
        #[cold]
        #[inline(never)]
        fn release<R>(between: Pin<Box<Between<R>>>) {
            drop(between);
        }
        if let Some(between) = self.0.take() {
            release(between);
        }
    }
}

pin_project! {
    /// What a request holds once a retry has been scheduled: the wait, the
    /// next request, the request's key (taken when its first retry is
    /// scheduled) and its backoff state.
    struct Between<R> {
        #[pin]
        sleep: Option<Sleep>,
        next: Option<R>,
        key: Option<Box<dyn EventKey + Send + Sync>>,
        backoff: BackoffState,
    }
}

impl<S, C, P, K, R, X> Retry<S, C, P, K, R, X> {
    #[inline]
    pub(crate) fn new(
        service: S,
        saved: K,
        classifier: C,
        policy: P,
        keys: X,
        shared: &Arc<Shared>,
        needed: bool,
    ) -> Self {
        let start = shared.max_elapsed.map(|_| shared.clock.now());
        // The shared state only when a retry would use it.
        let config = if needed {
            Config::Shared(Held::new(shared))
        } else {
            Config::Copied(shared.settings)
        };
        Retry {
            service,
            saved,
            classifier,
            policy,
            keys,
            config,
            attempts: 1,
            start,
            between: Cold(None),
        }
    }

    /// The observers, when one is set.
    fn observers(&self) -> Option<&Observers> {
        self.config
            .shared()
            .map(|s| &s.observers)
            .filter(|o| o.is_set())
    }

    fn key(&self) -> Option<&dyn EventKey> {
        self.between
            .0
            .as_ref()
            .and_then(|b| b.key.as_deref())
            .map(|k| k as &dyn EventKey)
    }

    fn give_up(&self, reason: GiveUpReason) {
        tracing::info!(
            target: "tower_sluice::retry",
            attempts = self.attempts,
            reason = ?reason,
            "retry gave up"
        );
        if let Some(observers) = self.observers() {
            observers.emit(&Event::RetryGaveUp {
                layer: LAYER,
                key: self.key(),
                attempts: self.attempts,
                reason,
            });
        }
    }
}

impl<S, Req, C, P, X> ResponseFuture<S, Req, C, P, X>
where
    P: CloneRequest<Req>,
    S: Service<P::Request>,
{
    #[inline]
    pub(crate) fn new(future: S::Future, retry: Option<RetryOf<S, Req, C, P, X>>) -> Self {
        ResponseFuture {
            state: State::Called { future },
            retry,
            _req: PhantomData,
        }
    }
}

/// What to do with an attempt's result.
enum Next<T> {
    Return(Result<T, BoxError>),
    /// A retry is scheduled: its wait and request are in
    /// [`Retry::between`].
    Retry,
}

impl<S, Req, C, P, X> Future for ResponseFuture<S, Req, C, P, X>
where
    P: CloneRequest<Req>,
    S: Service<P::Request>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    X: KeyExtractor<P::Request>,
    X::Key: fmt::Debug + std::hash::Hash + Send + Sync + 'static,
{
    type Output = Result<S::Response, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let Some(retry) = this.retry.as_mut() else {
                        return Poll::Ready(result);
                    };
                    // A result that is not a failure returns at once; the
                    // rest of the judgement is out of line.
                    match retry.classifier.classify(&result) {
                        Outcome::Failure | Outcome::Overloaded => {}
                        // The retry state goes with the future.
                        Outcome::Success | Outcome::Ignore => return Poll::Ready(result),
                    }
                    match decide::<Req, _, _, _, _, _>(retry, result) {
                        Next::Return(result) => {
                            *this.retry = None;
                            return Poll::Ready(result);
                        }
                        Next::Retry => this.state.set(State::Between),
                    }
                }
                StateProj::Between => {
                    let Some(Retry {
                        service,
                        between: Cold(Some(between)),
                        attempts,
                        ..
                    }) = this.retry.as_mut()
                    else {
                        unreachable!("a scheduled retry between attempts");
                    };
                    let mut between = between.as_mut().project();
                    if let Some(sleep) = between.sleep.as_mut().as_pin_mut() {
                        ready!(sleep.poll(cx));
                        between.sleep.set(None);
                    }
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        *this.retry = None;
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = between.next.take().expect("a request for the next attempt");
                    *attempts += 1;
                    let future = service.call(req);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// Judges one attempt's failed result: return it, or schedule the next
/// attempt (its wait and request kept in `retry.between`).
#[inline(never)]
fn decide<Req, S, C, P, X, T>(
    retry: &mut Retry<S, C, P, P::Saved, P::Request, X>,
    result: Result<T, BoxError>,
) -> Next<T>
where
    C: Classify<T, BoxError>,
    P: CloneRequest<Req>,
    X: KeyExtractor<P::Request>,
    X::Key: fmt::Debug + std::hash::Hash + Send + Sync + 'static,
{
    let mut verdict = retry.classifier.verdict(&result);
    if let Err(e) = &result
        && let Some(wait) = error_hints(&**e)
    {
        verdict = verdict.with_retry_after(wait);
    }
    let settings = *retry.config.settings();
    let give_up = |retry: &Retry<S, C, P, P::Saved, P::Request, X>,
                   reason,
                   result: Result<T, BoxError>| {
        retry.give_up(reason);
        Next::Return(match result {
            Err(e) if retry.attempts > 1 => Err(RetriesExhausted::new(retry.attempts, e).into()),
            other => other,
        })
    };
    if verdict.is_do_not_retry() {
        return give_up(retry, GiveUpReason::Pushback, result);
    }
    if retry.attempts >= settings.max_attempts {
        return give_up(retry, GiveUpReason::MaxAttempts, result);
    }
    let shared = retry.config.shared();
    // The backoff state of the request's earlier retries, or a new one
    // (kept if this retry is scheduled).
    let mut fresh = None;
    let state = match retry.between.0.as_mut() {
        Some(between) => between.as_mut().project().backoff,
        None => fresh.insert({
            // Seeded jitter numbers its streams (the shared state is held then).
            let k = match shared {
                Some(shared) if settings.backoff.is_seeded() => {
                    shared.streams.fetch_add(1, Ordering::Relaxed)
                }
                _ => 0,
            };
            settings.backoff.state_for(k)
        }),
    };
    let backoff = settings.backoff.next_delay(retry.attempts - 1, state);
    let asked = verdict.retry_after().map_or(Duration::ZERO, |w| {
        w.min(settings.max_retry_after)
            .min(settings.backoff.max_delay_value())
    });
    let wait = backoff.max(asked);
    if let (Some(shared), Some(start)) = (shared, retry.start)
        && let Some(max) = shared.max_elapsed
    {
        let elapsed = Duration::from_nanos(shared.clock.now().saturating_sub(start));
        if elapsed.saturating_add(wait) > max {
            return give_up(retry, GiveUpReason::MaxElapsed, result);
        }
    }
    let Some(next) = retry.policy.again(&retry.saved) else {
        return give_up(retry, GiveUpReason::NotReplayable, result);
    };
    if let Some(backoff) = fresh {
        retry.between.0 = Some(Box::pin(Between {
            sleep: None,
            next: None,
            key: None,
            backoff,
        }));
    }
    // The key of the request that retries: taken once, and only with an
    // observer to tell.
    let observing = retry.observers().is_some();
    if let Some(between) = retry.between.0.as_mut()
        && between.key.is_none()
        && observing
    {
        *between.as_mut().project().key = retry
            .keys
            .extract(&next)
            .map(|k| Box::new(k) as Box<dyn EventKey + Send + Sync>);
    }
    if let Some(budget) = retry.config.shared().and_then(|s| s.budget.as_ref())
        && !budget.withdraw()
    {
        tracing::info!(
            target: "tower_sluice::retry",
            attempts = retry.attempts,
            "retry budget exhausted"
        );
        if let Some(observers) = retry.observers() {
            observers.emit(&Event::RetryBudgetExhausted {
                layer: LAYER,
                key: retry.key(),
                attempts: retry.attempts,
            });
        }
        return give_up(retry, GiveUpReason::Budget, result);
    }
    tracing::debug!(
        target: "tower_sluice::retry",
        attempt = retry.attempts + 1,
        delay_ms = crate::observe::ms(wait),
        upstream_ms = verdict.retry_after().map(crate::observe::ms),
        "retry scheduled"
    );
    if let Some(observers) = retry.observers() {
        let reason = match (&result, verdict.status()) {
            (Err(e), _) => RetryReason::Error(&**e),
            (Ok(_), Some(status)) => RetryReason::Status(status),
            (Ok(_), None) => RetryReason::Response,
        };
        observers.emit(&Event::RetryScheduled {
            layer: LAYER,
            key: retry.key(),
            attempt: retry.attempts + 1,
            delay: wait,
            upstream: verdict.retry_after(),
            reason,
        });
    }
    let mut between = retry
        .between
        .0
        .as_mut()
        .expect("made above")
        .as_mut()
        .project();
    *between.next = Some(next);
    between
        .sleep
        .set((!wait.is_zero()).then(|| tokio::time::sleep(wait)));
    Next::Retry
}

impl<S, Req, C, P, X> fmt::Debug for ResponseFuture<S, Req, C, P, X>
where
    P: CloneRequest<Req>,
    S: Service<P::Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "Called",
            State::Between => match self.retry.as_ref().and_then(|r| r.between.0.as_ref()) {
                Some(between) if between.sleep.is_some() => "Sleeping",
                _ => "Readying",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.retry.as_ref().map(|r| r.attempts))
            .finish()
    }
}
