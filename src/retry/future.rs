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
use super::layer::Shared;
use super::{CloneRequest, GiveUpReason, RetriesExhausted, RetryReason};
use crate::BoxError;
use crate::classify::{Classify, Outcome, error_hints};
use crate::key::KeyExtractor;
use crate::key::NoKey;
use crate::observe::{Event, EventKey};

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
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

/// The retry state of a request to `S` through policy `P`.
pub(crate) type RetryOf<S, Req, C, P, X> =
    Retry<S, C, P, <P as CloneRequest<Req>>::Saved, <P as CloneRequest<Req>>::Request, X>;

/// What a request that may be retried carries.
pub(crate) struct Retry<S, C, P, K, R, X> {
    service: S,
    saved: K,
    next: Option<R>,
    classifier: C,
    policy: P,
    keys: X,
    /// The request's key, taken when its first retry is scheduled.
    key: Option<Box<dyn EventKey + Send + Sync>>,
    shared: Arc<Shared>,
    /// Attempts started so far.
    attempts: u32,
    /// Clock reading at the first attempt, when `max_elapsed` is set.
    start: Option<u64>,
    backoff: Option<BackoffState>,
}

impl<S, C, P, K, R, X> Retry<S, C, P, K, R, X> {
    pub(crate) fn new(
        service: S,
        saved: K,
        classifier: C,
        policy: P,
        keys: X,
        shared: Arc<Shared>,
    ) -> Self {
        let start = shared.max_elapsed.map(|_| shared.clock.now());
        Retry {
            service,
            saved,
            next: None,
            classifier,
            policy,
            keys,
            key: None,
            shared,
            attempts: 1,
            start,
            backoff: None,
        }
    }

    fn key(&self) -> Option<&dyn EventKey> {
        self.key.as_deref().map(|k| k as &dyn EventKey)
    }

    fn give_up(&self, reason: GiveUpReason) {
        tracing::info!(
            target: "tower_sluice::retry",
            attempts = self.attempts,
            reason = ?reason,
            "retry gave up"
        );
        if self.shared.observers.is_set() {
            self.shared.observers.emit(&Event::RetryGaveUp {
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
    Wait(Duration),
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    let Some(retry) = this.retry.as_mut() else {
                        return Poll::Ready(result);
                    };
                    match decide::<Req, _, _, _, _, _>(retry, result) {
                        Next::Return(result) => {
                            *this.retry = None;
                            return Poll::Ready(result);
                        }
                        Next::Wait(d) if d.is_zero() => this.state.set(State::Readying),
                        Next::Wait(d) => this.state.set(State::Sleeping {
                            sleep: tokio::time::sleep(d),
                        }),
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let retry = this.retry.as_mut().expect("retry state while retrying");
                    if let Err(e) = ready!(retry.service.poll_ready(cx)) {
                        *this.retry = None;
                        return Poll::Ready(Err(e.into()));
                    }
                    let req = retry.next.take().expect("a request for the next attempt");
                    retry.attempts += 1;
                    let future = retry.service.call(req);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// Judges one attempt's result: return it, or schedule the next attempt
/// (kept in `retry.next`) after a wait.
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
    // The outcome alone first: a success costs no more than that.
    match retry.classifier.classify(&result) {
        Outcome::Failure | Outcome::Overloaded => {}
        Outcome::Success | Outcome::Ignore => return Next::Return(result),
    }
    let mut verdict = retry.classifier.verdict(&result);
    if let Err(e) = &result
        && let Some(wait) = error_hints(&**e)
    {
        verdict = verdict.with_retry_after(wait);
    }
    let shared = &*retry.shared;
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
    if retry.attempts >= shared.max_attempts {
        return give_up(retry, GiveUpReason::MaxAttempts, result);
    }
    let state = retry.backoff.get_or_insert_with(|| {
        let k = if shared.backoff.is_seeded() {
            shared.streams.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        shared.backoff.state_for(k)
    });
    let backoff = shared.backoff.next_delay(retry.attempts - 1, state);
    let asked = verdict.retry_after().map_or(Duration::ZERO, |w| {
        w.min(shared.max_retry_after)
            .min(shared.backoff.max_delay_value())
    });
    let wait = backoff.max(asked);
    if let (Some(max), Some(start)) = (shared.max_elapsed, retry.start) {
        let elapsed = Duration::from_nanos(shared.clock.now().saturating_sub(start));
        if elapsed.saturating_add(wait) > max {
            return give_up(retry, GiveUpReason::MaxElapsed, result);
        }
    }
    let Some(next) = retry.policy.again(&retry.saved) else {
        return give_up(retry, GiveUpReason::NotReplayable, result);
    };
    // The key of the request that retries: taken once, and only with an
    // observer to tell.
    if retry.key.is_none() && shared.observers.is_set() {
        retry.key = retry
            .keys
            .extract(&next)
            .map(|k| Box::new(k) as Box<dyn EventKey + Send + Sync>);
    }
    if let Some(budget) = &shared.budget
        && !budget.withdraw()
    {
        tracing::info!(
            target: "tower_sluice::retry",
            attempts = retry.attempts,
            "retry budget exhausted"
        );
        if shared.observers.is_set() {
            shared.observers.emit(&Event::RetryBudgetExhausted {
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
    if shared.observers.is_set() {
        let reason = match (&result, verdict.status()) {
            (Err(e), _) => RetryReason::Error(&**e),
            (Ok(_), Some(status)) => RetryReason::Status(status),
            (Ok(_), None) => RetryReason::Response,
        };
        shared.observers.emit(&Event::RetryScheduled {
            layer: LAYER,
            key: retry.key(),
            attempt: retry.attempts + 1,
            delay: wait,
            upstream: verdict.retry_after(),
            reason,
        });
    }
    retry.next = Some(next);
    Next::Wait(wait)
}

impl<S, Req, C, P, X> fmt::Debug for ResponseFuture<S, Req, C, P, X>
where
    P: CloneRequest<Req>,
    S: Service<P::Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "Called",
            State::Sleeping { .. } => "Sleeping",
            State::Readying => "Readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempts", &self.retry.as_ref().map(|r| r.attempts))
            .finish()
    }
}
