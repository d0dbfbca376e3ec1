//! The response future of a [`ProviderBudget`](super::ProviderBudget).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::StatusCode;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::core::{Admission, Core, TokenSettlement};
use super::{ProviderResponse, ReadUsage};
use crate::BoxError;
use crate::headers::provider::ProviderLimits;

pin_project! {
    /// The response future of a [`ProviderBudget`](super::ProviderBudget):
    /// waits for the budgets, sends the request, then settles its tokens
    /// and reads what the upstream says.
    pub struct BudgetFuture<S, Req, U>
    where
        S: Service<Req>,
    {
        #[pin]
        kind: Kind<S, Req, U>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, U>
    where
        S: Service<Req>,
    {
        Waiting {
            #[pin]
            sleep: Sleep,
            deadline: Instant,
            inner: S,
            req: Option<Req>,
            held: Held<U>,
        },
        Called {
            #[pin]
            future: S::Future,
            held: Held<U>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

/// A request's admission, given back if it is never sent.
struct Held<U> {
    core: Arc<Core>,
    admission: Admission,
    usage: Option<U>,
    sent: bool,
}

impl<U> Drop for Held<U> {
    fn drop(&mut self) {
        if !self.sent {
            self.core.cancel(&self.admission);
        }
    }
}

impl<S: Service<Req>, Req, U> BudgetFuture<S, Req, U> {
    pub(super) fn admitted(
        inner: S,
        req: Req,
        core: Arc<Core>,
        admission: Admission,
        usage: U,
    ) -> Self {
        let now = Instant::now();
        let deadline = now
            .checked_add(core.max_wait)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        let at = now
            .checked_add(Duration::from_nanos(admission.wait))
            .unwrap_or(deadline);
        BudgetFuture {
            kind: Kind::Waiting {
                sleep: tokio::time::sleep_until(at),
                deadline,
                inner,
                req: Some(req),
                held: Held {
                    core,
                    admission,
                    usage: Some(usage),
                    sent: false,
                },
            },
        }
    }

    pub(super) fn rejected(error: BoxError) -> Self {
        BudgetFuture {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<S, Req, U> Future for BudgetFuture<S, Req, U>
where
    S: Service<Req>,
    S::Response: ProviderResponse,
    S::Error: Into<BoxError>,
    U: ReadUsage<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.kind.as_mut().project() {
                KindProj::Waiting {
                    mut sleep,
                    deadline,
                    inner,
                    req,
                    held,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    // A pause the upstream asked for while this one waited.
                    let paused = held.core.paused_for();
                    if paused > 0 {
                        let until = Instant::now()
                            .checked_add(Duration::from_nanos(paused))
                            .unwrap_or(*deadline);
                        if until > *deadline {
                            let error = held.core.paused_past(paused);
                            this.kind.set(Kind::Rejected { error: Some(error) });
                            continue;
                        }
                        sleep.reset(until);
                        continue;
                    }
                    ready!(inner.poll_ready(cx)).map_err(Into::into)?;
                    let req = req.take().expect("a waiting request is sent once");
                    let future = inner.call(req);
                    held.sent = true;
                    let held = Held {
                        core: held.core.clone(),
                        admission: held.admission,
                        usage: held.usage.take(),
                        sent: true,
                    };
                    this.kind.set(Kind::Called { future, held });
                }
                KindProj::Called { future, held } => {
                    let mut result = ready!(future.poll(cx)).map_err(Into::into);
                    if let Ok(res) = &mut result {
                        held.complete(res);
                    }
                    return Poll::Ready(result);
                }
                KindProj::Rejected { error } => {
                    return Poll::Ready(Err(error.take().expect("polled after completion")));
                }
            }
        }
    }
}

impl<U> Held<U> {
    /// Steers by the response's fields and settles the request's tokens.
    fn complete<R: ProviderResponse>(&mut self, res: &mut R)
    where
        U: ReadUsage<R>,
    {
        let too_many = res.status() == StatusCode::TOO_MANY_REQUESTS;
        let limits = ProviderLimits::from_headers(res.headers());
        // Settled first, while a refund can still find the budget as the
        // request left it; then the upstream's word.
        if too_many {
            // The upstream did no work.
            self.core.settle(&self.admission, 0);
        } else {
            match self.usage.take().and_then(|u| u.usage(res)) {
                Some(used) => self.core.settle(&self.admission, used),
                None => {
                    res.extensions_mut()
                        .insert(TokenSettlement::new(self.core.clone(), self.admission));
                }
            }
        }
        self.core.steer(&limits, too_many);
    }
}

impl<S: Service<Req>, Req, U> fmt::Debug for BudgetFuture<S, Req, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Waiting { .. } => "Waiting",
            Kind::Called { .. } => "Called",
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_struct("BudgetFuture")
            .field("state", &state)
            .finish()
    }
}
