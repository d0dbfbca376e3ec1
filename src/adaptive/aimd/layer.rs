//! The layer of `adaptive::aimd`: configuration and `Layer`.

use super::*;
use crate::util::IgnorePoison;

/// Paces a client, evenly, to a rate that starts at a quota and adapts to what the
/// upstream says: cut (×0.5 by default) on each 429 / [`RateLimited`] /
/// `RESOURCE_EXHAUSTED`, sending paused for the upstream's `Retry-After`,
/// then raised additively after each window of successes, back up to the
/// quota. When responses carry quota fields (IETF `RateLimit`,
/// `X-RateLimit-Remaining` / `X-RateLimit-Reset`, read by
/// `classify::HttpStatus`, feature `http`), no more requests are sent before
/// the reset than the upstream says remain, spread evenly over the time
/// left.
///
/// Every wait the upstream asks for is cut to
/// [`max_pause`](Self::max_pause) (by default
/// [`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT), 60 s): a
/// `Retry-After: 86400`, or a quota spent until a reset a day away, holds
/// requests for a minute, not a day.
///
/// See the [module docs](crate::adaptive) for an example.
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
/// Setters never panic and may come in any order, before or after
/// [`handle`](Self::handle) or a clone: a setter applies to the layer and
/// its clones, and a handle always reads the rate that the services made
/// by the layer use. Configure the layer before wrapping services: a
/// service keeps the settings the layer had when it was made. For an
/// independent rate, call [`new`](Self::new) again.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::AimdLayer;
/// use tower_sluice::Quota;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let aimd = AimdLayer::new(Quota::per_second(100));
/// let rate = aimd.handle();
/// let client = ServiceBuilder::new()
///     .layer(aimd)
///     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
/// client.oneshot(1).await.unwrap();
/// assert_eq!(rate.rate(), 100.0, "no 429 yet: the full rate");
/// # }
/// ```
///
/// [`RateLimited`]: crate::RateLimited
pub struct AimdLayer<C = DefaultFeedback> {
    core: Slot<Core>,
    classify: C,
}

impl AimdLayer {
    /// Starts at `quota` (its limit, period and burst), and never sends
    /// faster.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::adaptive::AimdLayer;
    ///
    /// // An API documented at 60 requests a minute: start there, slow down on 429s.
    /// let aimd = AimdLayer::new(Quota::per_minute(60));
    /// assert_eq!(aimd.handle().quota(), Quota::per_minute(60));
    /// ```
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
            max_pause: crate::headers::MAX_UPSTREAM_WAIT,
            shadow: false,
        };
        AimdLayer {
            core: Slot::new(Core {
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
    fn edit(self, f: impl FnOnce(&mut Core)) -> Self {
        self.core.replace(Core::fresh, f);
        self
    }

    /// The factor a rate is multiplied by on an overload (default 0.5),
    /// clamped to `0.05..=0.95`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // Cut to 70% on each 429 instead of halving.
    /// let aimd = AimdLayer::new(Quota::per_second(100)).decrease(0.7);
    /// # let _ = aimd;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // Never below 10 a minute, however many 429s.
    /// let aimd = AimdLayer::new(Quota::per_minute(600)).floor(10);
    /// # let _ = aimd;
    /// ```
    #[must_use]
    pub fn floor(self, requests_per_period: u32) -> Self {
        self.edit(|c| {
            let period = c.config.quota.period().as_secs_f64();
            c.config.floor = (f64::from(requests_per_period.max(1)) / period).min(c.config.max);
            let floor = c.config.floor;
            let s = c.state.get_mut().ignore_poison();
            s.rate = s.rate.max(floor);
        })
    }

    /// How much the rate grows after each window of successes, in requests
    /// per quota period (default 2% of the quota, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // Recover 5 requests a minute per good window.
    /// let aimd = AimdLayer::new(Quota::per_minute(600)).increase(5);
    /// # let _ = aimd;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // Grow only after 5 s and 50 successes without a 429.
    /// let aimd = AimdLayer::new(Quota::per_second(20)).window(Duration::from_secs(5), 50);
    /// # let _ = aimd;
    /// ```
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
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// let aimd = AimdLayer::new(Quota::per_second(50)).burst(5);
    /// # let _ = aimd;
    /// ```
    #[must_use]
    pub fn burst(self, burst: u32) -> Self {
        self.edit(|c| c.config.burst = burst.clamp(1, c.config.quota.burst().max(1)))
    }

    /// The longest wait the upstream can impose (default
    /// [`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT), 60 s): the pause
    /// after a `Retry-After` (or a [`RateLimited`]'s `retry_after`), the
    /// wait for a quota the upstream says is spent until its reset, and the
    /// spacing its quota fields ask for between requests. A longer wait is
    /// cut to it: after it, sending resumes at the layer's own rate until
    /// the next response says otherwise. `Duration::ZERO` ignores every
    /// wait the upstream asks for (its 429s still cut the rate).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // A `Retry-After: 3600`, or `X-RateLimit-Remaining: 0` with
    /// // `X-RateLimit-Reset: 3600`, holds sending for 10 s at most.
    /// let aimd = AimdLayer::new(Quota::per_second(50)).max_pause(Duration::from_secs(10));
    /// # let _ = aimd;
    /// ```
    ///
    /// [`RateLimited`]: crate::RateLimited
    #[must_use]
    pub fn max_pause(self, max_pause: Duration) -> Self {
        self.edit(|c| c.config.max_pause = max_pause)
    }

    /// Starts at `requests_per_period` instead of the quota (for example
    /// the rate that worked last time), within the floor and the quota.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// // Start at the 40 a minute that worked yesterday, up to 60.
    /// let aimd = AimdLayer::new(Quota::per_minute(60)).initial(40);
    /// assert_eq!(aimd.handle().quota(), Quota::per_minute(40));
    /// ```
    #[must_use]
    pub fn initial(self, requests_per_period: u32) -> Self {
        self.edit(|c| {
            let period = c.config.quota.period().as_secs_f64();
            let rate =
                (f64::from(requests_per_period) / period).clamp(c.config.floor, c.config.max);
            c.state.get_mut().ignore_poison().rate = rate;
        })
    }

    /// Shadow (dry-run) mode: pace, learn and report as usual, but never
    /// delay a request. A request that would have waited is reported as
    /// [`Event::Limited`](crate::observe::Event::Limited) with
    /// `enforced: false` and the wait as its `retry_after`. Use it to watch
    /// what the layer would do to live traffic before enforcing it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// # use tower_sluice::observe::Monitor;
    /// let monitor = Monitor::new();
    /// let aimd = AimdLayer::new(Quota::per_second(10)).shadow().observer(monitor.clone());
    /// # let _ = aimd;
    /// ```
    #[must_use]
    pub fn shadow(self) -> Self {
        self.edit(|c| c.config.shadow = true)
    }

    /// Reports rate changes ([`Event::LimitChanged`]) and requests that
    /// waited for their turn ([`Event::Waited`]) to `observer`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// use tower_sluice::observe::Event;
    ///
    /// let aimd = AimdLayer::new(Quota::per_second(10)).observer(|e: &Event<'_>| {
    ///     if let Event::LimitChanged { .. } = e {
    ///         println!("{e:?}");
    ///     }
    /// });
    /// # let _ = aimd;
    /// ```
    #[must_use]
    pub fn observer(self, observer: impl Observer) -> Self {
        self.edit(|c| c.observers = Observers::new(observer, LAYER))
    }

    /// Reads responses with `classify`: any
    /// [`Classify`](crate::classify::Classify) of the inner service's
    /// results, `Result<Response, BoxError>` (default [`DefaultFeedback`]; use
    /// `classify::HttpStatus`, feature `http`, for
    /// HTTP clients). Each response's
    /// [`verdict`](crate::classify::Classify::verdict) is read:
    /// [`Overloaded`](crate::classify::Outcome::Overloaded) cuts the rate
    /// and pauses for its [`retry_after`](crate::classify::Verdict::retry_after)
    /// (or the wait a [`RateLimited`](crate::RateLimited) error carries); its
    /// [`upstream`](crate::classify::Verdict::upstream) quota spreads the
    /// requests left until the reset.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::Quota;
    /// use tower_sluice::adaptive::AimdLayer;
    /// use tower_sluice::classify::Verdict;
    ///
    /// // Responses are HTTP-like status codes; a 429 asks for 5 s.
    /// let aimd = AimdLayer::new(Quota::per_second(10)).classify(|r: &Result<u16, tower_sluice::BoxError>| {
    ///     match r {
    ///         Ok(429) => Verdict::overloaded().with_retry_after(Duration::from_secs(5)),
    ///         Ok(500..) | Err(_) => Verdict::failure(),
    ///         Ok(_) => Verdict::success(),
    ///     }
    /// });
    /// # let _ = aimd;
    /// ```
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> AimdLayer<C2> {
        AimdLayer {
            core: self.core,
            classify,
        }
    }

    /// A handle to read the current rate.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::AimdLayer;
    /// let aimd = AimdLayer::new(Quota::per_minute(60));
    /// let handle = aimd.handle();
    /// // Setters may come after `handle()`: the handle follows the layer.
    /// let aimd = aimd.initial(30);
    /// assert_eq!(handle.quota(), Quota::per_minute(30));
    /// # let _ = aimd;
    /// ```
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
        Aimd::new(inner, self.core.get(), self.classify.clone())
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
