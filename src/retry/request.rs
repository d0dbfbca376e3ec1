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
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::CloneRequest;
///
/// /// Retries only requests that are small enough to keep.
/// #[derive(Clone)]
/// struct SmallOnly;
/// impl CloneRequest<Vec<u8>> for SmallOnly {
///     type Request = Vec<u8>;
///     type Saved = Vec<u8>;
///     fn first(&self, req: Vec<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
///         let saved = (req.len() <= 1024).then(|| req.clone());
///         (req, saved)
///     }
///     fn again(&self, saved: &Vec<u8>) -> Option<Vec<u8>> {
///         Some(saved.clone())
///     }
/// }
///
/// assert!(SmallOnly.first(vec![0; 10]).1.is_some());
/// assert!(SmallOnly.first(vec![0; 4096]).1.is_none());
/// let layer = BackoffRetryLayer::default().clone_request(SmallOnly);
/// # let _ = layer;
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `{Req}` for another attempt",
    label = "not a request cloner for this request type",
    note = "`.http()` copies `http::Request`s whose body is `Clone` and `reqwest::Request`s (feature `reqwest`); `.http_replay()` replays streamed bodies; or pass a closure `|req: &{Req}| -> Option<{Req}>` to `clone_request`"
)]
pub trait CloneRequest<Req> {
    /// What the inner service receives (for `HttpReplay`, the request with
    /// its body wrapped in a `ReplayBody`).
    ///
    /// See the [trait's example](CloneRequest): `Vec<u8>` there; for
    /// `HttpReplay`, an `http::Request<ReplayBody<B>>`.
    type Request;
    /// What is kept between attempts to make the next copy.
    ///
    /// See the [trait's example](CloneRequest).
    type Saved;

    /// Turns the caller's request into the first attempt's, keeping what
    /// later attempts need (`None`: the request is sent once).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::retry::{CloneRequest, CloneRequests};
    ///
    /// let (sent, kept) = CloneRequests.first(String::from("GET /"));
    /// assert_eq!(kept.as_deref(), Some(sent.as_str()));
    /// ```
    fn first(&self, req: Req) -> (Self::Request, Option<Self::Saved>);

    /// The request for another attempt (`None`: give up and return the
    /// last result).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::retry::{CloneRequest, CloneRequests};
    ///
    /// let (_, kept) = CloneRequests.first(7_u32);
    /// assert_eq!(CloneRequests.again(&kept.unwrap()), Some(7));
    /// ```
    fn again(&self, saved: &Self::Saved) -> Option<Self::Request>;
}

/// The default request policy: any `Clone` request is cloned, once before
/// the first attempt and once per retry.
///
/// # Examples
///
/// ```
/// use tower_sluice::BackoffRetryLayer;
/// use tower_sluice::retry::CloneRequests;
///
/// // The default: `BackoffRetryLayer::default()` already uses it.
/// let layer = BackoffRetryLayer::default().clone_request(CloneRequests);
/// # let _ = layer;
/// ```
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
