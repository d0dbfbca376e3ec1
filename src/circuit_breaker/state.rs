//! The breaker shared by a layer, its services, their clones and handles.
//!
//! The state is one atomic word, `generation << 3 | kind`. A call in Closed
//! reads it once when admitted and once when it completes (to check that
//! the breaker did not change state meanwhile: calls from an earlier state
//! do not count in the new one), and records its outcome in the lock-free
//! window. Transitions, half-open trials and handle operations take the
//! `control` mutex, which a Closed call never touches unless it trips the
//! breaker.
//!
//! Two clocks: the precise [`Clock`] times what must be exact (the open
//! duration, the half-open timeout, trials), and closed calls read
//! [`CoarseClock`] where its resolution is fine enough (see
//! [`Breaker::new`]): picking a bucket of the time window, and timing slow
//! calls against a `slow_call_duration` far longer than a clock tick.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::config::SlidingWindow;
use super::config::{CircuitBreakerConfig, Trip};
use super::window::{Counts, FAILURE, PRESENT, SLOW, Window};
use super::{ChangeReason, CircuitState, StateChange};
use crate::classify::Outcome;
use crate::clock::{Clock, CoarseClock};
use crate::error::CircuitOpen;
use crate::observe::{Event, EventKey, Observers};
use crate::util::IgnorePoison;
use crate::util::rng;

pub(crate) const LAYER: &str = "circuit_breaker";

/// Transitions a subscriber may fall behind by before it loses the oldest.
pub(crate) const SUBSCRIBER_CAPACITY: usize = 64;

/// Closed calls time slow calls on the coarse clock when
/// `slow_call_duration` is at least this many of its ticks (so its error is
/// under 1% of the duration).
const SLOW_CALL_TICKS: u64 = 100;

/// Closed calls pick time-window buckets on the coarse clock when a bucket
/// is at least this many of its ticks long.
const BUCKET_TICKS: u64 = 10;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const FORCED_CLOSED: u64 = 4;
const KIND: u64 = 7;

fn kind_state(kind: u64) -> CircuitState {
    match kind {
        CLOSED => CircuitState::Closed,
        OPEN => CircuitState::Open,
        HALF_OPEN => CircuitState::HalfOpen,
        FORCED_OPEN => CircuitState::ForcedOpen,
        _ => CircuitState::ForcedClosed,
    }
}

/// Window statistics and state, from
/// [`CircuitBreakerHandle::stats`](super::CircuitBreakerHandle::stats).
///
/// # Examples
///
/// ```
/// use tower_sluice::CircuitBreakerLayer;
/// use tower_sluice::circuit_breaker::CircuitState;
///
/// let handle = CircuitBreakerLayer::default().handle();
/// let stats = handle.stats();
/// assert_eq!(stats.state, CircuitState::Closed);
/// assert_eq!((stats.calls, stats.failures, stats.slow_calls), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// The state (with pending time-based transitions applied).
    pub state: CircuitState,
    /// Calls in the sliding window (successes and failures; ignored and
    /// cancelled calls are not recorded). The window is emptied when the
    /// breaker closes.
    pub calls: u32,
    /// Failed calls in the window.
    pub failures: u32,
    /// Slow calls in the window (successful or not).
    pub slow_calls: u32,
    /// Failures in a row (counted in every mode).
    pub consecutive_failures: u32,
}

impl Stats {
    /// Failures as a percentage of the window's calls (0 when empty).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::default();
    /// let handle = layer.handle();
    /// assert_eq!(handle.stats().failure_rate(), 0.0);
    /// let svc = layer.layer(service_fn(|fail: bool| async move {
    ///     if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) }
    /// }));
    /// for fail in [true, false, false, false] {
    ///     let _ = svc.clone().oneshot(fail).await;
    /// }
    /// assert_eq!(handle.stats().failure_rate(), 25.0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.calls)
    }

    /// Slow calls as a percentage of the window's calls (0 when empty).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    /// use tower_sluice::CircuitBreakerLayer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CircuitBreakerLayer::builder().slow_call_duration(Duration::from_secs(1)).build()?;
    /// let handle = layer.handle();
    /// let svc = layer.layer(service_fn(|ms: u64| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     Ok::<_, BoxError>(())
    /// }));
    /// for ms in [10, 20, 1500, 30] {
    ///     svc.clone().oneshot(ms).await?;
    /// }
    /// # #[cfg(feature = "test-util")]
    /// assert_eq!(handle.stats().slow_call_rate(), 25.0);
    /// # let _ = handle;
    /// # Ok(())
    /// # }
    /// ```
    pub fn slow_call_rate(&self) -> f64 {
        percent(self.slow_calls, self.calls)
    }
}

fn percent(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) * 100.0 / f64::from(whole)
    }
}

/// `part / whole >= threshold%`.
fn at_least(part: u32, whole: u32, threshold: f64) -> bool {
    whole > 0 && f64::from(part) * 100.0 >= threshold * f64::from(whole)
}

#[derive(Debug, Default)]
struct HalfOpen {
    started: u64,
    /// Trials admitted and not given back (by cancellation or an ignored
    /// outcome).
    admitted: u32,
    successes: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug, Default)]
struct Control {
    /// Failed rounds of trials since the breaker last closed.
    reopened: u32,
    half: HalfOpen,
}

/// Transitions made under the lock, reported to observers once it is
/// released (so an observer may use the handle). Subscribers are sent each
/// transition under the lock, so they see them in order.
#[derive(Default)]
struct Changes(Vec<(CircuitState, CircuitState)>);

/// The bit of [`Permit::start`] that marks a call the observer wants
/// timed (no clock reads that far: 2^63 ns is 292 years).
const TIMED: u64 = 1 << 63;

/// What a call was admitted with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Permit {
    /// The state word at admission.
    word: u64,
    /// Admission time, when slow calls are tracked; or, with [`TIMED`]
    /// set, on the precise clock, for a call the observer wants timed
    /// ([`Observers::time_this_call`]). (One word, not two: a bigger permit
    /// makes every call slower, observed or not.)
    start: u64,
}

impl Permit {
    pub(crate) fn is_trial(&self) -> bool {
        self.word & KIND == HALF_OPEN
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: CircuitBreakerConfig,
    state: AtomicU64,
    /// When Open ends, in clock nanoseconds.
    open_until: AtomicU64,
    consecutive: AtomicU32,
    /// Failures and slow calls recorded since the window was last read
    /// clean. A success is judged only while this is non-zero: a success
    /// can raise no rate over a window that holds no failure or slow call.
    unclean: AtomicU32,
    window: Window,
    control: Mutex<Control>,
    clock: Clock,
    /// The clock of closed calls, when `coarse` is set.
    coarse_clock: CoarseClock,
    /// Closed calls (window buckets, slow-call timing) read `coarse_clock`
    /// instead of `clock`. Fixed for the breaker's life, so the window
    /// always sees one time base.
    coarse: bool,
    /// Sends transitions to [subscribers](Self::subscribe); made by the
    /// first of them.
    subscribers: OnceLock<tokio::sync::broadcast::Sender<StateChange>>,
    observers: Observers,
    slow_nanos: Option<u64>,
    /// Judging by failure and slow rates (not consecutive failures).
    by_rate: bool,
    /// Shadow (dry-run) mode: refusals are reported, not enforced.
    shadow: bool,
    /// The key of a per-key breaker, for events (kept only when an observer
    /// is set).
    key: Option<Box<dyn EventKey + Send + Sync>>,
}

impl Breaker {
    /// Closed calls use the coarse clock when its resolution is fine enough
    /// for both things they time: a bucket spans at least
    /// [`BUCKET_TICKS`] ticks, and `slow_call_duration` (if set) at least
    /// [`SLOW_CALL_TICKS`]. The latency an observer receives is measured
    /// apart, on the precise clock, for the calls it wants timed.
    pub(crate) fn new(config: CircuitBreakerConfig, observers: Observers, shadow: bool) -> Self {
        Self::keyed(config, observers, shadow, None)
    }

    /// A breaker whose events carry `key` (dropped when no observer is
    /// set: nothing would read it).
    pub(crate) fn keyed(
        config: CircuitBreakerConfig,
        observers: Observers,
        shadow: bool,
        key: Option<Box<dyn EventKey + Send + Sync>>,
    ) -> Self {
        let key = key.filter(|_| observers.is_set());
        let slow_nanos = config
            .slow_call_duration
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let buckets_ok = match config.window {
            SlidingWindow::Count(_) => true,
            SlidingWindow::Time { size, buckets } => {
                let size = u64::try_from(size.as_nanos()).unwrap_or(u64::MAX);
                CoarseClock::spans(size / u64::from(buckets.max(1)), BUCKET_TICKS)
            }
        };
        let slow_ok = slow_nanos.is_none_or(|d| CoarseClock::spans(d, SLOW_CALL_TICKS));
        let coarse = buckets_ok && slow_ok;
        Breaker {
            window: Window::new(config.window),
            by_rate: config.trip == Trip::Rate,
            config,
            state: AtomicU64::new(CLOSED),
            open_until: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            unclean: AtomicU32::new(0),
            control: Mutex::new(Control::default()),
            clock: Clock::new(),
            coarse_clock: CoarseClock::new(),
            coarse,
            subscribers: OnceLock::new(),
            observers,
            slow_nanos,
            shadow,
            key,
        }
    }

    /// The key events carry.
    #[inline]
    fn key(&self) -> Option<&dyn EventKey> {
        self.key.as_deref().map(|k| k as &dyn EventKey)
    }

    /// Whether the breaker is Closed (not forced): the per-key store may
    /// forget it then, when no call holds it.
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & KIND == CLOSED
    }

    /// Whether refusals are only reported (shadow mode).
    #[inline]
    pub(crate) fn is_shadow(&self) -> bool {
        self.shadow
    }

    pub(crate) fn observers(&self) -> &Observers {
        &self.observers
    }

    pub(crate) fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }

    /// The time as closed calls see it (see [`Breaker::new`]).
    #[inline]
    fn closed_now(&self) -> u64 {
        if self.coarse {
            self.coarse_clock.now()
        } else {
            self.clock.now()
        }
    }

    /// Whether closed calls read the coarse clock.
    #[cfg(test)]
    pub(crate) fn is_coarse(&self) -> bool {
        self.coarse
    }

    /// A receiver of every transition from now on.
    pub(crate) fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StateChange> {
        self.subscribers
            .get_or_init(|| tokio::sync::broadcast::channel(SUBSCRIBER_CAPACITY).0)
            .subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        // The state behind the lock stays consistent even if an observer
        // panicked elsewhere: no code panics while holding it.
        self.control.lock().ignore_poison()
    }

    fn report(&self, changes: Changes) {
        for (from, to) in changes.0 {
            tracing::info!(
                target: "tower_sluice::circuit_breaker",
                from = ?from,
                to = ?to,
                state = ?to,
                "circuit breaker state changed"
            );
            self.observers.emit(&Event::BreakerStateChanged {
                layer: LAYER,
                key: self.key(),
                from,
                to,
            });
        }
    }

    // -----------------------------------------------------------------------
    // transitions (with the lock held)

    fn set(
        &self,
        ctl: &mut Control,
        kind: u64,
        now: u64,
        reason: ChangeReason,
        changes: &mut Changes,
    ) {
        let word = self.state.load(Ordering::Acquire);
        match kind {
            OPEN => {
                let open_for = self.config.open_for(ctl.reopened);
                let mut nanos = u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX);
                if self.config.open_jitter > 0.0 {
                    let cut = nanos as f64
                        * self.config.open_jitter
                        * rng::unit(
                            rng::SplitMix::new(now ^ word ^ (self as *const Self as usize as u64))
                                .next_u64(),
                        );
                    nanos = nanos.saturating_sub(cut as u64);
                }
                self.open_until
                    .store(now.saturating_add(nanos), Ordering::Release);
            }
            HALF_OPEN => {
                ctl.half = HalfOpen {
                    started: now,
                    ..HalfOpen::default()
                };
            }
            _ => {
                self.window.reset();
                self.consecutive.store(0, Ordering::Relaxed);
                if kind == CLOSED || kind == FORCED_CLOSED {
                    ctl.reopened = 0;
                }
            }
        }
        let next = ((word >> 3).wrapping_add(1) << 3) | kind;
        self.state.store(next, Ordering::Release);
        let (from, to) = (kind_state(word & KIND), kind_state(kind));
        if from != to {
            changes.0.push((from, to));
            if let Some(tx) = self.subscribers.get() {
                // Never waits: a receiver that falls behind loses the
                // oldest transitions instead. An error only means that
                // every receiver is gone.
                let _ = tx.send(StateChange {
                    from,
                    to,
                    reason,
                    at: tokio::time::Instant::now(),
                });
            }
        }
    }

    /// Applies the transitions that time alone causes: Open → HalfOpen
    /// after the open duration, and the half-open timeout.
    fn advance(&self, ctl: &mut Control, now: u64, changes: &mut Changes) {
        loop {
            let kind = self.state.load(Ordering::Acquire) & KIND;
            if kind == OPEN && now >= self.open_until.load(Ordering::Acquire) {
                self.set(
                    ctl,
                    HALF_OPEN,
                    now,
                    ChangeReason::OpenDurationElapsed,
                    changes,
                );
            } else if kind == HALF_OPEN
                && Duration::from_nanos(now.saturating_sub(ctl.half.started))
                    >= self.config.half_open_timeout
            {
                self.judge_half_open(ctl, now, true, changes);
                if self.state.load(Ordering::Acquire) & KIND == HALF_OPEN {
                    return;
                }
            } else {
                return;
            }
        }
    }

    /// Closes or reopens after trials, when the verdict is known (or the
    /// half-open timeout has passed).
    fn judge_half_open(&self, ctl: &mut Control, now: u64, timed_out: bool, changes: &mut Changes) {
        let h = &ctl.half;
        let permitted = self.config.permitted_calls_in_half_open;
        let done = h.successes + h.failures;
        let c = &self.config;
        let failed = if self.by_rate {
            // Enough failures that the round fails whatever the rest do.
            at_least(h.failures, permitted, c.failure_rate_threshold)
                || (self.slow_nanos.is_some()
                    && at_least(h.slow, permitted, c.slow_call_rate_threshold))
                || ((done == permitted || timed_out)
                    && (done == 0
                        || at_least(h.failures, done, c.failure_rate_threshold)
                        || (self.slow_nanos.is_some()
                            && at_least(h.slow, done, c.slow_call_rate_threshold))))
        } else {
            h.failures > 0 || (timed_out && done == 0)
        };
        let reason = |verdict| {
            if timed_out {
                ChangeReason::HalfOpenTimeout
            } else {
                verdict
            }
        };
        if failed {
            ctl.reopened = ctl.reopened.saturating_add(1);
            self.set(ctl, OPEN, now, reason(ChangeReason::TrialsFailed), changes);
        } else if done == permitted || timed_out {
            self.set(
                ctl,
                CLOSED,
                now,
                reason(ChangeReason::TrialsSucceeded),
                changes,
            );
        }
    }

    #[cold]
    fn trip(&self, word: u64, reason: ChangeReason) {
        // `now` of the caller may be unset (a count window without slow
        // calls never reads the clock): read it here.
        let now = self.clock.now();
        let mut changes = Changes::default();
        {
            let mut ctl = self.lock();
            if self.state.load(Ordering::Acquire) == word {
                ctl.reopened = 0;
                self.set(&mut ctl, OPEN, now, reason, &mut changes);
            }
        }
        self.report(changes);
    }

    // -----------------------------------------------------------------------
    // calls

    /// Admits a call, or refuses it with the wait.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Permit, CircuitOpen> {
        let word = self.state.load(Ordering::Acquire);
        let kind = word & KIND;
        if kind == CLOSED || kind == FORCED_CLOSED {
            let start = if self.observers.is_set() && self.observers.time_this_call() {
                self.clock.now() | TIMED
            } else if self.slow_nanos.is_some() {
                self.closed_now()
            } else {
                0
            };
            return Ok(Permit { word, start });
        }
        self.acquire_slow(kind)
    }

    /// `now` (precise) marked [`TIMED`] for a call the observer wants
    /// timed, else `closed`.
    #[inline]
    fn start_at(&self, now: u64, closed: u64) -> u64 {
        if self.observers.time_this_call() {
            now | TIMED
        } else {
            closed
        }
    }

    #[cold]
    fn acquire_slow(&self, kind: u64) -> Result<Permit, CircuitOpen> {
        let now = self.clock.now();
        if kind == OPEN {
            let until = self.open_until.load(Ordering::Acquire);
            if now < until {
                return Err(self.rejected(CircuitState::Open, until - now));
            }
        }
        if kind == FORCED_OPEN {
            return Err(self.rejected(CircuitState::ForcedOpen, 0));
        }
        let mut changes = Changes::default();
        let result = {
            let mut ctl = self.lock();
            self.advance(&mut ctl, now, &mut changes);
            let word = self.state.load(Ordering::Acquire);
            match word & KIND {
                // A closed call is timed on the closed calls' clock.
                CLOSED | FORCED_CLOSED => Ok(Permit {
                    word,
                    start: self.start_at(
                        now,
                        if self.coarse {
                            self.coarse_clock.now()
                        } else {
                            now
                        },
                    ),
                }),
                HALF_OPEN if ctl.half.admitted < self.config.permitted_calls_in_half_open => {
                    ctl.half.admitted += 1;
                    Ok(Permit {
                        word,
                        start: self.start_at(now, now),
                    })
                }
                HALF_OPEN => {
                    let timeout =
                        u64::try_from(self.config.half_open_timeout.as_nanos()).unwrap_or(u64::MAX);
                    let left = ctl.half.started.saturating_add(timeout).saturating_sub(now);
                    Err((CircuitState::HalfOpen, left.min(1_000_000_000)))
                }
                OPEN => Err((
                    CircuitState::Open,
                    self.open_until.load(Ordering::Acquire).saturating_sub(now),
                )),
                _ => Err((CircuitState::ForcedOpen, 0)),
            }
        };
        self.report(changes);
        result.map_err(|(state, wait)| self.rejected(state, wait))
    }

    fn rejected(&self, state: CircuitState, wait: u64) -> CircuitOpen {
        let wait = if state == CircuitState::ForcedOpen {
            self.config.open_duration
        } else {
            Duration::from_nanos(wait)
        };
        let error = CircuitOpen::new(wait);
        tracing::info!(
            target: "tower_sluice::circuit_breaker",
            state = ?state,
            retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            enforced = !self.shadow,
            "circuit open; call refused"
        );
        self.observers.emit(&Event::BreakerRejected {
            layer: LAYER,
            key: self.key(),
            state,
            error: &error,
            enforced: !self.shadow,
        });
        error
    }

    /// Records a completed call.
    #[inline]
    pub(crate) fn finish(&self, permit: Permit, outcome: Outcome) {
        if permit.start & TIMED != 0 {
            return self.finish_timed(permit, outcome);
        }
        let now = self.finish_now(permit, None);
        let slow = self
            .slow_nanos
            .is_some_and(|d| now.saturating_sub(permit.start) >= d);
        self.record(permit, outcome, slow, now, None);
    }

    /// Records a call the observer wanted timed: timed, and judged slow, on
    /// the precise clock.
    #[inline(never)]
    fn finish_timed(&self, permit: Permit, outcome: Outcome) {
        let end = self.clock.now();
        let elapsed = end.saturating_sub(permit.start & !TIMED);
        let now = self.finish_now(permit, Some(end));
        let slow = self.slow_nanos.is_some_and(|d| elapsed >= d);
        self.record(
            permit,
            outcome,
            slow,
            now,
            Some(Duration::from_nanos(elapsed)),
        );
    }

    /// The time a completed call is recorded at: trials were admitted on
    /// the precise clock (read as `precise`, if already) and judge on it;
    /// closed calls on theirs, and only when the window or slow calls need
    /// it.
    #[inline]
    fn finish_now(&self, permit: Permit, precise: Option<u64>) -> u64 {
        if permit.is_trial() {
            precise.unwrap_or_else(|| self.clock.now())
        } else if self.slow_nanos.is_some() || self.window.needs_time() {
            self.closed_now()
        } else {
            0
        }
    }

    /// Counts a completed call in its state and reports it.
    #[inline]
    fn record(
        &self,
        permit: Permit,
        outcome: Outcome,
        slow: bool,
        now: u64,
        latency: Option<Duration>,
    ) {
        let counted = if permit.is_trial() {
            self.finish_trial(permit, outcome, slow, now)
        } else {
            self.finish_closed(permit, outcome, slow, now)
        };
        if self.observers.is_set() {
            self.observers
                .emit_breaker_call(LAYER, self.key(), outcome, slow, counted, latency);
        }
    }

    #[inline]
    fn finish_closed(&self, permit: Permit, outcome: Outcome, slow: bool, now: u64) -> bool {
        let failure = match outcome {
            Outcome::Ignore | Outcome::Overloaded => return false,
            Outcome::Failure => true,
            Outcome::Success => false,
        };
        let word = self.state.load(Ordering::Acquire);
        if word != permit.word {
            return false;
        }
        let flags = PRESENT | if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        self.window.record(now, flags);
        let bad = failure || (slow && !self.by_rate);
        let in_a_row = if bad {
            self.consecutive.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            0
        };
        if word & KIND == FORCED_CLOSED {
            return true;
        }
        if !(failure || slow) {
            // A success raises no rate over a window that holds no failure
            // or slow call; otherwise it is judged too (it may complete
            // `minimum_calls`, or land after older successes left the
            // window), out of line.
            if self.by_rate && self.unclean.load(Ordering::Acquire) != 0 {
                self.judge_success(word, now);
            }
            return true;
        }
        let c = &self.config;
        let trip = match c.trip {
            Trip::Consecutive(n) => (in_a_row >= n).then_some(ChangeReason::ConsecutiveFailures),
            Trip::Rate => {
                self.unclean.fetch_add(1, Ordering::AcqRel);
                self.judge(now)
            }
        };
        if let Some(reason) = trip {
            self.trip(word, reason);
        }
        true
    }

    /// The verdict of the rate window at `now`, once it holds
    /// `minimum_calls`.
    fn judge(&self, now: u64) -> Option<ChangeReason> {
        let c = &self.config;
        let Counts {
            calls,
            failures,
            slow,
        } = self.window.counts(now);
        if calls < c.effective_minimum() {
            None
        } else if at_least(failures, calls, c.failure_rate_threshold) {
            Some(ChangeReason::FailureRate)
        } else if self.slow_nanos.is_some() && at_least(slow, calls, c.slow_call_rate_threshold) {
            Some(ChangeReason::SlowCallRate)
        } else {
            None
        }
    }

    /// Judges the window after a success recorded while it held failures
    /// or slow calls; marks it clean when it no longer holds any (unless a
    /// failure was recorded meanwhile: then the exchange fails and it
    /// stays marked).
    #[cold]
    #[inline(never)]
    fn judge_success(&self, word: u64, now: u64) {
        let marks = self.unclean.load(Ordering::Acquire);
        let counts = self.window.counts(now);
        if counts.failures == 0 && counts.slow == 0 {
            let _ = self
                .unclean
                .compare_exchange(marks, 0, Ordering::AcqRel, Ordering::Relaxed);
            return;
        }
        if let Some(reason) = self.judge(now) {
            self.trip(word, reason);
        }
    }

    fn finish_trial(&self, permit: Permit, outcome: Outcome, slow: bool, now: u64) -> bool {
        let mut changes = Changes::default();
        let counted = {
            let mut ctl = self.lock();
            if self.state.load(Ordering::Acquire) != permit.word {
                false
            } else {
                let h = &mut ctl.half;
                let recorded = !matches!(outcome, Outcome::Ignore | Outcome::Overloaded);
                match outcome {
                    Outcome::Ignore | Outcome::Overloaded => h.admitted -= 1,
                    Outcome::Failure => h.failures += 1,
                    Outcome::Success if slow && !self.by_rate => h.failures += 1,
                    Outcome::Success => h.successes += 1,
                }
                if slow && recorded {
                    h.slow += 1;
                }
                self.judge_half_open(&mut ctl, now, false, &mut changes);
                recorded
            }
        };
        self.report(changes);
        counted
    }

    /// A call's future was dropped before it completed: it counts as
    /// nothing, and a trial gives its slot back.
    pub(crate) fn cancel(&self, permit: Permit) {
        if permit.is_trial() {
            let mut ctl = self.lock();
            if self.state.load(Ordering::Acquire) == permit.word {
                ctl.half.admitted -= 1;
            }
        }
    }

    // -----------------------------------------------------------------------
    // handle

    pub(crate) fn state(&self) -> CircuitState {
        let word = self.state.load(Ordering::Acquire);
        let kind = word & KIND;
        if kind == OPEN || kind == HALF_OPEN {
            let now = self.clock.now();
            let mut changes = Changes::default();
            let kind = {
                let mut ctl = self.lock();
                self.advance(&mut ctl, now, &mut changes);
                self.state.load(Ordering::Acquire) & KIND
            };
            self.report(changes);
            return kind_state(kind);
        }
        kind_state(kind)
    }

    pub(crate) fn stats(&self) -> Stats {
        let state = self.state();
        let Counts {
            calls,
            failures,
            slow,
        } = self.window.counts(self.closed_now());
        Stats {
            state,
            calls,
            failures,
            slow_calls: slow,
            consecutive_failures: self.consecutive.load(Ordering::Relaxed),
        }
    }

    /// How long until an open breaker admits trials, if it is open.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self.state() {
            CircuitState::Open => {
                let until = self.open_until.load(Ordering::Acquire);
                Some(Duration::from_nanos(until.saturating_sub(self.clock.now())))
            }
            _ => None,
        }
    }

    pub(crate) fn force(&self, to: CircuitState) {
        let (kind, reason) = match to {
            CircuitState::ForcedOpen => (FORCED_OPEN, ChangeReason::ForcedOpen),
            CircuitState::ForcedClosed => (FORCED_CLOSED, ChangeReason::ForcedClosed),
            _ => (CLOSED, ChangeReason::Reset),
        };
        let now = self.clock.now();
        let mut changes = Changes::default();
        {
            let mut ctl = self.lock();
            if kind == CLOSED {
                ctl.reopened = 0;
            }
            self.set(&mut ctl, kind, now, reason, &mut changes);
        }
        self.report(changes);
    }
}
