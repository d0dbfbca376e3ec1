//! Rate-limit decisions of `tower_sluice` against `governor` and
//! `tower::limit::RateLimit`.
//!
//! ```text
//! cargo bench --bench rate_limit
//! ```
//!
//! Groups:
//!
//! * `direct`: one `check()` on a direct limiter, single thread, always
//!   allowed (1e9 per second, the fastest quota both crates accept without
//!   degenerating) and always denied (1 per hour, after the first request).
//! * `contended`: two threads calling `check()` on one shared limiter; the
//!   time reported is per iteration, where one iteration is one check on
//!   each thread (two checks in all).
//! * `service`: `poll_ready` + `call` + one poll of the response future,
//!   through a bare `service_fn` and through each rate-limit layer, never
//!   limited.
//!
//! After criterion's report, a summary of ratios measured in the same
//! process (best of several fixed-size runs timed with `Instant`) is
//! printed.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use governor::DefaultDirectRateLimiter;
use support::{GovernorService, bare, drive, timed};
use tower::Layer;
use tower_sluice::{Limiter, Quota, RateLimitLayer};

/// Checks per second that no variant reaches during a run: one per
/// nanosecond, burst one second's worth, the fastest quota `Quota` accepts.
const HUGE: u32 = 1_000_000_000;

fn ours_huge() -> Limiter {
    Limiter::new(Quota::per_second(HUGE))
}

fn governor_huge() -> DefaultDirectRateLimiter {
    let n = NonZeroU32::new(HUGE).expect("non-zero");
    governor::RateLimiter::direct(governor::Quota::per_second(n))
}

/// 1 per hour with its one request spent: every later check is denied.
fn ours_exhausted() -> Limiter {
    let limiter = Limiter::new(Quota::per_hour(1));
    assert!(limiter.check().is_allowed());
    assert!(!limiter.check().is_allowed());
    limiter
}

fn governor_exhausted() -> DefaultDirectRateLimiter {
    let one = NonZeroU32::new(1).expect("non-zero");
    let limiter = governor::RateLimiter::direct(governor::Quota::per_hour(one));
    assert!(limiter.check().is_ok());
    assert!(limiter.check().is_err());
    limiter
}

// ---------------------------------------------------------------------------
// service stacks

fn ours_service<S>(inner: S) -> tower_sluice::RateLimit<S> {
    RateLimitLayer::new(Quota::per_second(HUGE))
        .reject()
        .layer(inner)
}

/// Needs a tokio runtime context (it creates a `Sleep`).
fn tower_service<S>(inner: S) -> tower::limit::RateLimit<S> {
    tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(inner)
}

fn governor_service<S>(inner: S) -> GovernorService<S> {
    GovernorService {
        limiter: Arc::new(governor_huge()),
        inner,
    }
}

// ---------------------------------------------------------------------------
// contended: two threads, one limiter

const THREADS: usize = 2;

/// Runs `op` `iters` times on each of [`THREADS`] threads at once and
/// returns the wall time from the moment all threads are released until the
/// last one finishes (thread start-up excluded).
fn contended(iters: u64, op: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(THREADS);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let start = spans.iter().map(|s| s.0).min().expect("threads");
    let end = spans.iter().map(|s| s.1).max().expect("threads");
    end - start
}

// ---------------------------------------------------------------------------
// criterion groups

fn bench_direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("direct");
    g.throughput(Throughput::Elements(1));

    let ours = ours_huge();
    g.bench_function("sluice/allowed", |b| b.iter(|| ours.check()));
    assert!(ours.check().is_allowed(), "sluice limited during the run");

    let gov = governor_huge();
    g.bench_function("governor/allowed", |b| b.iter(|| gov.check()));
    assert!(gov.check().is_ok(), "governor limited during the run");

    let ours = ours_exhausted();
    g.bench_function("sluice/denied", |b| b.iter(|| ours.check()));

    let gov = governor_exhausted();
    g.bench_function("governor/denied", |b| b.iter(|| gov.check()));

    g.finish();
}

fn bench_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended");
    // One iteration is one check on each thread.
    g.throughput(Throughput::Elements(THREADS as u64));

    let ours = Arc::new(ours_huge());
    g.bench_function("sluice/2_threads", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(ours.check());
            })
        })
    });
    assert!(ours.check().is_allowed(), "sluice limited during the run");

    let gov = Arc::new(governor_huge());
    g.bench_function("governor/2_threads", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(gov.check());
            })
        })
    });
    assert!(gov.check().is_ok(), "governor limited during the run");

    g.finish();
}

fn bench_service(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut g = c.benchmark_group("service");
    g.throughput(Throughput::Elements(1));

    let mut svc = bare();
    g.bench_function("bare", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });

    let mut svc = ours_service(bare());
    g.bench_function("sluice_reject", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });

    let mut svc = tower_service(bare());
    g.bench_function("tower_rate_limit", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });

    let mut svc = governor_service(bare());
    g.bench_function("governor_service", |b| {
        b.iter(|| drive(&mut svc, &mut cx, black_box(7)))
    });

    g.finish();
}

fn config() -> Criterion {
    support::criterion(Duration::from_secs(1), Duration::from_secs(3)).sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_direct, bench_contended, bench_service
}

// ---------------------------------------------------------------------------
// ratio summary, timed in this process

const RUNS: usize = 5;
const ITERS: u64 = 5_000_000;

/// Best of [`RUNS`] runs of `run(ITERS)`, in nanoseconds per iteration.
fn best_ns(run: impl FnMut(u64) -> Duration) -> f64 {
    support::best_ns(RUNS, ITERS, run)
}

fn print_ratios() {
    let rt = support::timer_runtime();
    let _guard = rt.enter();

    // direct, allowed: count admissions to prove nothing was limited.
    let ours = ours_huge();
    let mut ok = 0u64;
    let mut total = 0u64;
    let ours_allowed = best_ns(|n| {
        total += n;
        timed(n, || ok += u64::from(black_box(ours.check()).is_allowed()))
    });
    assert_eq!(ok, total, "sluice limited during the summary");

    let gov = governor_huge();
    let (mut ok, mut total) = (0u64, 0u64);
    let gov_allowed = best_ns(|n| {
        total += n;
        timed(n, || ok += u64::from(black_box(gov.check()).is_ok()))
    });
    assert_eq!(ok, total, "governor limited during the summary");

    // direct, denied.
    let ours = ours_exhausted();
    let ours_denied = best_ns(|n| {
        timed(n, || {
            black_box(ours.check());
        })
    });
    let gov = governor_exhausted();
    let gov_denied = best_ns(|n| {
        timed(n, || {
            let _ = black_box(gov.check());
        })
    });

    // contended: wall time per check (two threads, `n` checks each).
    let ours = Arc::new(ours_huge());
    let ours_contended = best_ns(|n| {
        contended(n, || {
            black_box(ours.check());
        }) / THREADS as u32
    });
    assert!(
        ours.check().is_allowed(),
        "sluice limited during the summary"
    );
    let gov = Arc::new(governor_huge());
    let gov_contended = best_ns(|n| {
        contended(n, || {
            let _ = black_box(gov.check());
        }) / THREADS as u32
    });
    assert!(gov.check().is_ok(), "governor limited during the summary");

    // service stacks (drive panics on any limited request).
    let mut cx = Context::from_waker(Waker::noop());
    let mut svc = bare();
    let bare_ns = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });
    let mut svc = ours_service(bare());
    let ours_svc = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });
    let mut svc = tower_service(bare());
    let tower_svc = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });
    let mut svc = governor_service(bare());
    let gov_svc = best_ns(|n| {
        timed(n, || {
            black_box(drive(&mut svc, &mut cx, black_box(7)));
        })
    });

    println!();
    println!("summary: best of {RUNS} runs of {ITERS} iterations, ns per check or request");
    let row = |name: &str, ours: f64, other: f64, other_name: &str| {
        println!(
            "  {name:<28} sluice {ours:>7.2} ns  {other_name:<16} {other:>7.2} ns  ratio {:>5.2}",
            ours / other
        );
    };
    row("direct allowed", ours_allowed, gov_allowed, "governor");
    row("direct denied", ours_denied, gov_denied, "governor");
    row(
        "contended, 2 threads",
        ours_contended,
        gov_contended,
        "governor",
    );
    row("service vs tower", ours_svc, tower_svc, "tower RateLimit");
    row("service vs governor", ours_svc, gov_svc, "governor service");
    row("service vs bare", ours_svc, bare_ns, "bare service_fn");
    println!(
        "  (ratio = sluice / other; below 1 means sluice is faster; contended is wall time / total checks)"
    );
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
