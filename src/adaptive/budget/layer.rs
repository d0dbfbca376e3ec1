//! The layer of `adaptive::budget`: configuration, `Layer` and the handle.

use std::fmt;
use std::time::Duration;

use tower_layer::Layer;

use super::core::Core;
use super::service::ProviderBudget;
use super::{DefaultEstimate, SettleLater};
use crate::quota::Quota;
use crate::slot::Slot;

/// Keeps a client under an upstream AI provider's request and token
/// budgets. See the [module docs](crate::adaptive) for the other
/// adaptive layers.
///
/// Each request is charged one request and its estimated tokens
/// ([`estimate`](Self::estimate), by default [`DefaultEstimate`]) before it
/// is sent, and waits until both budgets have room (in the response
/// future). Its response corrects the estimate: the true count from
/// [`usage`](Self::usage), or from the [`TokenSettlement`](super::TokenSettlement)
/// the response carries; more than the estimate puts the token budget in
/// debt, less is refunded. What the upstream says steers both budgets
/// ([`ProviderLimits`](crate::adaptive::ProviderLimits)): a `Retry-After`,
/// or a budget it reports spent until its reset, pauses sending, at most
/// [`max_upstream_wait`](Self::max_upstream_wait); a remaining count lower
/// than this layer's brings its budget down to it. A 429 refunds the
/// request's tokens (the upstream did no work) and pauses sending for the
/// wait it names, or 1 s.
///
/// # Backpressure
///
/// The wait happens in the response future, after `call`, because the
/// cost depends on the request: `poll_ready` is the inner service's. The
/// inner service must be `Clone` (as `reqwest::Client` and hyper's client
/// are): a clone is sent each request when its turn comes. A request that
/// would wait longer than [`max_wait`](Self::max_wait) fails at once with
/// [`RateLimited`](crate::RateLimited) (its `retry_after` says how long it
/// would have waited) and consumes nothing; one whose estimate exceeds the
/// token budget's burst fails with [`ExceedsBurst`](crate::ExceedsBurst).
/// A request dropped before it is sent gives its reservation back when no
/// later request relied on it.
///
/// # Sharing
///
/// Every service made by the layer, and every clone, shares the budgets.
/// Configure the layer before wrapping services: a setter starts fresh
/// budgets, which the handle follows.
///
/// # Examples
///
/// A client of a provider that allows 500 requests and 30 000 tokens a
/// minute, with a fake provider standing for the HTTP client:
///
/// ```
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
/// use tower_sluice::adaptive::ProviderBudgetLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let budget = ProviderBudgetLayer::per_minute(500, 30_000)
///     // The prompt's tokens (4 bytes each) and the answer's `max_tokens`.
///     .estimate(|req: &http::Request<String>| (req.body().len() as u32).div_ceil(4) + 1_000)
///     // The answer's true count, from a header here (or settle it from the body).
///     .usage(|res: &http::Response<String>| {
///         res.headers().get("x-usage-total-tokens")?.to_str().ok()?.parse().ok()
///     });
/// let tokens = budget.handle();
/// let client = ServiceBuilder::new().layer(budget).service(service_fn(|_req| async {
///     let answer = http::Response::builder()
///         .header("x-usage-total-tokens", "420")
///         .header("x-ratelimit-remaining-tokens", "29000")
///         .body(String::from("an answer"))?;
///     Ok::<_, BoxError>(answer)
/// }));
/// client.oneshot(http::Request::new("a prompt".to_string())).await?;
/// // 420 tokens were used; the provider says 29 000 remain, and it knows best.
/// assert_eq!(tokens.tokens_remaining(), 29_000);
/// # Ok(())
/// # }
/// ```
///
/// Daily budgets beside the minute's, and a shorter wait:
///
/// ```
/// use std::time::Duration;
/// use tower_sluice::Quota;
/// use tower_sluice::adaptive::ProviderBudgetLayer;
///
/// // 500 requests and 30 000 tokens a minute, and 1 000 000 tokens a day.
/// let budget = ProviderBudgetLayer::per_minute(500, 30_000)
///     .and_tokens(Quota::per_day(1_000_000))
///     .max_wait(Duration::from_secs(30));
/// # let _ = budget;
/// ```
pub struct ProviderBudgetLayer<E = DefaultEstimate, U = SettleLater> {
    core: Slot<Core>,
    estimate: E,
    usage: U,
}

impl ProviderBudgetLayer {
    /// A request budget of `requests` and a token budget of `tokens`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::adaptive::ProviderBudgetLayer;
    ///
    /// // 50 requests a minute (at most 5 at once) and 40 000 tokens a minute.
    /// let budget = ProviderBudgetLayer::new(
    ///     Quota::per_minute(50).with_burst(5),
    ///     Quota::per_minute(40_000),
    /// );
    /// assert_eq!(budget.handle().token_quotas(), [Quota::per_minute(40_000)]);
    /// ```
    pub fn new(requests: Quota, tokens: Quota) -> Self {
        ProviderBudgetLayer {
            core: Slot::new(Core::new(requests, tokens)),
            estimate: DefaultEstimate,
            usage: SettleLater,
        }
    }

    /// `requests` requests and `tokens` tokens a minute, as providers
    /// publish them (RPM and TPM).
    ///
    /// # Panics
    ///
    /// When `requests` or `tokens` is 0, as [`Quota::per_minute`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::Quota;
    /// use tower_sluice::adaptive::ProviderBudgetLayer;
    ///
    /// let budget = ProviderBudgetLayer::per_minute(500, 30_000);
    /// assert_eq!(budget.handle().request_quotas(), [Quota::per_minute(500)]);
    /// ```
    pub fn per_minute(requests: u32, tokens: u32) -> Self {
        Self::new(Quota::per_minute(requests), Quota::per_minute(tokens))
    }
}

impl<E, U> ProviderBudgetLayer<E, U> {
    fn edit(self, f: impl FnOnce(&mut Core)) -> Self {
        self.core.replace(Core::fresh, f);
        self
    }

    /// Adds a quota to the request budget (a daily cap, say): a request
    /// waits until every quota has room.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000).and_requests(Quota::per_day(1_000));
    /// assert_eq!(budget.handle().request_quotas().len(), 2);
    /// ```
    #[must_use]
    pub fn and_requests(self, quota: Quota) -> Self {
        self.edit(|c| {
            c.request_quotas.push(quota);
            c.rebuild();
        })
    }

    /// Adds a quota to the token budget (a daily or monthly budget, say).
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::Quota;
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000).and_tokens(Quota::per_day(500_000));
    /// assert_eq!(budget.handle().token_quotas().len(), 2);
    /// ```
    #[must_use]
    pub fn and_tokens(self, quota: Quota) -> Self {
        self.edit(|c| {
            c.token_quotas.push(quota);
            c.rebuild();
        })
    }

    /// The longest a request waits for the budgets and for the upstream's
    /// pauses (default 60 s); a request that would wait longer fails at
    /// once with [`RateLimited`](crate::RateLimited).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// // An interactive client: fail after 5 s rather than keep a user waiting.
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000).max_wait(Duration::from_secs(5));
    /// # let _ = budget;
    /// ```
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        self.edit(|c| c.max_wait = max_wait)
    }

    /// The longest pause the upstream can impose (default
    /// [`MAX_UPSTREAM_WAIT`](crate::MAX_UPSTREAM_WAIT), 60 s): a
    /// `Retry-After`, or the reset of a budget it says is spent, is cut to
    /// it. `Duration::ZERO` ignores the waits the upstream asks for (its
    /// remaining counts still steer the budgets).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000).max_upstream_wait(Duration::from_secs(10));
    /// # let _ = budget;
    /// ```
    #[must_use]
    pub fn max_upstream_wait(self, max: Duration) -> Self {
        self.edit(|c| c.max_upstream_wait = max)
    }

    /// Estimates each request's tokens with `estimate` (default
    /// [`DefaultEstimate`]): a closure `|req: &Req| -> u32` or an
    /// [`EstimateTokens`](super::EstimateTokens). An estimate of 0 charges
    /// the request budget only.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// // Every call asks for at most 1 000 tokens of answer.
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000)
    ///     .estimate(|req: &reqwest::Request| {
    ///         let prompt = req.body().and_then(|b| b.as_bytes()).map_or(0, |b| b.len());
    ///         (prompt as u32).div_ceil(4) + 1_000
    ///     });
    /// # let _ = budget;
    /// ```
    #[must_use]
    pub fn estimate<E2>(self, estimate: E2) -> ProviderBudgetLayer<E2, U> {
        ProviderBudgetLayer {
            core: self.core,
            estimate,
            usage: self.usage,
        }
    }

    /// Reads each response's true token count with `usage` (default
    /// [`SettleLater`]): a closure `|res: &Res| -> Option<u64>` or a
    /// [`ReadUsage`](super::ReadUsage). When it gives `None`, the response
    /// carries a [`TokenSettlement`](super::TokenSettlement) instead.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// // The upstream's gateway reports usage in a header.
    /// let budget = ProviderBudgetLayer::per_minute(60, 10_000).usage(|res: &reqwest::Response| -> Option<u64> {
    ///     res.headers().get("x-usage-total-tokens")?.to_str().ok()?.parse().ok()
    /// });
    /// # let _ = budget;
    /// ```
    #[must_use]
    pub fn usage<U2>(self, usage: U2) -> ProviderBudgetLayer<E, U2> {
        ProviderBudgetLayer {
            core: self.core,
            estimate: self.estimate,
            usage,
        }
    }

    /// A handle to read the budgets.
    ///
    /// # Examples
    ///
    /// ```
    /// # use tower_sluice::adaptive::ProviderBudgetLayer;
    /// let handle = ProviderBudgetLayer::per_minute(60, 10_000).handle();
    /// assert_eq!(handle.requests_remaining(), 60);
    /// assert_eq!(handle.tokens_remaining(), 10_000);
    /// assert!(handle.paused_for().is_zero());
    /// ```
    pub fn handle(&self) -> ProviderBudgetHandle {
        ProviderBudgetHandle {
            core: self.core.clone(),
        }
    }
}

impl<E: Clone, U: Clone> Clone for ProviderBudgetLayer<E, U> {
    fn clone(&self) -> Self {
        ProviderBudgetLayer {
            core: self.core.clone(),
            estimate: self.estimate.clone(),
            usage: self.usage.clone(),
        }
    }
}

impl<S, E: Clone, U: Clone> Layer<S> for ProviderBudgetLayer<E, U> {
    type Service = ProviderBudget<S, E, U>;

    fn layer(&self, inner: S) -> Self::Service {
        ProviderBudget::new(
            inner,
            self.core.get(),
            self.estimate.clone(),
            self.usage.clone(),
        )
    }
}

impl<E, U> fmt::Debug for ProviderBudgetLayer<E, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderBudgetLayer")
            .field("core", &self.core)
            .field("estimate", &std::any::type_name::<E>())
            .field("usage", &std::any::type_name::<U>())
            .finish()
    }
}

/// Reads a [`ProviderBudgetLayer`]'s budgets. Cheap to clone.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::ProviderBudgetLayer;
///
/// let handle = ProviderBudgetLayer::per_minute(500, 30_000).handle();
/// assert_eq!(handle.tokens_remaining(), 30_000);
/// ```
#[derive(Clone)]
pub struct ProviderBudgetHandle {
    core: Slot<Core>,
}

impl ProviderBudgetHandle {
    /// The requests that could be sent now.
    pub fn requests_remaining(&self) -> u32 {
        self.core.load().requests_remaining()
    }

    /// The tokens that could be sent now (below zero, in debt: 0).
    pub fn tokens_remaining(&self) -> u32 {
        self.core.load().tokens_remaining()
    }

    /// How long sending stays paused for what the upstream said (zero:
    /// not paused).
    pub fn paused_for(&self) -> Duration {
        Duration::from_nanos(self.core.load().paused_for())
    }

    /// The request budget's quotas, in the order added.
    pub fn request_quotas(&self) -> Vec<Quota> {
        self.core.load().request_quotas.clone()
    }

    /// The token budget's quotas, in the order added.
    pub fn token_quotas(&self) -> Vec<Quota> {
        self.core.load().token_quotas.clone()
    }
}

impl fmt::Debug for ProviderBudgetHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderBudgetHandle")
            .field("core", &self.core)
            .finish()
    }
}
