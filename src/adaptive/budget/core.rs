//! The shared state of a [`ProviderBudgetLayer`](super::ProviderBudgetLayer):
//! the two budgets, the pause an upstream asked for, and settlement.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::BoxError;
use crate::clock::Clock;
use crate::cost::Charge;
use crate::error::{ExceedsBurst, RateLimited};
use crate::gcra::{Decision, Reserved};
use crate::headers::provider::ProviderLimits;
use crate::headers::saturating_nanos;
use crate::limiter::Limiter;
use crate::quota::Quota;

/// The pause after a 429 that names no wait.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(1);

pub(crate) struct Core {
    pub(super) request_quotas: Vec<Quota>,
    pub(super) token_quotas: Vec<Quota>,
    pub(super) requests: Limiter,
    pub(super) tokens: Limiter,
    pub(super) max_wait: Duration,
    pub(super) max_upstream_wait: Duration,
    clock: Clock,
    /// No request is sent before this time (the clock's nanoseconds).
    pause_until: AtomicU64,
}

/// What one request holds of the budgets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    /// How long to wait before sending, in nanoseconds.
    pub(super) wait: u64,
    pub(super) estimate: u32,
    requests: Reserved,
    tokens: Option<Reserved>,
}

/// What a limiter could admit now: a peek's remaining counts the peeked
/// unit as taken.
fn available(limiter: &Limiter) -> u32 {
    let d = limiter.peek();
    if d.is_allowed() {
        d.remaining().saturating_add(1)
    } else {
        0
    }
}

fn limiter(quotas: &[Quota]) -> Limiter {
    let mut quotas = quotas.iter().copied();
    let first = quotas.next().expect("a budget holds a quota");
    quotas.fold(Limiter::new(first), Limiter::and)
}

impl Core {
    pub(super) fn new(requests: Quota, tokens: Quota) -> Self {
        Core {
            request_quotas: vec![requests],
            token_quotas: vec![tokens],
            requests: Limiter::new(requests),
            tokens: Limiter::new(tokens),
            max_wait: Duration::from_secs(60),
            max_upstream_wait: crate::headers::MAX_UPSTREAM_WAIT,
            clock: Clock::new(),
            pause_until: AtomicU64::new(0),
        }
    }

    /// A core with the same settings and fresh budgets, for a setter to
    /// edit; [`Core::rebuilt`] then makes its limiters.
    pub(super) fn fresh(&self) -> Core {
        Core {
            request_quotas: self.request_quotas.clone(),
            token_quotas: self.token_quotas.clone(),
            requests: limiter(&self.request_quotas),
            tokens: limiter(&self.token_quotas),
            max_wait: self.max_wait,
            max_upstream_wait: self.max_upstream_wait,
            clock: Clock::new(),
            pause_until: AtomicU64::new(0),
        }
    }

    /// Makes the limiters again from the quotas (after a setter changed them).
    pub(super) fn rebuild(&mut self) {
        self.requests = limiter(&self.request_quotas);
        self.tokens = limiter(&self.token_quotas);
    }

    /// How long sending stays paused for the upstream, in nanoseconds.
    pub(super) fn paused_for(&self) -> u64 {
        self.pause_until
            .load(Ordering::Relaxed)
            .saturating_sub(self.clock.now())
    }

    /// The error of a request that would wait `wait` nanoseconds for a
    /// pause, past the longest wait.
    pub(super) fn paused_past(&self, wait: u64) -> BoxError {
        let quota = self.request_quotas[0];
        let decision = Decision::remote(quota, quota.emission_nanos(), false, wait, wait);
        RateLimited::from_decision(&decision).into()
    }

    /// Reserves one request and `estimate` tokens, at the earliest time
    /// within the longest wait when both budgets have room and the
    /// upstream's pause is over.
    pub(super) fn admit(&self, estimate: u32) -> Result<Admission, BoxError> {
        if let Some(q) = self.token_quotas.iter().find(|q| estimate > q.burst()) {
            return Err(ExceedsBurst::new(estimate, *q).into());
        }
        let max_wait = saturating_nanos(self.max_wait);
        let paused = self.paused_for();
        if paused > max_wait {
            return Err(self.paused_past(paused));
        }
        let tokens = match estimate {
            0 => None,
            n => Some(
                self.tokens
                    .reserve(Charge::n(n), max_wait)
                    .map_err(|d| RateLimited::from_decision(&d))?,
            ),
        };
        let requests = match self.requests.reserve(Charge::ONE, max_wait) {
            Ok(r) => r,
            Err(d) => {
                if let Some(t) = &tokens {
                    self.tokens.refund(t, Charge::n(estimate));
                }
                return Err(RateLimited::from_decision(&d).into());
            }
        };
        let wait = requests.wait.max(tokens.map_or(0, |t| t.wait)).max(paused);
        Ok(Admission {
            wait,
            estimate,
            requests,
            tokens,
        })
    }

    /// Gives back what a request that was never sent reserved.
    pub(super) fn cancel(&self, a: &Admission) {
        self.requests.refund(&a.requests, Charge::ONE);
        if let Some(t) = &a.tokens {
            self.tokens.refund(t, Charge::n(a.estimate));
        }
    }

    /// Charges the true token count of a request admitted with `a`, as
    /// every settling layer does ([`Limiter`]'s settlement): more than the
    /// estimate is a debt, past the burst if need be, that later requests
    /// wait out; less is given back when no later request was admitted on
    /// the strength of the estimate.
    pub(super) fn settle(&self, a: &Admission, used: u64) {
        let used = u32::try_from(used).unwrap_or(u32::MAX);
        self.tokens.settle_n(a.tokens.as_ref(), a.estimate, used);
    }

    /// Follows what the upstream said: a pause for `Retry-After` or a
    /// spent budget (at most the upstream bound), and budgets brought down
    /// to what it says remains.
    pub(super) fn steer(&self, limits: &ProviderLimits, too_many: bool) {
        let cap = self.max_upstream_wait;
        let pause = match limits.pause(cap) {
            Some(p) => Some(p),
            None if too_many => Some(DEFAULT_429_PAUSE.min(cap)),
            None => None,
        };
        if let Some(p) = pause.filter(|p| !p.is_zero()) {
            let until = self.clock.now().saturating_add(saturating_nanos(p));
            self.pause_until.fetch_max(until, Ordering::Relaxed);
        }
        let sync = |limiter: &Limiter, theirs: Option<u64>| {
            let Some(theirs) = theirs else { return };
            let ours = available(limiter);
            if u64::from(ours) > theirs {
                // At most what remains: allowed, never a debt.
                let _ = limiter.check_n(ours - theirs as u32);
            }
        };
        sync(&self.requests, limits.requests.and_then(|b| b.remaining));
        sync(&self.tokens, limits.tokens.and_then(|b| b.remaining));
    }

    /// What remains of the request budget now.
    pub(super) fn requests_remaining(&self) -> u32 {
        available(&self.requests)
    }

    /// What remains of the token budget now.
    pub(super) fn tokens_remaining(&self) -> u32 {
        available(&self.tokens)
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderBudget")
            .field("requests", &self.request_quotas)
            .field("tokens", &self.token_quotas)
            .field("max_wait", &self.max_wait)
            .field("max_upstream_wait", &self.max_upstream_wait)
            .finish_non_exhaustive()
    }
}

/// Settles the true token count of one request, when it is known only
/// after the response (the `usage` of a JSON body, the end of a stream).
///
/// A [`ProviderBudget`](super::ProviderBudget) service puts one in the
/// extensions of each successful response its usage reader gave no count
/// for. Take it out before reading the body, then call
/// [`settle`](Self::settle) with the true count: more than the estimate
/// puts the token budget in debt, past its burst if need be (later
/// requests wait it out, as if the true count had been charged up front), less is
/// refunded when no later request was admitted on the strength of the
/// estimate. Dropped without settling, the estimate stands. Clones share
/// one settlement: only the first `settle` counts.
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::{ProviderBudgetLayer, TokenSettlement};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// // Daily budgets: nothing refills while the example runs.
/// let budget = ProviderBudgetLayer::new(Quota::per_day(1_000), Quota::per_day(10_000))
///     .estimate(|_: &http::Request<String>| 500);
/// let handle = budget.handle();
/// let provider = service_fn(|_req: http::Request<String>| async {
///     Ok::<_, BoxError>(http::Response::new(r#"{"usage":{"total_tokens":120}}"#.to_string()))
/// });
/// let mut response = budget.layer(provider).oneshot(http::Request::new("hi".into())).await?;
/// assert_eq!(handle.tokens_remaining(), 9_500);
/// let settlement = response.extensions_mut().remove::<TokenSettlement>().unwrap();
/// // ... read the body's usage ...
/// settlement.settle(120);
/// assert_eq!(handle.tokens_remaining(), 9_880);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TokenSettlement {
    core: Arc<Core>,
    admission: Admission,
    settled: Arc<AtomicBool>,
}

impl TokenSettlement {
    pub(super) fn new(core: Arc<Core>, admission: Admission) -> Self {
        TokenSettlement {
            core,
            admission,
            settled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The tokens charged up front for the request (the layer's
    /// [`estimate`](super::ProviderBudgetLayer::estimate)).
    pub fn estimate(&self) -> u32 {
        self.admission.estimate
    }

    /// Charges `tokens`, the request's true count, in place of the
    /// estimate. Only the first call of a settlement and its clones counts.
    ///
    /// # Examples
    ///
    /// See the [type docs](Self).
    pub fn settle(&self, tokens: u64) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            self.core.settle(&self.admission, tokens);
        }
    }
}

impl fmt::Debug for TokenSettlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSettlement")
            .field("estimate", &self.admission.estimate)
            .field("settled", &self.settled.load(Ordering::Relaxed))
            .finish()
    }
}
