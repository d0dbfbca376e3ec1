//! `cargo run --example axum_server --features axum`: an AI API with free
//! and paid tiers, limited per API key and per service, answering 429 with
//! `Retry-After` and `RateLimit` headers.
//!
//! | service | free tier | paid tier |
//! |---|---|---|
//! | text generation (`/v1/text`) | 30/min | 120/min |
//! | image generation (`/v1/image`) | 10/min | 60/min |
//! | vision analysis (`/v1/vision`) | 20/min | 100/min |
//!
//! The key is the pair (API key from `x-api-key`, service from the path);
//! keys starting with `paid-` are on the paid tier. A request without an
//! API key gets 401. Set `PORT` to listen elsewhere than 3000.
//!
//! With the `redis` feature and `REDIS_URL` set, the buckets live in Redis,
//! so several instances of this server share them:
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_server --features axum,redis`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::post;
use tower_sluice::http::{HeaderKey, HttpLimitLayer};
use tower_sluice::per_key::Policy;
use tower_sluice::{PerKeyLayer, Quota};

/// The services of the API, taken from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Text,
    Image,
    Vision,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Text, Service::Image, Service::Vision];

    /// The service a path belongs to: `/v1/text`, `/v1/image`, `/v1/vision`.
    pub fn from_path(path: &str) -> Option<Service> {
        match path.trim_end_matches('/') {
            "/v1/text" => Some(Service::Text),
            "/v1/image" => Some(Service::Image),
            "/v1/vision" => Some(Service::Vision),
            _ => None,
        }
    }

    pub fn path(self) -> &'static str {
        match self {
            Service::Text => "/v1/text",
            Service::Image => "/v1/image",
            Service::Vision => "/v1/vision",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Text => "text",
            Service::Image => "image",
            Service::Vision => "vision",
        }
    }
}

/// A customer's tier, from their API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Free,
    Paid,
}

impl Tier {
    pub fn of(api_key: &str) -> Tier {
        if api_key.starts_with("paid-") {
            Tier::Paid
        } else {
            Tier::Free
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Paid => "paid",
        }
    }
}

/// The tier table: requests per minute.
pub fn per_minute(tier: Tier, service: Service) -> u32 {
    match (service, tier) {
        (Service::Text, Tier::Free) => 30,
        (Service::Text, Tier::Paid) => 120,
        (Service::Image, Tier::Free) => 10,
        (Service::Image, Tier::Paid) => 60,
        (Service::Vision, Tier::Free) => 20,
        (Service::Vision, Tier::Paid) => 100,
    }
}

/// What a request is limited by: its API key and the service it calls.
pub type Key = (String, Service);

/// The limit: one bucket per (API key, service), under the policy of the
/// key's tier for that service, in memory.
pub fn limit() -> HttpLimitLayer<Key, impl Fn(&Request) -> Option<Key> + Clone> {
    limit_on(tower_sluice::backend::Memory::new(
        tower_sluice::per_key::DEFAULT_MAX_KEYS,
    ))
}

/// The same limit with its buckets in `backend` (in memory, or Redis).
pub fn limit_on<B>(backend: B) -> HttpLimitLayer<Key, impl Fn(&Request) -> Option<Key> + Clone, B> {
    // One policy per cell of the table, built once and shared: named after
    // the tier and service, so clients see e.g. "free-image-per-minute".
    let policy = |tier: Tier, service: Service| {
        Policy::new(Quota::per_minute(per_minute(tier, service))).named(format!(
            "{}-{}",
            tier.name(),
            service.name()
        ))
    };
    let table: Vec<(Tier, Service, Policy)> = [Tier::Free, Tier::Paid]
        .into_iter()
        .flat_map(|tier| Service::ALL.map(|service| (tier, service, policy(tier, service))))
        .collect();

    let api_key = HeaderKey::from_static("x-api-key");
    let key = move |req: &Request| -> Option<Key> {
        let service = Service::from_path(req.uri().path())?;
        Some((api_key.key_of(req)?, service))
    };
    PerKeyLayer::new(policy(Tier::Free, Service::Text), key)
        .backend(backend)
        .policy_for(move |(api_key, service): &Key| {
            let tier = Tier::of(api_key);
            table
                .iter()
                .find(|(t, s, _)| *t == tier && s == service)
                .map(|(_, _, policy)| policy.clone())
        })
        .http()
        .missing_key_status(StatusCode::UNAUTHORIZED)
        .problem_details(true)
}

/// The API: three endpoints behind the per-key limit. Unknown paths get 404
/// without touching the limit (`route_layer`).
pub fn app() -> Router {
    routes().route_layer(limit())
}

fn routes() -> Router {
    Router::new()
        .route("/v1/text", post(|| async { "generated text\n" }))
        .route("/v1/image", post(|| async { "generated image\n" }))
        .route("/v1/vision", post(|| async { "image analysed\n" }))
}

/// A service's name in Redis keys (`sluice:<len>:<api key>:text`).
#[cfg(feature = "redis")]
impl tower_sluice::backend::redis::RedisKey for Service {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.name().as_bytes());
    }
}

/// The API with its buckets in Redis at `url`, shared by every instance.
#[cfg(feature = "redis")]
pub fn app_on_redis(url: &str) -> Result<Router, tower_sluice::BoxError> {
    let redis = tower_sluice::backend::redis::RedisBackend::from_url(url)?.prefix("ai-api:");
    Ok(routes().route_layer(limit_on(redis)))
}

/// In memory, or on Redis when `REDIS_URL` is set (feature `redis`).
fn app_from_env() -> Router {
    #[cfg(feature = "redis")]
    if let Ok(url) = std::env::var("REDIS_URL") {
        println!("limits shared through Redis at {url}");
        return app_on_redis(&url).expect("a valid REDIS_URL");
    }
    app()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let base = format!("http://{}", listener.local_addr()?);

    println!("AI API on {base}, limited per API key and service:\n");
    println!("  service   free/min  paid/min");
    for service in Service::ALL {
        println!(
            "  {:<9} {:>8}  {:>8}",
            service.path(),
            per_minute(Tier::Free, service),
            per_minute(Tier::Paid, service)
        );
    }
    println!("\nTry:\n");
    println!("  # one request, with its RateLimit-Policy and RateLimit headers");
    println!("  curl -i -X POST -H 'x-api-key: free-alice' {base}/v1/text\n");
    println!("  # 12 image requests on the free tier: 10 x 200, then 429");
    println!(
        "  for i in $(seq 12); do curl -s -o /dev/null -w '%{{http_code}}\\n' -X POST -H 'x-api-key: free-alice' {base}/v1/image; done\n"
    );
    println!("  # the 429 itself: Retry-After, RateLimit and a problem+json body");
    println!("  curl -i -X POST -H 'x-api-key: free-alice' {base}/v1/image\n");
    println!("  # a paid key has its own, larger buckets");
    println!("  curl -i -X POST -H 'x-api-key: paid-bob' {base}/v1/image\n");
    println!("  # no API key: 401");
    println!("  curl -i -X POST {base}/v1/vision\n");

    axum::serve(listener, app_from_env()).await
}
