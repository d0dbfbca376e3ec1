//! The HTTP integration: responses and their fields, key extractors, the
//! axum router bounds, the tier table of the example, a real axum server
//! (`server.rs`) and a real tonic server (`grpc.rs`).

#![cfg(all(feature = "http", feature = "axum"))]

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::routing::{Route, get};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Notify;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::backend::Memory;
use tower_sluice::http::{
    ForwardedHeader, ForwardedIp, HeaderKey, HttpLimit, HttpLimitLayer, PeerIp, TrustedProxies,
    headers,
};
use tower_sluice::per_key::Policy;
use tower_sluice::{PerKeyLayer, Quota, RateLimitLayer};

mod accessors;
#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/axum_server.rs"]
mod example;
#[cfg(feature = "tonic")]
mod grpc;
mod inference;
mod keys;
mod server;

type App = axum::routing::RouterIntoService<Body>;

fn api_key() -> HeaderKey {
    HeaderKey::from_static("x-api-key")
}

/// `GET /` answering "ok", behind `layer`.
fn limited<L>(layer: L) -> App
where
    L: tower::Layer<Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request<Body>, Error = Infallible> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
    <L::Service as Service<Request<Body>>>::Future: Send + 'static,
{
    Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer)
        .into_service()
}

fn get_with_key(key: &str) -> Request<Body> {
    Request::get("/")
        .header("x-api-key", key)
        .body(Body::empty())
        .unwrap()
}

async fn send(app: &mut App, req: Request<Body>) -> Response<Body> {
    app.ready().await.unwrap().call(req).await.unwrap()
}

fn field<'a>(res: &'a Response<Body>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

async fn body(res: Response<Body>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn layers_and_services_fit_axum_router() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    ok::<HttpLimitLayer<String, HeaderKey>>();
    ok::<HttpLimit<Route, String, HeaderKey>>();
    ok::<HttpLimitLayer<IpAddr, PeerIp>>();
    ok::<HttpLimit<Route, IpAddr, ForwardedIp>>();
    ok::<HttpLimitLayer<Box<str>, HeaderKey<Box<str>>, Memory<Box<str>>>>();

    // And the real bounds of `Router::layer` (errors `Into<Infallible>`,
    // futures `Send`), with every extractor and a closure.
    let closure = |req: &Request<Body>| req.headers().get("x-user").map(|v| v.as_bytes().to_vec());
    let _: Router = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(PerKeyLayer::new(Quota::per_second(1), api_key()).http())
        .layer(PerKeyLayer::new(Quota::per_second(1), PeerIp::new()).http())
        .layer(
            PerKeyLayer::new(
                Quota::per_second(1),
                ForwardedIp::new(TrustedProxies::none()),
            )
            .http(),
        )
        .layer(PerKeyLayer::new(Quota::per_second(1), closure).http())
        .route_layer(
            PerKeyLayer::new(Quota::per_second(1), api_key())
                .http()
                .legacy_headers(true),
        );
}

#[tokio::test(start_paused = true)]
async fn admitted_and_limited_responses_carry_the_fields() {
    // 5/min: one request every 12 s.
    let mut app = limited(PerKeyLayer::new(Quota::per_minute(5), api_key()).http());
    for left in (0..5).rev() {
        let res = send(&mut app, get_with_key("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            field(&res, "ratelimit-policy"),
            Some(r#""per-minute";q=5;w=60"#)
        );
        assert_eq!(
            field(&res, "ratelimit"),
            Some(&*format!(r#""per-minute";r={left};t=12"#))
        );
        assert_eq!(field(&res, "retry-after"), None);
    }
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), Some("12"));
    assert_eq!(
        field(&res, "ratelimit-policy"),
        Some(r#""per-minute";q=5;w=60"#)
    );
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=0;t=12"#));
    assert_eq!(
        field(&res, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        body(res)
            .await
            .starts_with("rate limit exceeded: 5 per 1m; retry after 12s")
    );

    // Rounded up: 6.5 s left is 7.
    tokio::time::advance(Duration::from_millis(5_500)).await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(field(&res, "retry-after"), Some("7"));
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=0;t=7"#));

    // At least 1: 100 ms left is 1.
    tokio::time::advance(Duration::from_millis(6_400)).await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), Some("1"));
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=0;t=1"#));

    tokio::time::advance(Duration::from_millis(100)).await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=0;t=12"#));

    // Other keys are untouched, and a key with a full bucket shows no `t`.
    let fresh = PerKeyLayer::new(Quota::per_minute(5), api_key());
    let handle = fresh.handle();
    let new = "new".to_string();
    assert_eq!(
        headers::rate_limit(&handle.policy(&new), &handle.states(&new)),
        r#""per-minute";r=5"#
    );
    let res = send(&mut app, get_with_key("other")).await;
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=4;t=12"#));
}

#[tokio::test(start_paused = true)]
async fn several_quotas_are_all_listed_and_a_denial_consumes_none() {
    // 3 per minute and 5 per day: T = 20 s and 17 280 s.
    let policy = Policy::new(Quota::per_minute(3))
        .and(Quota::per_day(5))
        .unwrap();
    let layer = PerKeyLayer::new(policy, api_key());
    let handle = layer.handle();
    let mut app = limited(layer.http());
    let policy_field = r#""per-minute";q=3;w=60, "per-day";q=5;w=86400"#;

    for _ in 0..3 {
        assert_eq!(
            send(&mut app, get_with_key("k")).await.status(),
            StatusCode::OK
        );
    }
    // The minute quota denies.
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), Some("20"));
    assert_eq!(field(&res, "ratelimit-policy"), Some(policy_field));
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""per-minute";r=0;t=20, "per-day";r=2;t=17280"#)
    );

    // A minute later the day quota has 2 left: both pass, then it denies
    // although the minute quota still has room.
    tokio::time::advance(Duration::from_secs(60)).await;
    for day_left in [1, 0] {
        let res = send(&mut app, get_with_key("k")).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(field(&res, "ratelimit-policy"), Some(policy_field));
        let minute_left = 1 + day_left;
        let expected = format!(r#""per-minute";r={minute_left};t=20, "per-day";r={day_left};t="#);
        assert!(
            field(&res, "ratelimit").unwrap().starts_with(&expected),
            "{res:?}"
        );
    }
    for _ in 0..3 {
        let res = send(&mut app, get_with_key("k")).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        // 86 400 + 17 280 - 60 - 86 400 seconds.
        assert_eq!(field(&res, "retry-after"), Some("17220"));
        assert_eq!(
            field(&res, "ratelimit"),
            Some(r#""per-minute";r=1;t=20, "per-day";r=0;t=17220"#)
        );
    }
    // The denials took nothing from the minute quota.
    let states: Vec<u32> = handle
        .states(&"k".into())
        .iter()
        .map(|d| d.remaining())
        .collect();
    assert_eq!(states, [1, 0]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn calendar_quotas_report_their_window_and_the_time_to_the_boundary() {
    use std::time::UNIX_EPOCH;
    // 2024-03-31 23:59:00 UTC: a minute before April.
    tower_sluice::calendar::set_test_utc(UNIX_EPOCH + Duration::from_secs(1_711_929_540));
    let policy = Policy::new(Quota::per_minute(60))
        .and(Quota::per_calendar_day(100))
        .unwrap()
        .and(Quota::per_calendar_month(2))
        .unwrap();
    let layer = PerKeyLayer::new(policy, api_key());
    let mut app = limited(layer.http());
    let policy_field =
        r#""per-minute";q=60;w=60, "calendar-day";q=100;w=86400, "calendar-month";q=2;w=2592000"#;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(field(&res, "ratelimit-policy"), Some(policy_field));
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""per-minute";r=59;t=1, "calendar-day";r=99;t=60, "calendar-month";r=1;t=60"#)
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    send(&mut app, get_with_key("k")).await;
    // The month is spent: 59.5 s to April, rounded up.
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), Some("60"));
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""per-minute";r=58;t=1, "calendar-day";r=98;t=60, "calendar-month";r=0;t=60"#)
    );
    tokio::time::advance(Duration::from_millis(59_500)).await;
    // April 1st, 00:00: a new day and a new month (of 30 days).
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        field(&res, "ratelimit"),
        Some(
            r#""per-minute";r=59;t=1, "calendar-day";r=99;t=86400, "calendar-month";r=1;t=2592000"#
        )
    );
}

#[tokio::test(start_paused = true)]
async fn named_policies_name_their_items_and_legacy_fields_follow_the_tightest() {
    let policy = Policy::new(Quota::per_second(10))
        .and(Quota::per_hour(3))
        .unwrap()
        .named("free");
    let mut app = limited(
        PerKeyLayer::new(policy, api_key())
            .http()
            .legacy_headers(true),
    );
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(
        field(&res, "ratelimit-policy"),
        Some(r#""free-per-second";q=10;w=1, "free-per-hour";q=3;w=3600"#)
    );
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""free-per-second";r=9;t=1, "free-per-hour";r=2;t=1200"#)
    );
    // The hour quota is the tightest.
    assert_eq!(field(&res, "x-ratelimit-limit"), Some("3"));
    assert_eq!(field(&res, "x-ratelimit-remaining"), Some("2"));
    assert_eq!(field(&res, "x-ratelimit-reset"), Some("1200"));
    send(&mut app, get_with_key("k")).await;
    send(&mut app, get_with_key("k")).await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "x-ratelimit-limit"), Some("3"));
    assert_eq!(field(&res, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(field(&res, "x-ratelimit-reset"), Some("1200"));
    assert_eq!(field(&res, "retry-after"), Some("1200"));
}

#[tokio::test(start_paused = true)]
async fn problem_details_name_the_violated_policy() {
    let mut app = limited(
        PerKeyLayer::new(Policy::new(Quota::per_minute(1)).named("free"), api_key())
            .http()
            .problem_details(true),
    );
    send(&mut app, get_with_key("k")).await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        field(&res, "content-type"),
        Some("application/problem+json")
    );
    let json: serde_json::Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(
        json["type"],
        "https://iana.org/assignments/http-problem-types#quota-exceeded"
    );
    assert_eq!(json["status"], 429);
    assert_eq!(
        json["violated-policies"],
        serde_json::json!(["free-per-minute"])
    );
    assert_eq!(json["retry-after"], 60);
    assert_eq!(
        json["detail"],
        "rate limit exceeded: free 1 per 1m; retry after 1m"
    );

    let res = send(&mut app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(json["type"], "about:blank");
    assert_eq!(json["title"], "Bad Request");
}

#[tokio::test(start_paused = true)]
async fn missing_keys_are_400_or_as_configured() {
    let no_key = || Request::get("/").body(Body::empty()).unwrap();
    let mut app_400 = limited(PerKeyLayer::new(Quota::per_minute(5), api_key()).http());
    let res = send(&mut app_400, no_key()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(field(&res, "retry-after"), None);
    assert_eq!(field(&res, "ratelimit"), None);
    assert!(body(res).await.contains("no rate-limit key"));

    // Too long a key counts as none: it is never stored.
    let layer = PerKeyLayer::new(Quota::per_minute(5), api_key());
    let handle = layer.handle();
    let mut app = limited(layer.http());
    let res = send(&mut app, get_with_key(&"k".repeat(257))).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = send(&mut app, get_with_key(&"k".repeat(256))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(handle.backend().len(), 1);

    let mut app_401 = limited(
        PerKeyLayer::new(Quota::per_minute(5), api_key())
            .http()
            .missing_key_status(StatusCode::UNAUTHORIZED),
    );
    assert_eq!(
        send(&mut app_401, no_key()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Let through, unlimited and without fields.
    let mut app_open = limited(
        PerKeyLayer::new(Quota::per_minute(1), api_key())
            .allow_missing_key()
            .http(),
    );
    for _ in 0..3 {
        let res = send(&mut app_open, no_key()).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(field(&res, "ratelimit"), None);
    }
}

/// An app allowing one request in flight per key, whose handler answers
/// when `release` is notified.
fn one_in_flight_app() -> (Arc<Notify>, axum::routing::RouterIntoService<Body, ()>) {
    let release = Arc::new(Notify::new());
    let wait = release.clone();
    let policy = Policy::new(Quota::per_minute(100)).max_in_flight(1);
    let app: Router = Router::new()
        .route(
            "/",
            get(move || {
                let wait = wait.clone();
                async move {
                    wait.notified().await;
                    "done"
                }
            }),
        )
        .layer(PerKeyLayer::new(policy, api_key()).http());
    (release, app.into_service::<Body>())
}

#[tokio::test(start_paused = true)]
async fn too_many_in_flight_is_429_with_the_concurrency_item() {
    let (release, mut app) = one_in_flight_app();

    let first = tokio::spawn(app.ready().await.unwrap().call(get_with_key("k")));
    tokio::task::yield_now().await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), None);
    assert_eq!(
        field(&res, "ratelimit-policy"),
        Some(r#""per-minute";q=100;w=60, "concurrency";q=1;qu="concurrent-requests""#)
    );
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""per-minute";r=99;t=1, "concurrency";r=0"#)
    );
    assert!(body(res).await.contains("too many requests in flight"));

    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    // The slot is free again.
    let ok = tokio::spawn(app.ready().await.unwrap().call(get_with_key("k")));
    tokio::task::yield_now().await;
    release.notify_one();
    assert_eq!(ok.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_frees_its_in_flight_slot() {
    let (release, mut app) = one_in_flight_app();

    let first = tokio::spawn(app.ready().await.unwrap().call(get_with_key("k")));
    tokio::task::yield_now().await;
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Dropped before its response: the slot is free again.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let ok = tokio::spawn(app.ready().await.unwrap().call(get_with_key("k")));
    tokio::task::yield_now().await;
    release.notify_one();
    assert_eq!(ok.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn max_wait_delays_instead_of_rejecting() {
    // 2 per minute, waiting up to 30 s: of 4 requests at once, 2 pass, the
    // 3rd waits 30 s and the 4th, which would wait 60 s, is rejected
    // (told to come back when it would pass).
    let app = limited(
        PerKeyLayer::new(Quota::per_minute(2), api_key())
            .max_wait(Duration::from_secs(30))
            .http(),
    );
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let mut app = app.clone();
            tokio::spawn(async move {
                let res = send(&mut app, get_with_key("k")).await;
                (
                    res.status().as_u16(),
                    start.elapsed().as_secs(),
                    field(&res, "retry-after").map(str::to_owned),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results.sort();
    assert_eq!(
        results,
        [
            (200, 0, None),
            (200, 0, None),
            (200, 30, None),
            (429, 0, Some("60".to_string())),
        ]
    );
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Boom;
    let inner = service_fn(|_req: Request<Body>| async { Err::<Response<Body>, Boom>(Boom) });
    let mut svc = ServiceBuilder::new()
        .layer(PerKeyLayer::new(Quota::per_minute(1), api_key()).http())
        .service(inner);
    // The error type is the inner one's, not a box.
    let err: Boom = svc
        .ready()
        .await
        .unwrap()
        .call(get_with_key("k"))
        .await
        .unwrap_err();
    assert_eq!(err, Boom);
    // A rejection is a response, even over a failing service.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(get_with_key("k"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn handle_error_maps_errors_of_other_layers() {
    let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(tower_sluice::http::handle_error))
            .layer(RateLimitLayer::new(Quota::per_minute(1)).reject()),
    );
    let mut app = app.into_service::<Body>();
    assert_eq!(
        send(&mut app, get_with_key("k")).await.status(),
        StatusCode::OK
    );
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&res, "retry-after"), Some("60"));
    assert_eq!(
        field(&res, "ratelimit-policy"),
        Some(r#""per-minute";q=1;w=60"#)
    );
    assert_eq!(field(&res, "ratelimit"), Some(r#""per-minute";r=0;t=60"#));

    // A plain per-key layer behind the handler: its errors too.
    let app: Router = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(tower_sluice::http::handle_error))
            .layer(PerKeyLayer::new(Quota::per_minute(1), api_key())),
    );
    let mut app = app.into_service::<Body>();
    let res = send(&mut app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

fn from_peer(peer: &str, forwarded: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    for (name, value) in forwarded {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().append(name, value.parse().unwrap());
    }
    req
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    use tower_sluice::per_key::KeyExtractor;
    let key = ForwardedIp::new(TrustedProxies::new(["10.0.0.0/8", "fd00::/8"]).unwrap());
    let peer = PeerIp::new();
    let direct = "203.0.113.7:4000";

    // Straight from the client: whatever it claims, the key is the peer.
    for claim in [
        "1.2.3.4",
        "10.0.0.1",
        "198.51.100.1, 10.0.0.2",
        "garbage",
        "",
    ] {
        let req = from_peer(direct, &[("x-forwarded-for", claim)]);
        assert_eq!(key.extract(&req), ip("203.0.113.7"), "{claim}");
        assert_eq!(peer.extract(&req), ip("203.0.113.7"));
    }
    let req = from_peer(direct, &[("forwarded", "for=1.2.3.4")]);
    assert_eq!(key.extract(&req), ip("203.0.113.7"));

    // Through a trusted proxy: the address it appended, whatever the
    // client prepended.
    let via_proxy = "10.0.0.5:1234";
    let cases = [
        ("198.51.100.9", "198.51.100.9"),
        ("1.2.3.4, 198.51.100.9", "198.51.100.9"),
        ("1.2.3.4, 198.51.100.9, 10.0.0.7", "198.51.100.9"),
        ("garbage, 198.51.100.9", "198.51.100.9"),
        // Every hop trusted: the leftmost is the client.
        ("10.0.0.9, 10.0.0.8", "10.0.0.9"),
        // An unreadable hop stops the walk at the last trusted one.
        ("198.51.100.9, unknown, 10.0.0.8", "10.0.0.8"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("198.51.100.9:5555", "198.51.100.9"),
    ];
    for (xff, client) in cases {
        let req = from_peer(via_proxy, &[("x-forwarded-for", xff)]);
        assert_eq!(key.extract(&req), ip(client), "{xff}");
        // PeerIp never reads the header.
        assert_eq!(peer.extract(&req), ip("10.0.0.5"));
    }
    // Several header lines are one list, in order.
    let req = from_peer(
        via_proxy,
        &[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.9, 10.0.0.6"),
        ],
    );
    assert_eq!(key.extract(&req), ip("198.51.100.9"));
    // No header from a trusted proxy: the proxy itself.
    assert_eq!(key.extract(&from_peer(via_proxy, &[])), ip("10.0.0.5"));

    // RFC 7239, and only the configured header is read.
    let fwd = key.clone().header(ForwardedHeader::Forwarded);
    let req = from_peer(
        via_proxy,
        &[
            (
                "forwarded",
                r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https"#,
            ),
            ("x-forwarded-for", "5.6.7.8"),
        ],
    );
    assert_eq!(fwd.extract(&req), ip("2001:db8:cafe::17"));
    assert_eq!(key.extract(&req), ip("5.6.7.8"));

    // IPv4-mapped peers are IPv4; IPv6 clients can be grouped by prefix.
    let req = from_peer("[::ffff:203.0.113.7]:80", &[]);
    assert_eq!(peer.extract(&req), ip("203.0.113.7"));
    let req = from_peer("[2001:db8:1:2:3:4:5:6]:80", &[]);
    assert_eq!(peer.ipv6_prefix(64).extract(&req), ip("2001:db8:1:2::"));
}

#[tokio::test(start_paused = true)]
async fn spoofing_through_the_router_shares_one_bucket() {
    let layer = PerKeyLayer::new(
        Quota::per_minute(3),
        ForwardedIp::new(TrustedProxies::new(["10.0.0.0/8"]).unwrap()),
    );
    let mut app = limited(layer.http());
    let mut statuses = Vec::new();
    for i in 0..6 {
        let spoofed = format!("198.51.100.{i}");
        let req = from_peer("203.0.113.7:4000", &[("x-forwarded-for", &spoofed)]);
        statuses.push(send(&mut app, req).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    // Behind the trusted proxy, each client has its own bucket.
    for i in 0..6 {
        let client = format!("198.51.100.{i}");
        let req = from_peer("10.0.0.5:1", &[("x-forwarded-for", &client)]);
        assert_eq!(send(&mut app, req).await.status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn tiers_follow_the_table_of_the_example() {
    use example::{Service, Tier};
    let mut app = example::app().into_service::<Body>();
    let call = |key: &str, service: Service| {
        Request::post(service.path())
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap()
    };
    for (tier, key) in [(Tier::Free, "free-alice"), (Tier::Paid, "paid-bob")] {
        for service in Service::ALL {
            let limit = example::per_minute(tier, service);
            for _ in 0..limit {
                let res = send(&mut app, call(key, service)).await;
                assert_eq!(res.status(), StatusCode::OK, "{key} {service:?}");
            }
            let res = send(&mut app, call(key, service)).await;
            assert_eq!(
                res.status(),
                StatusCode::TOO_MANY_REQUESTS,
                "{key} {service:?}"
            );
            // One emission interval, rounded up (0.5 s for 120/min is 1).
            let wait = headers::delay_seconds(Duration::from_secs(60) / limit);
            assert_eq!(field(&res, "retry-after"), Some(&*wait.to_string()));
            let tier_name = if tier == Tier::Free { "free" } else { "paid" };
            let service_name = &service.path()[4..];
            assert_eq!(
                field(&res, "ratelimit-policy"),
                Some(&*format!(
                    r#""{tier_name}-{service_name}-per-minute";q={limit};w=60"#
                ))
            );
            assert_eq!(
                field(&res, "content-type"),
                Some("application/problem+json")
            );
        }
    }
    // Same tier, other key: its own buckets.
    let res = send(&mut app, call("free-carol", Service::Image)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        field(&res, "ratelimit"),
        Some(r#""free-image-per-minute";r=9;t=6"#)
    );
    // No API key: 401; unknown path: 404, not limited.
    let res = send(
        &mut app,
        Request::post("/v1/text").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = send(&mut app, call("free-alice", Service::Text)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let res = send(
        &mut app,
        Request::post("/v2/text")
            .header("x-api-key", "free-alice")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A minute later everything is back.
    tokio::time::advance(Duration::from_secs(60)).await;
    let res = send(&mut app, call("free-alice", Service::Image)).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_503_with_retry_after_and_grpc_unavailable() {
    use tower_sluice::circuit_breaker::SlidingWindow;
    use tower_sluice::{CircuitBreakerLayer, CircuitOpen};

    let breaker = CircuitBreakerLayer::builder()
        .window(SlidingWindow::Count(2))
        .minimum_calls(2)
        .open_duration(Duration::from_millis(4_500))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app: Router = Router::new()
        .route("/", get(|| async { StatusCode::OK }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(tower_sluice::http::handle_error))
                .layer(breaker.classify(tower_sluice::classify::HttpStatus)),
        );
    let mut app = app.into_service::<Body>();
    assert_eq!(
        send(&mut app, get_with_key("k")).await.status(),
        StatusCode::OK
    );
    handle.force_open();
    let res = send(&mut app, get_with_key("k")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // force_open hints the open duration, rounded up to whole seconds.
    assert_eq!(field(&res, "retry-after"), Some("5"));

    // The error itself, from a plain service behind the forced-open breaker.
    let mut svc = ServiceBuilder::new()
        .layer(handle_layer_of(&handle))
        .service(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    let rejection = tower_sluice::http::Rejection::new(&*err);
    assert_eq!(
        rejection.kind(),
        tower_sluice::http::RejectionKind::Unavailable
    );
    assert_eq!(rejection.retry_after(), Some(Duration::from_millis(4_500)));
    #[cfg(feature = "tonic")]
    {
        let status = tower_sluice::http::grpc::status_for(&*err).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status
                .metadata()
                .get(tower_sluice::http::grpc::RETRY_PUSHBACK)
                .unwrap(),
            "4500"
        );
    }
}

/// A layer sharing `handle`'s breaker is not constructible from a handle;
/// a fresh forced-open one with the same open duration stands in.
fn handle_layer_of(
    handle: &tower_sluice::circuit_breaker::CircuitBreakerHandle,
) -> tower_sluice::CircuitBreakerLayer {
    let layer = tower_sluice::CircuitBreakerLayer::new(handle.config().clone());
    layer.handle().force_open();
    layer
}

/// `GET /` answered by `root` and `GET /fail` answering 500, behind a
/// per-key layer of `quota` on the API key that reports to `monitor`.
fn monitored(
    root: axum::routing::MethodRouter,
    quota: Quota,
    monitor: &tower_sluice::observe::Monitor,
) -> App {
    Router::new()
        .route("/", root)
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .layer(
            PerKeyLayer::new(quota, api_key())
                .observer(monitor.clone())
                .http(),
        )
        .into_service()
}

/// With an observer, the HTTP adapter reports each answered request's
/// completion with its key and latency (a 5xx counts as a failure), so a
/// `Monitor` has per-key response times behind axum too; refusals complete
/// nothing.
#[tokio::test(start_paused = true)]
async fn the_http_adapter_reports_completions_per_key() {
    use tower_sluice::observe::Monitor;
    // Every call timed, so that the EWMA is exact.
    let monitor = Monitor::builder().sample_one_in(1).build();
    let root = get(|| async {
        tokio::time::sleep(Duration::from_millis(40)).await;
        "ok"
    });
    let mut app = monitored(root, Quota::per_minute(3), &monitor);
    for path in ["/", "/", "/fail", "/"] {
        let req = Request::get(path)
            .header("x-api-key", "alice")
            .body(Body::empty())
            .unwrap();
        send(&mut app, req).await;
    }
    let alice = monitor.key(&"alice").unwrap();
    assert_eq!((alice.requests, alice.limited), (4, 1));
    assert_eq!((alice.completed, alice.failed), (3, 1));
    // EWMA (α 0.1) of 40 ms, 40 ms, 0 ms.
    let ewma = alice.latency_ewma.unwrap().as_secs_f64();
    assert!((ewma - 0.036).abs() < 1e-6, "{ewma}");
}

/// Behind axum too, a busy thread samples a per-key layer's admitted
/// requests for a `Monitor` (one followed in 32, counted 32 times), a
/// quiet one follows them all: the layer's counts stay exact, a key's
/// completions and failures (5xx) are estimates.
#[tokio::test(start_paused = true)]
async fn a_busy_thread_samples_keys_behind_axum() {
    use tower_sluice::observe::Monitor;
    let monitor = Monitor::new();
    let root = get(|| async { "ok" });
    let mut app = monitored(root, Quota::per_second(1_000_000_000), &monitor);
    let get = |path: &str, key: &str| {
        Request::get(path)
            .header("x-api-key", key)
            .body(Body::empty())
            .unwrap()
    };
    // Quiet so far: every request followed.
    for i in 0..1_000 {
        send(&mut app, get("/", &format!("w{}", i % 8))).await;
    }
    assert_eq!(monitor.key(&"w0").unwrap().requests, 125);
    // 1 000 admitted within 100 ms: the next span samples.
    tokio::time::advance(Duration::from_millis(100)).await;
    send(&mut app, get("/", "w0")).await;
    // Not a multiple of 32: followed one by one, the counts could not be.
    const N: u64 = 8_010;
    for _ in 0..N {
        assert_eq!(send(&mut app, get("/fail", "bob")).await.status(), 500);
    }
    let snap = monitor.snapshot();
    let layer = snap.layer("per_key").unwrap();
    assert_eq!(layer.requests, 1_001 + N, "the layer's count is exact");
    let bob = snap.key(&"bob").unwrap();
    // About 250 of 8 010 followed, standard deviation about 16 (6 %).
    for (what, n) in [("requests", bob.requests), ("failed", bob.failed)] {
        assert!(n.is_multiple_of(32), "{what}: {n}");
        let off = n.abs_diff(N) as f64 / N as f64;
        assert!(off < 0.3, "{what}: {n} estimated for {N}");
    }
    assert_eq!(bob.completed, bob.failed, "every one a 5xx");
    assert_eq!(layer.failed, bob.failed);
}
