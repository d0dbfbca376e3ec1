//! The cost of monitoring: each layer with no observer against the same
//! layer reporting to a [`Monitor`], in one run.
//!
//! ```text
//! cargo bench --bench observe
//! ```
//!
//! One request is `poll_ready` + `call` + one poll of the response future
//! on a service that answers at once, admitted every time (the quotas are
//! far above the request rate):
//!
//! * `rate_limit`: `RateLimitLayer::reject()` (reports `Allowed`);
//! * `per_key`: `PerKeyLayer` over 1 000 `u64` keys (reports `Allowed`,
//!   counted for the layer; at this rate the thread is busy, so the
//!   Monitor follows one admitted request in 32 into its key's row and to
//!   its `Completed`, timed, and counts it 32 times);
//! * `circuit_breaker`: the default breaker (reports `BreakerCall`; the
//!   breaker reads the precise clock twice for the calls the observer
//!   wants timed: one in 32 for a `Monitor` on a busy thread);
//! * `queue`: a queue with free capacity (a request sent at once reports
//!   nothing);
//! * `retry`: `BackoffRetryLayer` whose first attempt succeeds (reports
//!   nothing).
//!
//! After criterion's report, a summary of ratios measured in the same
//! process (each stack run for 150 ms first, so that a `Monitor` finds the
//! thread busy, then the best of several fixed-size runs) is printed.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use support::{bare, drive, timed};
use tower::{Layer, Service};
use tower_sluice::observe::Monitor;
use tower_sluice::retry::Backoff;
use tower_sluice::{
    BackoffRetryLayer, CircuitBreakerLayer, PerKeyLayer, QueueLayer, Quota, RateLimitLayer,
};

const BIG: u32 = 1_000_000_000;

type Svc = Box<dyn FnMut(&mut Context<'_>, u64) -> u64>;

fn boxed<S>(mut svc: S) -> Svc
where
    S: Service<u64, Response = u64> + 'static,
    S::Error: std::fmt::Debug,
{
    Box::new(move |cx, x| drive(&mut svc, cx, x))
}

/// Every layer, without and with a Monitor.
fn stacks() -> Vec<(&'static str, Svc, Svc)> {
    let per_key = |m: Option<Monitor>| {
        let l = PerKeyLayer::new(Quota::per_second(BIG), |r: &u64| Some(*r % 1000));
        boxed(match m {
            Some(m) => l.observer(m).layer(bare()),
            None => l.layer(bare()),
        })
    };
    let rate = |m: Option<Monitor>| {
        let l = RateLimitLayer::new(Quota::per_second(BIG)).reject();
        boxed(match m {
            Some(m) => l.observer(m).layer(bare()),
            None => l.layer(bare()),
        })
    };
    let breaker = |m: Option<Monitor>| {
        let l = CircuitBreakerLayer::default();
        boxed(match m {
            Some(m) => l.observer(m).layer(bare()),
            None => l.layer(bare()),
        })
    };
    let queue = |m: Option<Monitor>| {
        let l = QueueLayer::new(1024).concurrency(1 << 20);
        boxed(match m {
            Some(m) => l.observer(m).layer(bare()),
            None => l.layer(bare()),
        })
    };
    let retry = |m: Option<Monitor>| {
        let l = BackoffRetryLayer::new(Backoff::exponential(Duration::from_millis(10)));
        boxed(match m {
            Some(m) => l.observer(m).layer(bare()),
            None => l.layer(bare()),
        })
    };
    let m = Monitor::new;
    vec![
        ("rate_limit", rate(None), rate(Some(m()))),
        ("per_key", per_key(None), per_key(Some(m()))),
        ("circuit_breaker", breaker(None), breaker(Some(m()))),
        ("queue", queue(None), queue(Some(m()))),
        ("retry", retry(None), retry(Some(m()))),
    ]
}

fn config() -> Criterion {
    support::criterion(Duration::from_millis(300), Duration::from_secs(1))
}

fn bench_layers(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("observe");
    g.throughput(Throughput::Elements(1));
    for (name, mut plain, mut monitored) in stacks() {
        support::bench_numbered(&mut g, format!("{name}/no_observer"), |i| plain(&mut cx, i));
        support::bench_numbered(&mut g, format!("{name}/monitor"), |i| monitored(&mut cx, i));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_layers
}

const RUNS: usize = 5;
const ITERS: u64 = 500_000;
/// Requests run before timing a stack, long enough for a `Monitor` to find
/// the thread busy (it measures the pace over 100 ms): the summary is of
/// the steady state under load.
const WARM: Duration = Duration::from_millis(150);

fn print_ratios() {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    println!();
    println!("summary: best of {RUNS} runs of {ITERS} requests, ns per request");
    println!("  layer            no observer   Monitor   overhead");
    for (name, mut plain, mut monitored) in stacks() {
        let mut i = 0u64;
        let mut run = |svc: &mut Svc| {
            let start = std::time::Instant::now();
            while start.elapsed() < WARM {
                timed(10_000, || {
                    i += 1;
                    black_box(svc(&mut cx, black_box(i)));
                });
            }
            support::best_ns(RUNS, ITERS, |n| {
                timed(n, || {
                    i += 1;
                    black_box(svc(&mut cx, black_box(i)));
                })
            })
        };
        let a = run(&mut plain);
        let b = run(&mut monitored);
        println!(
            "  {name:<16} {a:>8.1} ns {b:>8.1} ns  {:>+7.1}% (+{:.1} ns)",
            (b / a - 1.0) * 100.0,
            b - a
        );
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_ratios();
    }
}
