//! Per-key decisions of `tower_sluice` against `governor`'s keyed limiter
//! (`DefaultKeyedRateLimiter`: a `DashMap` hashed with std's `RandomState`),
//! and the memory each keeps per key.
//!
//! ```text
//! cargo bench --bench per_key
//! ```
//!
//! Groups:
//!
//! * `check/{1k,100k,1M}`: one decision for a `u64` key drawn uniformly at
//!   random from that many distinct keys, all already in the store, never
//!   limited. Ours is `Backend::acquire` on the in-memory backend
//!   ([`Memory`], `max_keys` 2M) of the `PerKeyLayer` below, reached
//!   through `PerKeyHandle::backend`, so one filled store serves both
//!   groups; governor's is `check_key`.
//! * `service/{1k,100k,1M}`: `poll_ready` + `call` + one poll of the response
//!   future, keyed by the request (`u64`), through `PerKeyLayer`, through
//!   governor's keyed limiter in a minimal hand-written service, and through
//!   the bare `service_fn`.
//!
//! After criterion's report, a summary measured in the same process: ns per
//! decision (best of several fixed-size runs timed with `Instant`,
//! interleaved so that a slow spell of a shared machine hits every variant
//! alike), bytes per key (the live-byte delta of a counting global
//! allocator while N keys go in, divided by N, for `u64` and 24-character
//! `String` keys), and a flood of 1M unique keys against
//! `max_keys = 10_000`.
//!
//! # Keeping keys in the store
//!
//! Both limiters use 1e9 requests per hour (burst 1e9), and every key is
//! first charged half its burst, so its bucket is not full again for half
//! an hour. That matters for ours only: the store forgets *idle* keys
//! (bucket full again) when a shard would grow, so with a quota such as
//! 1e9 per second, whose buckets are full again a nanosecond after each
//! request, most keys would be gone and most lookups would be inserts.
//! Governor keeps every key until `retain_recent()` is called. A request
//! then adds 3.6 µs of debt: nothing is limited in a run.

#[path = "support/mod.rs"]
mod support;

use std::fmt;
use std::hash::Hash;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use governor::DefaultKeyedRateLimiter;
use support::{GovernorKeyedService, bare, drive, key_sequence, mix, timed};
use tower::{Layer, Service};
use tower_sluice::backend::{Acquire, Backend, Memory};
use tower_sluice::error::TooManyKeys;
use tower_sluice::per_key::{PerKeyHandle, Policy};
use tower_sluice::{PerKeyLayer, Quota};

// ---------------------------------------------------------------------------
// counting allocator

#[global_allocator]
static ALLOC: support::alloc::Counting = support::alloc::Counting;

use support::alloc::measure_bytes;

// ---------------------------------------------------------------------------
// keys

/// Distinct keys per size.
const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")];

/// `max_keys` of our stores: above every size, so nothing is refused.
const MAX_KEYS: usize = 2_000_000;

/// Length of each pre-generated key sequence (a power of two).
const SEQ_LEN: usize = 1 << 20;

/// The `n` distinct `u64` keys.
fn u64_keys(n: usize) -> Vec<u64> {
    (0..n as u64).map(mix).collect()
}

/// `n` distinct 24-character keys, such as API keys.
fn string_keys(n: usize) -> Vec<String> {
    (0..n as u64)
        .map(|i| {
            let key = format!("key-{:020}", mix(i));
            debug_assert_eq!(key.len(), 24);
            key
        })
        .collect()
}

/// Walks a key sequence, wrapping around.
struct Keys<'a> {
    seq: &'a [u64],
    at: usize,
}

impl<'a> Keys<'a> {
    fn new(seq: &'a [u64]) -> Self {
        Keys { seq, at: 0 }
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        let key = self.seq[self.at & (SEQ_LEN - 1)];
        self.at = self.at.wrapping_add(1);
        key
    }
}

// ---------------------------------------------------------------------------
// limiters

/// 1e9 per hour, burst 1e9: 3.6 µs of debt per request.
const PER_HOUR: u32 = 1_000_000_000;

/// Charged to each key when it is inserted: half the burst, half an hour of
/// debt, so no key turns idle during a run.
const PREPAY: u32 = PER_HOUR / 2;

fn ours_quota() -> Quota {
    Quota::per_hour(PER_HOUR)
}

fn governor_quota() -> governor::Quota {
    governor::Quota::per_hour(NonZeroU32::new(PER_HOUR).expect("non-zero"))
}

fn prepay() -> NonZeroU32 {
    NonZeroU32::new(PREPAY).expect("non-zero")
}

#[inline(always)]
fn ours_check<K>(mem: &Memory<K>, policy: &Policy, key: &K, cost: u32) -> bool
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    matches!(
        mem.acquire(key, policy, cost, Duration::ZERO),
        Acquire::Ready(Ok(_))
    )
}

#[inline(always)]
fn governor_check<K: Hash + Eq + Clone>(gov: &DefaultKeyedRateLimiter<K>, key: &K) -> bool {
    gov.check_key(key).is_ok()
}

fn governor_prepay<K: Hash + Eq + Clone>(gov: &DefaultKeyedRateLimiter<K>, key: &K) -> bool {
    matches!(gov.check_key_n(key, prepay()), Ok(Ok(())))
}

type KeyFn = fn(&u64) -> Option<u64>;

/// Our side at one size: a `PerKeyLayer` whose store holds every key; the
/// `check` group calls its backend directly.
struct Ours {
    layer: PerKeyLayer<u64, KeyFn>,
    handle: PerKeyHandle<u64, Memory<u64>>,
    policy: Policy,
}

impl Ours {
    fn new(keys: &[u64]) -> Self {
        let key_fn: KeyFn = |req| Some(*req);
        let layer = PerKeyLayer::new(ours_quota(), key_fn).max_keys(MAX_KEYS);
        let handle = layer.handle();
        let policy = handle.default_policy();
        for key in keys {
            assert!(ours_check(handle.backend(), &policy, key, PREPAY));
        }
        assert_eq!(handle.backend().len(), keys.len(), "sluice lost keys");
        Ours {
            layer,
            handle,
            policy,
        }
    }

    fn backend(&self) -> &Memory<u64> {
        self.handle.backend()
    }
}

fn governor_keyed(keys: &[u64]) -> Arc<DefaultKeyedRateLimiter<u64>> {
    let gov = governor::RateLimiter::keyed(governor_quota());
    for key in keys {
        assert!(governor_prepay(&gov, key));
    }
    assert_eq!(gov.len(), keys.len(), "governor lost keys");
    Arc::new(gov)
}

/// Everything measured at one number of keys.
struct Size {
    n: usize,
    label: &'static str,
    seq: Vec<u64>,
    ours: Ours,
    gov: Arc<DefaultKeyedRateLimiter<u64>>,
    /// Live bytes added by inserting the `n` keys (store included).
    ours_bytes: usize,
    gov_bytes: usize,
}

impl Size {
    fn new(n: usize, label: &'static str) -> Self {
        let keys = u64_keys(n);
        let (ours, ours_bytes, _) = measure_bytes(|| Ours::new(&keys));
        let (gov, gov_bytes, _) = measure_bytes(|| governor_keyed(&keys));
        Size {
            n,
            label,
            seq: key_sequence(n, SEQ_LEN, 0x5EED ^ n as u64),
            ours,
            gov,
            ours_bytes,
            gov_bytes,
        }
    }

    /// Panics unless both stores still hold exactly their `n` keys.
    fn assert_intact(&self) {
        assert_eq!(self.ours.backend().len(), self.n, "sluice keys changed");
        assert_eq!(self.gov.len(), self.n, "governor keys changed");
    }
}

// ---------------------------------------------------------------------------
// governor behind a minimal hand-written tower service

// ---------------------------------------------------------------------------
// service stacks

fn governor_service<S>(
    limiter: &Arc<DefaultKeyedRateLimiter<u64>>,
    inner: S,
) -> GovernorKeyedService<S> {
    GovernorKeyedService {
        limiter: limiter.clone(),
        inner,
    }
}

/// Sizes the `service` group runs at.
fn service_sizes(sizes: &[Size]) -> impl Iterator<Item = &Size> {
    sizes.iter()
}

// ---------------------------------------------------------------------------
// criterion groups

fn bench_check(c: &mut Criterion, sizes: &[Size]) {
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(1));
    for size in sizes {
        let (mem, policy) = (size.ours.backend(), &size.ours.policy);
        let mut keys = Keys::new(&size.seq);
        g.bench_function(format!("sluice/{}", size.label), |b| {
            b.iter(|| ours_check(mem, policy, &black_box(keys.next()), 1))
        });
        let mut keys = Keys::new(&size.seq);
        g.bench_function(format!("governor/{}", size.label), |b| {
            b.iter(|| governor_check(&size.gov, &black_box(keys.next())))
        });
        size.assert_intact();
    }
    g.finish();
}

fn bench_service(c: &mut Criterion, sizes: &[Size]) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut g = c.benchmark_group("service");
    g.throughput(Throughput::Elements(1));
    for size in service_sizes(sizes) {
        let label = size.label;
        let mut svc = bare();
        let mut keys = Keys::new(&size.seq);
        g.bench_function(format!("bare/{label}"), |b| {
            b.iter(|| drive(&mut svc, &mut cx, black_box(keys.next())))
        });
        let mut svc = size.ours.layer.layer(bare());
        let mut keys = Keys::new(&size.seq);
        g.bench_function(format!("sluice_per_key/{label}"), |b| {
            b.iter(|| drive(&mut svc, &mut cx, black_box(keys.next())))
        });
        let mut svc = governor_service(&size.gov, bare());
        let mut keys = Keys::new(&size.seq);
        g.bench_function(format!("governor_keyed/{label}"), |b| {
            b.iter(|| drive(&mut svc, &mut cx, black_box(keys.next())))
        });
        size.assert_intact();
    }
    g.finish();
}

fn config() -> Criterion {
    support::criterion(Duration::from_secs(1), Duration::from_secs(2)).sample_size(20)
}

// ---------------------------------------------------------------------------
// summary, timed and measured in this process

const RUNS: usize = 5;
const ITERS: u64 = 2_000_000;

/// A timed run: `run(n)` does `n` iterations and returns the time taken.
type Run<'a> = &'a mut dyn FnMut(u64) -> Duration;

/// Best of [`RUNS`] runs of each of `runs` for [`ITERS`] iterations, in
/// nanoseconds per iteration. The runs are interleaved (one of each per
/// round), so a slow spell of a shared machine hits every variant alike.
fn best_ns<const N: usize>(mut runs: [Run<'_>; N]) -> [f64; N] {
    let mut best = [f64::INFINITY; N];
    for run in runs.iter_mut() {
        run(ITERS / 10); // warm up
    }
    for _ in 0..RUNS {
        for (run, best) in runs.iter_mut().zip(&mut best) {
            *best = best.min(run(ITERS).as_secs_f64() * 1e9 / ITERS as f64);
        }
    }
    best
}

/// A timed run of requests through `svc`, keyed by `seq`.
fn service_run<'a, S>(svc: &'a mut S, seq: &'a [u64]) -> impl FnMut(u64) -> Duration + 'a
where
    S: Service<u64, Response = u64>,
    S::Error: fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut keys = Keys::new(seq);
    move |n| {
        timed(n, || {
            // `drive` panics on any limited request.
            black_box(drive(svc, &mut cx, black_box(keys.next())));
        })
    }
}

/// ns per decision at one size: the backend alone and through a service.
struct Timings {
    ours: f64,
    gov: f64,
    service: Option<(f64, f64, f64)>,
}

fn time_size(size: &Size) -> Timings {
    let (mem, policy) = (size.ours.backend(), &size.ours.policy);
    let (mut ours_keys, mut ours_ok, mut ours_total) = (Keys::new(&size.seq), 0u64, 0u64);
    let mut ours = |n| {
        ours_total += n;
        timed(n, || {
            ours_ok += u64::from(ours_check(mem, policy, &ours_keys.next(), 1))
        })
    };
    let (mut gov_keys, mut gov_ok, mut gov_total) = (Keys::new(&size.seq), 0u64, 0u64);
    let mut gov = |n| {
        gov_total += n;
        timed(n, || {
            gov_ok += u64::from(governor_check(&size.gov, &gov_keys.next()))
        })
    };
    let [ours, gov] = best_ns([&mut ours, &mut gov]);
    assert_eq!(ours_ok, ours_total, "sluice limited during the summary");
    assert_eq!(gov_ok, gov_total, "governor limited during the summary");

    let service = service_sizes(std::slice::from_ref(size))
        .next()
        .map(|size| {
            let (mut bare_svc, mut ours_svc, mut gov_svc) = (
                bare(),
                size.ours.layer.layer(bare()),
                governor_service(&size.gov, bare()),
            );
            let [ours, gov, bare] = best_ns([
                &mut service_run(&mut ours_svc, &size.seq),
                &mut service_run(&mut gov_svc, &size.seq),
                &mut service_run(&mut bare_svc, &size.seq),
            ]);
            (ours, gov, bare)
        });
    size.assert_intact();
    Timings { ours, gov, service }
}

/// Live bytes per key after inserting `keys` into a fresh store of each
/// kind (store included), as `(ours, governor)`.
fn bytes_per_key<K>(keys: &[K]) -> (f64, f64)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    let n = keys.len() as f64;
    let (ours, ours_bytes, _) = measure_bytes(|| {
        let mem = Memory::new(MAX_KEYS);
        let policy = Policy::new(ours_quota());
        for key in keys {
            assert!(ours_check(&mem, &policy, key, PREPAY));
        }
        mem
    });
    assert_eq!(ours.len(), keys.len(), "sluice lost keys");
    drop(ours);
    let (gov, gov_bytes, _) = measure_bytes(|| {
        let gov = governor::RateLimiter::keyed(governor_quota());
        for key in keys {
            assert!(governor_prepay(&gov, key));
        }
        gov
    });
    assert_eq!(gov.len(), keys.len(), "governor lost keys");
    drop(gov);
    (ours_bytes as f64 / n, gov_bytes as f64 / n)
}

/// A flood of unique keys, each admitted once and then active for an hour.
struct Flood {
    admitted: u64,
    refused: u64,
    held: usize,
    live: usize,
    peak: usize,
    ns_per_key: f64,
}

const FLOOD_KEYS: u64 = 1_000_000;
const FLOOD_MAX_KEYS: usize = 10_000;

fn flood_ours() -> Flood {
    let policy = Policy::new(Quota::per_hour(1));
    let start = Instant::now();
    let ((mem, admitted, refused), live, peak) = measure_bytes(|| {
        // Refusing new keys: the path whose cost and memory are compared
        // with governor's keep-every-key store. (The default,
        // `FullStore::EvictNearestFull`, serves every new key instead.)
        let mem = Memory::new(FLOOD_MAX_KEYS).full_store(tower_sluice::backend::FullStore::Refuse);
        let (mut admitted, mut refused) = (0, 0);
        for i in 0..FLOOD_KEYS {
            match mem.acquire(&mix(i), &policy, 1, Duration::ZERO) {
                Acquire::Ready(Ok(_)) => admitted += 1,
                Acquire::Ready(Err(e)) if e.is::<TooManyKeys>() => refused += 1,
                other => panic!("unexpected outcome in the flood: {other:?}"),
            }
        }
        (mem, admitted, refused)
    });
    let ns_per_key = start.elapsed().as_secs_f64() * 1e9 / FLOOD_KEYS as f64;
    Flood {
        admitted,
        refused,
        held: mem.len(),
        live,
        peak,
        ns_per_key,
    }
}

fn flood_governor() -> Flood {
    let one = NonZeroU32::new(1).expect("non-zero");
    let start = Instant::now();
    let ((gov, admitted), live, peak) = measure_bytes(|| {
        let gov = governor::RateLimiter::<u64, _, _>::keyed(governor::Quota::per_hour(one));
        let admitted = (0..FLOOD_KEYS)
            .filter(|&i| governor_check(&gov, &mix(i)))
            .count() as u64;
        (gov, admitted)
    });
    let ns_per_key = start.elapsed().as_secs_f64() * 1e9 / FLOOD_KEYS as f64;
    Flood {
        admitted,
        refused: 0,
        held: gov.len(),
        live,
        peak,
        ns_per_key,
    }
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn print_summary(sizes: &[Size]) {
    let timings: Vec<Timings> = sizes.iter().map(time_size).collect();

    println!();
    println!(
        "summary: best of {RUNS} interleaved runs of {ITERS} iterations, ns per decision, u64 \
         keys drawn uniformly from N present keys"
    );
    let row = |name: &str, ours: f64, other: f64, other_name: &str| {
        println!(
            "  {name:<24} sluice {ours:>7.2} ns  {other_name:<18} {other:>7.2} ns  ratio {:>5.2}",
            ours / other
        );
    };
    for (size, t) in sizes.iter().zip(&timings) {
        row(
            &format!("check, {} keys", size.label),
            t.ours,
            t.gov,
            "governor keyed",
        );
    }
    for (size, t) in sizes.iter().zip(&timings) {
        if let Some((ours, gov, bare)) = t.service {
            row(
                &format!("service, {} keys", size.label),
                ours,
                gov,
                "governor service",
            );
            println!(
                "  {:<24} sluice adds {:>6.2} ns, governor service adds {:>6.2} ns to the bare {:.2} ns \
                 (ratio {:.2})",
                "",
                ours - bare,
                gov - bare,
                bare,
                (ours - bare) / (gov - bare)
            );
        }
    }
    println!(
        "  (ratio = sluice / other; below 1 means sluice is faster; sluice check is \
         Backend::acquire on Memory, service is PerKeyLayer)"
    );

    println!();
    println!(
        "memory: live bytes per key after inserting N keys (counting allocator; store included, \
         malloc's own overhead not)"
    );
    let mem_row = |name: String, ours: f64, gov: f64| {
        println!(
            "  {name:<24} sluice {ours:>7.1} B  governor keyed {gov:>7.1} B  ratio {:>5.2}",
            ours / gov
        );
    };
    for size in sizes.iter().filter(|s| s.n >= 100_000) {
        mem_row(
            format!("u64, {} keys", size.label),
            size.ours_bytes as f64 / size.n as f64,
            size.gov_bytes as f64 / size.n as f64,
        );
        // Ours: what `Memory::table_bytes` estimates, for comparison.
        println!(
            "  {:<24} (sluice Memory::table_bytes: {:.1} B per key)",
            "",
            size.ours.backend().table_bytes() as f64 / size.n as f64
        );
    }
    for &(n, label) in SIZES.iter().filter(|s| s.0 >= 100_000) {
        let keys = string_keys(n);
        let (ours, gov) = bytes_per_key(&keys);
        mem_row(format!("24-char String, {label} keys"), ours, gov);
    }
    println!("  (String keys include the 24-byte heap copy of the key each store keeps)");

    let ours = flood_ours();
    let gov = flood_governor();
    println!();
    println!(
        "flood: {FLOOD_KEYS} unique u64 keys, each active for an hour once admitted \
         (1 per hour); sluice max_keys = {FLOOD_MAX_KEYS}"
    );
    for (name, f) in [("sluice", &ours), ("governor keyed", &gov)] {
        println!(
            "  {name:<16} admitted {:>8}  refused (TooManyKeys) {:>8}  held {:>8}  live {:>7.2} MB  \
             peak {:>7.2} MB  {:>6.1} ns per key",
            f.admitted,
            f.refused,
            f.held,
            mb(f.live),
            mb(f.peak),
            f.ns_per_key
        );
    }
    println!(
        "  memory ratio sluice / governor: {:.4} (sluice is bounded by max_keys, governor keeps \
         every key until retain_recent())",
        ours.live as f64 / gov.live as f64
    );
}

fn main() {
    // `cargo test --benches` runs this binary without `--bench`: run each
    // benchmark once at the smallest size and skip the summary, as
    // criterion skips timing.
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list");
    let sizes: Vec<Size> = SIZES
        .iter()
        .filter(|&&(n, _)| bench || n == 1_000)
        .map(|&(n, label)| Size::new(n, label))
        .collect();

    let mut c = config().configure_from_args();
    bench_check(&mut c, &sizes);
    bench_service(&mut c, &sizes);
    c.final_summary();
    if bench {
        print_summary(&sizes);
    }
}
