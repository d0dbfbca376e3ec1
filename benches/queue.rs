//! Per-request overhead of `QueueLayer` against `tower::buffer::Buffer`,
//! with the same inner service and concurrency, in one run.
//!
//! ```text
//! cargo bench --bench queue            # criterion groups, then the summary
//! cargo bench --bench queue -- zzz     # the summary only
//! ```
//!
//! One request is `ready().await` + `call` + awaiting the response, on a
//! service that answers at once. Cases:
//!
//! * one caller on a current-thread runtime (Buffer's worker task shares
//!   the thread, as in a single-threaded client);
//! * 64 callers (tasks), each with its own clone, on a 2-thread runtime:
//!   wall time divided by the number of requests;
//! * both again with at most 64 requests in flight (`.concurrency(64)`
//!   against `Buffer` over `ConcurrencyLimit::new(_, 64)`).
//!
//! Both queues hold up to 1024 waiting requests. Overhead is the time per
//! request minus the bare service's, measured in the same process.

#[path = "support/mod.rs"]
mod support;

use support::bare;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use tower::buffer::Buffer;
use tower::limit::ConcurrencyLimit;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_sluice::QueueLayer;

const BOUND: usize = 1024;
const CALLERS: u64 = 64;

/// `n` requests, one after another, through `svc`.
async fn sequential<S>(svc: &mut S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..n {
        let r = svc.ready().await.unwrap().call(black_box(i)).await.unwrap();
        black_box(r);
    }
}

/// `n` requests split over [`CALLERS`] tasks, each with a clone of `svc`.
async fn contended<S>(svc: S, n: u64)
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
{
    let per = n / CALLERS;
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { sequential(&mut svc, per).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn two_threads() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

type Make = fn() -> Svc;
type Svc = tower::util::BoxCloneSyncService<u64, u64, BoxError>;

fn make_bare() -> Svc {
    Svc::new(bare().map_err(BoxError::from))
}
fn make_buffer() -> Svc {
    Svc::new(Buffer::new(bare(), BOUND))
}
fn make_queue() -> Svc {
    Svc::new(QueueLayer::new(BOUND).layer(bare()))
}
fn make_buffer_c64() -> Svc {
    Svc::new(Buffer::new(ConcurrencyLimit::new(bare(), 64), BOUND))
}
fn make_queue_c64() -> Svc {
    Svc::new(QueueLayer::new(BOUND).concurrency(64).layer(bare()))
}

/// The cases, each made inside the runtime that runs it (Buffer spawns
/// its worker there).
const CASES: [(&str, Make); 5] = [
    ("bare", make_bare),
    ("buffer", make_buffer),
    ("queue", make_queue),
    ("buffer/c64", make_buffer_c64),
    ("queue/c64", make_queue_c64),
];

fn time_single(rt: &tokio::runtime::Runtime, make: Make, n: u64) -> Duration {
    rt.block_on(async {
        let mut svc = make();
        sequential(&mut svc, 1000).await;
        let start = Instant::now();
        sequential(&mut svc, n).await;
        start.elapsed()
    })
}

fn time_contended(rt: &tokio::runtime::Runtime, make: Make, n: u64) -> Duration {
    rt.block_on(async {
        let svc = make();
        contended(svc.clone(), CALLERS * 100).await;
        let start = Instant::now();
        contended(svc, n).await;
        start.elapsed()
    })
}

fn config() -> Criterion {
    support::criterion(Duration::from_millis(300), Duration::from_secs(1))
}

fn bench(c: &mut Criterion) {
    let rt = current_thread();
    let mut g = c.benchmark_group("single_caller");
    g.throughput(Throughput::Elements(1));
    for (name, make) in CASES {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| time_single(&rt, make, iters))
        });
    }
    g.finish();

    let rt = two_threads();
    let mut g = c.benchmark_group("64_callers");
    g.throughput(Throughput::Elements(CALLERS));
    for (name, make) in CASES {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| time_contended(&rt, make, iters * CALLERS))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}

// ---------------------------------------------------------------------------
// ratio summary, timed in this process

const RUNS: usize = 5;
const ITERS: u64 = 256_000;

fn print_ratios() {
    let single = current_thread();
    let multi = two_threads();
    let mut rows = Vec::new();
    for (name, make) in CASES {
        let s = support::best_ns(RUNS, ITERS, |n| time_single(&single, make, n));
        let m = support::best_ns(RUNS, ITERS, |n| time_contended(&multi, make, n));
        rows.push((name, s, m));
    }
    let (_, bare_s, bare_m) = rows[0];
    let get = |name: &str| rows.iter().find(|r| r.0 == name).copied().unwrap();

    println!();
    println!(
        "summary: best of {RUNS} runs of {ITERS} requests, ns per request \
         (overhead = minus the bare service)"
    );
    println!(
        "  {:<34} {:>10} {:>10}   {:>10} {:>10}",
        "", "1 caller", "overhead", "64 callers", "overhead"
    );
    for (name, s, m) in &rows {
        println!(
            "  {name:<34} {s:>10.1} {:>10.1}   {m:>10.1} {:>10.1}",
            s - bare_s,
            m - bare_m
        );
    }
    for (ours, theirs, what) in [
        ("queue", "buffer", "no concurrency limit"),
        ("queue/c64", "buffer/c64", "at most 64 in flight"),
    ] {
        let (_, qs, qm) = get(ours);
        let (_, bs, bm) = get(theirs);
        println!(
            "  overhead ratio queue / Buffer, {what:<22} 1 caller {:>6.3}   64 callers {:>6.3}",
            (qs - bare_s) / (bs - bare_s),
            (qm - bare_m) / (bm - bare_m)
        );
    }
    println!("  (below 1 means QueueLayer adds less than Buffer)");
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_ratios();
    }
}
