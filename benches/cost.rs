//! A decision with a cost against a plain one, in the same run.
//!
//! ```text
//! cargo bench --bench cost
//! ```
//!
//! * `plain`: `Limiter::check()` on one quota of requests.
//! * `cost`: `Limiter::check_cost(c)` on one quota of tokens (c varies
//!   per call, as real costs do; the plain loop draws the same costs and
//!   drops them, so that the loops differ by the decision only).
//! * `mixed plain` / `mixed cost`: two quotas (requests and tokens),
//!   `check()` against `check_cost(c)`.
//!
//! * `settle`: a per-key decision of the in-memory backend with a cost
//!   (`Backend::acquire`, quota of tokens), against the same decision
//!   followed by `Backend::settle` of its true cost (half the time more
//!   than the estimate: a debt, half the time less: a refund).
//!
//! Every quota is so large that every decision is allowed. Best of several
//! fixed-size runs timed with `Instant`, interleaved so drift hits both.

#[path = "support/mod.rs"]
mod support;

use std::hint::black_box;

use std::time::Duration;
use support::{best_ns, timed};

use tower_sluice::backend::{Acquire, Backend, Memory};
use tower_sluice::per_key::Policy;
use tower_sluice::{Limiter, Quota};

const HUGE: u32 = 1_000_000_000;
const ITERS: u64 = 5_000_000;
const RUNS: usize = 9;

fn main() {
    let plain = Limiter::new(Quota::per_second(HUGE));
    let tokens = Limiter::new(Quota::per_second(HUGE).counting("tokens"));
    let mixed =
        Limiter::new(Quota::per_second(HUGE)).and(Quota::per_second(HUGE).counting("tokens"));
    let mut pairs = Vec::new();
    for (name, a, b) in [
        ("one quota", &plain, &tokens),
        ("requests + tokens", &mixed, &mixed),
    ] {
        let mut plain_ns = f64::INFINITY;
        let mut cost_ns = f64::INFINITY;
        // Costs of 1 to 15 tokens, a token a nanosecond: the clock keeps
        // up, so every decision is allowed (checked below).
        let mut denied = 0u64;
        for _ in 0..3 {
            // The plain loop draws the same costs and throws them away, so
            // that the two loops differ by the decision only.
            let mut c = 0u32;
            plain_ns = plain_ns.min(best_ns(RUNS, ITERS, |n| {
                timed(n, || {
                    c = (c + 7) & 15;
                    black_box(c | 1);
                    denied += u64::from(!black_box(a.check()).is_allowed());
                })
            }));
            let mut c = 0u32;
            cost_ns = cost_ns.min(best_ns(RUNS, ITERS, |n| {
                timed(n, || {
                    c = (c + 7) & 15;
                    let d = black_box(b.check_cost(black_box(c | 1)));
                    denied += u64::from(!d.is_ok_and(|d| d.is_allowed()));
                })
            }));
        }
        assert_eq!(denied, 0, "{name}: every decision is allowed");
        pairs.push((name, plain_ns, cost_ns));
    }
    println!(
        "{:<20} {:>10} {:>10} {:>8}",
        "limiter", "plain ns", "cost ns", "ratio"
    );
    for (name, plain, cost) in pairs {
        println!(
            "{name:<20} {plain:>10.2} {cost:>10.2} {:>8.3}",
            cost / plain
        );
    }
    settle();
}

/// A per-key decision with a cost, with and without settling it.
fn settle() {
    let store = Memory::<u64>::new(1_000);
    let policy = Policy::new(Quota::per_second(HUGE).counting("tokens"));
    let acquire = |c: u32| match store.acquire(&7, &policy, c, Duration::ZERO) {
        Acquire::Ready(Ok(grant)) => grant,
        _ => unreachable!("every decision is allowed"),
    };
    // Costs of 1 to 15 tokens (a token a nanosecond): the clock keeps up.
    let (mut plain_ns, mut settle_ns) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        let mut c = 0u32;
        plain_ns = plain_ns.min(best_ns(RUNS, ITERS, |n| {
            timed(n, || {
                c = (c + 7) & 15;
                black_box(acquire(black_box(c | 1)));
            })
        }));
        let mut c = 0u32;
        settle_ns = settle_ns.min(best_ns(RUNS, ITERS, |n| {
            timed(n, || {
                c = (c + 7) & 15;
                let estimate = c | 1;
                let grant = acquire(black_box(estimate));
                // Half the turns owe 2 more, half get 1 back: on average
                // as much as the plain case charges.
                let true_cost = if c & 4 == 0 {
                    estimate + 2
                } else {
                    estimate - 1
                };
                store.settle(&7, &policy, grant.charged(), black_box(true_cost));
            })
        }));
    }
    println!();
    println!(
        "{:<20} {:>10} {:>10} {:>8}",
        "per key (memory)", "cost ns", "settle ns", "ratio"
    );
    println!(
        "{:<20} {plain_ns:>10.2} {settle_ns:>10.2} {:>8.3}",
        "tokens",
        settle_ns / plain_ns
    );
}
