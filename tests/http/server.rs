//! A real axum server on 127.0.0.1 and a real HTTP client.
//!
//! Real time passes here, so quotas are per minute: over the second or so
//! a test takes, the counts are exact and the waits known to the second.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::get;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_sluice::http::{ForwardedIp, HeaderKey, HttpLimitLayer, TrustedProxies};
use tower_sluice::{PerKeyLayer, Quota};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Serves `GET /` behind `layer` on a free port of 127.0.0.1, with the
/// peer address available to extractors (`ConnectInfo`).
async fn serve<K, X>(layer: HttpLimitLayer<K, X>) -> (String, HttpClient)
where
    HttpLimitLayer<K, X>: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    <HttpLimitLayer<K, X> as tower::Layer<axum::routing::Route>>::Service: tower::Service<
            Request<Body>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    (format!("http://{addr}/"), client)
}

async fn fetch(
    client: &HttpClient,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn field<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_answers_200s_then_429s_with_fields() {
    // 5 per minute: one request every 12 s.
    let layer = PerKeyLayer::new(Quota::per_minute(5), HeaderKey::from_static("x-api-key"));
    let (url, client) = serve(layer.http()).await;

    let (mut ok, mut limited) = (0, 0);
    for i in 0..8 {
        let (status, headers, body) = fetch(&client, &url, &[("x-api-key", "k-1")]).await;
        assert_eq!(
            field(&headers, "ratelimit-policy"),
            Some(r#""per-minute";q=5;w=60"#)
        );
        let rate_limit = field(&headers, "ratelimit").unwrap();
        match status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(body, "ok");
                assert_eq!(field(&headers, "retry-after"), None);
                let left = 4 - i;
                // `t` is 12 s less the little time since the first request.
                assert!(
                    rate_limit == format!(r#""per-minute";r={left};t=12"#)
                        || rate_limit == format!(r#""per-minute";r={left};t=11"#),
                    "{rate_limit}"
                );
            }
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                let retry: u64 = field(&headers, "retry-after").unwrap().parse().unwrap();
                assert!((11..=12).contains(&retry), "{retry}");
                // `t` of the exhausted quota is never earlier than Retry-After.
                assert_eq!(rate_limit, format!(r#""per-minute";r=0;t={retry}"#));
                assert!(body.starts_with("rate limit exceeded: 5 per 1m; retry after"));
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (5, 3));

    // Another key has its own bucket; no key is a 400.
    let (status, headers, _) = fetch(&client, &url, &[("x-api-key", "k-2")]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        field(&headers, "ratelimit")
            .unwrap()
            .starts_with(r#""per-minute";r=4;"#)
    );
    let (status, headers, body) = fetch(&client, &url, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(field(&headers, "ratelimit"), None);
    assert!(body.contains("no rate-limit key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_does_not_escape_the_limit() {
    // Only 10.0.0.0/8 is a trusted proxy; this client is 127.0.0.1.
    let trusted = TrustedProxies::new(["10.0.0.0/8"]).unwrap();
    let layer = PerKeyLayer::new(Quota::per_minute(3), ForwardedIp::new(trusted));
    let (url, client) = serve(layer.http()).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let spoofed = format!("198.51.100.{i}, 10.0.0.{i}");
        let (status, _, _) = fetch(&client, &url, &[("x-forwarded-for", &spoofed)]).await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_key() {
    // Here 127.0.0.1 plays the trusted proxy.
    let trusted: TrustedProxies = "127.0.0.1, ::1".parse().unwrap();
    let layer = PerKeyLayer::new(Quota::per_minute(3), ForwardedIp::new(trusted));
    let (url, client) = serve(layer.http()).await;
    // Six clients, one request each: all pass.
    for i in 0..6 {
        let client_ip = format!("198.51.100.{i}");
        let (status, _, _) = fetch(&client, &url, &[("x-forwarded-for", &client_ip)]).await;
        assert_eq!(status, StatusCode::OK);
    }
    // One client, whatever it prepends: its own bucket of 3 (one used).
    let mut statuses = Vec::new();
    for i in 0..3 {
        let xff = format!("203.0.113.{i}, 198.51.100.0");
        let (status, _, _) = fetch(&client, &url, &[("x-forwarded-for", &xff)]).await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
}

/// A request's cost read from its `x-tokens` header (missing: 1).
fn tokens(req: &Request<Body>) -> u32 {
    req.headers()
        .get("x-tokens")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_limits_by_cost_with_qu_fields_and_413() {
    // Per API key: 60 requests a minute and 1 000 tokens a minute.
    let policy = tower_sluice::per_key::Policy::new(Quota::per_minute(60))
        .and(Quota::per_minute(1_000).counting("tokens"))
        .unwrap();
    let layer = PerKeyLayer::new(policy, HeaderKey::from_static("x-api-key")).cost(tokens);
    let (url, client) = serve(layer.http()).await;
    let policy_field = r#""per-minute";q=60;w=60, "tokens-per-minute";q=1000;w=60;qu="tokens""#;

    let (status, headers, _) =
        fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "700")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&headers, "ratelimit-policy"), Some(policy_field));
    // One item per quota, each counting in its unit: 59 requests, 300 tokens left.
    let rate_limit = field(&headers, "ratelimit").unwrap();
    assert!(
        rate_limit.starts_with(r#""per-minute";r=59;"#),
        "{rate_limit}"
    );
    assert!(
        rate_limit.contains(r#", "tokens-per-minute";r=300;"#),
        "{rate_limit}"
    );

    // 400 tokens are refused by the token quota; the 429 names it.
    let (status, headers, body) =
        fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "400")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&headers, "ratelimit-policy"), Some(policy_field));
    let retry: u64 = field(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((5..=6).contains(&retry), "{retry}"); // 100 tokens at 1 000 a minute
    let rate_limit = field(&headers, "ratelimit").unwrap();
    assert!(
        rate_limit.contains(r#""tokens-per-minute";r=300;t="#),
        "{rate_limit}"
    );
    assert!(body.contains("1000 tokens per 1m"), "{body}");

    // More than the burst can never pass: 413, saying so, without Retry-After.
    let (status, headers, body) =
        fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "5000")]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(field(&headers, "retry-after"), None);
    assert!(
        body.starts_with("request cost 5000 tokens exceeds the burst of 1000 tokens"),
        "{body}"
    );

    // Cost 0 passes without a charge (and without a decision, so no fields).
    let (status, headers, _) = fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "0")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&headers, "ratelimit"), None);
    // The refused and free requests consumed nothing: 300 tokens still fit.
    let (status, _, _) = fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "300")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_server_names_calendar_token_quotas_and_counts_to_midnight() {
    use std::time::{Duration, UNIX_EPOCH};
    use tower_sluice::calendar;
    use tower_sluice::per_key::Policy;

    // 2024-03-10 23:00:00 UTC: an hour to the end of the day.
    calendar::set_test_utc(UNIX_EPOCH + Duration::from_secs(1_710_111_600));
    // Per API key: 60 requests and 100 000 tokens a minute, 1 000 000
    // tokens a calendar day; the key "small" gets 50 000 tokens a day.
    let policy = |daily: u32| {
        Policy::new(Quota::per_minute(60))
            .and(Quota::per_minute(100_000).counting("tokens"))
            .unwrap()
            .and(Quota::per_calendar_day(daily).counting("tokens"))
            .unwrap()
    };
    let small = policy(50_000);
    let layer = PerKeyLayer::new(policy(1_000_000), HeaderKey::from_static("x-api-key"))
        .policy_for(move |key: &String| (key == "small").then(|| small.clone()))
        .cost(tokens);
    let (url, client) = serve(layer.http()).await;

    let (status, headers, _) =
        fetch(&client, &url, &[("x-api-key", "k"), ("x-tokens", "60000")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        field(&headers, "ratelimit-policy"),
        Some(concat!(
            r#""per-minute";q=60;w=60, "tokens-per-minute";q=100000;w=60;qu="tokens", "#,
            r#""tokens-calendar-day";q=1000000;w=86400;qu="tokens""#
        ))
    );
    // The day's item counts tokens and resets at midnight, an hour away.
    let rate_limit = field(&headers, "ratelimit").unwrap();
    assert!(
        rate_limit.starts_with(r#""per-minute";r=59;t=1, "tokens-per-minute";r=40000;t=1, "#),
        "{rate_limit}"
    );
    assert!(
        rate_limit.ends_with(r#""tokens-calendar-day";r=940000;t=3600"#),
        "{rate_limit}"
    );

    // "small": more than the day's burst can never pass (413, naming it).
    let (status, _, body) = fetch(
        &client,
        &url,
        &[("x-api-key", "small"), ("x-tokens", "60000")],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(body.contains("exceeds the burst of 50000 tokens"), "{body}");
    let (status, _, _) = fetch(
        &client,
        &url,
        &[("x-api-key", "small"), ("x-tokens", "40000")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // 20 000 more are refused by the day until midnight.
    let (status, headers, _) = fetch(
        &client,
        &url,
        &[("x-api-key", "small"), ("x-tokens", "20000")],
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(field(&headers, "retry-after"), Some("3600"));
    let rate_limit = field(&headers, "ratelimit").unwrap();
    assert!(
        rate_limit.contains(r#""tokens-calendar-day";r=10000;t=3600"#),
        "{rate_limit}"
    );
    // Still free: cost 0.
    let (status, _, _) = fetch(&client, &url, &[("x-api-key", "small"), ("x-tokens", "0")]).await;
    assert_eq!(status, StatusCode::OK);
}
