//! The service of `adaptive::budget`.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::core::Core;
use super::future::BudgetFuture;
use super::{EstimateTokens, ProviderResponse, ReadUsage};
use crate::BoxError;

/// Keeps requests under an AI provider's request and token budgets. Made
/// by [`ProviderBudgetLayer`](super::ProviderBudgetLayer); see the
/// [module docs](crate::adaptive).
///
/// # Examples
///
/// ```
/// use tower::{service_fn, BoxError, Layer, ServiceExt};
/// use tower_sluice::adaptive::{ProviderBudget, ProviderBudgetLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), BoxError> {
/// let provider = service_fn(|_: http::Request<String>| async {
///     Ok::<_, BoxError>(http::Response::new(String::from("an answer")))
/// });
/// let client: ProviderBudget<_, _, _> = ProviderBudgetLayer::per_minute(60, 10_000).layer(provider);
/// let answer = client.oneshot(http::Request::new("a prompt".into())).await?;
/// assert_eq!(answer.body(), "an answer");
/// # Ok(())
/// # }
/// ```
pub struct ProviderBudget<S, E, U> {
    inner: S,
    core: Arc<Core>,
    estimate: E,
    usage: U,
}

impl<S, E, U> ProviderBudget<S, E, U> {
    pub(super) fn new(inner: S, core: Arc<Core>, estimate: E, usage: U) -> Self {
        ProviderBudget {
            inner,
            core,
            estimate,
            usage,
        }
    }

    crate::inner_accessors!();
}

impl<S, E, U, Req> Service<Req> for ProviderBudget<S, E, U>
where
    S: Service<Req> + Clone,
    S::Response: ProviderResponse,
    S::Error: Into<BoxError>,
    E: EstimateTokens<Req>,
    U: ReadUsage<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BudgetFuture<S, Req, U>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let estimate = self.estimate.estimate(&req);
        match self.core.admit(estimate) {
            Ok(admission) => {
                // The ready service goes with the request; a clone stays.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                BudgetFuture::admitted(inner, req, self.core.clone(), admission, self.usage.clone())
            }
            Err(error) => BudgetFuture::rejected(error),
        }
    }
}

impl<S: Clone, E: Clone, U: Clone> Clone for ProviderBudget<S, E, U> {
    fn clone(&self) -> Self {
        ProviderBudget::new(
            self.inner.clone(),
            self.core.clone(),
            self.estimate.clone(),
            self.usage.clone(),
        )
    }
}

impl<S: fmt::Debug, E, U> fmt::Debug for ProviderBudget<S, E, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderBudget")
            .field("inner", &self.inner)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}
