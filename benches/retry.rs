//! The no-retry path of `BackoffRetryLayer` (the first attempt succeeds)
//! against tower's `retry::Retry` with a policy that never retries, and a
//! bare service, in the same run; then the allocations per request.
//!
//! ```text
//! cargo bench --bench retry            # criterion groups, then the summary
//! cargo bench --bench retry -- zzz     # the summary only
//! ```
//!
//! One request is `poll_ready` + `call` + one poll of the response future
//! on a `service_fn` that answers at once. Both retry layers clone the
//! request (a `u64`) to keep it for a retry, and clone the inner service
//! into the future.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use support::{NeverRetry, bare, drive, timed};
use tower::retry::Retry;
use tower::{Layer, Service};
use tower_sluice::BackoffRetryLayer;

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

fn config() -> Criterion {
    support::criterion(Duration::from_millis(300), Duration::from_secs(1))
}

fn bench_no_retry(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("no_retry");
    g.throughput(Throughput::Elements(1));

    let mut svc = bare();
    g.bench_function("bare", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    let mut svc = Retry::new(NeverRetry, bare());
    g.bench_function("tower_retry", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    let mut svc = BackoffRetryLayer::default().layer(bare());
    g.bench_function("sluice/default", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    let mut svc = BackoffRetryLayer::default().no_budget().layer(bare());
    g.bench_function("sluice/no_budget", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_no_retry
}

// ---------------------------------------------------------------------------
// ratio summary, timed in this process

const RUNS: usize = 5;
const ITERS: u64 = 2_000_000;

fn best_ns(run: impl FnMut(u64) -> Duration) -> f64 {
    support::best_ns(RUNS, ITERS, run)
}

/// Allocations per request over `n` requests through `svc`.
fn allocs_per_request<S>(svc: &mut S, cx: &mut Context<'_>, n: u64) -> f64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    drive(svc, cx, 1);
    let before = support::alloc::allocations();
    for i in 0..n {
        black_box(drive(svc, cx, i));
    }
    (support::alloc::allocations() - before) as f64 / n as f64
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
    let mut tower_svc = Retry::new(NeverRetry, bare());
    let tower_ns = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut tower_svc, &mut cx, black_box(7)));
        })
    });
    let mut sluice = Vec::new();
    for (name, layer) in [
        ("default (with budget)", BackoffRetryLayer::default()),
        ("no budget", BackoffRetryLayer::default().no_budget()),
    ] {
        let mut svc = layer.layer(bare());
        let ns = best_ns(|n| {
            timed(n, || {
                black_box(drive(&mut svc, &mut cx, black_box(7)));
            })
        });
        let allocs = allocs_per_request(&mut svc, &mut cx, 100_000);
        sluice.push((name, ns, allocs));
    }
    let tower_allocs = allocs_per_request(&mut tower_svc, &mut cx, 100_000);

    println!();
    println!(
        "summary: best of {RUNS} runs of {ITERS} requests, first attempt succeeds, ns per request"
    );
    println!("  bare service_fn                 {bare_ns:>7.2} ns");
    println!(
        "  tower Retry, never-retry policy {tower_ns:>7.2} ns  (+{:.2} ns)  allocations/request {tower_allocs:.3}",
        tower_ns - bare_ns
    );
    for (name, ns, allocs) in sluice {
        println!(
            "  sluice, {name:<23} {ns:>7.2} ns  (+{:.2} ns)  ratio vs tower Retry {:>5.3}  allocations/request {allocs:.3}",
            ns - bare_ns,
            ns / tower_ns
        );
    }
    println!("  (ratio = sluice / tower Retry; below 1 means sluice is faster)");
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_ratios();
    }
}
