//! Key extractors for HTTP requests: the peer's IP, the client IP behind
//! trusted proxies, and a header such as an API key.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request};

use crate::per_key::KeyExtractor;

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

/// The address of the connection's peer, from the request's extensions: a
/// [`SocketAddr`] (or [`IpAddr`]) the server put there, or axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature; serve the router
/// with `into_make_service_with_connect_info::<SocketAddr>()`).
///
/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are read as IPv4, so a
/// dual-stack listener gives one key per client.
///
/// # Examples
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_sluice::http::peer_ip;
///
/// let mut req = http::Request::new(());
/// assert_eq!(peer_ip(&req), None);
/// req.extensions_mut().insert("[::ffff:192.0.2.7]:443".parse::<SocketAddr>().unwrap());
/// assert_eq!(peer_ip(&req), Some("192.0.2.7".parse::<IpAddr>().unwrap()));
/// ```
#[inline]
pub fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    #[cfg(feature = "axum")]
    if let Some(info) = ext.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip().to_canonical());
    }
    if let Some(addr) = ext.get::<SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    ext.get::<IpAddr>().map(IpAddr::to_canonical)
}

/// Keeps the first `prefix` bits of an IPv6 address (IPv4 unchanged).
fn mask_v6(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if prefix < 128 => {
            let bits =
                u128::from(v6) & (u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0));
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        ip => ip,
    }
}

/// Keys requests by the IP address of the connection's peer (see
/// [`peer_ip`]). Requests with no peer address have no key.
///
/// Behind a reverse proxy every request comes from the proxy: use
/// [`ForwardedIp`] with the proxy's address instead.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_sluice::http::PeerIp;
/// use tower_sluice::per_key::KeyExtractor;
///
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert("192.0.2.7:50123".parse::<SocketAddr>().unwrap());
/// assert_eq!(PeerIp::new().extract(&req), Some("192.0.2.7".parse::<IpAddr>().unwrap()));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PeerIp {
    ipv6_prefix: u8,
}

impl Default for PeerIp {
    fn default() -> Self {
        PeerIp { ipv6_prefix: 128 }
    }
}

impl PeerIp {
    /// Keys by the whole peer address.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_sluice::http::PeerIp;
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// let key = PeerIp::new();
    /// let mut req = http::Request::new(());
    /// assert_eq!(key.extract(&req), None); // no peer address: no key
    /// req.extensions_mut().insert("[2001:db8::7]:443".parse::<SocketAddr>().unwrap());
    /// assert_eq!(key.extract(&req), Some("2001:db8::7".parse::<IpAddr>().unwrap()));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Keys IPv6 peers by their first `bits` bits (for example 64: one key
    /// per subnet, as a single client often holds a whole /64 and could
    /// otherwise rotate addresses to escape its limit). At most 128.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_sluice::http::PeerIp;
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// let key = PeerIp::new().ipv6_prefix(64);
    /// let from = |addr: &str| {
    ///     let mut req = http::Request::new(());
    ///     req.extensions_mut().insert(addr.parse::<SocketAddr>().unwrap());
    ///     key.extract(&req)
    /// };
    /// // Two addresses of one /64: one key.
    /// assert_eq!(from("[2001:db8:0:1::7]:443"), from("[2001:db8:0:1::8]:443"));
    /// assert_eq!(from("[2001:db8:0:1::7]:443"), Some("2001:db8:0:1::".parse::<IpAddr>().unwrap()));
    /// ```
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }
}

impl<B> KeyExtractor<Request<B>> for PeerIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        peer_ip(req).map(|ip| mask_v6(ip, self.ipv6_prefix))
    }
}

/// One network of [`TrustedProxies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    fn parse(entry: &str) -> Option<Cidr> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr = addr.trim().parse::<IpAddr>().ok()?.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
            None => max,
        };
        let network = match addr {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            v6 => mask_v6(v6, prefix),
        };
        Some(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The proxies whose forwarding headers [`ForwardedIp`] believes: IP
/// addresses and CIDR networks.
///
/// ```
/// use tower_sluice::http::TrustedProxies;
///
/// let trusted = TrustedProxies::new(["10.0.0.0/8", "fd00::/8", "192.0.2.1"])?;
/// assert!(trusted.contains("10.1.2.3".parse()?));
/// assert!(!trusted.contains("192.0.2.2".parse()?));
///
/// // Or from configuration, comma-separated:
/// let trusted: TrustedProxies = "127.0.0.1, ::1".parse()?;
/// assert!(trusted.contains("::1".parse()?));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Arc<[Cidr]>,
}

impl TrustedProxies {
    /// Trusts each entry: an IP address (`192.0.2.1`, `::1`) or a CIDR
    /// network (`10.0.0.0/8`, `fd00::/8`).
    ///
    /// # Errors
    ///
    /// [`InvalidProxy`] naming the first entry that is neither.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::TrustedProxies;
    ///
    /// let trusted = TrustedProxies::new(["10.0.0.0/8", "::1"])?;
    /// assert!(trusted.contains("10.200.0.1".parse()?));
    ///
    /// let err = TrustedProxies::new(["10.0.0.0/8", "proxy.internal"]).unwrap_err();
    /// assert_eq!(err.entry(), "proxy.internal");
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn new<I>(entries: I) -> Result<Self, InvalidProxy>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nets = entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                Cidr::parse(entry).ok_or_else(|| InvalidProxy {
                    entry: entry.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets: nets.into() })
    }

    /// Trusts no proxy: [`ForwardedIp`] then keys by the peer, like
    /// [`PeerIp`].
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::TrustedProxies;
    ///
    /// assert!(!TrustedProxies::none().contains("127.0.0.1".parse()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether `ip` is a trusted proxy.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::TrustedProxies;
    ///
    /// let trusted = TrustedProxies::new(["192.0.2.0/24"])?;
    /// assert!(trusted.contains("192.0.2.200".parse()?));
    /// assert!(!trusted.contains("192.0.3.1".parse()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|net| net.contains(ip))
    }
}

impl FromStr for TrustedProxies {
    type Err = InvalidProxy;

    /// Comma-separated entries, as for [`TrustedProxies::new`]; empty
    /// trusts none.
    fn from_str(s: &str) -> Result<Self, InvalidProxy> {
        Self::new(s.split(',').map(str::trim).filter(|e| !e.is_empty()))
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.nets.iter().map(ToString::to_string))
            .finish()
    }
}

/// A trusted proxy entry was neither an IP address nor a CIDR network.
///
/// # Examples
///
/// ```
/// use tower_sluice::http::TrustedProxies;
///
/// let err = "10.0.0.0/8, 10.0.0.0/99".parse::<TrustedProxies>().unwrap_err();
/// assert_eq!(err.entry(), "10.0.0.0/99");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InvalidProxy {
    entry: String,
}

impl InvalidProxy {
    /// The entry that did not parse.
    ///
    /// # Examples
    ///
    /// ```
    /// use tower_sluice::http::TrustedProxies;
    ///
    /// let err = TrustedProxies::new(["localhost"]).unwrap_err();
    /// assert_eq!(err.entry(), "localhost");
    /// ```
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid trusted proxy `{}`: expected an IP address (192.0.2.1, ::1) \
             or a CIDR network (10.0.0.0/8, fd00::/8)",
            self.entry
        )
    }
}

impl std::error::Error for InvalidProxy {}

/// The header a [`ForwardedIp`] reads: the one your proxies append to.
///
/// # Examples
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_sluice::http::{ForwardedHeader, ForwardedIp, TrustedProxies};
/// use tower_sluice::per_key::KeyExtractor;
///
/// let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.1"])?).header(ForwardedHeader::Forwarded);
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert("10.0.0.1:80".parse::<SocketAddr>()?);
/// req.headers_mut().insert("forwarded", r#"for="[2001:db8::1]:4711""#.parse()?);
/// assert_eq!(key.extract(&req), Some("2001:db8::1".parse::<IpAddr>()?));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the default).
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
    /// Another header holding a comma-separated list of addresses in the
    /// `X-Forwarded-For` syntax (for example `x-real-ip` or
    /// `cf-connecting-ip`, set by the proxy).
    Named(HeaderName),
}

/// Keys requests by the client's IP address behind trusted reverse proxies.
///
/// The forwarding header is believed **only when the peer itself is a
/// trusted proxy**. Then its list is read from the right (the hop nearest
/// to us) and the first address that is not a trusted proxy is the client:
/// what a client writes into the header itself sits to the left of what
/// the proxies append, so it is never reached. When the peer is not
/// trusted, the header is ignored and the key is the peer's address: a
/// client talking to the server directly cannot pick its own key by
/// sending `X-Forwarded-For`.
///
/// If every address in the list is a trusted proxy, the leftmost is the
/// client; an entry that does not parse (such as `unknown` or an
/// obfuscated `Forwarded` identifier) stops the walk at the last trusted
/// hop before it. Read only the header your proxies append to (see
/// [`ForwardedHeader`]): a header the proxy passes through unchanged is
/// entirely the client's.
///
/// ```
/// use std::net::{IpAddr, SocketAddr};
/// use tower_sluice::http::{ForwardedIp, TrustedProxies};
/// use tower_sluice::per_key::KeyExtractor;
///
/// let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.0/8"])?);
/// let request = |peer: &str, xff: &str| {
///     let mut req = http::Request::new(());
///     req.extensions_mut().insert(peer.parse::<SocketAddr>().unwrap());
///     req.headers_mut().insert("x-forwarded-for", xff.parse().unwrap());
///     req
/// };
/// let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
///
/// // Through our proxy: the client it saw.
/// assert_eq!(key.extract(&request("10.0.0.5:1234", "203.0.113.9")), ip("203.0.113.9"));
/// // The client prepended a fake address: still the client the proxy saw.
/// assert_eq!(key.extract(&request("10.0.0.5:1234", "1.2.3.4, 203.0.113.9")), ip("203.0.113.9"));
/// // Straight from the internet, spoofing the header: the peer.
/// assert_eq!(key.extract(&request("198.51.100.4:999", "1.2.3.4")), ip("198.51.100.4"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ForwardedIp {
    trusted: TrustedProxies,
    header: ForwardedHeader,
    ipv6_prefix: u8,
}

impl ForwardedIp {
    /// Believes `X-Forwarded-For` from the `trusted` proxies.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_sluice::http::{ForwardedIp, TrustedProxies};
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// let key = ForwardedIp::new("10.0.0.1".parse::<TrustedProxies>()?);
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("10.0.0.1:80".parse::<SocketAddr>()?);
    /// req.headers_mut().insert("x-forwarded-for", "203.0.113.9".parse()?);
    /// assert_eq!(key.extract(&req), Some("203.0.113.9".parse::<IpAddr>()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(trusted: TrustedProxies) -> Self {
        ForwardedIp {
            trusted,
            header: ForwardedHeader::XForwardedFor,
            ipv6_prefix: 128,
        }
    }

    /// Reads `header` instead of `X-Forwarded-For`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use http::HeaderName;
    /// use tower_sluice::http::{ForwardedHeader, ForwardedIp, TrustedProxies};
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.1"])?)
    ///     .header(ForwardedHeader::Named(HeaderName::from_static("x-real-ip")));
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("10.0.0.1:80".parse::<SocketAddr>()?);
    /// req.headers_mut().insert("x-forwarded-for", "1.2.3.4".parse()?); // not read
    /// req.headers_mut().insert("x-real-ip", "203.0.113.9".parse()?);
    /// assert_eq!(key.extract(&req), Some("203.0.113.9".parse::<IpAddr>()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Keys IPv6 clients by their first `bits` bits, as
    /// [`PeerIp::ipv6_prefix`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_sluice::http::{ForwardedIp, TrustedProxies};
    /// use tower_sluice::per_key::KeyExtractor;
    ///
    /// let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.1"])?).ipv6_prefix(48);
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("10.0.0.1:80".parse::<SocketAddr>()?);
    /// req.headers_mut().insert("x-forwarded-for", "2001:db8:1:2::9".parse()?);
    /// assert_eq!(key.extract(&req), Some("2001:db8:1::".parse::<IpAddr>()?));
    /// assert_eq!(key.client_ip(&req), Some("2001:db8:1:2::9".parse::<IpAddr>()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// The client address of `req`, unmasked.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_sluice::http::{ForwardedIp, TrustedProxies};
    ///
    /// let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.0/8"])?).ipv6_prefix(64);
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert("10.0.0.2:80".parse::<SocketAddr>()?);
    /// req.headers_mut().insert("x-forwarded-for", "2001:db8::1, 10.0.0.1".parse()?);
    /// // The client behind both proxies, for logs: not masked to its /64.
    /// assert_eq!(key.client_ip(&req), Some("2001:db8::1".parse::<IpAddr>()?));
    /// # Ok::<_, Box<dyn std::error::Error>>(())
    /// ```
    pub fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = peer_ip(req)?;
        if !self.trusted.contains(peer) {
            return Some(peer);
        }
        let (name, forwarded) = match &self.header {
            ForwardedHeader::XForwardedFor => (&X_FORWARDED_FOR, false),
            ForwardedHeader::Forwarded => (&http::header::FORWARDED, true),
            ForwardedHeader::Named(name) => (name, false),
        };
        let mut client = peer;
        for value in req.headers().get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else {
                return Some(client);
            };
            for entry in value.rsplit(',') {
                let parsed = if forwarded {
                    forwarded_for(entry)
                } else {
                    parse_addr(entry)
                };
                let Some(ip) = parsed else {
                    return Some(client);
                };
                client = ip.to_canonical();
                if !self.trusted.contains(client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl<B> KeyExtractor<Request<B>> for ForwardedIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        self.client_ip(req).map(|ip| mask_v6(ip, self.ipv6_prefix))
    }
}

/// `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:80`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The `for=` address of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        parse_addr(value)
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_match() {
        let net = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        // An IPv4-mapped entry is IPv4.
        let mapped = Cidr::parse("::ffff:192.0.2.1").unwrap();
        assert_eq!(mapped.to_string(), "192.0.2.1/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_parse_in_every_spelling() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_addr(" 192.0.2.1 "), Some(v4));
        assert_eq!(parse_addr("192.0.2.1:8080"), Some(v4));
        assert_eq!(parse_addr("2001:db8::1"), Some(v6));
        assert_eq!(parse_addr("[2001:db8::1]"), Some(v6));
        assert_eq!(parse_addr("[2001:db8::1]:443"), Some(v6));
        assert_eq!(parse_addr("unknown"), None);
        assert_eq!(forwarded_for("for=192.0.2.1;proto=https"), Some(v4));
        assert_eq!(
            forwarded_for(r#" proto=http; For="[2001:db8::1]:4711""#),
            Some(v6)
        );
        assert_eq!(forwarded_for("for=_hidden"), None);
        assert_eq!(forwarded_for("by=192.0.2.1"), None);
    }

    #[test]
    fn ipv6_prefixes_mask_host_bits() {
        let ip: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(mask_v6(ip, 64), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(mask_v6(ip, 128), ip);
        assert_eq!(mask_v6(ip, 0), "::".parse::<IpAddr>().unwrap());
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(mask_v6(v4, 64), v4);
    }
}
