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
use crate::policy::Policy;
pub use crate::policy::QuotaStates;

mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

/// Lending a key's cells to [`limits::check_all`](crate::limits::check_all).
pub(crate) mod lend {
    /// Why a backend could not lend a key's cells.
    #[derive(Debug)]
    pub enum Abort {
        /// A new key, and its store is full of active keys.
        Full(crate::error::TooManyKeys),
        /// Lending would need a lock this thread cannot take without
        /// risking a deadlock now (or a key not inserted yet): try again
        /// after preparing (inserting the key), holding nothing.
        Retry,
    }
}

pub(crate) use lend::Abort;

pub use memory::{FullStore, InFlight, Memory};
#[cfg(feature = "redis")]
pub use redis::RedisBackend;

/// The outcome of asking a backend: decided now, or a future that decides.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::backend::{Acquire, Backend, Memory};
/// use tower_sluice::per_key::Policy;
///
/// let store = Memory::new(1_000);
/// let policy = Policy::new(Quota::per_minute(1));
/// match store.acquire(&"ann", &policy, 1, Duration::ZERO) {
///     Acquire::Ready(Ok(grant)) => assert_eq!(grant.wait(), Duration::ZERO),
///     Acquire::Ready(Err(denied)) => panic!("denied: {denied}"),
///     Acquire::Pending(_never) => unreachable!("memory decides at once"),
/// }
/// ```
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
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::backend::{Acquire, Backend, Memory};
/// use tower_sluice::per_key::Policy;
///
/// let store = Memory::new(1_000);
/// let policy = Policy::new(Quota::per_second(1));
/// let Acquire::Ready(Ok(_first)) = store.acquire(&1_u64, &policy, 1, Duration::ZERO) else { panic!() };
/// // Willing to wait up to 2 s: admitted, to be sent in about a second.
/// let Acquire::Ready(Ok(grant)) = store.acquire(&1_u64, &policy, 1, Duration::from_secs(2)) else { panic!() };
/// assert!(grant.wait() > Duration::from_millis(900));
/// assert!(grant.decision().is_allowed());
/// ```
#[derive(Debug)]
pub struct Grant {
    decision: Decision,
    wait: Duration,
    in_flight: Option<InFlight>,
    refund: Option<Refund>,
    charged: Charged,
}

/// What a [`Grant`] charged, for settling its true cost later with
/// [`Backend::settle`]: the estimate, and where each quota's state stood
/// right after the charge (to tell whether a request was admitted since).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::backend::{Acquire, Backend, Memory};
/// use tower_sluice::per_key::Policy;
///
/// let store = Memory::new(1_000);
/// let policy = Policy::new(Quota::per_minute(1_000).counting("tokens"));
/// let Acquire::Ready(Ok(grant)) = store.acquire(&"ann", &policy, 100, Duration::ZERO) else { panic!() };
/// assert_eq!(grant.charged().estimate(), 100);
/// // The request really cost 900: 800 more are charged.
/// store.settle(&"ann", &policy, grant.charged(), 900);
/// let Acquire::Ready(Ok(grant)) = store.peek(&"ann", &policy, 100) else { panic!() };
/// assert_eq!(grant.decision().remaining(), 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charged {
    estimate: u32,
    stamps: [u64; crate::gcra::INLINE_CELLS],
    origin: Origin,
}

/// Where a grant was charged, for a backend that can decide elsewhere than
/// in its own store (the Redis backend's failure policy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Origin {
    /// In the backend's own store (the stamps are its own).
    #[default]
    Store,
    /// In the backend's local stand-in (the stamps are the stand-in's).
    Fallback,
    /// Nowhere: let through without a charge.
    Nowhere,
}

impl Charged {
    pub(crate) const fn new(estimate: u32, stamps: [u64; crate::gcra::INLINE_CELLS]) -> Self {
        Charged {
            estimate,
            stamps,
            origin: Origin::Store,
        }
    }

    /// The same charge, made where `origin` says.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) const fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// The cost the request was charged up front.
    ///
    /// See the [type's docs](Self) for an example.
    pub fn estimate(&self) -> u32 {
        self.estimate
    }
}

impl Grant {
    /// A grant to send after `wait` (zero: now).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::backend::Grant;
    /// use tower_sluice::{Limiter, Quota};
    ///
    /// // A custom backend that decides with a `Limiter` per key.
    /// let limiter = Limiter::new(Quota::per_second(10));
    /// let grant = Grant::new(limiter.check().into_result()?, Duration::ZERO);
    /// assert_eq!(grant.decision().remaining(), 9);
    /// # Ok::<(), tower_sluice::RateLimited>(())
    /// ```
    #[inline]
    pub fn new(decision: Decision, wait: Duration) -> Self {
        Grant {
            decision,
            wait,
            in_flight: None,
            refund: None,
            charged: Charged::default(),
        }
    }

    /// Records what this grant charged (see [`Charged`]).
    #[inline]
    pub(crate) fn with_charged(mut self, charged: Charged) -> Self {
        self.charged = charged;
        self
    }

    /// What this grant charged, to [settle](Backend::settle) its true cost
    /// later. A grant made with [`Grant::new`] has an estimate of 0 and no
    /// stamps: settling it only charges debts.
    ///
    /// See [`Charged`] for an example.
    #[inline]
    pub fn charged(&self) -> Charged {
        self.charged
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

/// A request admitted to be sent at once, as [`Backend::acquire_now`]
/// decides the common case: a known key of a policy of one quota and no
/// in-flight cap. It holds nothing to give back, and keeps its decision as
/// the two instants it is computed from, built only when read.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::backend::{Backend, Memory};
/// use tower_sluice::per_key::Policy;
///
/// let store = Memory::new(1_000);
/// let policy = Policy::new(Quota::per_minute(10));
/// let Ok(admitted) = store.acquire_now(&"ann", &policy, 1, Duration::ZERO) else { panic!() };
/// assert_eq!(admitted.decision(&policy).remaining(), 9);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Admitted {
    now: u64,
    tat: u64,
}

impl Admitted {
    /// Admitted at `now` (nanoseconds of the backend's clock), leaving the
    /// policy's one quota at theoretical arrival time `tat`.
    #[inline]
    pub(crate) fn new(now: u64, tat: u64) -> Self {
        Admitted { now, tat }
    }

    /// The decision, for `policy`: the policy this request was admitted
    /// under.
    ///
    /// See [`Admitted`] for an example.
    #[inline]
    pub fn decision(&self, policy: &Policy) -> Decision {
        Decision::allowed(policy.first_params(), self.now, self.tat)
    }

    /// The same admission as a [`Grant`] (sent at once, holding nothing).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::backend::{Backend, Memory};
    /// # use tower_sluice::per_key::Policy;
    /// let store = Memory::new(1_000);
    /// let policy = Policy::new(Quota::per_minute(10));
    /// let Ok(admitted) = store.acquire_now(&1_u64, &policy, 1, Duration::ZERO) else { panic!() };
    /// let grant = admitted.into_grant(&policy);
    /// assert_eq!(grant.wait(), Duration::ZERO);
    /// ```
    #[inline]
    pub fn into_grant(self, policy: &Policy) -> Grant {
        Grant::new(self.decision(policy), Duration::ZERO)
    }

    /// What the admission charged a request of cost `estimate`, for
    /// settling it (the one quota's stamp).
    #[inline]
    pub(crate) fn charged(&self, estimate: u32) -> Charged {
        let mut stamps = [0; crate::gcra::INLINE_CELLS];
        stamps[0] = self.tat;
        Charged::new(estimate, stamps)
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

/// Stores per-key limiter state and decides for a key under its policy.
///
/// Implemented by [`Memory`] (the default) and, with the `redis` feature,
/// by the Redis backend.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use tower_sluice::backend::Memory;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// // One store shared by two layers (an `Arc<B>` is a backend too).
/// let store = Arc::new(Memory::<String>::new(100_000));
/// let api = PerKeyLayer::new(Quota::per_minute(60), |k: &String| Some(k.clone())).backend(store.clone());
/// let admin = PerKeyLayer::new(Quota::per_minute(10), |k: &String| Some(k.clone())).backend(store);
/// # let _ = (api, admin);
/// ```
pub trait Backend<K>: Send + Sync + 'static {
    /// The future of a decision that is not ready at once.
    ///
    /// [`Never`] for a backend that always decides at once.
    type Future: Future<Output = Result<Grant, BoxError>> + Send + 'static;

    /// Admits a request of cost `cost` for `key` now, or within `max_wait`
    /// (the grant then says how long to wait), consuming capacity; or
    /// denies it with an error and consumes nothing.
    ///
    /// Each quota of the policy that counts requests is charged 1, each
    /// that counts a unit of cost ([`Quota::counting`](crate::Quota::counting))
    /// is charged `cost`, all decided together. Layers never ask for a
    /// cost of 0 (such a request passes without a decision) nor for a cost
    /// above the burst of a quota that counts cost (an
    /// [`ExceedsBurst`](crate::ExceedsBurst) error before the backend).
    ///
    /// See [`Acquire`] and [`Grant`] for examples.
    fn acquire(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Acquire<Self::Future>;

    /// As [`acquire`](Self::acquire), deciding the common case in place: a
    /// request admitted to be sent at once, holding no in-flight slot, is
    /// `Ok` (a small value, its decision built only if read); anything
    /// else is `Err` with what `acquire` decides. Either way the request is
    /// decided once.
    ///
    /// Layers call this; the default asks [`acquire`](Self::acquire). A
    /// backend that can tell the common case at once (the in-memory one)
    /// answers it without building a [`Grant`].
    ///
    /// See [`Admitted`] for an example.
    // The large `Err` is the rare path; the common `Ok` writes 16 bytes.
    #[allow(clippy::result_large_err)]
    #[inline]
    fn acquire_now(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Admitted, Acquire<Self::Future>> {
        Err(self.acquire(key, policy, cost, max_wait))
    }

    /// What [`acquire`](Self::acquire) with no waiting would decide, without
    /// consuming anything.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::backend::{Acquire, Backend, Memory};
    /// use tower_sluice::per_key::Policy;
    ///
    /// let store = Memory::new(1_000);
    /// let policy = Policy::new(Quota::per_hour(1));
    /// for _ in 0..3 {
    ///     // Peeking consumes nothing: the key stays allowed.
    ///     let Acquire::Ready(Ok(grant)) = store.peek(&"ann", &policy, 1) else { panic!() };
    ///     assert!(grant.decision().is_allowed());
    /// }
    /// ```
    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<Self::Future>;

    /// The state of each of the key's quotas now, as far as the backend
    /// knows it without a round trip (for response headers).
    ///
    /// See [`QuotaStates`] for an example.
    fn states(&self, key: &K, policy: &Policy) -> QuotaStates;

    /// Settles a request admitted for `key` and charged as `charged` says
    /// ([`Grant::charged`]) at its true cost `true_cost`: the quotas of
    /// `policy` that count cost are charged the difference (more: a debt
    /// later requests wait out; less: given back where nothing admitted
    /// since relied on it); quotas that count requests are not changed.
    /// See [`Settlement`](crate::cost::Settlement) for the rules.
    ///
    /// Never waits: a remote backend sends it in the background. The
    /// default does nothing (the estimate stays).
    ///
    /// See [`Charged`] for an example.
    fn settle(&self, key: &K, policy: &Policy, charged: Charged, true_cost: u32) {
        let _ = (key, policy, charged, true_cost);
    }
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

    #[inline]
    fn acquire_now(
        &self,
        key: &K,
        policy: &Policy,
        cost: u32,
        max_wait: Duration,
    ) -> Result<Admitted, Acquire<Self::Future>> {
        (**self).acquire_now(key, policy, cost, max_wait)
    }

    fn peek(&self, key: &K, policy: &Policy, cost: u32) -> Acquire<Self::Future> {
        (**self).peek(key, policy, cost)
    }

    fn states(&self, key: &K, policy: &Policy) -> QuotaStates {
        (**self).states(key, policy)
    }

    fn settle(&self, key: &K, policy: &Policy, charged: Charged, true_cost: u32) {
        (**self).settle(key, policy, charged, true_cost);
    }
}

/// A future that never completes, for backends that always decide at once.
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::{Backend, Memory, Never};
///
/// fn decides_at_once<K, B: Backend<K, Future = Never>>(_: &B) {}
/// decides_at_once::<u64, _>(&Memory::<u64>::new(10));
/// ```
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
