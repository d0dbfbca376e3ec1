//! A live terminal dashboard from a [`Monitor`]: who is limited, how often,
//! response times, the breaker's state and the queue's depth, refreshed
//! twice a second while simulated traffic runs. Ends by itself after about
//! 12 seconds.
//!
//! ```text
//! cargo run --example dashboard
//! ```
//!
//! The stack: a per-client limit (5 requests/s, burst 5) → a circuit
//! breaker → a queue (2 at a time) → an upstream that answers in 20-40 ms
//! and fails for three seconds in the middle of the run. One `Monitor`
//! observes every layer; alert rules print below the table.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::circuit_breaker::CircuitState;
use tower_sluice::observe::{Alert, AlertRule, Monitor, Snapshot};
use tower_sluice::{CircuitBreakerLayer, PerKeyLayer, QueueLayer, Quota};

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<&'static str, BoxError>> + Send>>;

const RUN: Duration = Duration::from_secs(12);

/// Clients and their request rates (per second).
const CLIENTS: [(&str, u64); 5] = [
    ("alice", 25),
    ("bob", 4),
    ("carol", 8),
    ("dave", 2),
    ("mallory", 60),
];

#[tokio::main]
async fn main() {
    let alerts = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = |alerts: &Arc<Mutex<Vec<String>>>| {
        let alerts = alerts.clone();
        let start = Instant::now();
        move |a: &Alert| {
            alerts
                .lock()
                .unwrap()
                .push(format!("{:>5.1}s  {a}", start.elapsed().as_secs_f64()));
        }
    };
    let monitor = Monitor::builder()
        .window(Duration::from_secs(5))
        .smoothing(0.2)
        .alert(AlertRule::limited_rate(0.3).min_requests(10), log(&alerts))
        .alert(AlertRule::breaker_opened(), log(&alerts))
        .build();

    let start = Instant::now();
    let upstream = service_fn(move |(_client, n): (usize, u64)| async move {
        tokio::time::sleep(Duration::from_millis(20 + n % 21)).await;
        let t = start.elapsed();
        if t > Duration::from_secs(4) && t < Duration::from_secs(7) {
            Err::<&'static str, BoxError>("upstream error".into())
        } else {
            Ok("ok")
        }
    });
    let svc = ServiceBuilder::new()
        .layer(
            PerKeyLayer::new(Quota::per_second(5), |r: &(usize, u64)| {
                Some(CLIENTS[r.0].0)
            })
            .observer(monitor.clone()),
        )
        .layer(
            CircuitBreakerLayer::builder()
                .consecutive_failures(5)
                .open_duration(Duration::from_secs(2))
                .build()
                .expect("valid configuration")
                .observer(monitor.scoped("upstream")),
        )
        .layer(QueueLayer::new(64).concurrency(2).observer(monitor.clone()))
        .service(upstream);

    let mut tasks = Vec::new();
    for (client, &(_, rate)) in CLIENTS.iter().enumerate() {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            let mut n = 0u64;
            while start.elapsed() < RUN {
                tick.tick().await;
                n += 1;
                let call = svc.ready().await.map(|s| s.call((client, n)));
                if let Ok(f) = call {
                    // Boxed to a plain `BoxError` future (spawn's Send check
                    // trips over the layers' error conversion otherwise).
                    let f: Pending = Box::pin(f);
                    tokio::spawn(async move {
                        let _ = f.await;
                    });
                }
            }
        }));
    }

    while start.elapsed() < RUN {
        tokio::time::sleep(Duration::from_millis(500)).await;
        draw(
            &monitor.snapshot(),
            &alerts.lock().unwrap(),
            start.elapsed(),
            false,
        );
    }
    for t in tasks {
        let _ = t.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    monitor.flush_alerts(Duration::from_secs(1));
    draw(
        &monitor.snapshot(),
        &alerts.lock().unwrap(),
        start.elapsed(),
        true,
    );
}

fn bar(rate: f64, width: usize) -> String {
    let full = ((rate * width as f64).round() as usize).min(width);
    format!("{}{}", "█".repeat(full), "·".repeat(width - full))
}

fn state(s: Option<CircuitState>) -> &'static str {
    match s {
        Some(CircuitState::Closed) => "\x1b[32mCLOSED\x1b[0m",
        Some(CircuitState::Open) => "\x1b[31mOPEN\x1b[0m",
        Some(CircuitState::HalfOpen) => "\x1b[33mHALF-OPEN\x1b[0m",
        Some(CircuitState::ForcedOpen) => "\x1b[31mFORCED OPEN\x1b[0m",
        Some(CircuitState::ForcedClosed) => "\x1b[32mFORCED CLOSED\x1b[0m",
        Some(_) => "?",
        None => "-",
    }
}

fn draw(s: &Snapshot, alerts: &[String], elapsed: Duration, last: bool) {
    let mut out = String::new();
    if !last {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!(
        "tower-sluice dashboard  t={:>4.1}s  (window 5 s){}\n\n",
        elapsed.as_secs_f64(),
        if last { "  FINAL" } else { "" }
    ));
    out.push_str(
        "client      requests  limited   limited%  recent%  recent (5 s)           latency\n",
    );
    for k in &s.keys {
        let color = if k.alerting { "\x1b[31m" } else { "" };
        out.push_str(&format!(
            "{color}{:<11} {:>8} {:>8} {:>9.1}% {:>7.1}%  {}  {:>7}\x1b[0m\n",
            k.key.trim_matches('"'),
            k.requests,
            k.limited,
            k.limited_rate * 100.0,
            k.recent_limited_rate * 100.0,
            bar(k.recent_limited_rate, 20),
            k.latency_ewma
                .map(|d| format!("{:.0}ms", d.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    let breaker = s.layer("upstream");
    let queue = s.layer("queue");
    out.push_str(&format!(
        "\nbreaker `upstream`: {:<22} refused {:>5}   failed calls {:>5}\n",
        state(breaker.and_then(|b| b.breaker_state)),
        breaker.map_or(0, |b| b.breaker_rejected),
        breaker.map_or(0, |b| b.failed),
    ));
    let depth = queue.and_then(|q| q.queue_depth).unwrap_or(0);
    out.push_str(&format!(
        "queue depth: {:>3} {}   queued {:>5}  full {:>3}\n",
        depth,
        bar(depth as f64 / 64.0, 32),
        queue.map_or(0, |q| q.queued),
        queue.map_or(0, |q| q.queue_full),
    ));
    out.push_str(&format!(
        "totals: {} decisions, {} limited ({:.1}%), {} keys tracked\n",
        s.totals.requests,
        s.totals.limited,
        s.totals.limited_rate * 100.0,
        s.keys.len()
    ));
    out.push_str("\nalerts:\n");
    for a in alerts.iter().rev().take(8) {
        out.push_str(&format!("  \x1b[31m!\x1b[0m {a}\n"));
    }
    print!("{out}");
}
