//! The peer's IP address: [`peer_ip`] and [`PeerIp`].

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::Request;

use crate::per_key::{KeyExtractor, Keyed};

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
pub(super) fn mask_v6(ip: IpAddr, prefix: u8) -> IpAddr {
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
/// [`ForwardedIp`](super::ForwardedIp) with the proxy's address instead.
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

impl Keyed for PeerIp {
    type Key = IpAddr;
}

impl<B> KeyExtractor<Request<B>> for PeerIp {
    type Key = IpAddr;

    #[inline]
    fn extract(&self, req: &Request<B>) -> Option<IpAddr> {
        peer_ip(req).map(|ip| mask_v6(ip, self.ipv6_prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
