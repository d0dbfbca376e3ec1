//! A driver for counting instructions per request with callgrind, where
//! wall-clock time is too noisy to tell a few nanoseconds apart.
//!
//! ```text
//! cargo bench -p tower-sluice-bench --bench count --no-run
//! valgrind --tool=callgrind --toggle-collect='*count::run*' \
//!     target/release/deps/count-<hash> <case> 100000
//! ```
//!
//! Only the requests are counted (`--toggle-collect` on [`run`]): building
//! the service, quanta's calibration and one warm-up request are left out.
//! Divide the total `Ir` by the number of requests. Cases: `rate_limit`
//! (`RateLimitLayer`, `.reject()`, under the limit), `rate_limit_wait`
//! (the same, waiting mode), `governor_service`
//! (governor's `check()` in a minimal service), `limiter_check`,
//! `governor_check`, `limiter_check_cost` (`Limiter::check_cost(5)` on a
//! quota of tokens), `limiter_mixed` / `limiter_mixed_cost` (`check()` /
//! `check_cost(5)` on a quota of requests and one of tokens), `per_key` /
//! `per_key_cost` (`Backend::acquire` of the in-memory backend, one key:
//! cost 1 on a quota of requests / cost 5 on a quota of tokens),
//! `per_key_settle` (`per_key_cost`, then `Backend::settle` of a true cost
//! of 7 or 4 in turn: a debt, then a refund),
//! `retry_default`, `retry_no_budget`, `tower_retry`,
//! `circuit_breaker_count` (a closed `CircuitBreakerLayer`, count window of
//! 100, every call a success), `circuit_breaker_time` (the same, default
//! 30 s time window, read on the coarse clock), `resilience`
//! (tower-resilience's breaker, count window of 100), `bare`. The breaker
//! cases run inside a tokio runtime, as the `circuit_breaker` bench does.
//! Without callgrind it prints the time per request too.
//!
//! Under valgrind the coarse clock is a system call (valgrind maps no
//! vDSO): its few instructions in the kernel are not counted.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use support::{GovernorService, NeverRetry, bare, drive};
use tower::retry::Retry;
use tower::{Layer, Service};
use tower_sluice::backend::{Acquire, Backend, Memory};
use tower_sluice::circuit_breaker::SlidingWindow;
use tower_sluice::per_key::Policy as KeyPolicy;
use tower_sluice::{BackoffRetryLayer, CircuitBreakerLayer, Limiter, Quota, RateLimitLayer};

const HUGE: u32 = 1_000_000_000;
/// The cost of the `_cost` cases: fixed (read once, as a value unknown to
/// the compiler), so that both arms do the same work around the decision.
const COST: u32 = 5;

/// The requests callgrind counts.
#[inline(never)]
fn run(n: u64, op: &mut dyn FnMut(u64)) {
    for i in 0..n {
        op(black_box(i));
    }
}

fn service<S>(mut svc: S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    drive(&mut svc, &mut cx, 0);
    let start = Instant::now();
    run(n, &mut |i| {
        black_box(drive(&mut svc, &mut cx, i));
    });
    report(start, n);
}

/// A breaker's requests inside a tokio runtime, as the `circuit_breaker`
/// bench drives them.
fn breaker<S>(svc: S, n: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    service(svc, n);
}

fn direct(mut check: impl FnMut() -> bool, n: u64) {
    assert!(check());
    let start = Instant::now();
    run(n, &mut |_| assert!(black_box(check())));
    report(start, n);
}

/// A quota of requests and one of tokens.
fn mixed() -> Limiter {
    Limiter::new(Quota::per_second(HUGE)).and(Quota::per_second(HUGE).counting("tokens"))
}

/// Per-key decisions of `cost` on one key of the in-memory backend.
fn per_key(quota: Quota, cost: u32, n: u64) {
    let store = Memory::<u64>::new(1_000);
    let policy = KeyPolicy::new(quota);
    let cost = black_box(cost);
    direct(
        move || {
            matches!(
                store.acquire(&7, &policy, cost, Duration::ZERO),
                Acquire::Ready(Ok(_))
            )
        },
        n,
    );
}

/// [`per_key`] of a cost on a quota of tokens, each decision settled:
/// a debt and a refund in turn.
fn per_key_settle(n: u64) {
    let store = Memory::<u64>::new(1_000);
    let policy = KeyPolicy::new(Quota::per_second(HUGE).counting("tokens"));
    let cost = black_box(COST);
    let mut turn = 0u32;
    direct(
        move || match store.acquire(&7, &policy, cost, Duration::ZERO) {
            Acquire::Ready(Ok(grant)) => {
                turn ^= 1;
                let true_cost = black_box(if turn == 0 { cost + 2 } else { cost - 1 });
                store.settle(&7, &policy, grant.charged(), true_cost);
                true
            }
            _ => false,
        },
        n,
    );
}

fn report(start: Instant, n: u64) {
    let ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("{n} requests, {ns:.2} ns each");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this binary with no case: nothing to do.
    let Some(case) = args.get(1).filter(|a| !a.starts_with('-')) else {
        return;
    };
    let n: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let huge = NonZeroU32::new(HUGE).expect("non-zero");
    match case.as_str() {
        "bare" => service(bare(), n),
        "rate_limit" => service(
            RateLimitLayer::new(Quota::per_second(HUGE))
                .reject()
                .layer(bare()),
            n,
        ),
        "rate_limit_wait" => service(
            RateLimitLayer::new(Quota::per_second(HUGE)).layer(bare()),
            n,
        ),
        "governor_service" => service(
            GovernorService {
                limiter: Arc::new(governor::RateLimiter::direct(governor::Quota::per_second(
                    huge,
                ))),
                inner: bare(),
            },
            n,
        ),
        "limiter_check" => {
            let limiter = Limiter::new(Quota::per_second(HUGE));
            direct(|| limiter.check().is_allowed(), n);
        }
        "limiter_check_cost" => {
            let limiter = Limiter::new(Quota::per_second(HUGE).counting("tokens"));
            let cost = black_box(COST);
            direct(
                move || limiter.check_cost(cost).is_ok_and(|d| d.is_allowed()),
                n,
            );
        }
        "limiter_mixed" => {
            let limiter = mixed();
            direct(|| limiter.check().is_allowed(), n);
        }
        "limiter_mixed_cost" => {
            let limiter = mixed();
            let cost = black_box(COST);
            direct(
                move || limiter.check_cost(cost).is_ok_and(|d| d.is_allowed()),
                n,
            );
        }
        "per_key" => per_key(Quota::per_second(HUGE), 1, n),
        "per_key_cost" => per_key(Quota::per_second(HUGE).counting("tokens"), COST, n),
        "per_key_settle" => per_key_settle(n),
        "governor_check" => {
            let limiter = governor::RateLimiter::direct(governor::Quota::per_second(huge));
            direct(|| limiter.check().is_ok(), n);
        }
        "retry_default" => service(BackoffRetryLayer::default().layer(bare()), n),
        "retry_no_budget" => service(BackoffRetryLayer::default().no_budget().layer(bare()), n),
        "retry_one_attempt" => service(
            BackoffRetryLayer::default()
                .no_budget()
                .max_attempts(1)
                .layer(bare()),
            n,
        ),
        "tower_retry" => service(Retry::new(NeverRetry, bare()), n),
        "circuit_breaker_count" => breaker(
            CircuitBreakerLayer::builder()
                .window(SlidingWindow::Count(100))
                .build()
                .expect("valid config")
                .layer(bare()),
            n,
        ),
        "circuit_breaker_time" => breaker(CircuitBreakerLayer::default().layer(bare()), n),
        "resilience" => breaker(
            tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
                .sliding_window_size(100)
                .build()
                .expect("valid config")
                .layer(bare()),
            n,
        ),
        other => panic!("unknown case {other}"),
    }
}
