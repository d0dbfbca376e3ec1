//! An axum `Router` called in-process, bare and behind each per-IP limit
//! layer: ours (`PerKeyLayer::http()`) and `tower_governor`'s
//! `GovernorLayer`, each with and without rate-limit headers on admitted
//! responses.
//!
//! ```text
//! cargo bench --bench http --features axum
//! ```
//!
//! The router has one route, `GET /`, answered by a handler returning a
//! static string, turned into a service by `with_state(())` as
//! `axum::serve` does (once per connection; without it, axum would rebuild
//! the route and apply the layer on every request). One request is
//! `router.clone().oneshot(req)` (what `axum::serve` does for each request)
//! on a prebuilt `Request<axum::body::Body>` carrying
//! `ConnectInfo<SocketAddr>` (what `into_make_service_with_connect_info`
//! inserts), awaited, its status checked (200, so a limited request cannot
//! go unnoticed) and the response dropped. Requests are built outside the timing, in chunks of [`CHUNK`],
//! and each chunk is driven inside one `block_on` of a current-thread tokio
//! runtime, so `block_on` costs nothing per request. The peer addresses
//! cycle over [`IPS`] distinct IPv4 addresses.
//!
//! Variants (the criterion group `router`):
//!
//! * `bare`: the router alone;
//! * `identity_layer`: `.layer(layer_fn(|route| route))`, a layer that does
//!   nothing: axum wraps every layered route in one more boxed `Route`,
//!   cloned per request, whose future is boxed too, and that cost comes
//!   with any layer;
//! * `headers_only_layer`: a `MapResponseLayer` that limits nothing and
//!   only inserts `RateLimit-Policy` and `RateLimit` with static values as
//!   long as ours: the least any layer sending those two fields adds;
//! * `sluice_headers`: `.layer(PerKeyLayer::new(quota, PeerIp::new()).http())`,
//!   success headers on (the default): `RateLimit-Policy` and `RateLimit`;
//! * `sluice_no_headers`: the same with `.success_headers(false)`;
//! * `governor_headers`: `GovernorLayer` with `PeerIpKeyExtractor` and
//!   `use_headers()`: `x-ratelimit-limit` and `x-ratelimit-remaining`;
//! * `governor_no_headers`: the same without `use_headers()`.
//!
//! After criterion's report, a summary measured in the same process: ns per
//! request of each variant (best of several runs, interleaved so that a slow
//! spell of a shared machine hits every variant alike), the cost each layer
//! adds to the bare router (and beyond the identity layer), and ours /
//! governor's added cost with and without headers.
//!
//! # Quotas: nothing is ever limited
//!
//! Ours: 1e9 per hour (burst 1e9), each IP first charged half its burst
//! (half an hour of debt) so that its bucket is not full again during the
//! run: as in `benches/per_key.rs`, a key whose bucket is full again is idle
//! and the store may forget it, which would turn lookups into inserts; a
//! real quota (100 per minute, say) keeps an active client's key in the
//! store the same way. A request then adds 3.6 µs of debt. Governor's store
//! keeps every key: one cell per nanosecond, burst `u32::MAX`. The header
//! values have the digits of a busy key on both sides (`RateLimit:
//! "per-hour";r=500000222;t=1`, `x-ratelimit-remaining: 4294967294`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use criterion::{Criterion, Throughput};
use http::{Request, StatusCode};
use tokio::runtime::Runtime;
use tower::ServiceExt;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_sluice::backend::{Acquire, Backend, Memory};
use tower_sluice::http::PeerIp;
use tower_sluice::per_key::PerKeyHandle;
use tower_sluice::{PerKeyLayer, Quota};

/// Distinct peer IPs the requests cycle over.
const IPS: usize = 1_000;

/// Requests built, then driven in one `block_on`, at a time.
const CHUNK: usize = 1_024;

/// Our quota: 1e9 per hour, burst 1e9 (3.6 µs of debt per request).
const PER_HOUR: u32 = 1_000_000_000;

/// Charged to each IP before the run: half the burst, half an hour of debt.
const PREPAY: u32 = PER_HOUR / 2;

// ---------------------------------------------------------------------------
// requests

/// [`IPS`] distinct peers in 198.18.0.0/15 (the benchmarking range).
fn peers() -> Vec<SocketAddr> {
    (0..IPS)
        .map(|i| {
            let ip = Ipv4Addr::new(198, 18, (i >> 8) as u8, i as u8);
            SocketAddr::new(IpAddr::V4(ip), 40_000 + i as u16)
        })
        .collect()
}

/// Builds requests from peers taken in turn.
struct Requests {
    peers: Vec<SocketAddr>,
    at: usize,
}

impl Requests {
    fn new() -> Self {
        Requests {
            peers: peers(),
            at: 0,
        }
    }

    /// `GET /` from the next peer, as `axum::serve` with connect info
    /// hands it to the router.
    fn next(&mut self) -> Request<Body> {
        let peer = self.peers[self.at % IPS];
        self.at = self.at.wrapping_add(1);
        let mut req = Request::get("/")
            .body(Body::empty())
            .expect("a valid request");
        req.extensions_mut().insert(ConnectInfo(peer));
        req
    }

    fn chunk(&mut self, n: usize) -> Vec<Request<Body>> {
        (0..n).map(|_| self.next()).collect()
    }
}

// ---------------------------------------------------------------------------
// routers

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello" }))
}

/// Our per-IP layer over [`app`], with its handle; every peer's key is
/// prepaid (see the module docs).
fn sluice(success_headers: bool) -> (Router, PerKeyHandle<IpAddr, Memory<IpAddr>>) {
    let layer = PerKeyLayer::new(Quota::per_hour(PER_HOUR), PeerIp::new()).max_keys(2 * IPS);
    let handle = layer.handle();
    let policy = handle.default_policy();
    for peer in peers() {
        let prepaid = handle
            .backend()
            .acquire(&peer.ip(), &policy, PREPAY, Duration::ZERO);
        assert!(matches!(prepaid, Acquire::Ready(Ok(_))), "prepay refused");
    }
    assert_eq!(handle.backend().len(), IPS);
    let router = app().layer(layer.http().success_headers(success_headers));
    (router, handle)
}

/// `tower_governor`'s builder: one cell per nanosecond, burst `u32::MAX`,
/// keyed by `PeerIpKeyExtractor` (the default).
fn governor_builder() -> GovernorConfigBuilder<
    tower_governor::key_extractor::PeerIpKeyExtractor,
    governor::middleware::NoOpMiddleware,
> {
    let mut builder = GovernorConfigBuilder::default();
    builder.per_nanosecond(1).burst_size(u32::MAX);
    builder
}

fn governor(use_headers: bool) -> Router {
    if use_headers {
        let config = governor_builder()
            .use_headers()
            .finish()
            .expect("a valid governor config");
        app().layer(GovernorLayer::new(Arc::new(config)))
    } else {
        let config = governor_builder()
            .finish()
            .expect("a valid governor config");
        app().layer(GovernorLayer::new(Arc::new(config)))
    }
}

/// A layer that changes nothing: what axum charges for any layer (a second
/// boxed `Route` to clone, and a second boxed future, per request).
fn identity(router: Router) -> Router {
    router.layer(tower::layer::layer_fn(|route| route))
}

/// A layer that limits nothing and only adds our two success fields, with
/// values as long as a busy key's, made once (no value built per response,
/// unlike a limiter's `RateLimit`): the least any layer sending these two
/// fields can add.
fn headers_floor(router: Router) -> Router {
    use axum::http::{HeaderName, HeaderValue};
    static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    static LIMIT: HeaderName = HeaderName::from_static("ratelimit");
    let policy = HeaderValue::from_static("\"per-hour\";q=1000000000;w=3600");
    let limit = HeaderValue::from_static("\"per-hour\";r=500000222;t=1");
    router.layer(tower::util::MapResponseLayer::new(
        move |mut res: axum::response::Response| {
            let headers = res.headers_mut();
            headers.insert(POLICY.clone(), policy.clone());
            headers.insert(LIMIT.clone(), limit.clone());
            res
        },
    ))
}

/// The router as `axum::serve` runs it: `with_state(())` turns every
/// handler into a `Route` (and applies the layers) once, not per request.
fn served(router: Router) -> Router {
    router.with_state(())
}

/// Every variant, in the summary's order.
struct Variants {
    bare: Router,
    identity: Router,
    floor: Router,
    ours: Router,
    ours_quiet: Router,
    gov: Router,
    gov_quiet: Router,
    handles: [PerKeyHandle<IpAddr, Memory<IpAddr>>; 2],
}

impl Variants {
    fn new() -> Self {
        let (ours, h1) = sluice(true);
        let (ours_quiet, h2) = sluice(false);
        Variants {
            bare: served(app()),
            identity: served(identity(app())),
            floor: served(headers_floor(app())),
            ours: served(ours),
            ours_quiet: served(ours_quiet),
            gov: served(governor(true)),
            gov_quiet: served(governor(false)),
            handles: [h1, h2],
        }
    }

    fn named(&self) -> [(&'static str, &Router); 7] {
        [
            ("bare", &self.bare),
            ("identity_layer", &self.identity),
            ("headers_only_layer", &self.floor),
            ("sluice_headers", &self.ours),
            ("sluice_no_headers", &self.ours_quiet),
            ("governor_headers", &self.gov),
            ("governor_no_headers", &self.gov_quiet),
        ]
    }

    /// Panics unless both of our stores still hold exactly the [`IPS`]
    /// prepaid keys (none forgotten, none added).
    fn assert_intact(&self) {
        for handle in &self.handles {
            assert_eq!(handle.backend().len(), IPS, "sluice keys changed");
        }
    }
}

// ---------------------------------------------------------------------------
// driving

/// Sends `reqs` through clones of `router` inside one `block_on`; the time
/// taken. Panics on any response but 200.
fn drive(rt: &Runtime, router: &Router, reqs: Vec<Request<Body>>) -> Duration {
    let start = Instant::now();
    rt.block_on(async {
        for req in reqs {
            let res = match router.clone().oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            assert_eq!(res.status(), StatusCode::OK, "request limited");
            black_box(res);
        }
    });
    start.elapsed()
}

/// `n` requests through `router`, built [`CHUNK`] at a time outside the
/// timing; the time spent driving them.
fn run(rt: &Runtime, router: &Router, requests: &mut Requests, n: u64) -> Duration {
    let mut left = n;
    let mut total = Duration::ZERO;
    while left > 0 {
        let take = left.min(CHUNK as u64);
        let reqs = requests.chunk(take as usize);
        total += drive(rt, router, reqs);
        left -= take;
    }
    total
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

// ---------------------------------------------------------------------------
// criterion

fn bench_router(c: &mut Criterion, rt: &Runtime, variants: &Variants) {
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(1));
    for (name, router) in variants.named() {
        let mut requests = Requests::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| run(rt, router, &mut requests, iters))
        });
    }
    g.finish();
    variants.assert_intact();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

// ---------------------------------------------------------------------------
// summary, timed in this process

const RUNS: usize = 40;
const ITERS: u64 = 50_000;

/// Best of [`RUNS`] runs of [`ITERS`] requests through each router, in ns
/// per request; the runs are interleaved (one of each per round).
fn best_ns<const N: usize>(rt: &Runtime, routers: [&Router; N]) -> [f64; N] {
    let mut requests: Vec<Requests> = routers.iter().map(|_| Requests::new()).collect();
    for (router, requests) in routers.iter().zip(&mut requests) {
        run(rt, router, requests, ITERS); // warm up
    }
    let mut best = [f64::INFINITY; N];
    for _ in 0..RUNS {
        for ((router, requests), best) in routers.iter().zip(&mut requests).zip(&mut best) {
            let t = run(rt, router, requests, ITERS);
            *best = best.min(t.as_secs_f64() * 1e9 / ITERS as f64);
        }
    }
    best
}

fn print_summary(rt: &Runtime, variants: &Variants) {
    let named = variants.named();
    let ns = best_ns(rt, named.map(|(_, r)| r));
    variants.assert_intact();
    let [bare, identity, floor, ours, ours_quiet, gov, gov_quiet] = ns;

    println!();
    println!(
        "summary: best of {RUNS} interleaved runs of {ITERS} requests, ns per request \
         (router.clone().oneshot(req), {IPS} peer IPs, nothing limited)"
    );
    for ((name, _), ns) in named.iter().zip(ns) {
        let added = if *name == "bare" {
            String::new()
        } else {
            format!(
                "  adds {:>6.1} ns ({:>6.1} ns beyond the identity layer)",
                ns - bare,
                ns - identity
            )
        };
        println!("  {name:<20} {ns:>7.1} ns{added}");
    }
    let ratio = |label: &str, ours: f64, gov: f64| {
        let (ours_added, gov_added) = (ours - bare, gov - bare);
        println!(
            "  {label:<12} sluice adds {ours_added:>6.1} ns, governor adds {gov_added:>6.1} ns: \
             ratio {:.2}; beyond the identity layer: ratio {:.2}",
            ours_added / gov_added,
            (ours - identity) / (gov - identity)
        );
    };
    ratio("headers on", ours, gov);
    ratio("headers off", ours_quiet, gov_quiet);
    println!(
        "  floor: a layer that limits nothing adds {:.2} of governor's added cost without \
         headers; one that only inserts our two fields (static values) {:.2} of it with headers",
        (identity - bare) / (gov_quiet - bare),
        (floor - bare) / (gov - bare)
    );
    println!(
        "  (ratio = sluice added / governor added; headers: sluice RateLimit-Policy + RateLimit, \
         governor x-ratelimit-limit + x-ratelimit-remaining; the identity layer is axum's \
         own cost of any layer)"
    );
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench`: criterion
    // runs each benchmark once; skip the summary.
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    let rt = runtime();
    let variants = Variants::new();

    let mut c = config().configure_from_args();
    bench_router(&mut c, &rt, &variants);
    c.final_summary();
    if bench {
        print_summary(&rt, &variants);
    }
}
