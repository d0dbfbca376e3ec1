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

/// The same key for every request: one bucket for all of them, kept in the
/// layer's backend. With a shared backend (Redis) that is one limit for the
/// whole fleet; see [`RateLimitLayer::shared`](crate::RateLimitLayer::shared).
///
/// ```
/// use tower_sluice::per_key::ConstKey;
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// let layer = PerKeyLayer::new(Quota::per_minute(600), ConstKey::new("upstream-api"));
/// # let _: &PerKeyLayer<&str, _> = &layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConstKey<K>(K);

impl<K> ConstKey<K> {
    /// Every request gets `key`.
    pub fn new(key: K) -> Self {
        ConstKey(key)
    }
}

impl<K: Clone, Req> KeyExtractor<Req> for ConstKey<K> {
    type Key = K;

    #[inline]
    fn extract(&self, _: &Req) -> Option<K> {
        Some(self.0.clone())
    }
}
