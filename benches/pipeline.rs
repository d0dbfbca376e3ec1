//! The whole pipeline: the client stack (queue → retry → rate limit →
//! circuit breaker) and the server stack (per-key limit → concurrency limit
//! → handler) against a bare service and against the same stacks built from
//! tower-resilience's layers, in one run; then each layer alone, and the
//! allocations per request of everything.
//!
//! ```text
//! cargo bench --bench pipeline            # criterion groups, then the summary
//! cargo bench --bench pipeline -- zzz     # the summary only
//! ```
//!
//! One request is `poll_ready` + `call` + one poll of the response future
//! with a no-op waker, inside a current-thread runtime's context, on a
//! `service_fn` that answers at once with `Ok`. Nothing ever waits: the
//! quotas are huge, the breakers stay closed, the queue is empty (one
//! caller; contended queues are in `benches/queue.rs`). The drive panics if
//! a response future is pending or a request fails, so a limited or queued
//! request cannot go unnoticed.
//!
//! Stacks (outermost first):
//!
//! * `sluice/client`: `QueueLayer::new(1024)` → `BackoffRetryLayer` (an
//!   exponential backoff, default budget) → `RateLimitLayer` (1e9 per second,
//!   waits when limited) → `CircuitBreakerLayer::default()` (30 s time
//!   window in 10 buckets);
//! * `resilience/client`: tower-resilience has no queue layer, so its
//!   `BulkheadLayer` (at most 1024 concurrent calls, waiting for a permit)
//!   stands in for the queue → `RetryLayer` (3 attempts, exponential
//!   backoff) → `RateLimiterLayer` (1e9 per second, `backpressure`: waits
//!   when limited) → `CircuitBreakerLayer` (its default count window of 100
//!   calls; its time window keeps a record per call);
//! * `sluice/server`: `PerKeyLayer` (1e9 per hour per key, the key
//!   `req % 1000`) → tower's `ConcurrencyLimitLayer` (1024) → handler;
//! * `resilience/server`: tower-resilience has no per-key limiter either,
//!   so its `RateLimiterLayer` (one shared bucket, 1e9 per second, rejects
//!   when limited) → `BulkheadLayer` (1024) → handler.
//!
//! Pairs of our client layers (`pair/*`) show where the client stack's cost
//! beyond the sum of its layers alone comes from; `pair/queue_large` is the
//! queue over a service whose response future is as large as the retry
//! layer's in the client stack (336 bytes), to show what moving it costs.
//!
//! The per-key quota is 1e9 per *hour* (as in `benches/per_key.rs`) so that
//! a key's bucket is not full again a nanosecond after each request: the
//! store forgets idle keys, and with a per-second quota most lookups would
//! be inserts. Nothing is limited in a run either way.
//!
//! After criterion's report, a summary measured in the same process: ns per
//! request (best of several fixed-size runs timed with `Instant`, every case
//! run once per round so that a slow spell of a shared machine hits them
//! alike), the ns each stack or layer adds to the bare service, and
//! allocations and bytes per request counted by a counting global allocator
//! over 100,000 requests after a warm-up.

#[path = "support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::fmt;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use support::{bare, drive, timed};
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceBuilder};
use tower_resilience_bulkhead::BulkheadLayer;
use tower_resilience_circuitbreaker::CircuitBreakerError;
use tower_resilience_ratelimiter::{RateLimiterLayer, RateLimiterServiceError};
use tower_resilience_retry::RetryLayer;
use tower_sluice::retry::Backoff;
use tower_sluice::{
    BackoffRetryLayer, CircuitBreakerLayer, PerKeyLayer, QueueLayer, Quota, RateLimitLayer,
};

// ---------------------------------------------------------------------------
// counting allocator

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

// ---------------------------------------------------------------------------
// services

const QUEUE_CAPACITY: usize = 1024;
const CONCURRENCY: usize = 1024;
const KEYS: u64 = 1000;

/// A service that answers at once with a large response future (as large
/// as the retry layer's over the rate limiter and breaker), to show what
/// the size of the inner future costs the queue.
#[derive(Clone, Copy)]
struct LargeFuture;

struct Large {
    pad: [u64; 41],
    value: u64,
}

impl std::future::Future for Large {
    type Output = Result<u64, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(self.value + self.pad[40]))
    }
}

impl Service<u64> for LargeFuture {
    type Response = u64;
    type Error = Infallible;
    type Future = Large;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, value: u64) -> Large {
        Large {
            pad: [black_box(0); 41],
            value,
        }
    }
}

/// Never limits one caller: a request every nanosecond, burst 1e9.
fn client_quota() -> Quota {
    Quota::per_second(1_000_000_000)
}

/// Per key: 1e9 an hour, so that buckets stay in the store (module docs).
fn server_quota() -> Quota {
    Quota::per_hour(1_000_000_000)
}

fn backoff() -> Backoff {
    Backoff::exponential(Duration::from_millis(100)).max_delay(Duration::from_secs(10))
}

fn sluice_queue() -> QueueLayer {
    QueueLayer::new(QUEUE_CAPACITY)
}

fn sluice_retry() -> BackoffRetryLayer {
    BackoffRetryLayer::new(backoff())
}

fn sluice_rate_limit() -> RateLimitLayer {
    RateLimitLayer::new(client_quota())
}

fn sluice_per_key<S>(inner: S) -> impl Service<u64, Response = u64, Error: fmt::Debug>
where
    S: Service<u64, Response = u64, Error: Into<tower::BoxError>> + Clone,
{
    PerKeyLayer::new(server_quota(), |req: &u64| Some(*req % KEYS)).layer(inner)
}

fn resilience_bulkhead() -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent_calls(CONCURRENCY)
        .build()
        .expect("valid bulkhead")
}

fn resilience_retry<E>() -> RetryLayer<u64, u64, E> {
    RetryLayer::<u64, u64, E>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
}

fn resilience_rate_limit(backpressure: bool) -> RateLimiterLayer {
    let builder = RateLimiterLayer::builder()
        .limit_for_period(1_000_000_000)
        .refresh_period(Duration::from_secs(1));
    let builder = if backpressure {
        builder.backpressure()
    } else {
        builder
    };
    builder.build().expect("valid rate limiter")
}

fn resilience_breaker() -> tower_resilience_circuitbreaker::CircuitBreakerLayer {
    tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
}

/// Ours: queue → retry → rate limit → breaker.
fn sluice_client<S>(inner: S) -> impl Service<u64, Response = u64, Error: fmt::Debug>
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(sluice_queue())
        .layer(sluice_retry())
        .layer(sluice_rate_limit())
        .layer(CircuitBreakerLayer::default())
        .service(inner)
}

/// The error the retry layer sees in tower-resilience's client stack.
type ResilienceClientError = RateLimiterServiceError<CircuitBreakerError<Infallible>>;

/// tower-resilience's: bulkhead (for the queue) → retry → rate limiter →
/// breaker.
fn resilience_client<S>(inner: S) -> impl Service<u64, Response = u64, Error: fmt::Debug>
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(resilience_bulkhead())
        .layer(resilience_retry::<ResilienceClientError>())
        .layer(resilience_rate_limit(true))
        .layer(resilience_breaker())
        .service(inner)
}

/// Ours: per-key limit → concurrency limit → handler.
fn sluice_server<S>(inner: S) -> impl Service<u64, Response = u64, Error: fmt::Debug>
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone,
{
    sluice_per_key(ConcurrencyLimitLayer::new(CONCURRENCY).layer(inner))
}

/// tower-resilience's: one shared rate limiter (it has no per-key one) →
/// bulkhead → handler.
fn resilience_server<S>(inner: S) -> impl Service<u64, Response = u64, Error: fmt::Debug>
where
    S: Service<u64, Response = u64, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    ServiceBuilder::new()
        .layer(resilience_rate_limit(false))
        .layer(resilience_bulkhead())
        .service(inner)
}

// ---------------------------------------------------------------------------
// cases

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bare,
    Stack,
    Layer,
    /// Two of our client layers: where the stack's cost beyond the sum of
    /// its layers comes from.
    Pair,
}

/// One service to measure: `run(n)` sends `n` requests (keys cycling over
/// [`KEYS`]) and returns the time they took.
struct Case {
    name: &'static str,
    what: &'static str,
    kind: Kind,
    run: Box<dyn FnMut(u64) -> Duration>,
}

fn case<S>(name: &'static str, what: &'static str, kind: Kind, mut svc: S) -> Case
where
    S: Service<u64, Response = u64> + 'static,
    S::Error: fmt::Debug,
{
    let mut next = 0u64;
    Case {
        name,
        what,
        kind,
        run: Box::new(move |n| {
            let mut cx = Context::from_waker(Waker::noop());
            timed(n, || {
                black_box(drive(&mut svc, &mut cx, black_box(next)));
                next = next.wrapping_add(1);
            })
        }),
    }
}

/// Every case. Build them inside the runtime context.
fn cases() -> Vec<Case> {
    use Kind::{Bare, Layer as L, Pair, Stack};
    vec![
        case("bare", "bare service_fn", Bare, bare()),
        case(
            "sluice/client",
            "sluice client: queue > retry > rate limit > breaker",
            Stack,
            sluice_client(bare()),
        ),
        case(
            "resilience/client",
            "tower-resilience client: bulkhead > retry > rate limiter > breaker",
            Stack,
            resilience_client(bare()),
        ),
        case(
            "sluice/server",
            "sluice server: per-key > concurrency limit",
            Stack,
            sluice_server(bare()),
        ),
        case(
            "resilience/server",
            "tower-resilience server: rate limiter (1 bucket) > bulkhead",
            Stack,
            resilience_server(bare()),
        ),
        case(
            "sluice/queue",
            "sluice QueueLayer",
            L,
            sluice_queue().layer(bare()),
        ),
        case(
            "sluice/retry",
            "sluice BackoffRetryLayer",
            L,
            sluice_retry().layer(bare()),
        ),
        case(
            "sluice/rate_limit",
            "sluice RateLimitLayer",
            L,
            sluice_rate_limit().layer(bare()),
        ),
        case(
            "sluice/breaker",
            "sluice CircuitBreakerLayer (default)",
            L,
            CircuitBreakerLayer::default().layer(bare()),
        ),
        case(
            "sluice/per_key",
            "sluice PerKeyLayer (1000 keys)",
            L,
            sluice_per_key(bare()),
        ),
        case(
            "tower/concurrency",
            "tower ConcurrencyLimitLayer",
            L,
            ConcurrencyLimitLayer::new(CONCURRENCY).layer(bare()),
        ),
        case(
            "resilience/bulkhead",
            "tower-resilience BulkheadLayer",
            L,
            resilience_bulkhead().layer(bare()),
        ),
        case(
            "resilience/retry",
            "tower-resilience RetryLayer",
            L,
            resilience_retry::<Infallible>().layer(bare()),
        ),
        case(
            "resilience/rate_limit",
            "tower-resilience RateLimiterLayer (backpressure)",
            L,
            resilience_rate_limit(true).layer(bare()),
        ),
        case(
            "resilience/breaker",
            "tower-resilience CircuitBreakerLayer (default)",
            L,
            resilience_breaker().layer(bare()),
        ),
        case(
            "pair/queue_large",
            "sluice queue > a service with a 336-byte response future",
            Pair,
            sluice_queue().layer(LargeFuture),
        ),
        case(
            "pair/queue_retry",
            "sluice queue > retry",
            Pair,
            ServiceBuilder::new()
                .layer(sluice_queue())
                .layer(sluice_retry())
                .service(bare()),
        ),
        case(
            "pair/retry_rate_limit",
            "sluice retry > rate limit",
            Pair,
            ServiceBuilder::new()
                .layer(sluice_retry())
                .layer(sluice_rate_limit())
                .service(bare()),
        ),
        case(
            "pair/retry_breaker",
            "sluice retry > breaker",
            Pair,
            ServiceBuilder::new()
                .layer(sluice_retry())
                .layer(CircuitBreakerLayer::default())
                .service(bare()),
        ),
        case(
            "pair/rate_limit_breaker",
            "sluice rate limit > breaker",
            Pair,
            ServiceBuilder::new()
                .layer(sluice_rate_limit())
                .layer(CircuitBreakerLayer::default())
                .service(bare()),
        ),
    ]
}

fn config() -> Criterion {
    support::criterion(Duration::from_millis(200), Duration::from_millis(600))
}

fn bench(c: &mut Criterion) {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cases = cases();
    for (group, kinds) in [
        ("stacks", [Kind::Bare, Kind::Stack]),
        ("layers", [Kind::Bare, Kind::Layer]),
        ("pairs", [Kind::Bare, Kind::Pair]),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for case in cases.iter_mut().filter(|c| kinds.contains(&c.kind)) {
            let run = &mut case.run;
            g.bench_function(case.name, |b| b.iter_custom(&mut *run));
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}

// ---------------------------------------------------------------------------
// summary, timed in this process

const RUNS: usize = 5;
const ITERS: u64 = 1_000_000;
const ALLOC_ITERS: u64 = 100_000;

struct Row {
    ns: f64,
    allocs: f64,
    bytes: f64,
}

fn measure(cases: &mut [Case]) -> Vec<Row> {
    // Warm-up (fills the per-key store, sizes the breaker's windows).
    for case in cases.iter_mut() {
        (case.run)(ITERS / 10);
    }
    let mut best = vec![f64::INFINITY; cases.len()];
    for _ in 0..RUNS {
        for (case, best) in cases.iter_mut().zip(&mut best) {
            let ns = (case.run)(ITERS).as_secs_f64() * 1e9 / ITERS as f64;
            *best = best.min(ns);
        }
    }
    cases
        .iter_mut()
        .zip(best)
        .map(|(case, ns)| {
            (case.run)(1000);
            let (a0, b0) = (support::alloc::allocations(), support::alloc::bytes());
            (case.run)(ALLOC_ITERS);
            let (a1, b1) = (support::alloc::allocations(), support::alloc::bytes());
            Row {
                ns,
                allocs: (a1 - a0) as f64 / ALLOC_ITERS as f64,
                bytes: (b1 - b0) as f64 / ALLOC_ITERS as f64,
            }
        })
        .collect()
}

fn print_summary() {
    let rt = support::timer_runtime();
    let _guard = rt.enter();
    let mut cases = cases();
    let rows = measure(&mut cases);
    let bare_ns = rows[0].ns;
    let get = |name: &str| {
        let i = cases.iter().position(|c| c.name == name).expect("case");
        &rows[i]
    };

    println!();
    println!(
        "summary: best of {RUNS} interleaved runs of {ITERS} requests, one caller, nothing limited; \
         allocations over {ALLOC_ITERS} requests after warm-up"
    );
    println!(
        "  {:<68} {:>8} {:>9} {:>11} {:>10}",
        "", "ns/req", "added ns", "allocs/req", "bytes/req"
    );
    for (case, row) in cases.iter().zip(&rows) {
        if matches!(case.kind, Kind::Bare | Kind::Stack) {
            print_row(case.what, row, bare_ns);
        }
    }
    for (kind, title) in [
        (Kind::Layer, "single layers over the bare service:"),
        (Kind::Pair, "pairs of our client layers:"),
    ] {
        println!("  {title}");
        for (case, row) in cases.iter().zip(&rows) {
            if case.kind == kind {
                print_row(case.what, row, bare_ns);
            }
        }
    }

    let added = |name: &str| get(name).ns - bare_ns;
    let ours = added("sluice/client");
    let theirs = added("resilience/client");
    println!(
        "  added ns ratio sluice / tower-resilience: client stack {:.3}, server stack {:.3} \
         (below 1 means sluice adds less)",
        ours / theirs,
        added("sluice/server") / added("resilience/server")
    );
    let singles: f64 = [
        "sluice/queue",
        "sluice/retry",
        "sluice/rate_limit",
        "sluice/breaker",
    ]
    .iter()
    .map(|n| added(n))
    .sum();
    println!("  sum of the four sluice client layers measured alone: {singles:.1} ns added");
    for (pair, a, b) in [
        ("pair/queue_retry", "sluice/queue", "sluice/retry"),
        ("pair/retry_rate_limit", "sluice/retry", "sluice/rate_limit"),
        ("pair/retry_breaker", "sluice/retry", "sluice/breaker"),
        (
            "pair/rate_limit_breaker",
            "sluice/rate_limit",
            "sluice/breaker",
        ),
    ] {
        println!(
            "  {pair:<24} adds {:>6.1} ns beyond its two layers alone",
            added(pair) - added(a) - added(b)
        );
    }
    println!(
        "  queue over a 336-byte response future adds {:.1} ns more than over the bare one ({} bytes)",
        added("pair/queue_large") - added("sluice/queue"),
        future_size(&bare())
    );
    println!(
        "  response future sizes: client stack {} bytes, retry > rate limit > breaker {} bytes",
        future_size(&sluice_client(bare())),
        future_size(
            &ServiceBuilder::new()
                .layer(sluice_retry())
                .layer(sluice_rate_limit())
                .layer(CircuitBreakerLayer::default())
                .service(bare())
        )
    );
    let allocs = get("sluice/client").allocs;
    println!("  sluice client stack: {ours:.1} ns added, {allocs:.3} allocations per request");
    println!(
        "  note: tower-resilience has no queue layer; its bulkhead (1024 concurrent calls) stands in for QueueLayer,"
    );
    println!(
        "        and no per-key limiter; its one shared rate limiter stands in for PerKeyLayer"
    );
    println!(
        "  for reference, not measured here: Polly v8's five-strategy pipeline, 2.1 us and 40 bytes per request"
    );
}

fn future_size<S: Service<u64>>(_: &S) -> usize {
    std::mem::size_of::<S::Future>()
}

fn print_row(what: &str, row: &Row, bare_ns: f64) {
    println!(
        "  {what:<68} {:>8.1} {:>9.1} {:>11.3} {:>10.1}",
        row.ns,
        row.ns - bare_ns,
        row.allocs,
        row.bytes
    );
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs this binary without `--bench`: skip the
    // timing there, as criterion does.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list") {
        print_summary();
    }
}
