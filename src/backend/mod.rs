//! Where per-key state lives: the [`Backend`] trait, and the in-memory
//! backend [`Memory`] used by default.
//!
//! A backend decides for a key under its [`Policy`]. The in-memory backend
//! decides synchronously ([`Acquire::Ready`]) without allocating or boxing
//! a future; a remote backend (Redis) returns [`Acquire::Pending`] with a
//! future, which the layer drives before calling the inner service.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::BoxError;
use crate::gcra::Decision;
use crate::per_key::Policy;

mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use memory::{InFlight, Memory};
#[cfg(feature = "redis")]
pub use redis::RedisBackend;

/// The outcome of asking a backend: decided now, or a future that decides.
#[derive(Debug)]
pub enum Acquire<F> {
    /// Decided synchronously (the in-memory backend).
    Ready(Result<Grant, BoxError>),
    /// Being decided (a remote backend); poll the future.
    Pending(F),
}

/// An admitted request: when it may be sent, the decision, and the slot it
/// holds while in flight.
///
/// Denials are errors instead: [`RateLimited`](crate::RateLimited),
/// [`TooManyInFlight`](crate::error::TooManyInFlight) or
/// [`TooManyKeys`](crate::error::TooManyKeys).
#[derive(Debug)]
pub struct Grant {
    decision: Decision,
    wait: Duration,
    in_flight: Option<InFlight>,
    refund: Option<Refund>,
}

impl Grant {
    /// A grant to send after `wait` (zero: now).
    #[inline]
    pub fn new(decision: Decision, wait: Duration) -> Self {
        Grant {
            decision,
            wait,
            in_flight: None,
            refund: None,
        }
    }

    #[inline]
    pub(crate) fn with_refund(mut self, refund: Refund) -> Self {
        self.refund = Some(refund);
        self
    }

    /// How to give back what this grant charged if the request is never
    /// sent (in-memory grants that wait; remote backends give none).
    #[inline]
    pub(crate) fn take_refund(&mut self) -> Option<Refund> {
        self.refund.take()
    }

    #[inline]
    pub(crate) fn with_in_flight(mut self, permit: Option<InFlight>) -> Self {
        self.in_flight = permit;
        self
    }

    /// The decision of the key's tightest quota.
    #[inline]
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// How long to wait before sending (zero: now).
    #[inline]
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Sends at once, whatever the wait (shadow mode).
    pub(crate) fn send_now(&mut self) {
        self.wait = Duration::ZERO;
    }

    /// The in-flight slot, released when dropped.
    #[inline]
    pub(crate) fn take_in_flight(&mut self) -> Option<InFlight> {
        self.in_flight.take()
    }
}

/// Gives back what a grant charged, for a request that is never sent.
pub(crate) trait GiveBack: Send + Sync + 'static {
    fn give_back(self: Box<Self>);
}

/// What a grant that waits charged, to give back if its request is dropped
/// before its turn. Doing nothing when dropped: whoever holds it decides
/// (see [`Refund::give_back`]).
pub(crate) struct Refund(Box<dyn GiveBack>);

impl Refund {
    pub(crate) fn new(give_back: impl GiveBack) -> Self {
        Refund(Box::new(give_back))
    }

    /// Returns the capacity to the key's buckets where nothing admitted
    /// since relied on it.
    pub(crate) fn give_back(self) {
        self.0.give_back();
    }
}

impl fmt::Debug for Refund {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Refund")
    }
}

/// The state of each quota of a key's policy, without consuming: for
/// `RateLimit` headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaStates {
    states: [Option<Decision>; crate::per_key::MAX_QUOTAS],
}

impl QuotaStates {
    pub(crate) fn push(&mut self, d: Decision) {
        if let Some(slot) = self.states.iter_mut().find(|s| s.is_none()) {
            *slot = Some(d);
        }
    }

    /// One decision per quota, in the policy's order.
    pub fn iter(&self) -> impl Iterator<Item = &Decision> {
        self.states.iter().map_while(Option::as_ref)
    }
}

/// Stores per-key limiter state and decides for a key under its policy.
///
/// Implemented by [`Memory`] (the default) and, with the `redis` feature,
/// by the Redis backend.
pub trait Backend<K>: Send + Sync + 'static {
    /// The future of a decision that is not ready at once.
    type Future: Future<Output = Result<Grant, BoxError>> + Send + 'static;

    /// Admits a request of cost `cost` for `key` now, or within `max_wait`
    /// (the grant then says how long to wait), consuming capacity; or
    /// denies it with an error and consumes nothing.
    fn acquire(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Acquire<Self::Future>;

    /// What [`acquire`](Self::acquire) with no waiting would decide, without
    /// consuming anything.
    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<Self::Future>;

    /// The state of each of the key's quotas now, as far as the backend
    /// knows it without a round trip (for response headers).
    fn states(&self, key: &K, policy: &Policy) -> QuotaStates;
}

/// One backend shared by several layers (one connection, one store).
impl<K, B: Backend<K>> Backend<K> for std::sync::Arc<B> {
    type Future = B::Future;

    #[inline]
    fn acquire(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Acquire<Self::Future> {
        (**self).acquire(key, policy, cost, max_wait)
    }

    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<Self::Future> {
        (**self).peek(key, policy, cost)
    }

    fn states(&self, key: &K, policy: &Policy) -> QuotaStates {
        (**self).states(key, policy)
    }
}

/// A future that never completes, for backends that always decide at once.
#[derive(Debug, Clone, Copy)]
pub enum Never {}

impl Future for Never {
    type Output = Result<Grant, BoxError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match *self {}
    }
}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}
