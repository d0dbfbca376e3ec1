//! [`Backoff`]: how long to wait before each retry, and [`Jitter`].

use std::fmt;
use std::time::Duration;

use super::{ConfigError, invalid};
use crate::util::rng::{SplitMix, thread_seed};

/// How the delays grow from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Growth {
    /// `base * factor^n`.
    Exponential,
    /// `base * fib(n + 1)`: 1, 1, 2, 3, 5, 8, ... times `base`.
    Fibonacci,
}

/// How much randomness to add to each delay, so that many clients that
/// failed together do not retry together.
///
/// `d` below is the un-jittered delay of the retry, `min(max_delay,
/// base * factor^n)`; the result never exceeds `max_delay`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Equal);
/// for (n, delay) in backoff.delays().take(4).enumerate() {
///     // Equal jitter keeps at least half of the nominal 100, 200, 400, 800 ms.
///     let nominal = Duration::from_millis(100 << n);
///     assert!(delay >= nominal / 2 && delay <= nominal);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly `d`.
    None,
    /// Uniform in `[0, d]` (AWS's "full jitter"; the default).
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]` (AWS's "equal jitter").
    Equal,
    /// `min(max_delay, uniform(base, previous * 3))`, starting from
    /// `previous = base` (AWS's "decorrelated jitter"); ignores `factor`.
    Decorrelated,
    /// Uniform in `[d * (1 - f), d * (1 + f)]`, capped at `max_delay`
    /// (gRPC's ±20% is `Proportional(0.2)`). `f` must be in `[0, 1]`.
    Proportional(f64),
}

/// The delays between attempts: exponential (the default), constant or
/// Fibonacci, capped at [`max_delay`](Self::max_delay), with [`Jitter`].
///
/// Defaults: base 100 ms, factor 2, `max_delay` 10 s, full jitter. The
/// `n`-th retry (`n` from 0) waits about `min(max_delay, base * factor^n)`
/// before jitter. Settings are checked when the layer is built
/// ([`BackoffRetryLayer::try_new`](super::BackoffRetryLayer::try_new)) or
/// by [`validate`](Self::validate): a zero base, a factor below 1 or NaN,
/// a `max_delay` below the base and a proportional jitter outside `[0, 1]`
/// are errors naming the field.
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::retry::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(50))
///     .factor(3.0)
///     .max_delay(Duration::from_secs(2))
///     .jitter(Jitter::None);
/// let delays: Vec<_> = backoff.delays().take(5).collect();
/// assert_eq!(delays, [50, 150, 450, 1350, 2000].map(Duration::from_millis));
/// ```
///
/// See the [module docs](super).
#[derive(Clone, Copy, PartialEq)]
#[must_use]
pub struct Backoff {
    growth: Growth,
    base: Duration,
    factor: f64,
    max_delay: Duration,
    jitter: Jitter,
    seed: Option<u64>,
}

impl Default for Backoff {
    /// `Backoff::exponential(100 ms)` with the defaults above.
    fn default() -> Self {
        Backoff::exponential(Duration::from_millis(100))
    }
}

impl Backoff {
    /// `base * factor^n` for the `n`-th retry (factor 2 unless set), capped
    /// at `max_delay` (10 s unless set), with full jitter unless set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::None);
    /// let delays: Vec<_> = backoff.delays().take(4).collect();
    /// assert_eq!(delays, [100, 200, 400, 800].map(Duration::from_millis));
    /// ```
    pub fn exponential(base: Duration) -> Self {
        Backoff {
            growth: Growth::Exponential,
            base,
            factor: 2.0,
            max_delay: Duration::from_secs(10).max(base),
            jitter: Jitter::Full,
            seed: None,
        }
    }

    /// The same delay `delay` before every retry, without jitter unless
    /// set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::Backoff;
    ///
    /// let backoff = Backoff::constant(Duration::from_secs(1));
    /// assert!(backoff.delays().take(3).all(|d| d == Duration::from_secs(1)));
    /// ```
    pub fn constant(delay: Duration) -> Self {
        Backoff {
            factor: 1.0,
            max_delay: delay,
            jitter: Jitter::None,
            ..Backoff::exponential(delay)
        }
    }

    /// `base * fib(n + 1)` for the `n`-th retry (1, 1, 2, 3, 5, 8, ...
    /// times `base`), capped at `max_delay`, with full jitter unless set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::fibonacci(Duration::from_millis(100)).jitter(Jitter::None);
    /// let delays: Vec<_> = backoff.delays().take(5).collect();
    /// assert_eq!(delays, [100, 100, 200, 300, 500].map(Duration::from_millis));
    /// ```
    pub fn fibonacci(base: Duration) -> Self {
        Backoff {
            growth: Growth::Fibonacci,
            ..Backoff::exponential(base)
        }
    }

    /// The growth factor of exponential backoff (at least 1; default 2).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::exponential(Duration::from_millis(10)).factor(10.0).jitter(Jitter::None);
    /// let delays: Vec<_> = backoff.delays().take(3).collect();
    /// assert_eq!(delays, [10, 100, 1000].map(Duration::from_millis));
    /// // A factor below 1 would shrink the delays: refused when validated.
    /// assert!(backoff.factor(0.5).validate().is_err());
    /// ```
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The longest delay before a retry, jitter included (at least the
    /// base; default 10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::{Backoff, Jitter};
    ///
    /// let backoff = Backoff::exponential(Duration::from_secs(1))
    ///     .max_delay(Duration::from_secs(5))
    ///     .jitter(Jitter::None);
    /// let delays: Vec<_> = backoff.delays().take(5).collect();
    /// assert_eq!(delays, [1, 2, 4, 5, 5].map(Duration::from_secs));
    /// ```
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The longest single wait.
    pub(crate) fn max_delay_value(&self) -> Duration {
        self.max_delay
    }

    /// The jitter (default [`Jitter::Full`]; [`Jitter::None`] for
    /// [`constant`](Self::constant)).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::{Backoff, Jitter};
    ///
    /// // gRPC's ±20% around the nominal delay.
    /// let backoff = Backoff::exponential(Duration::from_secs(1)).jitter(Jitter::Proportional(0.2));
    /// let first = backoff.delays().next().unwrap();
    /// assert!(first >= Duration::from_millis(800) && first <= Duration::from_millis(1200));
    /// ```
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Makes the jitter deterministic: the `k`-th request that retries
    /// through a layer (counting from 0) draws from a generator seeded with
    /// `seed` and `k`. For tests; by default each request draws from a
    /// per-thread generator seeded from the OS's randomness (no lock, no
    /// shared state).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::Backoff;
    ///
    /// let backoff = Backoff::exponential(Duration::from_millis(100)).seed(42);
    /// let a: Vec<_> = backoff.delays().take(5).collect();
    /// let b: Vec<_> = backoff.delays().take(5).collect();
    /// assert_eq!(a, b); // the same draws every time
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The configured cap.
    pub fn get_max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Checks the settings; the error names the first invalid one.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] whose [`field`](ConfigError::field) is `base`,
    /// `factor`, `max_delay` or `jitter`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::Backoff;
    ///
    /// let err = Backoff::exponential(Duration::from_secs(1))
    ///     .max_delay(Duration::from_millis(500))
    ///     .validate()
    ///     .unwrap_err();
    /// assert_eq!(err.field(), "max_delay");
    /// assert!(Backoff::default().validate().is_ok());
    /// ```
    pub fn validate(self) -> Result<Self, ConfigError> {
        if self.base.is_zero() {
            return Err(invalid("base", "must be above zero"));
        }
        if self.factor.is_nan() || self.factor < 1.0 || self.factor.is_infinite() {
            return Err(invalid("factor", "must be a finite number >= 1"));
        }
        if self.max_delay < self.base {
            return Err(invalid("max_delay", "must be at least the base delay"));
        }
        if let Jitter::Proportional(f) = self.jitter
            && !(0.0..=1.0).contains(&f)
        {
            return Err(invalid("jitter", "a proportional jitter must be in [0, 1]"));
        }
        Ok(self)
    }

    /// The delays of the first request that retries through a layer with
    /// this backoff (with a [`seed`](Self::seed), exactly; otherwise one
    /// random draw). An endless iterator: take what you need.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sluice::retry::Backoff;
    ///
    /// // The worst case of 5 retries with full jitter: the sum of the caps.
    /// let backoff = Backoff::exponential(Duration::from_millis(100));
    /// let total: Duration = backoff.delays().take(5).sum();
    /// assert!(total <= Duration::from_millis(100 + 200 + 400 + 800 + 1600));
    /// ```
    pub fn delays(&self) -> Delays {
        Delays {
            backoff: *self,
            state: BackoffState::new(self.seed.map_or_else(thread_seed, |s| stream(s, 0))),
        }
    }

    /// The un-jittered delay of the `n`-th retry, capped.
    fn nominal(&self, n: u32) -> Duration {
        let mult = match self.growth {
            Growth::Exponential => self.factor.powi(n.min(i32::MAX as u32) as i32),
            Growth::Fibonacci => fib(n),
        };
        let secs = self.base.as_secs_f64() * mult;
        if !secs.is_finite() || secs >= self.max_delay.as_secs_f64() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs).min(self.max_delay)
        }
    }

    /// The jittered delay of the `n`-th retry.
    pub(crate) fn next_delay(&self, n: u32, state: &mut BackoffState) -> Duration {
        let d = self.nominal(n);
        let delay = match self.jitter {
            Jitter::None => d,
            Jitter::Full => state.rng.between(Duration::ZERO, d),
            Jitter::Equal => {
                let half = d / 2;
                half + state.rng.between(Duration::ZERO, d - half)
            }
            Jitter::Decorrelated => {
                let prev = state.prev.unwrap_or(self.base);
                let hi = prev.saturating_mul(3).min(self.max_delay).max(self.base);
                state.rng.between(self.base, hi)
            }
            Jitter::Proportional(f) => {
                let spread = d.mul_f64(f.clamp(0.0, 1.0));
                state
                    .rng
                    .between(d.saturating_sub(spread), d.saturating_add(spread))
            }
        };
        let delay = delay.min(self.max_delay);
        state.prev = Some(delay);
        delay
    }

    pub(crate) fn state_for(&self, k: u64) -> BackoffState {
        BackoffState::new(match self.seed {
            Some(seed) => stream(seed, k),
            None => thread_seed(),
        })
    }

    pub(crate) fn is_seeded(&self) -> bool {
        self.seed.is_some()
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Backoff");
        d.field("growth", &self.growth).field("base", &self.base);
        if self.growth == Growth::Exponential {
            d.field("factor", &self.factor);
        }
        d.field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .field("seeded", &self.seed.is_some())
            .finish()
    }
}

/// `fib(n + 1)` as f64: 1, 1, 2, 3, 5, ... (saturates to infinity).
fn fib(n: u32) -> f64 {
    let (mut a, mut b) = (1.0f64, 1.0f64);
    for _ in 0..n.min(2_000) {
        (a, b) = (b, a + b);
    }
    a
}

/// The delays of [`Backoff::delays`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::retry::{Backoff, Delays, Jitter};
///
/// let mut delays: Delays = Backoff::constant(Duration::from_secs(2)).jitter(Jitter::None).delays();
/// assert_eq!(delays.next(), Some(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    state: BackoffState,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let n = self.state.retries;
        self.state.retries = n.saturating_add(1);
        Some(self.backoff.next_delay(n, &mut self.state))
    }
}

/// The per-request state of a backoff: its generator and previous delay.
#[derive(Debug, Clone)]
pub(crate) struct BackoffState {
    rng: SplitMix,
    prev: Option<Duration>,
    retries: u32,
}

impl BackoffState {
    fn new(seed: u64) -> Self {
        BackoffState {
            rng: SplitMix::new(seed),
            prev: None,
            retries: 0,
        }
    }
}

/// The seed of the `k`-th stream of `seed`.
fn stream(seed: u64, k: u64) -> u64 {
    SplitMix::new(seed ^ k.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_without_jitter() {
        let b = Backoff::exponential(100 * MS).jitter(Jitter::None);
        let d: Vec<_> = b.delays().take(9).collect();
        let ms = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000];
        assert_eq!(d, ms.map(|m| m * MS));
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn fibonacci_and_constant() {
        let b = Backoff::fibonacci(10 * MS).jitter(Jitter::None);
        let d: Vec<_> = b.delays().take(6).collect();
        assert_eq!(d, [10, 10, 20, 30, 50, 80].map(|m| m * MS));
        let c = Backoff::constant(7 * MS);
        assert!(c.delays().take(4).all(|d| d == 7 * MS));
    }

    #[test]
    fn validation_names_the_field() {
        let f = |b: Backoff| b.validate().unwrap_err().field();
        assert_eq!(f(Backoff::exponential(Duration::ZERO)), "base");
        assert_eq!(f(Backoff::exponential(MS).factor(0.5)), "factor");
        assert_eq!(f(Backoff::exponential(MS).factor(f64::NAN)), "factor");
        assert_eq!(f(Backoff::exponential(10 * MS).max_delay(MS)), "max_delay");
        assert_eq!(
            f(Backoff::exponential(MS).jitter(Jitter::Proportional(1.5))),
            "jitter"
        );
        assert_eq!(
            f(Backoff::exponential(MS).jitter(Jitter::Proportional(f64::NAN))),
            "jitter"
        );
        assert!(Backoff::default().validate().is_ok());
    }

    #[test]
    fn seeded_streams_repeat_and_differ() {
        let b = Backoff::default().seed(42);
        let a: Vec<_> = b.delays().take(5).collect();
        assert_eq!(a, b.delays().take(5).collect::<Vec<_>>());
        let mut s1 = b.state_for(1);
        let other: Vec<_> = (0..5).map(|n| b.next_delay(n, &mut s1)).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn between_covers_the_range() {
        let mut g = SplitMix::new(1);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let d = g.between(10 * MS, 20 * MS);
            lo = lo.min(d);
            hi = hi.max(d);
        }
        assert!(lo >= 10 * MS && lo < 11 * MS, "{lo:?}");
        assert!(hi <= 20 * MS && hi > 19 * MS, "{hi:?}");
    }
}
