//! Key types are inferred from the extractor: `PerKeyLayer::new` and
//! `AdaptivePolicy::new` bound to a `let` need no turbofish and no
//! annotation, whether or not a later use pins the key type, and the layers
//! serve in a `ServiceBuilder` and an axum `Router`.

use std::any::type_name;

use super::*;
use tower_sluice::CircuitBreakerLayer;
use tower_sluice::adaptive::AdaptivePolicy;
use tower_sluice::circuit_breaker::PerKeyCircuitBreakerLayer;
use tower_sluice::per_key::{ConstKey, KeyExtractor, Keyed};

/// The key type of a per-key layer, read without pinning it.
fn key_type<K, X, B>(_: &PerKeyLayer<K, X, B>) -> &'static str {
    type_name::<K>()
}

/// The key type of per-key breakers, read without pinning it.
fn breaker_key_type<K, X, C>(_: &PerKeyCircuitBreakerLayer<K, X, C>) -> &'static str {
    type_name::<K>()
}

/// A user's extractor for any body type: the path's first segment.
#[derive(Clone)]
struct Tenant;

impl<B> KeyExtractor<Request<B>> for Tenant {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> Option<String> {
        let first = req.uri().path().split('/').nth(1)?;
        (!first.is_empty()).then(|| first.to_string())
    }
}

impl Keyed for Tenant {
    type Key = String;
}

/// A user's request type and an extractor for it alone.
struct Job {
    owner: u64,
}

#[derive(Clone)]
struct Owner;

impl KeyExtractor<Job> for Owner {
    type Key = u64;

    fn extract(&self, job: &Job) -> Option<u64> {
        Some(job.owner)
    }
}

impl Keyed for Owner {
    type Key = u64;
}

fn user_of(req: &(String, u8)) -> Option<String> {
    Some(req.0.clone())
}

#[test]
fn lets_compile_without_a_use_that_pins_the_key_type() {
    // Nothing after these lines says what the key type is.
    let _closure = PerKeyLayer::new(Quota::per_minute(60), |r: &String| Some(r.clone()));
    let _header = PerKeyLayer::new(Quota::per_minute(60), HeaderKey::from_static("x-api-key"));
    let _adaptive = AdaptivePolicy::new(Quota::per_minute(60), 120);
    let _breakers = CircuitBreakerLayer::default().per_key(|r: &String| Some(r.clone()));
}

#[test]
fn the_key_type_is_the_extractors() {
    let q = Quota::per_minute(60);
    let proxies = TrustedProxies::new(["10.0.0.1"]).unwrap();

    let closure = PerKeyLayer::new(q, |r: &String| Some(r.clone()));
    let tuple = PerKeyLayer::new(q, |r: &(String, u8)| Some(r.1));
    let function = PerKeyLayer::new(q, user_of);
    let header = PerKeyLayer::new(q, HeaderKey::from_static("x-api-key"));
    let bytes = PerKeyLayer::new(q, HeaderKey::from_static("x-api-key").key_type::<Vec<u8>>());
    let peer = PerKeyLayer::new(q, PeerIp::new());
    let forwarded = PerKeyLayer::new(q, ForwardedIp::new(proxies));
    let constant = PerKeyLayer::new(q, ConstKey::new("upstream"));
    let tenant = PerKeyLayer::new(q, Tenant);
    let owner = PerKeyLayer::new(q, Owner);

    assert_eq!(key_type(&closure), type_name::<String>());
    assert_eq!(key_type(&tuple), type_name::<u8>());
    assert_eq!(key_type(&function), type_name::<String>());
    assert_eq!(key_type(&header), type_name::<String>());
    assert_eq!(key_type(&bytes), type_name::<Vec<u8>>());
    assert_eq!(key_type(&peer), type_name::<IpAddr>());
    assert_eq!(key_type(&forwarded), type_name::<IpAddr>());
    assert_eq!(key_type(&constant), type_name::<&str>());
    assert_eq!(key_type(&tenant), type_name::<String>());
    assert_eq!(key_type(&owner), type_name::<u64>());

    // Naming the key type still compiles.
    let named = PerKeyLayer::<String, _>::new(q, |r: &String| Some(r.clone()));
    let named_header = PerKeyLayer::<String, _>::new(q, HeaderKey::from_static("x-api-key"));
    assert_eq!(key_type(&named), key_type(&named_header));

    // The adaptive layers take theirs from the extractor too.
    let adaptive = AdaptivePolicy::new(q, 120);
    assert_eq!(
        key_type(&adaptive.per_key_layer(PeerIp::new())),
        type_name::<IpAddr>()
    );
    assert_eq!(
        key_type(&adaptive.per_key_layer(|n: &u32| Some(*n))),
        type_name::<u32>()
    );

    // So do per-key breakers.
    let by_host = CircuitBreakerLayer::default().per_key(HeaderKey::from_static("host"));
    assert_eq!(breaker_key_type(&by_host), type_name::<String>());
    let by_owner = CircuitBreakerLayer::default().per_key(Owner);
    assert_eq!(breaker_key_type(&by_owner), type_name::<u64>());
}

#[tokio::test]
async fn inferred_layers_serve_in_a_service_builder() {
    // A closure.
    let layer = PerKeyLayer::new(Quota::per_minute(1), user_of);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: (String, u8)| async {
            Ok::<_, tower::BoxError>("ok")
        }));
    svc.clone().oneshot(("ann".into(), 0)).await.unwrap();
    svc.clone().oneshot(("bob".into(), 0)).await.unwrap();
    let err = svc.clone().oneshot(("ann".into(), 0)).await.unwrap_err();
    assert!(err.is::<tower_sluice::RateLimited>());

    // A user's extractor of a user's request type.
    let layer = PerKeyLayer::new(Quota::per_minute(1), Owner);
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Job| async {
            Ok::<_, tower::BoxError>("ok")
        }));
    svc.clone().oneshot(Job { owner: 7 }).await.unwrap();
    assert!(svc.clone().oneshot(Job { owner: 7 }).await.is_err());
    svc.clone().oneshot(Job { owner: 8 }).await.unwrap();
    assert_eq!(handle.backend().len(), 2);
}

#[tokio::test]
async fn inferred_layers_serve_in_an_axum_router() {
    let by_header = PerKeyLayer::new(Quota::per_minute(1), HeaderKey::from_static("x-api-key"));
    let mut app = limited(by_header.http());
    assert_eq!(
        send(&mut app, get_with_key("k-1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut app, get_with_key("k-2")).await.status(),
        StatusCode::OK
    );
    let limited_res = send(&mut app, get_with_key("k-1")).await;
    assert_eq!(limited_res.status(), StatusCode::TOO_MANY_REQUESTS);

    // A closure over axum's request type, and a user's extractor generic
    // over the body.
    let by_user = PerKeyLayer::new(Quota::per_minute(1), |req: &Request<Body>| {
        req.headers()
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    });
    let by_tenant = PerKeyLayer::new(Quota::per_minute(1), Tenant);
    let mut users = limited(by_user.http());
    let user = |name: &str| {
        Request::get("/")
            .header("x-user", name)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(send(&mut users, user("ann")).await.status(), StatusCode::OK);
    assert_eq!(
        send(&mut users, user("ann")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let mut tenants: App = Router::new()
        .route("/{tenant}", get(|| async { "ok" }))
        .layer(by_tenant.http())
        .into_service();
    let to = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    assert_eq!(
        send(&mut tenants, to("/t-1")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut tenants, to("/t-2")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut tenants, to("/t-1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn an_inferred_adaptive_policy_serves_in_a_router() {
    // 1 a minute per key, up to 2 for keys that do well.
    let adaptive = AdaptivePolicy::new(Quota::per_minute(1), 2);
    let mut app = limited(
        adaptive
            .per_key_layer(HeaderKey::from_static("x-api-key"))
            .http(),
    );
    // k-1 did well elsewhere: its limit doubles.
    assert_eq!(adaptive.record(&"k-1".to_string(), true, Duration::ZERO), 2);
    for _ in 0..2 {
        assert_eq!(
            send(&mut app, get_with_key("k-1")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&mut app, get_with_key("k-1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        send(&mut app, get_with_key("k-2")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&mut app, get_with_key("k-2")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Keys are the extractor's type: a `&str` is another key.
    assert!(adaptive.stats(&"k-1").is_none());
    assert_eq!(adaptive.stats(&"k-1".to_string()).unwrap().samples, 1);
}

#[tokio::test]
async fn an_inferred_adaptive_policy_learns_in_a_service_builder() {
    let adaptive = AdaptivePolicy::new(Quota::per_minute(100), 200);
    let key = |req: &String| Some(req.clone());
    let svc = ServiceBuilder::new()
        .layer(adaptive.per_key_layer(key))
        .layer(adaptive.feedback_layer(key))
        .service(service_fn(|_: String| async {
            Ok::<_, tower::BoxError>("ok")
        }));
    svc.oneshot("alice".to_string()).await.unwrap();
    assert!(adaptive.limit(&"alice".to_string()) > 100);
    assert_eq!(adaptive.len(), 1);
}
