//! A driver for counting the instructions of one request through the
//! per-key layer with callgrind, where the wall clock of a shared machine
//! is too noisy to tell a few nanoseconds apart.
//!
//! ```text
//! cargo bench -p tower-sluice-bench --features axum --bench count_per_key --no-run
//! valgrind --tool=callgrind --toggle-collect='*count_per_key::run*' \
//!     target/release/deps/count_per_key-<hash> <case> 100000
//! ```
//!
//! Only the requests are counted (`--toggle-collect` on [`run`]): building
//! the service, prepaying the keys, quanta's calibration and the warm-up
//! requests are left out. Divide the total `Ir` by the number of requests.
//!
//! Cases, as `benches/per_key.rs` "service" (keys `u64`, prepaid, drawn
//! uniformly from N held keys; `poll_ready`, `call`, one poll):
//! `sluice_1k`, `sluice_100k`, `sluice_1m` (`PerKeyLayer`),
//! `governor_1k`, `governor_100k`, `governor_1m` (governor keyed in a
//! minimal service), `sluice_check_1k` (the in-memory decision alone,
//! `Backend::acquire_now`), `bare`. As `benches/http.rs` (an axum router over
//! 1 000 peer IPs; `router.clone().oneshot(req)`, requests built before
//! counting): `http_bare`, `http_identity`, `http_floor` (inserts our two
//! fields, static values), `http_sluice`, `http_sluice_quiet` (no success
//! headers), `http_governor`, `http_governor_quiet`. Without callgrind it
//! prints the time per request too.

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, StatusCode};
use support::{GovernorKeyedService, bare, drive, key_sequence, mix};
use tower::{Layer, Service, ServiceExt};
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_sluice::backend::{Acquire, Backend};
use tower_sluice::http::PeerIp;
use tower_sluice::{PerKeyLayer, Quota};

/// 1e9 per hour, burst 1e9; each key prepaid half of it.
const PER_HOUR: u32 = 1_000_000_000;
const PREPAY: u32 = PER_HOUR / 2;
const IPS: usize = 1_000;

/// The requests callgrind counts.
#[inline(never)]
fn run(n: u64, op: &mut dyn FnMut(u64)) {
    for i in 0..n {
        op(black_box(i));
    }
}

fn service<S>(mut svc: S, keys: &[u64], n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    // Warm-up: every key once.
    for &k in keys.iter().take(keys.len().min(1 << 16)) {
        drive(&mut svc, &mut cx, k);
    }
    let mask = keys.len() - 1;
    let start = Instant::now();
    run(n, &mut |i| {
        black_box(drive(&mut svc, &mut cx, keys[i as usize & mask]));
    });
    report(start, n);
}

fn report(start: Instant, n: u64) {
    let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("{n} requests, {ns:.2} ns each");
}

fn per_key(case: &str, n_keys: usize, n: u64) {
    let keys: Vec<u64> = (0..n_keys as u64).map(mix).collect();
    let seq = key_sequence(n_keys, 1 << 20, 0x5EED ^ n_keys as u64);
    if case.starts_with("sluice") {
        let key_fn: fn(&u64) -> Option<u64> = |req| Some(*req);
        let layer = PerKeyLayer::new(Quota::per_hour(PER_HOUR), key_fn).max_keys(2_000_000);
        let handle = layer.handle();
        let policy = handle.default_policy();
        for key in &keys {
            let paid = handle
                .backend()
                .acquire(key, &policy, PREPAY, Duration::ZERO);
            assert!(matches!(paid, Acquire::Ready(Ok(_))));
        }
        if case.starts_with("sluice_check") {
            let mem = handle.backend();
            let mask = seq.len() - 1;
            let start = Instant::now();
            run(n, &mut |i| {
                let key = seq[i as usize & mask];
                assert!(mem.acquire_now(&key, &policy, 1, Duration::ZERO).is_ok());
            });
            report(start, n);
        } else {
            service(layer.layer(bare()), &seq, n);
        }
        assert_eq!(handle.backend().len(), n_keys, "sluice keys changed");
    } else {
        let gov = governor::RateLimiter::keyed(governor::Quota::per_hour(
            NonZeroU32::new(PER_HOUR).expect("non-zero"),
        ));
        let prepay = NonZeroU32::new(PREPAY).expect("non-zero");
        for key in &keys {
            assert!(matches!(gov.check_key_n(key, prepay), Ok(Ok(()))));
        }
        let svc = GovernorKeyedService {
            limiter: Arc::new(gov),
            inner: bare(),
        };
        service(svc, &seq, n);
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

fn peers() -> Vec<SocketAddr> {
    (0..IPS)
        .map(|i| {
            let ip = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
            SocketAddr::new(IpAddr::V4(ip), 40_000 + i as u16)
        })
        .collect()
}

fn sluice_router(success_headers: bool) -> Router {
    let layer = PerKeyLayer::new(Quota::per_hour(PER_HOUR), PeerIp::new()).max_keys(2 * IPS);
    let handle = layer.handle();
    let policy = handle.default_policy();
    for peer in peers() {
        let paid = handle
            .backend()
            .acquire(&peer.ip(), &policy, PREPAY, Duration::ZERO);
        assert!(matches!(paid, Acquire::Ready(Ok(_))));
    }
    app().layer(layer.http().success_headers(success_headers))
}

fn governor_router(use_headers: bool) -> Router {
    let mut builder = GovernorConfigBuilder::default();
    builder.per_nanosecond(1).burst_size(u32::MAX);
    if use_headers {
        let config = builder.use_headers().finish().expect("a valid config");
        app().layer(GovernorLayer::new(Arc::new(config)))
    } else {
        let config = builder.finish().expect("a valid config");
        app().layer(GovernorLayer::new(Arc::new(config)))
    }
}

fn floor_router() -> Router {
    use axum::http::{HeaderName, HeaderValue};
    static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    static LIMIT: HeaderName = HeaderName::from_static("ratelimit");
    let policy = HeaderValue::from_static("\"per-hour\";q=1000000000;w=3600");
    let limit = HeaderValue::from_static("\"per-hour\";r=500000222;t=1");
    app().layer(tower::util::MapResponseLayer::new(
        move |mut res: axum::response::Response| {
            let headers = res.headers_mut();
            headers.insert(POLICY.clone(), policy.clone());
            headers.insert(LIMIT.clone(), limit.clone());
            res
        },
    ))
}

fn http_case(case: &str, n: u64) {
    let router = match case {
        "http_bare" => app(),
        "http_identity" => app().layer(tower::layer::layer_fn(|route| route)),
        "http_floor" => floor_router(),
        "http_sluice" => sluice_router(true),
        "http_sluice_quiet" => sluice_router(false),
        "http_governor" => governor_router(true),
        "http_governor_quiet" => governor_router(false),
        other => panic!("unknown case {other}"),
    }
    .with_state(());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let peers = peers();
    let request = |i: usize| {
        let mut req = Request::get("/").body(Body::empty()).expect("a request");
        req.extensions_mut().insert(ConnectInfo(peers[i % IPS]));
        req
    };
    let send = |req: Request<Body>| {
        let router = router.clone();
        async move {
            let res = match router.oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            assert_eq!(res.status(), StatusCode::OK, "request limited");
            black_box(res);
        }
    };
    rt.block_on(async {
        for i in 0..2 * IPS {
            send(request(i)).await;
        }
    });
    let mut reqs: Vec<Option<Request<Body>>> = (0..n as usize).map(|i| Some(request(i))).collect();
    let start = Instant::now();
    rt.block_on(async {
        run(n, &mut |i| {
            let req = reqs[i as usize].take().expect("a request");
            // Each request answers at once: one poll completes it.
            let fut = std::pin::pin!(send(req));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(fut.poll(&mut cx).is_ready(), "request pending");
        });
    });
    report(start, n);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this binary with no case: nothing to do.
    let Some(case) = args.get(1).filter(|a| !a.starts_with('-')) else {
        return;
    };
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    match case.as_str() {
        "bare" => service(bare(), &[0; 1024], n),
        "sluice_1k" | "governor_1k" | "sluice_check_1k" => per_key(case, 1_000, n),
        "sluice_100k" | "governor_100k" => per_key(case, 100_000, n),
        "sluice_1m" | "governor_1m" => per_key(case, 1_000_000, n),
        c if c.starts_with("http_") => http_case(c, n),
        other => panic!("unknown case {other}"),
    }
}
