//! Exports tower-sluice's events as Prometheus metrics, through the
//! `metrics` facade and `metrics-exporter-prometheus`, and prints the text
//! a Prometheus server would scrape. No HTTP listener: serve
//! `handle.render()` from your own `/metrics` route.
//!
//! ```text
//! cargo run --example prometheus --features metrics
//! ```
//!
//! `tests/observe/prometheus.rs` runs [`scrape`] and parses its output.

use std::convert::Infallible;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::observe::MetricsObserver;
use tower_sluice::{CircuitBreakerLayer, PerKeyLayer, QueueLayer, Quota};

/// Installs the Prometheus recorder, runs some traffic, returns the text.
pub async fn scrape() -> String {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .expect("no other metrics recorder is installed");

    // Per client: 3 requests a minute; the key label is on for at most 2
    // keys (the rest are counted as key="other").
    let mut api = PerKeyLayer::new(Quota::per_minute(3), |client: &&'static str| {
        Some(client.to_string())
    })
    .observer(MetricsObserver::new().key_label(2))
    .layer(service_fn(|_: &'static str| async {
        Ok::<_, Infallible>("ok")
    }));
    for client in ["alice", "alice", "alice", "alice", "alice", "bob", "carol"] {
        let _ = api.ready().await.unwrap().call(client).await;
    }

    // A breaker in front of a failing upstream: opens after 2 failures.
    let mut upstream = CircuitBreakerLayer::builder()
        .consecutive_failures(2)
        .build()
        .expect("valid configuration")
        .observer(MetricsObserver::new())
        .layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("upstream down".into())
        }));
    for _ in 0..4 {
        let _ = upstream.ready().await.unwrap().call(()).await;
    }

    // A queue: one at a time, the second request waits.
    let mut queue = QueueLayer::new(10)
        .concurrency(1)
        .observer(MetricsObserver::new())
        .layer(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, Infallible>(())
        }));
    let first = tokio::spawn(queue.call(()));
    queue.call(()).await.unwrap();
    first.await.unwrap().unwrap();

    handle.render()
}

#[cfg_attr(test, allow(dead_code))]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    print!("{}", scrape().await);
}
