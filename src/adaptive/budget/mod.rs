//! [`ProviderBudgetLayer`]: a client that stays under an AI provider's
//! request *and* token budgets.

mod core;
mod future;
mod layer;
mod service;

pub use self::core::TokenSettlement;
pub use future::BudgetFuture;
pub use layer::{ProviderBudgetHandle, ProviderBudgetLayer};
pub use service::ProviderBudget;

use http::Extensions;

use crate::classify::HttpResponse;

/// Estimates a request's tokens before it is sent: what the token budget
/// is charged up front, corrected later from the response's usage.
///
/// Implemented for closures `Fn(&Req) -> u32` and for [`DefaultEstimate`].
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{EstimateTokens, ProviderBudgetLayer};
///
/// // A prompt's characters / 4, plus the `max_tokens` the request asks for.
/// let estimate = |req: &http::Request<String>| (req.body().len() as u32).div_ceil(4) + 512;
/// assert_eq!(estimate.estimate(&http::Request::new("x".repeat(400))), 612);
/// let budget = ProviderBudgetLayer::per_minute(500, 30_000).estimate(estimate);
/// # let _ = budget;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot estimate the tokens of a `{Req}`",
    note = "pass a closure `|req: &{Req}| -> u32`; `DefaultEstimate` reads `http::Request` bodies of known length and `reqwest::Request` (feature `reqwest`)"
)]
pub trait EstimateTokens<Req> {
    /// The tokens `req` is expected to cost, prompt and answer together.
    fn estimate(&self, req: &Req) -> u32;
}

impl<F, Req> EstimateTokens<Req> for F
where
    F: Fn(&Req) -> u32,
{
    fn estimate(&self, req: &Req) -> u32 {
        self(req)
    }
}

/// The default estimate: one token per 4 bytes of the request's body
/// (rounded up), plus 256 tokens for the answer; a body of unknown length
/// (a stream) is 1 024 tokens. Readable for `http::Request<B>` and, with
/// the feature `reqwest`, `reqwest::Request`.
///
/// Four bytes a token is the usual rule of thumb for English text with
/// GPT-style tokenizers; the JSON around a prompt makes it an
/// overestimate, which is the safe side: what a response's usage shows
/// was not used is refunded. Pass a closure to
/// [`ProviderBudgetLayer::estimate`] for a better one (a tokenizer, or the
/// request's `max_tokens`).
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{DefaultEstimate, EstimateTokens};
///
/// let req = http::Request::new(http_body_util::Full::new(bytes::Bytes::from("x".repeat(1_000))));
/// assert_eq!(DefaultEstimate.estimate(&req), 250 + 256);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultEstimate;

impl DefaultEstimate {
    /// Tokens for a body of `len` bytes, or unknown.
    fn of(len: Option<u64>) -> u32 {
        match len {
            Some(len) => u32::try_from(len.div_ceil(4))
                .unwrap_or(u32::MAX)
                .saturating_add(256),
            None => 1_024,
        }
    }
}

impl<B: http_body::Body> EstimateTokens<http::Request<B>> for DefaultEstimate {
    fn estimate(&self, req: &http::Request<B>) -> u32 {
        Self::of(req.body().size_hint().exact())
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl EstimateTokens<reqwest::Request> for DefaultEstimate {
    fn estimate(&self, req: &reqwest::Request) -> u32 {
        Self::of(
            req.body()
                .map_or(Some(0), |b| b.as_bytes().map(|b| b.len() as u64)),
        )
    }
}

/// Reads the true token count of a response, when the response says it
/// (a header, or what the inner service put in its extensions).
///
/// Implemented for closures `Fn(&Res) -> Option<u64>` and for
/// [`SettleLater`]. `None` leaves the count to a [`TokenSettlement`] in the
/// response's extensions.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{ProviderBudgetLayer, ReadUsage};
///
/// // An upstream (or a gateway in front of it) that reports usage in a header.
/// let usage = |res: &http::Response<String>| {
///     res.headers().get("x-usage-total-tokens")?.to_str().ok()?.parse().ok()
/// };
/// let res = http::Response::builder().header("x-usage-total-tokens", "812").body(String::new()).unwrap();
/// assert_eq!(usage.usage(&res), Some(812));
/// let budget = ProviderBudgetLayer::per_minute(500, 30_000).usage(usage);
/// # let _ = budget;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot read the token usage of a `{Res}`",
    note = "pass a closure `|res: &{Res}| -> Option<u64>`"
)]
pub trait ReadUsage<Res> {
    /// The tokens the request really cost, if the response says.
    fn usage(&self, res: &Res) -> Option<u64>;
}

impl<F, Res> ReadUsage<Res> for F
where
    F: Fn(&Res) -> Option<u64>,
{
    fn usage(&self, res: &Res) -> Option<u64> {
        self(res)
    }
}

/// The default usage reader: reads nothing, so every successful response
/// carries a [`TokenSettlement`] in its extensions (for the body's usage,
/// read by the caller); dropped unsettled, the estimate stands.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::{ReadUsage, SettleLater};
///
/// assert_eq!(SettleLater.usage(&http::Response::new(())), None);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettleLater;

impl<Res> ReadUsage<Res> for SettleLater {
    fn usage(&self, _: &Res) -> Option<u64> {
        None
    }
}

/// A response a [`ProviderBudget`] reads: status and headers (through
/// [`HttpResponse`]) and extensions, where it leaves a [`TokenSettlement`].
/// Implemented for `http::Response<B>` and, with the feature `reqwest`,
/// `reqwest::Response`.
///
/// # Examples
///
/// ```
/// use tower_sluice::adaptive::ProviderResponse;
///
/// fn settle_later<R: ProviderResponse>(res: &mut R) -> usize {
///     res.extensions_mut().len()
/// }
/// assert_eq!(settle_later(&mut http::Response::new(())), 0);
/// ```
pub trait ProviderResponse: HttpResponse {
    /// The response's extensions.
    fn extensions_mut(&mut self) -> &mut Extensions;
}

impl<B> ProviderResponse for http::Response<B> {
    fn extensions_mut(&mut self) -> &mut Extensions {
        http::Response::extensions_mut(self)
    }
}

#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
impl ProviderResponse for reqwest::Response {
    fn extensions_mut(&mut self) -> &mut Extensions {
        reqwest::Response::extensions_mut(self)
    }
}
