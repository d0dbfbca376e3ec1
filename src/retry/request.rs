//! [`CloneRequest`]: how a request is kept for another attempt.

/// Decides whether a request can be sent again, and makes the copies.
///
/// The request is never required to be `Clone`: a policy that cannot copy
/// it returns `None` from [`first`](Self::first) (or
/// [`again`](Self::again)), and the request is sent once and its result
/// returned as it is.
///
/// Implemented for [`CloneRequests`] (the default: any `Clone` request),
/// for closures `Fn(&Req) -> Option<Req>` (for example
/// `|r: &reqwest::Request| r.try_clone()`), and with the `http` feature for
/// `HttpClone` and `HttpReplay`.
pub trait CloneRequest<Req> {
    /// What the inner service receives (for `HttpReplay`, the request with
    /// its body wrapped in a `ReplayBody`).
    type Request;
    /// What is kept between attempts to make the next copy.
    type Saved;

    /// Turns the caller's request into the first attempt's, keeping what
    /// later attempts need (`None`: the request is sent once).
    fn first(&self, req: Req) -> (Self::Request, Option<Self::Saved>);

    /// The request for another attempt (`None`: give up and return the
    /// last result).
    fn again(&self, saved: &Self::Saved) -> Option<Self::Request>;
}

/// The default request policy: any `Clone` request is cloned, once before
/// the first attempt and once per retry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloneRequests;

impl<Req: Clone> CloneRequest<Req> for CloneRequests {
    type Request = Req;
    type Saved = Req;

    #[inline]
    fn first(&self, req: Req) -> (Req, Option<Req>) {
        let saved = req.clone();
        (req, Some(saved))
    }

    #[inline]
    fn again(&self, saved: &Req) -> Option<Req> {
        Some(saved.clone())
    }
}

impl<F, Req> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    type Request = Req;
    type Saved = Req;

    fn first(&self, req: Req) -> (Req, Option<Req>) {
        let saved = self(&req);
        (req, saved)
    }

    fn again(&self, saved: &Req) -> Option<Req> {
        self(saved)
    }
}
