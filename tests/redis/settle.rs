//! Settling through a real axum server whose per-key limits live in Redis:
//! the handler settles a request's usage through its handle, the layer's
//! hook settles from a response header, and the next request sees the
//! debt (or the refund).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Extension;
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use tower_sluice::backend::redis::RedisBackend;
use tower_sluice::cost::Settlement;
use tower_sluice::{PerKeyLayer, Quota};

use super::server::RedisServer;
use super::token_api::TokenApi;

fn header(req: &Request<Body>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The handler knows what the request used and settles it itself.
async fn handled(Extension(settlement): Extension<Settlement>, req: Request<Body>) -> &'static str {
    let used = header(&req, "x-used")
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    assert!(settlement.settle(used));
    "answer"
}

/// The answer reports its usage in a header, which the layer's hook reads.
async fn reported(req: Request<Body>) -> Response<Body> {
    let used = header(&req, "x-used").unwrap_or_default();
    Response::builder()
        .header("x-usage", used)
        .body(Body::from("answer"))
        .unwrap()
}

/// Waits until Redis has applied `n` settlements in all (they are sent in
/// the background, off the request's path).
async fn settled(backend: &RedisBackend, n: u64) {
    for _ in 0..1_000 {
        if backend.stats().settled >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("settlements not applied: {:?}", backend.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handlers_usage_is_settled_on_redis_over_real_http() {
    let (url, _server) = RedisServer::url_or_start();
    let backend = Arc::new(super::backend(&url).prefix(format!("settle{}:", std::process::id())));
    let layer = PerKeyLayer::new(
        Quota::per_hour(1_000).counting("tokens"),
        |req: &Request<Body>| header(req, "x-user"),
    )
    .cost(|req: &Request<Body>| {
        header(req, "x-estimate")
            .and_then(|e| e.parse().ok())
            .unwrap_or(100)
    })
    .settle(|res: &Response<Body>| {
        res.headers()
            .get("x-usage")
            .and_then(|v| v.to_str().ok()?.parse().ok())
    })
    .settle_handle::<Request<Body>>()
    .backend(backend.clone())
    .http();
    let app = Router::new()
        .route("/handled", post(handled))
        .route("/reported", post(reported))
        .layer(layer);
    let api = TokenApi::serve(app).await;

    // Ann: estimated 100, the handler settles at 950: a debt of 850.
    let res = api.send("/handled", "ann", 100, 950).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "answer");
    settled(&backend, 1).await;
    let res = api.send("/handled", "ann", 100, 100).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "50 tokens left"
    );
    assert!(res.headers().contains_key("retry-after"));
    let res = api.send("/handled", "ann", 50, 50).await;
    assert_eq!(res.status(), StatusCode::OK, "exactly 50 left");

    // Cid: estimated 900, the answer reports 100: 800 given back.
    let res = api.send("/reported", "cid", 900, 100).await;
    assert_eq!(res.status(), StatusCode::OK);
    settled(&backend, 2).await;
    let res = api.send("/reported", "cid", 900, 900).await;
    assert_eq!(res.status(), StatusCode::OK, "the refund made room");
    let res = api.send("/reported", "cid", 1, 1).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(backend.stats().settles_dropped, 0);
}

/// The plain per-key layer (not `.http()`) settles a grant Redis decided,
/// through its response hook.
#[tokio::test]
async fn a_per_key_layer_settles_grants_decided_by_redis() {
    use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
    let (url, _server) = RedisServer::url_or_start();
    let backend =
        Arc::new(super::backend(&url).prefix(format!("settle-plain{}:", std::process::id())));
    // (user, estimate, used): answered with the usage, which the hook reads.
    let layer = PerKeyLayer::new(
        Quota::per_hour(1_000).counting("tokens"),
        |r: &(u8, u32, u32)| Some(r.0),
    )
    .cost(|r: &(u8, u32, u32)| r.1)
    .settle(|used: &u32| Some(*used))
    .backend(backend.clone());
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|r: (u8, u32, u32)| async move {
                Ok::<_, BoxError>(r.2)
            }));
    assert_eq!(svc.clone().oneshot((1, 10, 1_000)).await.unwrap(), 1_000);
    settled(&backend, 1).await;
    // 1 000 tokens used: nothing is left.
    assert!(svc.clone().oneshot((1, 1, 1)).await.is_err());
    assert_eq!(svc.clone().oneshot((2, 1, 1)).await.unwrap(), 1);
}

/// Calls of the settle script (and of `EVAL`, its first load) a server
/// has run, from its command statistics.
fn script_calls(server: &RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// What a bucket of tokens has left for `key`: a peek of 1 answers what
/// would be left after it.
async fn left<K: tower_sluice::backend::redis::RedisKey + Send + Sync + 'static>(
    b: &RedisBackend,
    key: &K,
    policy: &tower_sluice::per_key::Policy,
) -> u32 {
    use tower_sluice::backend::{Acquire, Backend};
    let grant = match b.peek(key, policy, 1) {
        Acquire::Ready(r) => r,
        Acquire::Pending(f) => f.await,
    };
    grant.unwrap().decision().remaining() + 1
}

/// Many keys settled at once: a few calls of the settle script, not one
/// per settlement, and every key's settlement applied exactly (debts and
/// refunds alike).
#[tokio::test]
async fn many_settlements_go_in_a_few_batches_and_apply_exactly() {
    use tower_sluice::backend::Backend;
    let server = RedisServer::start();
    let backend = super::backend(&server.url());
    // 100 tokens an hour: nothing refills during the test.
    let policy = tower_sluice::per_key::Policy::new(Quota::per_hour(100).counting("tokens"));
    let keys = 300_u64;
    let mut grants = Vec::new();
    for k in 0..keys {
        grants.push(
            super::decide_cost(&backend, &k, &policy, 10)
                .await
                .unwrap()
                .charged(),
        );
    }
    // True costs 0 to 39: refunds below the estimate of 10, debts above;
    // a true cost of 10 is not sent.
    let used = |k: u64| (k % 40) as u32;
    let sent = (0..keys).filter(|&k| used(k) != 10).count() as u64;
    let before = script_calls(&server);
    for (k, charged) in grants.into_iter().enumerate() {
        backend.settle(&(k as u64), &policy, charged, used(k as u64));
    }
    settled(&backend, sent).await;
    let calls = script_calls(&server) - before;
    // Queued together: batches of at most 128 keys (each may be sent twice
    // when the server loads the script).
    assert!(calls <= 6, "{calls} calls for {sent} settlements");
    assert_eq!(backend.stats().settles_dropped, 0);
    for k in 0..keys {
        assert_eq!(left(&backend, &k, &policy).await, 100 - used(k), "key {k}");
    }
}

/// On a Cluster, settlements go in batches of one slot each, to the slot's
/// master: keys spread over the masters and keys sharing a hash tag are
/// all settled exactly.
// One thread: the settlements of a round are all queued before the
// backend's task takes them.
#[tokio::test]
async fn settlements_are_batched_per_slot_on_a_cluster() {
    use tower_sluice::backend::Backend;
    let cluster = super::server::RedisCluster::start();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let backend = RedisBackend::cluster(client).deadline(Duration::from_secs(5));
    let policy = tower_sluice::per_key::Policy::new(Quota::per_hour(100).counting("tokens"));
    let mut keys: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    keys.extend((0..60).map(|i| format!("{{acct-7}}:{i}")));
    let mut grants = Vec::new();
    for k in &keys {
        grants.push(
            super::decide_cost(&backend, k, &policy, 10)
                .await
                .unwrap()
                .charged(),
        );
    }
    let used = |i: usize| 20 + i as u32 % 7;
    // Each grant settled twice (two debts): the first round loads the
    // script on each master, the second is counted.
    for (i, (k, charged)) in keys.iter().zip(&grants).enumerate() {
        backend.settle(k, &policy, *charged, used(i));
    }
    settled(&backend, keys.len() as u64).await;
    let before: u64 = cluster.nodes.iter().map(script_calls).sum();
    for (i, (k, charged)) in keys.iter().zip(&grants).enumerate() {
        backend.settle(k, &policy, *charged, used(i));
    }
    settled(&backend, 2 * keys.len() as u64).await;
    let calls: u64 = cluster.nodes.iter().map(script_calls).sum::<u64>() - before;
    // One call per slot: 60 for the keys spread over the slots, one for
    // the 60 sharing a hash tag.
    assert_eq!(calls, 61);
    assert_eq!(backend.stats().settles_dropped, 0);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            left(&backend, k, &policy).await,
            100 - 10 - 2 * (used(i) - 10),
            "{k}"
        );
    }
}

/// A hot key's debts are merged while it holds them (the key stays in
/// debt, so the sum found at the first one's time charges what each would
/// have): a call or two for thousands of them, charged exactly as one by
/// one.
#[tokio::test]
async fn a_hot_keys_debts_are_merged_and_charged_exactly() {
    use tower_sluice::backend::Backend;
    let server = RedisServer::start();
    let backend = super::backend(&server.url());
    let policy = tower_sluice::per_key::Policy::new(Quota::per_day(10_000).counting("tokens"));
    let key = "hot".to_string();
    let mut grants = Vec::new();
    for _ in 0..2_500 {
        grants.push(
            super::decide_cost(&backend, &key, &policy, 1)
                .await
                .unwrap()
                .charged(),
        );
    }
    let before = script_calls(&server);
    for charged in grants {
        backend.settle(&key, &policy, charged, 3);
    }
    settled(&backend, 2_500).await;
    let calls = script_calls(&server) - before;
    // At most two sends (each sent twice if the server loads the script
    // then).
    assert!(calls <= 3, "{calls} calls");
    // 2 500 charged up front, 5 000 more settled: 2 500 left.
    assert_eq!(left(&backend, &key, &policy).await, 2_500);
}
