//! [`RedisKey`]: how a request key becomes the bytes of a Redis key.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// A request key that can name a Redis key: it appends its bytes to the
/// backend's prefix.
///
/// Implemented for strings and byte strings (as they are), integers (in
/// decimal), IP addresses (in their usual text form), references, and
/// pairs (`(api_key, service)`), which are written unambiguously as
/// `<length of the first>:<first>:<second>` so that `("a:b", "c")` and
/// `("a", "b:c")` never share a bucket.
///
/// Two different keys must write different bytes, or they share a bucket.
///
/// # Examples
///
/// ```
/// use tower_sluice::backend::redis::{RedisBackend, RedisKey};
///
/// /// A tenant and user: written as `tenant/user`. Tenants contain no `/`,
/// /// so two different pairs never write the same bytes.
/// struct User { tenant: u32, name: String }
/// impl RedisKey for User {
///     fn write_key(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(format!("{}/{}", self.tenant, self.name).as_bytes());
///     }
/// }
///
/// let backend = RedisBackend::from_url("redis://127.0.0.1:6379")?;
/// let key = backend.redis_key(&User { tenant: 7, name: "ann".into() });
/// assert_eq!(key, b"sluice:7/ann");
/// // Pairs are written unambiguously.
/// assert_eq!(backend.redis_key(&("a:b", "c")), b"sluice:3:a:b:c");
/// # Ok::<(), redis::RedisError>(())
/// ```
pub trait RedisKey {
    /// Appends the key's bytes to `out`.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::backend::redis::RedisKey;
    ///
    /// let mut out = b"prefix:".to_vec();
    /// "ann".write_key(&mut out);
    /// assert_eq!(out, b"prefix:ann");
    /// ```
    fn write_key(&self, out: &mut Vec<u8>);
}

impl RedisKey for str {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl RedisKey for [u8] {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

macro_rules! via_deref {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_key(&self, out: &mut Vec<u8>) {
                (**self).write_key(out)
            }
        }
    )*};
}

via_deref!(
    String,
    Vec<u8>,
    Box<str>,
    Arc<str>,
    Box<[u8]>,
    Arc<[u8]>,
    Cow<'_, str>
);

impl<T: RedisKey + ?Sized> RedisKey for &T {
    fn write_key(&self, out: &mut Vec<u8>) {
        (**self).write_key(out)
    }
}

macro_rules! display {
    ($($t:ty),*) => {$(
        impl RedisKey for $t {
            fn write_key(&self, out: &mut Vec<u8>) {
                use std::io::Write;
                let _ = write!(out, "{self}");
            }
        }
    )*};
}

display!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, IpAddr, Ipv4Addr, Ipv6Addr
);

impl<A: RedisKey, B: RedisKey> RedisKey for (A, B) {
    fn write_key(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let mut first = Vec::new();
        self.0.write_key(&mut first);
        let _ = write!(out, "{}:", first.len());
        out.extend_from_slice(&first);
        out.push(b':');
        self.1.write_key(out);
    }
}

#[cfg(feature = "http")]
impl RedisKey for http::HeaderValue {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(k: &impl RedisKey) -> Vec<u8> {
        let mut out = Vec::new();
        k.write_key(&mut out);
        out
    }

    #[test]
    fn keys_write_their_bytes() {
        assert_eq!(bytes(&"user:{42}"), b"user:{42}");
        assert_eq!(bytes(&42u64), b"42");
        assert_eq!(bytes(&-7i32), b"-7");
        assert_eq!(bytes(&"10.0.0.1".parse::<IpAddr>().unwrap()), b"10.0.0.1");
        assert_eq!(bytes(&vec![0u8, 255]), vec![0u8, 255]);
        assert_eq!(bytes(&Arc::<str>::from("k")), b"k");
    }

    #[test]
    fn pairs_are_unambiguous() {
        assert_eq!(bytes(&("key", "text")), b"3:key:text");
        assert_ne!(bytes(&("a:b", "c")), bytes(&("a", "b:c")));
    }
}
