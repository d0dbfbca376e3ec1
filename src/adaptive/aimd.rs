//! [`AimdLayer`]: a client's sending rate that follows the upstream's 429s
//! (additive increase, multiplicative decrease) and its quota headers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use super::classify::{ClassifyFeedback, DefaultFeedback, Feedback, Signal};
use super::future::{ResponseFuture, Track};
use crate::clock::Clock;
use crate::observe::{Event, Observer, Observers};
use crate::{BoxError, Quota};

const LAYER: &str = "aimd";
const NANOS: f64 = 1e9;

/// Paces a client, evenly, to a rate that starts at a quota and adapts to what the
/// upstream says: cut (×0.5 by default) on each 429 / [`RateLimited`] /
/// `RESOURCE_EXHAUSTED`, sending paused for the upstream's `Retry-After`,
/// then raised additively after each window of successes, back up to the
/// quota. When responses carry quota fields (IETF `RateLimit`,
/// `X-RateLimit-Remaining` / `X-RateLimit-Reset`, read by
/// `HttpFeedback` (feature `http`)), no more requests are sent before
/// the reset than the upstream says remain, spread evenly over the time
/// left.
///
/// See the [module docs](super) for an example.
///
/// # Finding the limit and staying under it
///
/// A rate held for some [`window`](Self::window)s without an overload
/// (4 at first) is confirmed as *good*, and the rate then steps up by
/// [`increase`](Self::increase). After a cut, the rate climbs back to the
/// good rate quickly (half the gap per window, at least one step), holds
/// there, and only then probes above it. Each probe that ends in a 429
/// doubles the number of windows held before the next one (up to 64), so
/// a client that has found the upstream's limit sends just under it and
/// rarely tests it again. A 429 while climbing back makes that rate the
/// good one; a 429 at the good rate (the upstream lowered its limit)
/// lowers it by 5%. Only requests sent at the current rate count: the 429s
/// of requests sent before a cut do not cut again, and there is no burst
/// after a cut.
///
/// An upstream that tolerates a large burst hides its limit for a while
/// (sending a little too fast succeeds until the burst is spent), so the
/// limit is found within what the burst hides over the held windows; such
/// upstreams usually send quota headers, which steer this layer exactly.
///
/// # Backpressure
///
/// The service waits for its turn in `poll_ready` (a timer, no busy
/// polling), so put it under a [`QueueLayer`](crate::QueueLayer) or call it
/// from a client loop. A service dropped while waiting keeps its slot
/// charged.
///
/// # Sharing
///
/// Every service made by the layer, and every clone, shares one rate.
///
/// [`RateLimited`]: crate::RateLimited
pub struct AimdLayer<C = DefaultFeedback> {
    core: Arc<Core>,
    classify: C,
}

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
}

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

impl AimdLayer {
    /// Starts at `quota` (its limit, period and burst), and never sends
    /// faster.
    pub fn new(quota: Quota) -> Self {
        let period = quota.period().as_secs_f64();
        let max = f64::from(quota.limit()) / period;
        let config = Config {
            quota,
            max,
            floor: (max / 100.0).max(1.0 / period.max(1e-9)).min(max),
            step: (max / 50.0).max(1.0 / period),
            decrease: 0.5,
            window: 10,
            window_time: 1_000_000_000,
            burst: 1,
            max_pause: Duration::from_secs(60),
        };
        AimdLayer {
            core: Arc::new(Core {
                clock: Clock::new(),
                config,
                state: Mutex::new(State {
                    rate: max,
                    tat: 0,
                    pause_until: 0,
                    budget: None,
                    good: None,
                    successes: 0,
                    generation: 0,
                    cut_generation: 0,
                    hold: 4,
                    held: 0,
                    window_start: 0,
                    in_flight: 0,
                }),
                observers: Observers::default(),
            }),
            classify: DefaultFeedback,
        }
    }
}

impl<C> AimdLayer<C> {
    fn edit(mut self, f: impl FnOnce(&mut Core)) -> Self {
        match Arc::get_mut(&mut self.core) {
            Some(core) => f(core),
            None => {
                panic!("AimdLayer: configure the layer before calling `handle()` or cloning it")
            }
        }
        self
    }

    /// The factor a rate is multiplied by on an overload (default 0.5),
    /// clamped to `0.05..=0.95`.
    ///
    /// # Panics
    ///
    /// When called after [`handle`](Self::handle) or after cloning the layer
    /// (as every setter).
    #[must_use]
    pub fn decrease(self, factor: f64) -> Self {
        let factor = if factor.is_nan() {
            0.5
        } else {
            factor.clamp(0.05, 0.95)
        };
        self.edit(|c| c.config.decrease = factor)
    }

    /// The lowest rate, in requests per quota period (default 1% of the
    /// quota, at least 1), capped at the quota.
    #[must_use]
    pub fn floor(self, requests_per_period: u32) -> Self {
        self.edit(|c| {
            let period = c.config.quota.period().as_secs_f64();
            c.config.floor = (f64::from(requests_per_period.max(1)) / period).min(c.config.max);
            let floor = c.config.floor;
            let s = c.state.get_mut().unwrap_or_else(|e| e.into_inner());
            s.rate = s.rate.max(floor);
        })
    }

    /// How much the rate grows after each window of successes, in requests
    /// per quota period (default 2% of the quota, at least 1).
    #[must_use]
    pub fn increase(self, requests_per_period: u32) -> Self {
        self.edit(|c| {
            let period = c.config.quota.period().as_secs_f64();
            c.config.step = f64::from(requests_per_period.max(1)) / period;
        })
    }

    /// A success window: at least `min_time` (default 1 s) and at least
    /// `successes` successful responses (default 10, at least 1), all sent
    /// at the current rate and with no overload.
    #[must_use]
    pub fn window(self, min_time: Duration, successes: u32) -> Self {
        self.edit(|c| {
            c.config.window = successes.max(1);
            c.config.window_time = u64::try_from(min_time.as_nanos()).unwrap_or(u64::MAX);
        })
    }

    /// Lets up to `burst` requests go at once (scaled down with the rate;
    /// default 1: requests are evenly spaced, which is what an upstream
    /// with a small burst tolerates).
    #[must_use]
    pub fn burst(self, burst: u32) -> Self {
        self.edit(|c| c.config.burst = burst.clamp(1, c.config.quota.burst().max(1)))
    }

    /// The longest pause a `Retry-After` can impose (default 60 s).
    #[must_use]
    pub fn max_pause(self, max_pause: Duration) -> Self {
        self.edit(|c| c.config.max_pause = max_pause)
    }

    /// Starts at `requests_per_period` instead of the quota (for example
    /// the rate that worked last time), within the floor and the quota.
    #[must_use]
    pub fn initial(self, requests_per_period: u32) -> Self {
        self.edit(|c| {
            let period = c.config.quota.period().as_secs_f64();
            let rate =
                (f64::from(requests_per_period) / period).clamp(c.config.floor, c.config.max);
            c.state.get_mut().unwrap_or_else(|e| e.into_inner()).rate = rate;
        })
    }

    /// Reports rate changes ([`Event::LimitChanged`]) to `observer`.
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit(|c| c.observers = Observers::new(observer))
    }

    /// Reads responses with `classify` (default [`DefaultFeedback`]; use
    /// `HttpFeedback` (feature `http`) for HTTP clients).
    pub fn classify<C2>(self, classify: C2) -> AimdLayer<C2> {
        AimdLayer {
            core: self.core,
            classify,
        }
    }

    /// A handle to read the current rate.
    pub fn handle(&self) -> AimdHandle {
        AimdHandle {
            core: self.core.clone(),
        }
    }
}

impl<C: Clone> Clone for AimdLayer<C> {
    fn clone(&self) -> Self {
        AimdLayer {
            core: self.core.clone(),
            classify: self.classify.clone(),
        }
    }
}

impl<S, C: Clone> Layer<S> for AimdLayer<C> {
    type Service = Aimd<S, C>;

    fn layer(&self, inner: S) -> Aimd<S, C> {
        Aimd::new(inner, self.core.clone(), self.classify.clone())
    }
}

impl<C> fmt::Debug for AimdLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimdLayer")
            .field("core", &self.core)
            .field("classify", &std::any::type_name::<C>())
            .finish()
    }
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quota_of(&self, rate: f64) -> Quota {
        let q = self.config.quota;
        let n = (rate * q.period().as_secs_f64()).round().max(1.0);
        Quota::new(n.min(f64::from(u32::MAX)) as u32, q.period())
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
        let tau = (self.burst(s.rate) - 1) * interval;
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
                b.next = at + b.spacing;
            }
        }
        s.tat = s.tat.max(at) + interval;
        (at - now, s.generation)
    }

    fn acquire(&self) {
        self.lock().in_flight += 1;
    }

    fn release(&self) {
        self.lock().in_flight -= 1;
    }

    fn feedback(&self, feedback: &Feedback, generation: u64) {
        let now = self.clock.now();
        let c = &self.config;
        let mut s = self.lock();
        if let Some(u) = feedback.upstream_quota() {
            let reset = u64::try_from(u.reset.as_nanos()).unwrap_or(u64::MAX);
            let until = now.saturating_add(reset);
            // Requests still in flight may be counted after this answer.
            let others = s.in_flight.saturating_sub(1);
            let remaining = u.remaining.saturating_sub(others);
            let spacing = if remaining == 0 {
                0
            } else {
                reset / (remaining + 1)
            };
            let next = s.budget.map_or(now, |b| b.next.min(now + spacing));
            s.budget = Some(Budget {
                remaining,
                until,
                next,
                spacing,
            });
        }
        let old = s.rate;
        match feedback.signal() {
            Signal::Overloaded => {
                let pause = feedback.wait().unwrap_or(Duration::ZERO).min(c.max_pause);
                let pause = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
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
                let tau = (self.burst(s.rate) - 1) * (NANOS / s.rate) as u64;
                s.tat = s.tat.max(now.max(s.pause_until) + tau);
            }
            Signal::Success if generation == s.generation => {
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
#[derive(Clone)]
pub struct AimdHandle {
    core: Arc<Core>,
}

impl AimdHandle {
    /// The current rate, in requests per second.
    pub fn rate(&self) -> f64 {
        self.core.lock().rate
    }

    /// The current rate as a quota over the configured quota's period
    /// (rounded to whole requests, at least 1).
    pub fn quota(&self) -> Quota {
        self.core.quota_of(self.rate())
    }

    /// The highest rate that last completed a window without an overload,
    /// in requests per second: the layer's estimate of the upstream's
    /// limit.
    pub fn good_rate(&self) -> Option<f64> {
        self.core.lock().good
    }

    /// How long sending stays paused for an upstream's `Retry-After`.
    pub fn paused_for(&self) -> Duration {
        let now = self.core.clock.now();
        Duration::from_nanos(self.core.lock().pause_until.saturating_sub(now))
    }
}

impl fmt::Debug for AimdHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AimdHandle")
            .field("core", &self.core)
            .finish()
    }
}

/// Paces requests to an adaptive rate. Made by [`AimdLayer`]; see the
/// [module docs](super).
pub struct Aimd<S, C> {
    inner: S,
    core: Arc<Core>,
    classify: C,
    slot: Option<(u64, bool)>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> Aimd<S, C> {
    fn new(inner: S, core: Arc<Core>, classify: C) -> Self {
        Aimd {
            inner,
            core,
            classify,
            slot: None,
            sleep: None,
        }
    }

    crate::inner_accessors!();
}

/// The record an [`Aimd`] request keeps until its response.
pub struct AimdTrack<C> {
    core: Arc<Core>,
    classify: C,
    generation: u64,
}

impl<C, Res> Track<Res> for AimdTrack<C>
where
    C: ClassifyFeedback<Res>,
{
    fn complete(self, result: &Result<Res, BoxError>) {
        let feedback = self.classify.feedback(result);
        self.core.feedback(&feedback, self.generation);
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
    C: ClassifyFeedback<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, AimdTrack<C>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            match self.slot {
                None => {
                    let (wait, generation) = self.core.reserve();
                    self.slot = Some((generation, wait == 0));
                    if wait > 0 {
                        let deadline = tokio::time::Instant::now() + Duration::from_nanos(wait);
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
