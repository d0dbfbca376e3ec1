//! Key extractors for HTTP requests: the peer's IP, the client IP behind
//! trusted proxies, and a header such as an API key.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Request};

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
            Some((addr, prefix)) => (addr, Some(prefix.trim().parse::<u8>().ok()?)),
            None => (entry, None),
        };
        let addr = addr.trim().parse::<IpAddr>().ok()?;
        // An IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4
        // network it maps (`10.0.0.0/8`), as peers and forwarded addresses
        // are read as IPv4. A shorter IPv6 prefix stays IPv6: it matches no
        // IPv4 address, so `::/0` does not trust every IPv4 peer.
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) if prefix.is_none_or(|p| p >= 96) => {
                    (IpAddr::V4(v4), prefix.map(|p| p - 96))
                }
                _ => (addr, prefix),
            },
            v4 => (v4, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if p > max => return None,
            Some(p) => p,
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
/// IPv4-mapped IPv6 entries (`::ffff:10.0.0.0/104`) are the IPv4 networks
/// they map (`10.0.0.0/8`), and an IPv4-mapped address (`::ffff:10.0.0.1`)
/// matches an IPv4 entry, so a dual-stack listener needs one entry per
/// network. List only your proxies' own addresses: see "Choosing a key"
/// in [`ForwardedIp`].
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
    /// network (`10.0.0.0/8`, `fd00::/8`, `::ffff:10.0.0.0/104`).
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
/// The header is read as bytes, entry by entry from the right: what lies
/// to the left of the entry that names the client (bytes that are not
/// text, quotes, more addresses) is never looked at. Several lines of the
/// header are one list, the last line rightmost. If every address in the
/// list is a trusted proxy, the leftmost is the client; an entry that is
/// not an address (such as `unknown`, an obfuscated `Forwarded`
/// identifier or a `Forwarded` element without `for=`) stops the walk at
/// the last trusted hop before it. Read only the header your proxies
/// append to (see [`ForwardedHeader`]): a header the proxy passes through
/// unchanged is entirely the client's.
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
///
/// # Bounded work
///
/// At most 16 entries (empty ones included) are examined, from the
/// right, and nothing is allocated. When all 16 are trusted proxies, the
/// key is the 16th, as if the list ended there. A client can only reach
/// the bound through entries it wrote itself, and the walk reaches those
/// only when the client's own address, which its first proxy appends, is
/// trusted: any other client stops the walk at its own address and cannot
/// use the bound to take a proxy's key. A client with a trusted address
/// can name any address anyway (see below).
///
/// # Choosing a key
///
/// A key a client can choose is a key it can change to escape its limit,
/// or set to someone else's to use up theirs. Prefer, in this order:
///
/// 1. an authenticated identity (a user or tenant id, an API key your
///    authentication layer has checked), read after authentication;
/// 2. the peer address ([`PeerIp`]), or this extractor with only your own
///    proxies trusted: never trust networks your clients live in, nor a
///    header your outermost proxy does not overwrite or append to;
/// 3. a header the client sets ([`HeaderKey`]) only when the limit is a
///    courtesy, not a protection: a client sending a new value each time
///    gets a new bucket each time.
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
        Some(self.walk(peer, req.headers()).0)
    }

    /// The client behind the trusted `peer`, and how many entries of the
    /// forwarding header were examined to find it.
    fn walk(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, usize) {
        let (name, forwarded) = match &self.header {
            ForwardedHeader::XForwardedFor => (&X_FORWARDED_FOR, false),
            ForwardedHeader::Forwarded => (&http::header::FORWARDED, true),
            ForwardedHeader::Named(name) => (name, false),
        };
        let mut client = peer;
        let mut examined = 0;
        for value in headers.get_all(name).iter().rev() {
            let entries = RevEntries {
                rest: Some(value.as_bytes()),
                quotes: forwarded,
            };
            for entry in entries {
                if examined == MAX_HOPS {
                    return (client, examined);
                }
                examined += 1;
                let entry = trim_ows(entry);
                if entry.is_empty() {
                    // An empty list element, ignored as HTTP lists say.
                    continue;
                }
                let parsed = if forwarded {
                    forwarded_for(entry)
                } else {
                    parse_node(entry)
                };
                let Some(ip) = parsed else {
                    return (client, examined);
                };
                client = ip.to_canonical();
                if !self.trusted.contains(client) {
                    return (client, examined);
                }
            }
        }
        (client, examined)
    }
}

/// The most entries of a forwarding header [`ForwardedIp`] examines,
/// counted from the right (empty ones included).
const MAX_HOPS: usize = 16;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl<B> KeyExtractor<Request<B>> for ForwardedIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        self.client_ip(req).map(|ip| mask_v6(ip, self.ipv6_prefix))
    }
}

/// The comma-separated entries of one header line, from the right. With
/// `quotes`, a comma inside a quoted string (`Forwarded`) is no boundary.
///
/// Read from the right, an entry a proxy appended is split correctly
/// whatever the client wrote to the left of it (an unbalanced quote, say),
/// and each byte is looked at a bounded number of times.
struct RevEntries<'a> {
    rest: Option<&'a [u8]>,
    quotes: bool,
}

impl<'a> Iterator for RevEntries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut quoted = false;
        let mut i = rest.len();
        while i > 0 {
            i -= 1;
            match rest[i] {
                b',' if !quoted => {
                    self.rest = Some(&rest[..i]);
                    return Some(&rest[i + 1..]);
                }
                // Read backwards, a quote ends a quoted string unless an
                // odd number of backslashes escapes it.
                b'"' if self.quotes => {
                    if !quoted {
                        quoted = true;
                    } else {
                        let slashes = rest[..i].iter().rev().take_while(|b| **b == b'\\').count();
                        quoted = slashes % 2 == 1;
                    }
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// `bytes` without the spaces and tabs around it.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// The longest address entry read, in bytes, spaces around it excluded
/// (`[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535` is 53, an
/// obfuscated `Forwarded` port may be longer).
const MAX_NODE_LEN: usize = 128;

/// `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:80` (the port may be an obfuscated `_name`, as RFC 7239
/// allows).
fn parse_node(entry: &[u8]) -> Option<IpAddr> {
    let entry = trim_ows(entry);
    if entry.len() > MAX_NODE_LEN {
        return None;
    }
    let s = std::str::from_utf8(entry).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return ip.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (ip, port) = s.split_once(':')?;
    if !is_port(port) {
        return None;
    }
    ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number, or an obfuscated port (`_` then letters, digits, `.`,
/// `_`, `-`).
fn is_port(s: &str) -> bool {
    match s.strip_prefix('_') {
        Some(name) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => (1..=5).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.1`,
/// `proto=https;for="[2001:db8::1]:4711"`). `None` when the element has no
/// `for`, has it twice, or is malformed.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut node = None;
    let mut rest = element;
    loop {
        let pair = trim_ows(rest);
        if pair.is_empty() {
            break;
        }
        let eq = pair.iter().position(|b| *b == b'=' || *b == b';')?;
        if pair[eq] != b'=' {
            return None;
        }
        let name = trim_ows(&pair[..eq]);
        let value = trim_ows(&pair[eq + 1..]);
        let (value, escaped, tail) = if let Some(inner) = value.strip_prefix(b"\"") {
            let mut i = 0;
            let mut escaped = false;
            loop {
                match inner.get(i)? {
                    b'\\' => {
                        escaped = true;
                        i += 2;
                    }
                    b'"' => break,
                    _ => i += 1,
                }
            }
            (&inner[..i], escaped, &inner[i + 1..])
        } else {
            let end = value.iter().position(|b| *b == b';').unwrap_or(value.len());
            (&value[..end], false, &value[end..])
        };
        if name.eq_ignore_ascii_case(b"for") {
            if node.is_some() || escaped {
                return None;
            }
            node = Some(value);
        }
        let tail = trim_ows(tail);
        match tail.split_first() {
            None => break,
            Some((b';', after)) => rest = after,
            Some(_) => return None,
        }
    }
    parse_node(node?)
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
        let mapped = Cidr::parse("::ffff:10.1.0.0/104").unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("::ffff:0:0/96").unwrap().to_string(),
            "0.0.0.0/0"
        );
        // A shorter prefix than the mapped range's is an IPv6 network.
        let wide = Cidr::parse("::ffff:10.0.0.0/95").unwrap();
        assert!(wide.network.is_ipv6());
        assert!(!wide.contains("10.0.0.1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/x",
            "1.2.3",
            "::ffff:10.0.0.0/129",
            "::ffff:10.0.0.0/-1",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn addresses_parse_in_every_spelling() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(parse_node(b" 192.0.2.1 "), Some(v4));
        assert_eq!(parse_node(b"192.0.2.1:8080"), Some(v4));
        assert_eq!(parse_node(b"192.0.2.1:_p0rt"), Some(v4));
        assert_eq!(parse_node(b"2001:db8::1"), Some(v6));
        assert_eq!(parse_node(b"[2001:db8::1]"), Some(v6));
        assert_eq!(parse_node(b"[2001:db8::1]:443"), Some(v6));
        for bad in [
            &b"unknown"[..],
            b"",
            b"192.0.2.1:",
            b"192.0.2.1:123456",
            b"[2001:db8::1]443",
            b"[192.0.2.1]",
            b"192.0.2.1\xC3\xA9",
            b"_hidden",
        ] {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
        assert_eq!(forwarded_for(b"for=192.0.2.1;proto=https"), Some(v4));
        assert_eq!(
            forwarded_for(br#" proto=http; For="[2001:db8::1]:4711""#),
            Some(v6)
        );
        assert_eq!(forwarded_for(br#"for=192.0.2.1;host="a;b,\"c""#), Some(v4));
        assert_eq!(forwarded_for(b"for=192.0.2.1;"), Some(v4));
        for bad in [
            &b"for=_hidden"[..],
            b"by=192.0.2.1",
            b"for=192.0.2.1;for=192.0.2.2",
            br#"for="192.0.2.1"#,
            br#"for="\192.0.2.1""#,
            b"for",
            b"for=192.0.2.1 proto=http",
        ] {
            assert_eq!(forwarded_for(bad), None, "{bad:?}");
        }
    }

    fn entries(value: &[u8], quotes: bool) -> Vec<&[u8]> {
        RevEntries {
            rest: Some(value),
            quotes,
        }
        .collect()
    }

    #[test]
    fn entries_split_from_the_right() {
        assert_eq!(entries(b"a, b,c", false), [&b"c"[..], b" b", b"a"]);
        assert_eq!(entries(b"", false), [&b""[..]]);
        assert_eq!(entries(b",", false), [&b""[..], b""]);
        // Quoted commas are no boundary; escaped quotes stay inside.
        let v = br#"for=a, for="b,c";x="\",y", for=d"#;
        assert_eq!(
            entries(v, true),
            [&b" for=d"[..], br#" for="b,c";x="\",y""#, b"for=a"]
        );
        assert_eq!(entries(br#"a="x\\", b"#, true), [&b" b"[..], br#"a="x\\""#]);
        // An unbalanced quote swallows only what is left of it.
        assert_eq!(entries(br#"a="x, b"#, true), [&b" b"[..], br#"a="x"#]);
    }

    #[test]
    fn the_walk_examines_a_bounded_number_of_entries() {
        let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.0/8"]).unwrap());
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let walk = |value: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.insert(&X_FORWARDED_FOR, HeaderValue::from_bytes(value).unwrap());
            key.walk(peer, &headers)
        };
        let mut chain = b"198.51.100.1".to_vec();
        for _ in 0..30_000 {
            chain.extend_from_slice(b", 10.0.0.2");
        }
        assert_eq!(walk(&chain), ("10.0.0.2".parse().unwrap(), MAX_HOPS));
        assert_eq!(walk(&vec![b','; 300_000]), (peer, MAX_HOPS));
        // Within the bound, the client.
        let mut short = b"198.51.100.1".to_vec();
        for _ in 0..MAX_HOPS - 1 {
            short.extend_from_slice(b", 10.0.0.2");
        }
        assert_eq!(walk(&short), ("198.51.100.1".parse().unwrap(), MAX_HOPS));
        short.extend_from_slice(b", 10.0.0.2");
        assert_eq!(walk(&short), ("10.0.0.2".parse().unwrap(), MAX_HOPS));
        assert_eq!(walk(b"203.0.113.7"), ("203.0.113.7".parse().unwrap(), 1));
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
