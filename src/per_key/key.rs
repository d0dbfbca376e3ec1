//! [`KeyExtractor`]: how a request's key is found.

/// Finds the key a request is limited by (a client IP, an API key, a user
/// id), or `None` when it has none.
///
/// Implemented for every `Fn(&Req) -> Option<K>` closure; the `http`
/// feature adds extractors for IPs and headers.
///
/// ```
/// use tower_sluice::per_key::KeyExtractor;
///
/// struct Req { user: Option<u64> }
/// let by_user = |req: &Req| req.user;
/// assert_eq!(by_user.extract(&Req { user: Some(7) }), Some(7));
/// assert_eq!(by_user.extract(&Req { user: None }), None);
/// ```
pub trait KeyExtractor<Req> {
    /// The key type.
    type Key;

    /// The request's key, or `None` when it has none.
    fn extract(&self, req: &Req) -> Option<Self::Key>;
}

impl<F, Req, K> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<K>,
{
    type Key = K;

    #[inline]
    fn extract(&self, req: &Req) -> Option<K> {
        self(req)
    }
}
