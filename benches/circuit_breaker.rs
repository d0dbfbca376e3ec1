//! Closed-state overhead of `tower_sluice`'s circuit breaker against a bare
//! service and `tower-resilience-circuitbreaker`.
//!
//! ```text
//! cargo bench --bench circuit_breaker
//! ```
//!
//! One request is `poll_ready` + `call` + one poll of the response future
//! on a service that answers at once with `Ok`, so the breaker stays closed
//! and records a success per call. Variants:
//!
//! * `bare`: the `service_fn` alone;
//! * `sluice/count`: a count window of 100 calls (no clock read);
//! * `sluice/default`: the default 30 s time window in 10 buckets (one
//!   read of the coarse clock per call, `CLOCK_MONOTONIC_COARSE` on Linux);
//! * `sluice/slow_calls`: the time window plus slow-call tracking of 1 s
//!   (two coarse clock reads per call);
//! * `sluice/subscribed`: the default window with a subscriber to state
//!   changes (which a closed call never touches);
//! * `sluice/per_key`: a breaker per upstream host, [`HOSTS`] hosts (the
//!   request number modulo [`HOSTS`]), default window each: the store's
//!   lookup is the added cost;
//! * `tower-resilience`: its breaker with a count window of 100 calls.
//!
//! After criterion's report, a summary of ratios measured in the same
//! process (best of several fixed-size runs timed with `Instant`) is
//! printed.

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use support::{bare, drive, timed};
use tower::{Layer, Service};
use tower_sluice::CircuitBreakerLayer;
use tower_sluice::circuit_breaker::{CircuitState, PerKeyCircuitBreakerLayer, SlidingWindow};
use tower_sluice::classify::ErrorsAreFailures;

fn sluice_count() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .window(SlidingWindow::Count(100))
        .build()
        .expect("valid config")
}

fn sluice_default() -> CircuitBreakerLayer {
    CircuitBreakerLayer::default()
}

fn sluice_slow() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .expect("valid config")
}

fn resilience<S>(inner: S) -> impl Service<u64, Response = u64, Error = impl std::fmt::Debug>
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .expect("valid config")
        .layer(inner)
}

/// Upstream hosts of the per-key variant.
const HOSTS: u64 = 64;

/// A breaker per host, the host taken from the request.
type PerHost = PerKeyCircuitBreakerLayer<u64, fn(&u64) -> Option<u64>, ErrorsAreFailures>;

fn per_key_layer() -> PerHost {
    CircuitBreakerLayer::default().per_key(|req: &u64| Some(req % HOSTS))
}

fn config() -> Criterion {
    support::criterion(Duration::from_millis(500), Duration::from_secs(2))
}

fn bench_closed(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("closed");
    g.throughput(Throughput::Elements(1));

    let mut svc = bare();
    g.bench_function("bare", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    for (name, layer) in [
        ("sluice/count", sluice_count()),
        ("sluice/default", sluice_default()),
        ("sluice/slow_calls", sluice_slow()),
        ("sluice/subscribed", sluice_default()),
    ] {
        let handle = layer.handle();
        let _changes = name.contains("subscri").then(|| handle.subscribe());
        let mut svc = layer.layer(bare());
        g.bench_function(name, |b| b.iter(|| drive(&mut svc, &mut cx, black_box(7))));
        assert_eq!(handle.state(), CircuitState::Closed);
    }
    let layer = per_key_layer();
    let handle = layer.handle();
    let mut svc = layer.layer(bare());
    support::bench_numbered(&mut g, "sluice/per_key", |i| drive(&mut svc, &mut cx, i));
    // Every host once the bench ran; none when a filter skipped it.
    assert!(handle.len() <= HOSTS as usize);
    assert!(
        handle
            .stats(&0)
            .is_none_or(|s| s.state == CircuitState::Closed)
    );
    let mut svc = resilience(bare());
    g.bench_function("tower-resilience", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_closed
}

// ---------------------------------------------------------------------------
// ratio summary, timed in this process

const RUNS: usize = 5;
const ITERS: u64 = 2_000_000;

/// Best of [`RUNS`] runs of `run(ITERS)`, in nanoseconds per iteration.
fn best_ns(run: impl FnMut(u64) -> Duration) -> f64 {
    support::best_ns(RUNS, ITERS, run)
}

fn print_ratios() {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut svc = bare();
    let bare_ns = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });
    let mut sluice = Vec::new();
    for (name, layer) in [
        ("count window", sluice_count()),
        ("default (time window)", sluice_default()),
        ("time window + slow calls", sluice_slow()),
        ("default + a subscriber", sluice_default()),
    ] {
        let handle = layer.handle();
        let _changes = name.contains("subscri").then(|| handle.subscribe());
        let mut svc = layer.layer(bare());
        let ns = best_ns(|n| {
            timed(n, || {
                black_box(drive(&mut svc, &mut cx, black_box(7)));
            })
        });
        assert_eq!(handle.state(), CircuitState::Closed);
        sluice.push((name.to_string(), ns));
    }
    let layer = per_key_layer();
    let handle = layer.handle();
    let mut svc = layer.layer(bare());
    let mut i = 0u64;
    let per_key_ns = best_ns(|n| {
        timed(n, || {
            i += 1;
            black_box(drive(&mut svc, &mut cx, black_box(i)));
        })
    });
    assert_eq!(handle.len(), HOSTS as usize);
    sluice.push((format!("per key ({HOSTS} hosts)"), per_key_ns));
    let mut svc = resilience(bare());
    let res_ns = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });

    println!();
    println!("summary: best of {RUNS} runs of {ITERS} requests, closed breaker, ns per request");
    println!("  bare service_fn              {bare_ns:>7.2} ns");
    println!(
        "  tower-resilience             {res_ns:>7.2} ns  (+{:.2} ns)",
        res_ns - bare_ns
    );
    for (name, ns) in sluice {
        println!(
            "  sluice, {name:<24} {ns:>7.2} ns  (+{:.2} ns)  ratio vs tower-resilience {:>5.3}",
            ns - bare_ns,
            ns / res_ns
        );
    }
    println!("  (ratio = sluice / tower-resilience; below 1 means sluice is faster)");
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the
    // timing there, as criterion does.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_ratios();
    }
}
