//! A mock upstream API on 127.0.0.1 for the client examples and tests: it
//! enforces a quota its clients do not know (429 with `Retry-After`), fails
//! some requests with 502, and can be switched into an outage (every
//! request 502). It records when each request arrived.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use tower_sluice::{Limiter, Quota};

/// What the upstream saw.
#[derive(Default)]
pub struct Stats {
    pub arrivals: Mutex<Vec<Instant>>,
    pub ok: AtomicU64,
    pub limited: AtomicU64,
    pub failed: AtomicU64,
}

/// The upstream's state, shared with its handler.
pub struct Upstream {
    limiter: Limiter,
    /// Every `fail_every`-th request (counting all) answers 502; 0: never.
    fail_every: u64,
    pub outage: AtomicBool,
    pub stats: Stats,
    start: Instant,
}

impl Upstream {
    /// Milliseconds since the upstream started, of each arrival.
    pub fn arrival_times(&self) -> Vec<Duration> {
        self.stats
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(self.start))
            .collect()
    }

    /// The most requests that arrived in any window of `w`.
    pub fn max_in_window(&self, w: Duration) -> usize {
        let times = self.stats.arrivals.lock().unwrap().clone();
        (0..times.len())
            .map(|i| times[i..].iter().take_while(|t| **t - times[i] < w).count())
            .max()
            .unwrap_or(0)
    }
}

async fn handle(State(up): State<Arc<Upstream>>) -> (StatusCode, HeaderMap, &'static str) {
    let n = {
        let mut arrivals = up.stats.arrivals.lock().unwrap();
        arrivals.push(Instant::now());
        arrivals.len() as u64
    };
    let mut headers = HeaderMap::new();
    if up.outage.load(Ordering::SeqCst) || (up.fail_every > 0 && n % up.fail_every == 0) {
        up.stats.failed.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_GATEWAY, headers, "upstream failure\n");
    }
    let decision = up.limiter.check();
    if decision.is_allowed() {
        up.stats.ok.fetch_add(1, Ordering::SeqCst);
        (StatusCode::OK, headers, "done\n")
    } else {
        up.stats.limited.fetch_add(1, Ordering::SeqCst);
        let secs = decision.retry_after().as_secs_f64().ceil().max(1.0) as u64;
        headers.insert("retry-after", HeaderValue::from(secs));
        (StatusCode::TOO_MANY_REQUESTS, headers, "slow down\n")
    }
}

/// Starts the upstream on a free port of 127.0.0.1 with its hidden
/// `quota`, failing every `fail_every`-th request (0: never).
pub async fn start(quota: Quota, fail_every: u64) -> (SocketAddr, Arc<Upstream>) {
    let up = Arc::new(Upstream {
        limiter: Limiter::new(quota),
        fail_every,
        outage: AtomicBool::new(false),
        stats: Stats::default(),
        start: Instant::now(),
    });
    let app = Router::new().route("/", get(handle)).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, up)
}
