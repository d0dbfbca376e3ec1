//! [`TrustedProxies`]: the networks whose forwarding headers are believed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use super::peer::mask_v6;

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

/// The proxies whose forwarding headers [`ForwardedIp`](super::ForwardedIp) believes: IP
/// addresses and CIDR networks.
///
/// IPv4-mapped IPv6 entries (`::ffff:10.0.0.0/104`) are the IPv4 networks
/// they map (`10.0.0.0/8`), and an IPv4-mapped address (`::ffff:10.0.0.1`)
/// matches an IPv4 entry, so a dual-stack listener needs one entry per
/// network. List only your proxies' own addresses: see "Choosing a key"
/// in [`ForwardedIp`](super::ForwardedIp).
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

    /// Trusts no proxy: [`ForwardedIp`](super::ForwardedIp) then keys by the peer, like
    /// [`PeerIp`](super::PeerIp).
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
}
