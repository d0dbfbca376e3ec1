//! `ForwardedIp` under hostile forwarding headers: bytes that are not
//! visible ASCII, several header lines, huge chains; `TrustedProxies` with
//! IPv4-mapped networks.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use http::{HeaderName, HeaderValue, Request};
use tower_sluice::http::{ForwardedHeader, ForwardedIp, TrustedProxies};
use tower_sluice::per_key::KeyExtractor;

/// A request from `peer` carrying each `(name, value)` as its own header
/// line, values as raw bytes.
fn raw(peer: &str, lines: &[(&str, &[u8])]) -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    for (name, value) in lines {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    req
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

fn via_10_0_0_1() -> ForwardedIp {
    ForwardedIp::new(TrustedProxies::new(["10.0.0.1"]).unwrap())
}

#[test]
fn bytes_a_client_wrote_left_of_its_address_do_not_move_its_key() {
    let key = via_10_0_0_1();
    for xff in [
        &b"\xC3\xA9, 203.0.113.7"[..],
        b"\xff\xfe, 203.0.113.7",
        b"1.2.3.4\x80\tx, 203.0.113.7",
        b"\"quoted, junk, 203.0.113.7",
    ] {
        let req = raw("10.0.0.1:80", &[("x-forwarded-for", xff)]);
        assert_eq!(key.extract(&req), ip("203.0.113.7"), "{xff:?}");
    }
    // The same bytes inside the proxy's own entry stop the walk there.
    let req = raw(
        "10.0.0.1:80",
        &[("x-forwarded-for", b"203.0.113.7\xC3\xA9")],
    );
    assert_eq!(key.extract(&req), ip("10.0.0.1"));
}

#[test]
fn forwarded_is_read_from_the_right_as_bytes() {
    let key = via_10_0_0_1().header(ForwardedHeader::Forwarded);
    let cases: [(&[u8], &str); 7] = [
        (b"for=\xC3\xA9, for=203.0.113.7", "203.0.113.7"),
        (b"for=\"\xff\", for=203.0.113.7;proto=https", "203.0.113.7"),
        (
            b"for=1.2.3.4, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "2001:db8:cafe::17",
        ),
        (b"for=\"203.0.113.7:5555\"", "203.0.113.7"),
        (b"For=\"[2001:db8::1]\"", "2001:db8::1"),
        // A quoted comma is no element boundary; a client's unbalanced
        // quote to the left does not swallow the proxy's element.
        (
            b"for=1.2.3.4, for=203.0.113.7;host=\"a,for=5.6.7.8\"",
            "203.0.113.7",
        ),
        (b"for=\"abc, for=203.0.113.7", "203.0.113.7"),
    ];
    for (fwd, client) in cases {
        let req = raw("10.0.0.1:80", &[("forwarded", fwd)]);
        assert_eq!(key.extract(&req), ip(client), "{fwd:?}");
    }
    // A trusted hop, then the client.
    let req = raw(
        "10.0.0.1:80",
        &[("forwarded", b"for=\xC3\xA9, for=203.0.113.7, for=10.0.0.1")],
    );
    assert_eq!(key.extract(&req), ip("203.0.113.7"));
}

#[test]
fn several_header_lines_are_one_list_walked_from_the_right() {
    let key = via_10_0_0_1();
    let req = raw(
        "10.0.0.1:80",
        &[
            ("x-forwarded-for", b"\xC3\xA9"),
            ("x-forwarded-for", b"203.0.113.7"),
        ],
    );
    assert_eq!(key.extract(&req), ip("203.0.113.7"));
    // Trusted entries on the last line: the walk goes on to the line before.
    let req = raw(
        "10.0.0.1:80",
        &[
            ("x-forwarded-for", b"\xC3\xA9, 198.51.100.2"),
            ("x-forwarded-for", b"10.0.0.1"),
            ("x-forwarded-for", b""),
            ("x-forwarded-for", b"10.0.0.1, 10.0.0.1"),
        ],
    );
    assert_eq!(key.extract(&req), ip("198.51.100.2"));
    let fwd = key.header(ForwardedHeader::Forwarded);
    let req = raw(
        "10.0.0.1:80",
        &[
            ("forwarded", b"for=\xC3\xA9, for=198.51.100.2"),
            ("forwarded", b"for=10.0.0.1;proto=http"),
        ],
    );
    assert_eq!(fwd.extract(&req), ip("198.51.100.2"));
}

/// A 300 KB chain of trusted entries (to the left of them, the address
/// the client wants): only the last few entries are examined, and the key
/// is never an address the chain's far end names.
#[test]
fn a_huge_chain_of_trusted_entries_costs_little() {
    let key = via_10_0_0_1();
    let mut chain = b"198.51.100.99".to_vec();
    while chain.len() < 300_000 {
        chain.extend_from_slice(b", 10.0.0.1");
    }
    let req = raw("10.0.0.1:80", &[("x-forwarded-for", &chain)]);
    // Past the bound the key is the last entry examined: a trusted one.
    assert_eq!(key.extract(&req), ip("10.0.0.1"));
    let start = Instant::now();
    for _ in 0..200 {
        assert_eq!(key.extract(&req), ip("10.0.0.1"));
    }
    // Walking the whole chain costs about a millisecond each (seconds in
    // a debug build); a bounded walk, microseconds.
    let took = start.elapsed();
    assert!(took < Duration::from_millis(200), "200 walks took {took:?}");

    // The same with `Forwarded`, and with one huge line of blank entries.
    let fwd = via_10_0_0_1().header(ForwardedHeader::Forwarded);
    let mut chain = b"for=198.51.100.99".to_vec();
    while chain.len() < 300_000 {
        chain.extend_from_slice(b", for=10.0.0.1");
    }
    let req = raw("10.0.0.1:80", &[("forwarded", &chain)]);
    let blanks = [&b"198.51.100.99"[..], &[b','; 300_000]].concat();
    let blank_req = raw("10.0.0.1:80", &[("x-forwarded-for", &blanks)]);
    let start = Instant::now();
    for _ in 0..200 {
        assert_eq!(fwd.extract(&req), ip("10.0.0.1"));
        assert_eq!(key.extract(&blank_req), ip("10.0.0.1"));
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(400), "400 walks took {took:?}");
}

#[test]
fn ipv4_mapped_networks_and_peers_match_ipv4() {
    let mapped = TrustedProxies::new(["::ffff:10.0.0.0/104"]).unwrap();
    let plain = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    for trusted in [&mapped, &plain] {
        assert!(trusted.contains("10.1.2.3".parse().unwrap()), "{trusted:?}");
        assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!trusted.contains("11.0.0.1".parse().unwrap()));
        assert!(!trusted.contains("::ffff:11.0.0.1".parse().unwrap()));
    }
    assert_eq!(mapped, plain);
    assert_eq!(format!("{mapped:?}"), r#"["10.0.0.0/8"]"#);
    let all_v4: TrustedProxies = "::ffff:0.0.0.0/96".parse().unwrap();
    assert!(all_v4.contains("203.0.113.1".parse().unwrap()));
    assert!(!all_v4.contains("2001:db8::1".parse().unwrap()));
    // Too long a prefix for the mapped range is still an error.
    let err = TrustedProxies::new(["::ffff:10.0.0.0/129"]).unwrap_err();
    assert_eq!(err.entry(), "::ffff:10.0.0.0/129");

    // A mapped peer through a mapped entry, end to end.
    let key = ForwardedIp::new(mapped);
    let req = raw(
        "[::ffff:10.0.0.5]:80",
        &[("x-forwarded-for", b"203.0.113.7")],
    );
    assert_eq!(key.extract(&req), ip("203.0.113.7"));
    let req = raw(
        "10.0.0.5:80",
        &[("x-forwarded-for", b"203.0.113.7, ::ffff:10.9.9.9")],
    );
    assert_eq!(key.extract(&req), ip("203.0.113.7"));
}
