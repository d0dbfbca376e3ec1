//! `ForwardedIp` over arbitrary forwarding header lines (`X-Forwarded-For`,
//! `Forwarded`, a named header), from trusted and untrusted peers: no
//! panic; an untrusted peer is its own key; whatever the lines hold, what
//! the nearest proxy appends decides the key.

#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower_sluice::http::{ForwardedHeader, ForwardedIp, TrustedProxies};
use tower_sluice::per_key::KeyExtractor;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    header: u8,
    peer: u8,
    prefix: u8,
    lines: Vec<&'a [u8]>,
}

const PEERS: [(&str, bool); 5] = [
    ("10.0.0.1", true),
    ("::ffff:10.0.0.2", true),
    ("fd00::1", true),
    ("203.0.113.9", false),
    ("2001:db8::9", false),
];

fn request(peer: IpAddr, name: &HeaderName, lines: &[Vec<u8>]) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(SocketAddr::new(peer, 443));
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            req.headers_mut().append(name.clone(), value);
        }
    }
    req
}

fuzz_target!(|input: Input<'_>| {
    let trusted =
        TrustedProxies::new(["10.0.0.0/8", "fd00::/8", "::ffff:192.168.0.0/112"]).unwrap();
    let (header, name, forwarded) = match input.header % 3 {
        0 => (
            ForwardedHeader::XForwardedFor,
            HeaderName::from_static("x-forwarded-for"),
            false,
        ),
        1 => (
            ForwardedHeader::Forwarded,
            HeaderName::from_static("forwarded"),
            true,
        ),
        _ => {
            let name = HeaderName::from_static("x-real-ip");
            (ForwardedHeader::Named(name.clone()), name, false)
        }
    };
    let key = ForwardedIp::new(trusted).header(header);
    let (peer, peer_trusted) = PEERS[usize::from(input.peer) % PEERS.len()];
    let peer: IpAddr = peer.parse().unwrap();
    let lines: Vec<Vec<u8>> = input.lines.iter().map(|l| l.to_vec()).collect();

    let req = request(peer, &name, &lines);
    let client = key
        .client_ip(&req)
        .expect("a request with a peer has a key");
    assert_eq!(client, client.to_canonical(), "keys are canonical");
    if !peer_trusted {
        assert_eq!(
            client,
            peer.to_canonical(),
            "an untrusted peer is its own key"
        );
    }
    let bits = input.prefix % 129;
    let masked = key.clone().ipv6_prefix(bits).extract(&req);
    match (client, masked) {
        (IpAddr::V4(_), Some(m)) => assert_eq!(m, client),
        (IpAddr::V6(c), Some(IpAddr::V6(m))) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            assert_eq!(u128::from(m), u128::from(c) & mask);
        }
        other => panic!("masked key of another family: {other:?}"),
    }
    if !peer_trusted {
        return;
    }

    // What the nearest proxy appends wins, whatever came before it: as a
    // line of its own, after a trusted hop, or at the end of the last line.
    let real: IpAddr = "203.0.113.7".parse().unwrap();
    let entry = |addr: &str| {
        if forwarded {
            format!("for=\"{addr}\"")
        } else {
            addr.to_owned()
        }
    };
    let mut appended = lines.clone();
    appended.push(entry("203.0.113.7").into_bytes());
    assert_eq!(key.client_ip(&request(peer, &name, &appended)), Some(real));
    let mut via_hop = lines.clone();
    via_hop.push(format!("{}, {}", entry("203.0.113.7"), entry("10.1.2.3")).into_bytes());
    assert_eq!(key.client_ip(&request(peer, &name, &via_hop)), Some(real));
    if let Some(last) = lines.last() {
        let valid = |l: &[u8]| HeaderValue::from_bytes(l).is_ok();
        if lines.iter().all(|l| valid(l)) {
            let mut extended = lines.clone();
            let last_line = extended.last_mut().unwrap();
            last_line.extend_from_slice(b", ");
            last_line.extend_from_slice(entry("[::ffff:203.0.113.7]:80").as_bytes());
            if valid(last_line) {
                assert_eq!(
                    key.client_ip(&request(peer, &name, &extended)),
                    Some(real),
                    "{last:?}"
                );
            }
        }
    }
});
