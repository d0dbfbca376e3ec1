//! [`HeaderKey`]: a header's value, such as an API key, as the key.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};

use crate::per_key::{KeyExtractor, Keyed};

/// The longest header value [`HeaderKey`] accepts by default, in bytes.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::{HeaderKey, MAX_KEY_LEN};
///
/// let key = HeaderKey::from_static("x-api-key");
/// let at_limit = http::Request::builder().header("x-api-key", "k".repeat(MAX_KEY_LEN)).body(()).unwrap();
/// let over = http::Request::builder().header("x-api-key", "k".repeat(MAX_KEY_LEN + 1)).body(()).unwrap();
/// assert!(key.key_of(&at_limit).is_some());
/// assert_eq!(key.key_of(&over), None);
/// ```
pub const MAX_KEY_LEN: usize = 256;

/// A key type [`HeaderKey`] can make from a header value. Implemented for
/// `String`, `Box<str>` and `Arc<str>` (the value must be UTF-8) and for
/// `Vec<u8>` and `Box<[u8]>` (any bytes); implement it for your own key
/// types (a parsed API key id, say).
///
/// The key must own its bytes: keeping the `HeaderValue` itself would keep
/// the connection's whole read buffer alive for as long as the key is
/// stored.
///
/// # Examples
///
/// ```
/// use http::HeaderValue;
/// use tower_sluice::http::{FromHeader, HeaderKey};
/// use tower_sluice::per_key::KeyExtractor;
///
/// /// Keys of the form `k-<number>`.
/// #[derive(Debug, Clone, PartialEq, Eq, Hash)]
/// struct ApiKeyId(u64);
///
/// impl FromHeader for ApiKeyId {
///     fn from_header(value: &HeaderValue) -> Option<Self> {
///         value.to_str().ok()?.strip_prefix("k-")?.parse().ok().map(ApiKeyId)
///     }
/// }
///
/// let key = HeaderKey::from_static("x-api-key").key_type::<ApiKeyId>();
/// let req = |v: &str| http::Request::builder().header("x-api-key", v).body(()).unwrap();
/// assert_eq!(key.extract(&req("k-42")), Some(ApiKeyId(42)));
/// assert_eq!(key.extract(&req("bogus")), None);
/// ```
pub trait FromHeader: Sized {
    /// The key for `value`, or `None` when it is not a valid key.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::HeaderValue;
    /// use tower_sluice::http::FromHeader;
    ///
    /// assert_eq!(String::from_header(&HeaderValue::from_static("k-1")), Some("k-1".to_string()));
    /// let bytes = HeaderValue::from_bytes(b"k\xff").unwrap();
    /// assert_eq!(String::from_header(&bytes), None); // not UTF-8
    /// assert_eq!(Vec::<u8>::from_header(&bytes), Some(vec![b'k', 0xff]));
    /// ```
    fn from_header(value: &HeaderValue) -> Option<Self>;
}

impl FromHeader for String {
    fn from_header(value: &HeaderValue) -> Option<Self> {
        std::str::from_utf8(value.as_bytes()).ok().map(Into::into)
    }
}

impl FromHeader for Box<str> {
    fn from_header(value: &HeaderValue) -> Option<Self> {
        std::str::from_utf8(value.as_bytes()).ok().map(Into::into)
    }
}

impl FromHeader for Arc<str> {
    fn from_header(value: &HeaderValue) -> Option<Self> {
        std::str::from_utf8(value.as_bytes()).ok().map(Into::into)
    }
}

impl FromHeader for Vec<u8> {
    fn from_header(value: &HeaderValue) -> Option<Self> {
        Some(value.as_bytes().to_vec())
    }
}

impl FromHeader for Box<[u8]> {
    fn from_header(value: &HeaderValue) -> Option<Self> {
        Some(value.as_bytes().into())
    }
}

/// Keys requests by a header's value, such as an API key in `x-api-key`.
///
/// The request has no key (so it gets
/// [`MissingKey`](crate::error::MissingKey), HTTP 400 by default) when the
/// header is absent, empty, longer than [`max_len`](Self::max_len) bytes
/// (default [`MAX_KEY_LEN`], so a client cannot make the limiter store
/// huge keys), not valid for the key type, or sent more than once (so the
/// limiter and an authentication layer reading the first value cannot
/// disagree on which key a request has).
///
/// The key is a `String` by default; [`key_type`](Self::key_type) picks
/// another [`FromHeader`] type (`Box<str>` saves 8 bytes per stored key,
/// `Vec<u8>` accepts any bytes).
///
/// ```
/// use tower_sluice::http::HeaderKey;
/// use tower_sluice::per_key::KeyExtractor;
///
/// let key = HeaderKey::from_static("x-api-key");
/// let req = http::Request::builder().header("x-api-key", "k-123").body(()).unwrap();
/// assert_eq!(key.extract(&req), Some("k-123".to_string()));
///
/// let huge = "k".repeat(1_000);
/// let req = http::Request::builder().header("x-api-key", huge).body(()).unwrap();
/// assert_eq!(key.extract(&req), None);
/// ```
pub struct HeaderKey<K = String> {
    name: HeaderName,
    max_len: usize,
    _key: PhantomData<fn() -> K>,
}

impl HeaderKey<String> {
    /// Keys by the value of header `name`, as a `String`.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::header::AUTHORIZATION;
    /// use tower_sluice::http::HeaderKey;
    ///
    /// let key = HeaderKey::new(AUTHORIZATION);
    /// let req = http::Request::builder().header("authorization", "Bearer t0k3n").body(()).unwrap();
    /// assert_eq!(key.key_of(&req).as_deref(), Some("Bearer t0k3n"));
    /// ```
    pub fn new(name: HeaderName) -> Self {
        HeaderKey {
            name,
            max_len: MAX_KEY_LEN,
            _key: PhantomData,
        }
    }

    /// Keys by the value of header `name`, as a `String`.
    ///
    /// # Panics
    ///
    /// When `name` is not a valid lowercase header name, as
    /// [`HeaderName::from_static`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::HeaderKey;
    ///
    /// let key = HeaderKey::from_static("x-tenant");
    /// let req = http::Request::builder().header("X-Tenant", "acme").body(()).unwrap();
    /// assert_eq!(key.key_of(&req).as_deref(), Some("acme"));
    /// ```
    pub fn from_static(name: &'static str) -> Self {
        Self::new(HeaderName::from_static(name))
    }
}

impl<K> HeaderKey<K> {
    /// Accepts values of at most `max_len` bytes (default
    /// [`MAX_KEY_LEN`]); longer ones count as no key.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::HeaderKey;
    ///
    /// let key = HeaderKey::from_static("x-api-key").max_len(8);
    /// let req = |v: &str| http::Request::builder().header("x-api-key", v).body(()).unwrap();
    /// assert!(key.key_of(&req("k-1234")).is_some());
    /// assert_eq!(key.key_of(&req("k-123456789")), None);
    /// ```
    #[must_use]
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Makes keys of type `K2` instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::HeaderKey;
    ///
    /// let key = HeaderKey::from_static("x-api-key").key_type::<Box<str>>();
    /// let req = http::Request::builder().header("x-api-key", "k-1").body(()).unwrap();
    /// assert_eq!(key.key_of(&req), Some(Box::from("k-1")));
    /// ```
    #[must_use]
    pub fn key_type<K2: FromHeader>(self) -> HeaderKey<K2> {
        HeaderKey {
            name: self.name,
            max_len: self.max_len,
            _key: PhantomData,
        }
    }

    /// The header's name.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::HeaderKey;
    ///
    /// assert_eq!(HeaderKey::from_static("x-api-key").name(), "x-api-key");
    /// ```
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl<K: FromHeader> HeaderKey<K> {
    /// The key of `req`, if it has a valid one (see the [type docs](Self)).
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::HeaderKey;
    ///
    /// let key = HeaderKey::from_static("x-api-key");
    /// let twice = http::Request::builder()
    ///     .header("x-api-key", "k-1")
    ///     .header("x-api-key", "k-2")
    ///     .body(())
    ///     .unwrap();
    /// assert_eq!(key.key_of(&twice), None); // sent twice: no key
    /// ```
    pub fn key_of<B>(&self, req: &Request<B>) -> Option<K> {
        let mut values = req.headers().get_all(&self.name).iter();
        let value = values.next()?;
        if values.next().is_some() || value.is_empty() || value.len() > self.max_len {
            return None;
        }
        K::from_header(value)
    }
}

impl<K> Keyed for HeaderKey<K> {
    type Key = K;
}

impl<K: FromHeader, B> KeyExtractor<Request<B>> for HeaderKey<K> {
    type Key = K;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<K> {
        self.key_of(req)
    }
}

impl<K> Clone for HeaderKey<K> {
    fn clone(&self) -> Self {
        HeaderKey {
            name: self.name.clone(),
            max_len: self.max_len,
            _key: PhantomData,
        }
    }
}

impl<K> fmt::Debug for HeaderKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderKey")
            .field("name", &self.name)
            .field("max_len", &self.max_len)
            .field("key", &std::any::type_name::<K>())
            .finish()
    }
}
