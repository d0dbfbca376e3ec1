//! Keys: [`KeyExtractor`], how a request's key is found; [`Keyed`] and
//! [`KeyOf`], how a constructor learns the key type from an extractor; and
//! the extractors every layer shares ([`ConstKey`], [`NoKey`]).

use std::marker::PhantomData;

use crate::cost::Cost;

/// Finds the key a request is limited by (a client IP, an API key, a user
/// id), or `None` when it has none.
///
/// Implemented for every `Fn(&Req) -> Option<K>` closure; the `http`
/// feature adds extractors for IPs and headers. A type of your own that
/// implements it also implements [`Keyed`] (one line), so that
/// [`PerKeyLayer::new`](crate::PerKeyLayer::new) knows its key type.
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
    /// names it, where a closure shows as `{{closure}}`). It implements
    /// [`Keyed`] too, naming its key type once more, so that
    /// [`PerKeyLayer::new`](crate::PerKeyLayer::new) infers it:
    ///
    /// ```
    /// use tower_sluice::per_key::{KeyExtractor, Keyed};
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
    /// impl Keyed for ApiKey { type Key = String; }
    ///
    /// let req = Request { headers: vec![("x-api-key".into(), "k-42".into())] };
    /// assert_eq!(ApiKey.extract(&req).as_deref(), Some("k-42"));
    /// let layer = PerKeyLayer::new(Quota::per_minute(60), ApiKey);
    /// assert_eq!(layer.handle().policy(&"k-42".to_string()).quotas().next(), Some(Quota::per_minute(60)));
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

/// The key type of an extractor, whatever the request type: what lets
/// [`PerKeyLayer::new`](crate::PerKeyLayer::new) (and the other
/// constructors that take an extractor) infer the key type from a
/// non-closure extractor.
///
/// A closure's key type is its return type; a type's is this trait's
/// `Key`. Implement it beside [`KeyExtractor`] for an extractor of your
/// own, with the same `Key`. The crate's extractors ([`ConstKey`],
/// `PeerIp`, `ForwardedIp`, `HeaderKey`) implement it.
///
/// # Examples
///
/// An extractor generic over the request body, as HTTP extractors are:
///
/// ```
/// use tower_sluice::per_key::{KeyExtractor, Keyed};
/// use tower_sluice::{PerKeyLayer, Quota};
///
/// struct Request<B> { path: String, body: B }
///
/// /// The path's first segment (`/tenant-7/orders`: `tenant-7`).
/// #[derive(Clone)]
/// struct Tenant;
///
/// impl<B> KeyExtractor<Request<B>> for Tenant {
///     type Key = String;
///
///     fn extract(&self, req: &Request<B>) -> Option<String> {
///         req.path.split('/').nth(1).filter(|s| !s.is_empty()).map(String::from)
///     }
/// }
///
/// impl Keyed for Tenant { type Key = String; }
///
/// // `Keyed` gives the key type before any request (and its body type) is known.
/// let layer = PerKeyLayer::new(Quota::per_minute(600), Tenant);
/// let req = Request { path: "/tenant-7/orders".into(), body: () };
/// assert_eq!(Tenant.extract(&req).as_deref(), Some("tenant-7"));
/// ```
pub trait Keyed {
    /// The key type, the same as [`KeyExtractor::Key`].
    type Key;
}

/// What [`PerKeyLayer::new`](crate::PerKeyLayer::new) and the other
/// constructors that take an extractor read the key type from: a
/// closure's return type, or [`Keyed::Key`].
///
/// `M` tells the two kinds apart ([`ByClosure`] or [`ByKeyed`]); it is
/// inferred, never written. Implemented for every closure
/// `Fn(&Req) -> Option<K>` and every [`Keyed`] type; not implemented
/// otherwise.
///
/// # Examples
///
/// ```
/// use tower_sluice::per_key::KeyOf;
///
/// fn key_type<M, X: KeyOf<M>>(_: &X) -> &'static str {
///     std::any::type_name::<X::Key>()
/// }
/// assert_eq!(key_type(&|n: &u64| Some(*n)), "u64");
/// assert_eq!(key_type(&tower_sluice::per_key::ConstKey::new('a')), "char");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a key closure nor a `Keyed` extractor",
    label = "the key type of this extractor is unknown",
    note = "a key extractor is a closure `|req: &Req| -> Option<Key>` or a type implementing `KeyExtractor<Req>`; a type of your own also implements `Keyed` (`impl Keyed for {Self} {{ type Key = ...; }}`, the same key type)"
)]
pub trait KeyOf<M>: sealed::Sealed<M> {
    /// The key type.
    type Key;
}

/// The [`KeyOf`] marker of closures `Fn(&Req) -> Option<K>`.
///
/// # Examples
///
/// ```
/// use tower_sluice::per_key::{ByClosure, KeyOf};
///
/// fn closure_key<X: KeyOf<ByClosure<String>>>(_: X) {}
/// closure_key(|s: &String| Some(s.len()));
/// ```
pub struct ByClosure<Req>(PhantomData<fn(&Req)>);

/// The [`KeyOf`] marker of [`Keyed`] types.
///
/// # Examples
///
/// ```
/// use tower_sluice::per_key::{ByKeyed, ConstKey, KeyOf};
///
/// fn keyed<X: KeyOf<ByKeyed>>(_: X) {}
/// keyed(ConstKey::new("upstream"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ByKeyed;

impl<Req> std::fmt::Debug for ByClosure<Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByClosure")
    }
}

impl<F, Req, K> KeyOf<ByClosure<Req>> for F
where
    F: Fn(&Req) -> Option<K>,
{
    type Key = K;
}

impl<F, Req, K> sealed::Sealed<ByClosure<Req>> for F where F: Fn(&Req) -> Option<K> {}

impl<X: Keyed> KeyOf<ByKeyed> for X {
    type Key = X::Key;
}

impl<X: Keyed> sealed::Sealed<ByKeyed> for X {}

mod sealed {
    /// Only the crate's two impls of `KeyOf` exist.
    pub trait Sealed<M> {}
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
/// assert_eq!(layer.handle().policy(&"upstream-api").quotas().next(), Some(Quota::per_minute(600)));
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

impl<K> Keyed for ConstKey<K> {
    type Key = K;
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

impl Keyed for NoKey {
    type Key = std::convert::Infallible;
}

impl<Req> KeyExtractor<Req> for NoKey {
    type Key = std::convert::Infallible;

    #[inline]
    fn extract(&self, _: &Req) -> Option<std::convert::Infallible> {
        None
    }
}
