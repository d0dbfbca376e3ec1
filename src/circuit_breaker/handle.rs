//! [`CircuitBreakerHandle`]: read and steer a breaker from outside.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::state::{Breaker, Stats};
use super::{CircuitBreakerConfig, CircuitState};
use crate::slot::Slot;

/// Reads and steers the breaker shared by a layer and all its services.
///
/// Cheap to clone. Reading the state applies pending time-based transitions
/// (an open breaker whose open duration has passed reads as
/// [`HalfOpen`](CircuitState::HalfOpen) even with no traffic).
///
/// Other signals can drive the breaker through it: a failed health check
/// can [`force_open`](Self::force_open), a deploy can
/// [`reset`](Self::reset). [`subscribe`](Self::subscribe) delivers every
/// state transition as it happens.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitState;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let breaker = CircuitBreakerLayer::builder()
///     .open_duration(Duration::from_secs(5))
///     .build()?;
/// let handle = breaker.handle();
/// let svc = ServiceBuilder::new()
///     .layer(breaker)
///     .service(service_fn(|fail: bool| async move {
///         if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
///     }));
/// svc.clone().oneshot(true).await.unwrap_err();
/// let stats = handle.stats();
/// assert_eq!((stats.calls, stats.failures), (1, 1));
///
/// // A failed health check: stop calling at once.
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// assert!(svc.clone().oneshot(false).await.is_err());
///
/// // Healthy again: back to Closed with an empty window.
/// handle.reset();
/// assert_eq!(handle.state(), CircuitState::Closed);
/// assert_eq!(handle.stats().calls, 0);
/// assert_eq!(handle.retry_after(), None);
/// svc.oneshot(false).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    pub(crate) breaker: Slot<Breaker>,
    /// The layer's configuration, which its setters never change.
    config: CircuitBreakerConfig,
}

impl CircuitBreakerHandle {
    /// A handle following `slot`: the breaker a layer's setters replace.
    pub(crate) fn new(slot: Slot<Breaker>) -> Self {
        let config = slot.load().config().clone();
        CircuitBreakerHandle {
            breaker: slot,
            config,
        }
    }

    /// A handle on one breaker (a service's, or a per-key layer's default).
    pub(crate) fn of(breaker: Arc<Breaker>) -> Self {
        Self::new(Slot::from_arc(breaker))
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.breaker.load().state()
    }

    /// The state and the sliding window's statistics.
    pub fn stats(&self) -> Stats {
        self.breaker.load().stats()
    }

    /// How long until an [`Open`](CircuitState::Open) breaker admits trial
    /// calls; `None` in any other state.
    pub fn retry_after(&self) -> Option<Duration> {
        self.breaker.load().retry_after()
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// Opens the breaker until [`reset`](Self::reset) or
    /// [`force_closed`](Self::force_closed): every call fails with
    /// [`CircuitOpen`](crate::CircuitOpen) (whose `retry_after` is the
    /// configured open duration, as a hint).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::{CircuitBreakerLayer, CircuitOpen};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::default();
    /// let svc = layer.layer(service_fn(|(): ()| async { Ok::<_, BoxError>("up") }));
    /// layer.handle().force_open();
    /// let err = svc.oneshot(()).await.unwrap_err();
    /// let open = err.downcast_ref::<CircuitOpen>().unwrap();
    /// assert_eq!(open.retry_after(), Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn force_open(&self) {
        self.breaker.load().force(CircuitState::ForcedOpen);
    }

    /// Closes the breaker until [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open): every call passes, outcomes are
    /// recorded in the window, and nothing trips it.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder().consecutive_failures(1).build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// handle.force_closed();
    /// for _ in 0..3 {
    ///     svc.clone().oneshot(()).await.unwrap_err(); // the inner error, not CircuitOpen
    /// }
    /// assert_eq!(handle.state(), CircuitState::ForcedClosed);
    /// assert_eq!(handle.stats().failures, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn force_closed(&self) {
        self.breaker.load().force(CircuitState::ForcedClosed);
    }

    /// Back to [`Closed`](CircuitState::Closed) with an empty window and
    /// the first open duration.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::CircuitState;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder().consecutive_failures(1).build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|(): ()| async { Err::<(), BoxError>("down".into()) }));
    /// svc.oneshot(()).await.unwrap_err();
    /// assert_eq!(handle.state(), CircuitState::Open);
    /// handle.reset();
    /// assert_eq!(handle.state(), CircuitState::Closed);
    /// assert_eq!(handle.stats().calls, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reset(&self) {
        self.breaker.load().force(CircuitState::Closed);
    }

    /// A receiver of every state transition from now on, in order, as a
    /// [`StateChange`] (from, to, why, when).
    ///
    /// Each subscriber gets each transition. The breaker never waits for
    /// one: a subscriber that falls more than 64 transitions behind loses
    /// the oldest, and its next `recv` returns
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) with the
    /// number lost before going on with the ones kept. Dropping a receiver
    /// is all it takes to unsubscribe. `recv` returns
    /// [`RecvError::Closed`](broadcast::error::RecvError::Closed) once the
    /// layer, its services and all handles are dropped.
    ///
    /// Only the call or handle operation that makes a transition sends
    /// it (on the path that already takes the breaker's lock); calls that
    /// change nothing never touch the channel, and a breaker that never had
    /// a subscriber has none.
    ///
    /// Why a [`broadcast`] channel rather than a `watch` of the state: a
    /// `watch` keeps only the latest value, so a subscriber that wakes after
    /// Closed → Open → HalfOpen would never see Open. To read the state
    /// *now*, call [`state`](Self::state). For a callback run on the
    /// calling thread, use [`CircuitBreakerLayer::observer`](crate::CircuitBreakerLayer::observer)
    /// ([`Event::BreakerStateChanged`](crate::observe::Event::BreakerStateChanged)).
    ///
    /// The lazy Open → HalfOpen transition is made (and sent) by the first
    /// call or state read after the open duration: with no traffic and no
    /// reads, a subscriber hears of it when something next touches the
    /// breaker.
    ///
    /// # Example
    ///
    /// ```
    /// use tokio::sync::broadcast::error::RecvError;
    /// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    /// use tower_sluice::circuit_breaker::{ChangeReason, CircuitState};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let breaker = CircuitBreakerLayer::builder().consecutive_failures(2).build()?;
    /// let handle = breaker.handle();
    /// let mut changes = handle.subscribe();
    ///
    /// // A task that logs transitions, wherever they come from.
    /// let mut log = handle.subscribe();
    /// tokio::spawn(async move {
    ///     loop {
    ///         match log.recv().await {
    ///             Ok(c) => println!("breaker {:?} -> {:?} ({:?})", c.from, c.to, c.reason),
    ///             Err(RecvError::Lagged(missed)) => println!("{missed} transitions missed"),
    ///             Err(RecvError::Closed) => break,
    ///         }
    ///     }
    /// });
    ///
    /// let svc = ServiceBuilder::new()
    ///     .layer(breaker)
    ///     .service(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
    /// for _ in 0..2 {
    ///     svc.clone().oneshot(()).await.unwrap_err();
    /// }
    /// let change = changes.recv().await?;
    /// assert_eq!((change.from, change.to), (CircuitState::Closed, CircuitState::Open));
    /// assert_eq!(change.reason, ChangeReason::ConsecutiveFailures);
    ///
    /// handle.reset();
    /// let change = changes.recv().await?;
    /// assert_eq!((change.from, change.to), (CircuitState::Open, CircuitState::Closed));
    /// assert_eq!(change.reason, ChangeReason::Reset);
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.breaker.load().subscribe()
    }
}

/// A state transition, sent to [subscribers](CircuitBreakerHandle::subscribe).
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::{ChangeReason, CircuitState};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let handle = CircuitBreakerLayer::default().handle();
/// let mut changes = handle.subscribe();
/// let before = tokio::time::Instant::now();
/// handle.force_open();
/// let change = changes.recv().await?;
/// assert_eq!(change.from, CircuitState::Closed);
/// assert_eq!(change.to, CircuitState::ForcedOpen);
/// assert_eq!(change.reason, ChangeReason::ForcedOpen);
/// assert!(change.at >= before);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The state it left.
    pub from: CircuitState,
    /// The state it entered.
    pub to: CircuitState,
    /// Why.
    pub reason: ChangeReason,
    /// When the breaker made the transition ([`tokio::time::Instant`], so it
    /// follows a paused clock in tests). The lazy Open → HalfOpen
    /// transition is made by the first call or state read after the open
    /// duration.
    pub at: tokio::time::Instant,
}

/// Why a breaker changed state: [`StateChange::reason`].
///
/// ```
/// use tower_sluice::circuit_breaker::{ChangeReason, StateChange};
///
/// fn is_automatic(change: &StateChange) -> bool {
///     !matches!(
///         change.reason,
///         ChangeReason::ForcedOpen | ChangeReason::ForcedClosed | ChangeReason::Reset
///     )
/// }
/// # let _ = is_automatic;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeReason {
    /// Closed → Open: the window's failure rate reached its threshold.
    FailureRate,
    /// Closed → Open: the window's slow-call rate reached its threshold.
    SlowCallRate,
    /// Closed → Open: failures in a row, in
    /// [consecutive mode](super::CircuitBreakerBuilder::consecutive_failures).
    ConsecutiveFailures,
    /// Open → HalfOpen: the open duration has passed.
    OpenDurationElapsed,
    /// HalfOpen → Closed: the trials passed.
    TrialsSucceeded,
    /// HalfOpen → Open: enough trials failed (or were slow) that the round
    /// could not pass.
    TrialsFailed,
    /// HalfOpen → Closed or Open: the
    /// [half-open timeout](super::CircuitBreakerBuilder::half_open_timeout)
    /// passed, and the trials completed by then were judged (none: Open).
    HalfOpenTimeout,
    /// [`CircuitBreakerHandle::force_open`].
    ForcedOpen,
    /// [`CircuitBreakerHandle::force_closed`].
    ForcedClosed,
    /// [`CircuitBreakerHandle::reset`].
    Reset,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("stats", &self.stats())
            .finish()
    }
}
