//! Keys: [`KeyExtractor`], how a request's key is found, and the
//! extractors every layer shares ([`ConstKey`], [`NoKey`]).

use crate::cost::Cost;

/// Finds the key a request is limited by (a client IP, an API key, a user
/// id), or `None` when it has none.
///
/// Implemented for every `Fn(&Req) -> Option<K>` closure; the `http`
/// feature adds extractors for IPs and headers.
///
/// # Examples
///
/// ```
/// use tower_sluice::per_key::KeyExtractor;
///
/// struct Req { user: Option<u64> }
/// let by_user = |req: &Req| req.user;
/// assert_eq!(by_user.extract(&Req { user: Some(7) }), Some(7));
/// assert_eq!(by_user.extract(&Req { user: None }), None);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot find the key of a `{Req}`",
    label = "not a key extractor for this request type",
    note = "a key extractor is a closure `|req: &{Req}| -> Option<Key>` or a type implementing `KeyExtractor<{Req}>` (`PeerIp`, `ForwardedIp`, `HeaderKey` for `http::Request`)"
)]
pub trait KeyExtractor<Req> {
    /// The key type.
    ///
    /// # Examples
    ///
    /// Any `Hash + Eq + Clone + Send + Sync` type can be a key, such as a user
    /// id where there is one and the client IP otherwise:
    ///
    /// ```
    /// use std::net::IpAddr;
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    /// enum Client {
    ///     User(u64),
    ///     Ip(IpAddr),
    /// }
    ///
    /// struct Request { user: Option<u64>, ip: IpAddr }
    ///
    /// let client = |req: &Request| Some(req.user.map_or(Client::Ip(req.ip), Client::User));
    /// let anonymous = Request { user: None, ip: [10, 0, 0, 1].into() };
    /// assert_eq!(client.extract(&anonymous), Some(Client::Ip([10, 0, 0, 1].into())));
    /// ```
    type Key;

    /// The request's key, or `None` when it has none.
    ///
    /// # Examples
    ///
    /// An extractor of your own, a named type (a layer's `Debug` output
    /// names it, where a closure shows as `{{closure}}`):
    ///
    /// ```
    /// use tower_sluice::per_key::KeyExtractor;
    /// use tower_sluice::{PerKeyLayer, Quota};
    ///
    /// struct Request { headers: Vec<(String, String)> }
    ///
    /// /// The `x-api-key` header.
    /// #[derive(Clone)]
    /// struct ApiKey;
    ///
    /// impl KeyExtractor<Request> for ApiKey {
    ///     type Key = String;
    ///
    ///     fn extract(&self, req: &Request) -> Option<String> {
    ///         req.headers.iter().find(|(name, _)| name == "x-api-key").map(|(_, v)| v.clone())
    ///     }
    /// }
    ///
    /// let req = Request { headers: vec![("x-api-key".into(), "k-42".into())] };
    /// assert_eq!(ApiKey.extract(&req).as_deref(), Some("k-42"));
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), ApiKey);
    /// # let _: PerKeyLayer<String, _> = layer;
    /// ```
    fn extract(&self, req: &Req) -> Option<Self::Key>;

    /// What the request costs (see the [`cost`](crate::cost) module): 1
    /// unless the layer was given a cost function
    /// ([`PerKeyLayer::cost`](crate::PerKeyLayer::cost), which wraps the
    /// extractor in a [`Costed`]). An extractor of your own may also
    /// answer it, so one type reads both the key and the cost.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// struct Upload { user: u64, bytes: u32 }
    ///
    /// /// The user, charged the upload's bytes.
    /// struct ByUser;
    /// impl KeyExtractor<Upload> for ByUser {
    ///     type Key = u64;
    ///     fn extract(&self, req: &Upload) -> Option<u64> {
    ///         Some(req.user)
    ///     }
    ///     fn cost(&self, req: &Upload) -> u32 {
    ///         req.bytes
    ///     }
    /// }
    /// assert_eq!(ByUser.cost(&Upload { user: 7, bytes: 1_500 }), 1_500);
    /// // A closure extractor charges 1.
    /// let by_user = |req: &Upload| Some(req.user);
    /// assert_eq!(by_user.cost(&Upload { user: 7, bytes: 1_500 }), 1);
    /// ```
    #[inline(always)]
    fn cost(&self, req: &Req) -> u32 {
        let _ = req;
        1
    }
}

/// A key extractor with a cost function: the extractor of a
/// [`PerKeyLayer`](crate::PerKeyLayer) given [`cost`](crate::PerKeyLayer::cost).
///
/// # Examples
///
/// ```
/// use tower_sluice::cost::One;
/// use tower_sluice::per_key::{Costed, KeyExtractor};
///
/// let by_user = Costed::new(|req: &(u64, u32)| Some(req.0), |req: &(u64, u32)| req.1);
/// assert_eq!(by_user.extract(&(7, 40)), Some(7));
/// assert_eq!(by_user.cost(&(7, 40)), 40);
/// # let _ = One;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Costed<X, C> {
    extractor: X,
    cost: C,
}

impl<X, C> Costed<X, C> {
    /// `extractor`'s keys, with `cost`'s costs.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::per_key::{Costed, KeyExtractor};
    ///
    /// let x = Costed::new(|n: &u32| Some(*n % 2), |n: &u32| *n);
    /// assert_eq!((x.extract(&5), x.cost(&5)), (Some(1), 5));
    /// ```
    pub fn new(extractor: X, cost: C) -> Self {
        Costed { extractor, cost }
    }
}

impl<X, C, Req> KeyExtractor<Req> for Costed<X, C>
where
    X: KeyExtractor<Req>,
    C: Cost<Req>,
{
    type Key = X::Key;

    #[inline]
    fn extract(&self, req: &Req) -> Option<X::Key> {
        self.extractor.extract(req)
    }

    #[inline]
    fn cost(&self, req: &Req) -> u32 {
        self.cost.cost(req)
    }
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
/// # Examples
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
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::per_key::{ConstKey, KeyExtractor};
    ///
    /// let key = ConstKey::new("upstream-api");
    /// assert_eq!(KeyExtractor::<u32>::extract(&key, &7), Some("upstream-api"));
    /// assert_eq!(KeyExtractor::<&str>::extract(&key, &"GET /"), Some("upstream-api"));
    /// ```
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

/// No key for retry events: the default of
/// [`BackoffRetryLayer::key`](crate::BackoffRetryLayer::key).
///
/// ```
/// use tower_sluice::per_key::KeyExtractor;
/// use tower_sluice::retry::NoKey;
///
/// assert!(KeyExtractor::<&str>::extract(&NoKey, &"GET /").is_none());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoKey;

impl<Req> KeyExtractor<Req> for NoKey {
    type Key = std::convert::Infallible;

    #[inline]
    fn extract(&self, _: &Req) -> Option<std::convert::Infallible> {
        None
    }
}
