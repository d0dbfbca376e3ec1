//! `cargo run --example redis_distributed --features redis,axum`: two
//! instances of an API server on two ports share per-key limits through one
//! Redis; a client alternates between them and the shared limit holds.
//!
//! Uses the Redis at `REDIS_URL` when set; otherwise starts its own
//! `redis-server` on a free port (it must be installed) and stops it at the
//! end.
//!
//! `redis_distributed hammer <url> <key> <millis>` is the mode the tests use
//! to run several OS processes against one key: it decides as fast as it can
//! for `millis` ms under 100/s (burst 20) and prints how many passed.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::routing::get;
use tower::ServiceExt;
use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
use tower_sluice::http::HeaderKey;
use tower_sluice::{BoxError, PerKeyLayer, Quota};

/// The limit every instance applies: 5 requests a minute per API key.
fn quota() -> Quota {
    Quota::per_minute(5)
}

fn app(redis_url: &str) -> Result<Router, BoxError> {
    let redis = RedisBackend::from_url(redis_url)?
        .prefix("example:distributed:")
        .failure_policy(FailurePolicy::FailClosed);
    let api_key = HeaderKey::from_static("x-api-key");
    let limit = PerKeyLayer::new(quota(), move |req: &Request| api_key.key_of(req))
        .backend(redis)
        .http();
    Ok(Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route_layer(limit))
}

async fn serve(redis_url: &str) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = app(redis_url)?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A `redis-server` of our own, stopped on drop.
struct OwnRedis(Child, std::path::PathBuf);

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_redis() -> Result<(String, OwnRedis), BoxError> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("sluice-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server ({e}): install it or set REDIS_URL"))?;
    let own = OwnRedis(child, dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((format!("redis://127.0.0.1:{port}"), own))
}

async fn get_status(addr: SocketAddr, key: &str) -> Result<(u16, String), BoxError> {
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(format!("http://{addr}/"))
        .header("x-api-key", key)
        .body(Empty::new())?;
    let res = client.request(req).await?;
    let remaining = res
        .headers()
        .get("ratelimit")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    Ok((res.status().as_u16(), remaining))
}

async fn hammer(url: &str, key: &str, millis: u64) -> Result<(), BoxError> {
    let redis = RedisBackend::from_url(url)?
        .deadline(Duration::from_secs(2))
        .failure_policy(FailurePolicy::FailClosed)
        .deny_cache(0);
    let limit = PerKeyLayer::new(Quota::per_second(100).with_burst(20), |k: &String| {
        Some(k.clone())
    })
    .backend(redis);
    let svc = tower::ServiceBuilder::new()
        .layer(limit)
        .service_fn(|_: String| async { Ok::<_, BoxError>(()) });
    let end = Instant::now() + Duration::from_millis(millis);
    let (mut passed, mut failed) = (0u64, 0u64);
    while Instant::now() < end {
        match svc.clone().oneshot(key.to_string()).await {
            Ok(()) => passed += 1,
            Err(e) if e.is::<tower_sluice::RateLimited>() => {}
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
            }
        }
    }
    println!("passed {passed} failed {failed}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("hammer") {
        let [_, _, url, key, millis] = &args[..] else {
            return Err("usage: redis_distributed hammer <url> <key> <millis>".into());
        };
        return hammer(url, key, millis.parse()?).await;
    }

    let (url, _own) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => (url, None),
        _ => {
            let (url, own) = start_redis()?;
            (url, Some(own))
        }
    };
    let a = serve(&url).await?;
    let b = serve(&url).await?;
    println!(
        "two instances, {a} and {b}, share {} per API key through {url}\n",
        quota()
    );

    let key = format!("alice-{}", std::process::id());
    let mut passed = 0;
    for i in 0..8 {
        let addr = if i % 2 == 0 { a } else { b };
        let (status, ratelimit) = get_status(addr, &key).await?;
        if status == 200 {
            passed += 1;
        }
        println!(
            "request {:>2} -> instance {addr}: {status}  RateLimit: {ratelimit}",
            i + 1
        );
    }
    println!(
        "\n{passed} of 8 passed: the {} limit held across both instances",
        quota()
    );
    if passed != 5 {
        return Err(format!("expected exactly 5 to pass, got {passed}").into());
    }
    Ok(())
}
