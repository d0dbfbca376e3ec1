//! The words events name things in: a breaker's state, why a retry was
//! scheduled, why it gave up. They live with the events, so observation
//! imports no layer; each is re-exported by the layer it describes
//! (`circuit_breaker::CircuitState`, `retry::{RetryReason, GiveUpReason}`),
//! its one public path.

/// The state of a circuit breaker.
///
/// # Examples
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitState;
///
/// let handle = CircuitBreakerLayer::default().handle();
/// let refusing = |s: CircuitState| matches!(s, CircuitState::Open | CircuitState::ForcedOpen);
/// assert!(!refusing(handle.state()));
/// handle.force_open();
/// assert!(refusing(handle.state()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls pass and are judged.
    Closed,
    /// Calls are refused until the open duration has passed.
    Open,
    /// A few trial calls pass; the rest are refused.
    HalfOpen,
    /// Refused by [`CircuitBreakerHandle::force_open`](crate::circuit_breaker::CircuitBreakerHandle::force_open) until reset.
    ForcedOpen,
    /// Passing by [`CircuitBreakerHandle::force_closed`](crate::circuit_breaker::CircuitBreakerHandle::force_closed) until reset;
    /// nothing trips it.
    ForcedClosed,
}

/// Why a retry was scheduled, in
/// [`Event::RetryScheduled`](crate::observe::Event::RetryScheduled).
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::observe::Event;
/// use tower_sluice::retry::RetryReason;
///
/// let layer = BackoffRetryLayer::default().observer(|event: &Event<'_>| {
///     if let Event::RetryScheduled { attempt, delay, reason, .. } = event {
///         match reason {
///             RetryReason::Error(e) => println!("attempt {attempt} in {delay:?} after: {e}"),
///             RetryReason::Status(s) => println!("attempt {attempt} in {delay:?} after HTTP {s}"),
///             _ => println!("attempt {attempt} in {delay:?}"),
///         }
///     }
/// });
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum RetryReason<'a> {
    /// The attempt failed with this error.
    Error(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// The attempt got a retryable response with this HTTP status.
    Status(u16),
    /// The attempt got a response the classifier retries.
    Response,
}

/// Why the layer gave up, in
/// [`Event::RetryGaveUp`](crate::observe::Event::RetryGaveUp).
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::observe::Event;
/// use tower_sluice::retry::GiveUpReason;
///
/// let layer = BackoffRetryLayer::default().observer(|event: &Event<'_>| {
///     if let Event::RetryGaveUp { reason: GiveUpReason::Budget, .. } = event {
///         eprintln!("retry budget exhausted: the upstream is failing broadly");
///     }
/// });
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` were made.
    MaxAttempts,
    /// The next wait would have ended after `max_elapsed`.
    MaxElapsed,
    /// The upstream asked not to be retried (negative or unparsable
    /// `grpc-retry-pushback-ms`).
    Pushback,
    /// The request could not be copied again (for example a body over the
    /// replay cap).
    NotReplayable,
    /// The retry budget was exhausted.
    Budget,
}
