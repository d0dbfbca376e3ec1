//! [`AimdLayer`]: a client's sending rate that follows the upstream's 429s
//! (additive increase, multiplicative decrease) and its quota headers.

mod layer;
mod service;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::classify::DefaultFeedback;
use crate::BoxError;
use crate::classify::{Classify, Outcome, Verdict};
use crate::clock::Clock;
use crate::future::ResponseFuture;
use crate::future::Track;
use crate::headers::saturating_nanos;
use crate::observe::{Event, Observer, Observers};
use crate::quota::Quota;
use crate::slot::Slot;
use crate::util::IgnorePoison;

const LAYER: &str = "aimd";
const NANOS: f64 = 1e9;

pub use layer::*;
pub use service::*;

pub(crate) struct Core {
    clock: Clock,
    config: Config,
    state: Mutex<State>,
    observers: Observers,
}

#[derive(Clone, Copy)]
struct Config {
    quota: Quota,
    /// Requests per second.
    max: f64,
    floor: f64,
    step: f64,
    decrease: f64,
    window: u32,
    window_time: u64,
    burst: u32,
    max_pause: Duration,
    /// Shadow (dry-run) mode: pace and report, but never delay.
    shadow: bool,
}

#[derive(Clone)]
struct State {
    rate: f64,
    tat: u64,
    pause_until: u64,
    budget: Option<Budget>,
    good: Option<f64>,
    successes: u32,
    /// Bumped on every change of rate; a request records it when sent.
    generation: u64,
    /// The generation right after the last cut.
    cut_generation: u64,
    hold: u32,
    held: u32,
    window_start: u64,
    in_flight: u64,
}

/// What the upstream said remains, counted down as requests are sent.
#[derive(Clone, Copy)]
struct Budget {
    remaining: u64,
    until: u64,
    next: u64,
    spacing: u64,
}

impl Core {
    /// A core with the same settings and rate, for a setter to edit; no
    /// request is in flight through it.
    fn fresh(&self) -> Core {
        let mut state = self.lock().clone();
        state.in_flight = 0;
        Core {
            clock: self.clock.clone(),
            config: self.config,
            state: Mutex::new(state),
            observers: self.observers.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().ignore_poison()
    }

    fn quota_of(&self, rate: f64) -> Quota {
        let q = self.config.quota;
        let n = (rate * q.period().as_secs_f64()).round().max(1.0);
        let n = n.min(f64::from(u32::MAX)) as u32;
        // A rate the limiter could not hold within 1 % is still reported.
        Quota::try_new(n, q.period()).unwrap_or(Quota::from_parts(n, q.period(), n))
    }

    /// The burst at `rate`: the configured burst, scaled down with the rate.
    fn burst(&self, rate: f64) -> u64 {
        (f64::from(self.config.burst) * rate / self.config.max)
            .floor()
            .max(1.0) as u64
    }

    /// Takes the next slot: how long to wait for it (nanoseconds) and the
    /// generation of the rate it was taken at.
    fn reserve(&self) -> (u64, u64) {
        let now = self.clock.now();
        let mut s = self.lock();
        let interval = (NANOS / s.rate) as u64;
        let tau = (self.burst(s.rate) - 1).saturating_mul(interval);
        let mut at = now.max(s.tat.saturating_sub(tau)).max(s.pause_until);
        if let Some(b) = &mut s.budget {
            if b.until <= now {
                s.budget = None;
            } else if b.remaining == 0 {
                // Nothing left before the upstream's reset.
                at = at.max(b.until);
                s.budget = None;
            } else {
                at = at.max(b.next);
                b.remaining -= 1;
                b.next = at.saturating_add(b.spacing);
            }
        }
        s.tat = s.tat.max(at).saturating_add(interval);
        (at - now, s.generation)
    }

    /// Whether the layer is in shadow mode.
    fn is_shadow(&self) -> bool {
        self.config.shadow
    }

    /// Reports a request that would have waited `wait` nanoseconds (shadow
    /// mode), as the limited decision enforcing mode would have made.
    fn report_shadow_wait(&self, wait: u64) {
        if !self.observers.is_set() {
            return;
        }
        let quota = self.quota_of(self.lock().rate);
        let decision = crate::gcra::Decision::remote(
            quota,
            quota.emission_nanos(),
            false,
            wait,
            wait.saturating_add(quota.emission_nanos()),
        );
        let error = crate::error::RateLimited::from_decision(&decision);
        self.observers.emit(&Event::Limited {
            layer: LAYER,
            key: None,
            error: &error,
            enforced: false,
        });
    }

    fn acquire(&self) {
        self.lock().in_flight += 1;
    }

    fn release(&self) {
        self.lock().in_flight -= 1;
    }

    fn feedback(&self, feedback: &Verdict, generation: u64) {
        let now = self.clock.now();
        let c = &self.config;
        let mut s = self.lock();
        // The bound on every wait taken from the upstream.
        let cap = saturating_nanos(c.max_pause);
        if let Some(u) = feedback.upstream() {
            let reset = saturating_nanos(u.reset);
            // A spent quota holds requests until its reset, at most `cap`.
            let until = now.saturating_add(reset.min(cap));
            // Requests still in flight may be counted after this answer.
            let others = s.in_flight.saturating_sub(1);
            let remaining = u.remaining.saturating_sub(others);
            let spacing = if remaining == 0 {
                0
            } else {
                (reset / remaining.saturating_add(1)).min(cap)
            };
            let next = s
                .budget
                .map_or(now, |b| b.next.min(now.saturating_add(spacing)));
            s.budget = Some(Budget {
                remaining,
                until,
                next,
                spacing,
            });
        }
        let old = s.rate;
        match feedback.outcome() {
            Outcome::Overloaded => {
                let pause = feedback.retry_after().map_or(0, saturating_nanos).min(cap);
                s.pause_until = s.pause_until.max(now.saturating_add(pause));
                if generation < s.cut_generation {
                    return; // sent before the last cut
                }
                let rate = s.rate;
                s.good = match s.good {
                    // A probe above the good rate failed: probe less often.
                    Some(g) if rate > g * 1.000_001 => {
                        s.hold = (s.hold * 2).min(64);
                        Some(g)
                    }
                    // Failed while climbing back: an upper bound.
                    Some(g) if rate < g * 0.999_999 => Some(rate),
                    // Failed at the good rate: the upstream has less.
                    Some(g) => Some(g * 0.95),
                    None => None,
                };
                s.rate = (rate * c.decrease).max(c.floor);
                s.generation += 1;
                s.cut_generation = s.generation;
                s.successes = 0;
                s.held = 0;
                s.window_start = now;
                // No burst after a cut: sending resumes at the new pace.
                let tau = (self.burst(s.rate) - 1).saturating_mul((NANOS / s.rate) as u64);
                s.tat = s.tat.max(now.max(s.pause_until).saturating_add(tau));
            }
            Outcome::Success if generation == s.generation => {
                s.successes += 1;
                if s.successes < c.window || now.saturating_sub(s.window_start) < c.window_time {
                    return;
                }
                s.successes = 0;
                s.window_start = now;
                let rate = s.rate;
                let new = match s.good {
                    Some(g) if rate < g * 0.999_999 => g.min(rate + c.step.max((g - rate) / 2.0)),
                    _ => {
                        s.held += 1;
                        if s.held >= s.hold {
                            // Held long enough at this rate: it is good.
                            s.held = 0;
                            s.good = Some(rate);
                            rate + c.step
                        } else {
                            rate
                        }
                    }
                };
                let new = new.min(c.max);
                if new != rate {
                    s.rate = new;
                    s.generation += 1;
                }
            }
            _ => return,
        }
        let new = s.rate;
        drop(s);
        if new != old && self.observers.is_set() {
            let (old, new) = (self.quota_of(old), self.quota_of(new));
            if old != new {
                self.observers.emit(&Event::LimitChanged {
                    layer: LAYER,
                    key: None,
                    old,
                    new,
                });
            }
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("Aimd")
            .field("quota", &self.config.quota)
            .field("rate_per_second", &s.rate)
            .field("good", &s.good)
            .field("decrease", &self.config.decrease)
            .field("window", &self.config.window)
            .finish_non_exhaustive()
    }
}

/// Reads an [`AimdLayer`]'s current rate. Cheap to clone.
///
/// # Examples
///
/// ```
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::AimdLayer;
///
/// let aimd = AimdLayer::new(Quota::per_minute(60));
/// let handle = aimd.handle();
/// assert_eq!(handle.rate(), 1.0); // requests per second
/// assert_eq!(handle.good_rate(), None); // no window completed yet
/// assert!(handle.paused_for().is_zero());
/// ```
#[derive(Clone)]
pub struct AimdHandle {
    core: Slot<Core>,
}

impl AimdHandle {
    /// The current rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.core.load().lock().rate
    }

    /// The current rate as a quota over the configured quota's period
    /// (rounded to whole requests, at least 1).
    pub fn quota(&self) -> Quota {
        let core = self.core.load();
        let rate = core.lock().rate;
        core.quota_of(rate)
    }

    /// The highest rate that last completed a window without an overload,
    /// in requests per second: the layer's estimate of the upstream's
    /// limit. `None` until such a window has completed.
    pub fn good_rate(&self) -> Option<f64> {
        self.core.load().lock().good
    }

    /// How long sending stays paused for an upstream's `Retry-After`
    /// (zero when not paused).
    pub fn paused_for(&self) -> Duration {
        let core = self.core.load();
        let now = core.clock.now();
        Duration::from_nanos(core.lock().pause_until.saturating_sub(now))
    }
}

impl fmt::Debug for AimdHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimdHandle")
            .field("core", &self.core)
            .finish()
    }
}
