//! [`ForwardedIp`]: the client's address behind trusted proxies, from a
//! bounded right-to-left walk over the forwarding header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, Request};

use super::peer::{mask_v6, peer_ip};
use super::trusted::TrustedProxies;
use crate::per_key::{KeyExtractor, Keyed};

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
/// 2. the peer address ([`PeerIp`](super::PeerIp)), or this extractor with only your own
///    proxies trusted: never trust networks your clients live in, nor a
///    header your outermost proxy does not overwrite or append to;
/// 3. a header the client sets ([`HeaderKey`](super::HeaderKey)) only when the limit is a
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
    /// [`PeerIp::ipv6_prefix`](super::PeerIp::ipv6_prefix).
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

impl Keyed for ForwardedIp {
    type Key = IpAddr;
}

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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

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
}
