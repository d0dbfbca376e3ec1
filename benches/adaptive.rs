//! Per-request overhead of each adaptive layer against its non-adaptive
//! counterpart, in one run.
//!
//! ```text
//! cargo bench --bench adaptive -- zzz    # the ratio summary only
//! cargo bench --bench adaptive           # criterion's report too
//! ```
//!
//! One request is `poll_ready` + `call` + one poll of the response future
//! on a service that answers at once, under limits high enough that
//! nothing waits or is refused, so what is measured is the bookkeeping:
//!
//! * `AimdLayer` (pacing + feedback) against `RateLimitLayer` (waiting mode);
//! * `AdaptivePolicy` (`per_key_layer` + `feedback_layer`) against
//!   `PerKeyLayer`, 1 000 keys;
//! * `AdaptiveConcurrencyLayer` (gradient, AIMD) against tower's
//!   `ConcurrencyLimit`;
//! * `AdaptiveThrottleLayer` against the bare service.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use support::{bare, drive, timed};
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service};
use tower_sluice::adaptive::{
    AdaptiveConcurrencyLayer, AdaptivePolicy, AdaptiveThrottleLayer, AimdLayer, AimdLimit,
    GradientLimit,
};
use tower_sluice::{PerKeyLayer, Quota, RateLimitLayer};

/// A quota nothing reaches: one request per nanosecond.
fn huge() -> Quota {
    Quota::new(1_000_000_000, Duration::from_secs(1))
}

fn key(req: &u64) -> Option<u64> {
    Some(req % 1_000)
}

type Boxed = Box<dyn FnMut(&mut Context<'_>, u64) -> u64>;

fn boxed<S>(mut svc: S) -> Boxed
where
    S: Service<u64, Response = u64> + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |cx, req| drive(&mut svc, cx, req))
}

/// The variants, in pairs: (group, name, service).
fn variants() -> Vec<(&'static str, &'static str, Boxed)> {
    let adaptive = AdaptivePolicy::new(huge(), u32::MAX);
    assert_eq!(adaptive.max(), 1_000_000_000);
    let per_key_adaptive = adaptive
        .per_key_layer(key as fn(&u64) -> Option<u64>)
        .layer(
            adaptive
                .feedback_layer(key as fn(&u64) -> Option<u64>)
                .layer(bare()),
        );
    vec![
        ("bare", "service_fn", boxed(bare())),
        (
            "rate",
            "RateLimitLayer",
            boxed(RateLimitLayer::new(huge()).layer(bare())),
        ),
        (
            "rate",
            "AimdLayer",
            boxed(AimdLayer::new(huge()).layer(bare())),
        ),
        (
            "per_key",
            "PerKeyLayer",
            boxed(PerKeyLayer::new(huge(), key as fn(&u64) -> Option<u64>).layer(bare())),
        ),
        ("per_key", "AdaptivePolicy", boxed(per_key_adaptive)),
        (
            "concurrency",
            "tower ConcurrencyLimit",
            boxed(ConcurrencyLimitLayer::new(1_000).layer(bare())),
        ),
        (
            "concurrency",
            "AdaptiveConcurrency gradient",
            boxed(
                AdaptiveConcurrencyLayer::new(GradientLimit::new().initial(1_000).max(1_000))
                    .layer(bare()),
            ),
        ),
        (
            "concurrency",
            "AdaptiveConcurrency AIMD",
            boxed(
                AdaptiveConcurrencyLayer::new(
                    AimdLimit::new(Duration::from_secs(1))
                        .initial(1_000)
                        .max(1_000),
                )
                .layer(bare()),
            ),
        ),
        (
            "throttle",
            "AdaptiveThrottleLayer",
            boxed(AdaptiveThrottleLayer::new().seed(1).layer(bare())),
        ),
    ]
}

fn config() -> Criterion {
    support::criterion(Duration::from_millis(300), Duration::from_secs(1))
}

fn bench_overhead(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("adaptive");
    g.throughput(Throughput::Elements(1));
    for (group, name, mut svc) in variants() {
        support::bench_numbered(&mut g, format!("{group}/{name}"), |i| svc(&mut cx, i));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_overhead
}

const RUNS: usize = 3;
const ITERS: u64 = 1_000_000;

fn print_ratios() {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut results: Vec<(&str, &str, f64)> = Vec::new();
    for (group, name, mut svc) in variants() {
        let mut i = 0u64;
        let ns = support::best_ns(RUNS, ITERS, |n| {
            timed(n, || {
                i += 1;
                black_box(svc(&mut cx, black_box(i)));
            })
        });
        results.push((group, name, ns));
    }
    let bare = results[0].2;
    println!();
    println!("summary: best of {RUNS} runs of {ITERS} requests, nothing limited, ns per request");
    let mut baseline: Option<(&str, f64)> = None;
    for (group, name, ns) in &results {
        let counterpart = match baseline {
            Some((g, b)) if g == *group => Some(b),
            _ => None,
        };
        match counterpart {
            Some(b) => println!(
                "  {group:<12} {name:<30} {ns:>7.1} ns  (+{:>5.1} over bare)  ratio vs counterpart {:>5.2}",
                ns - bare,
                ns / b
            ),
            None => {
                println!(
                    "  {group:<12} {name:<30} {ns:>7.1} ns  (+{:>5.1} over bare)",
                    ns - bare
                );
                baseline = Some((group, if *group == "throttle" { bare } else { *ns }));
                if *group == "throttle" {
                    println!("  {:<43} ratio vs bare {:>5.2}", "", ns / bare);
                }
            }
        }
    }
    println!("  (ratio = adaptive / its non-adaptive counterpart in the same group)");
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_ratios();
    }
}
