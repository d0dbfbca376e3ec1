//! The Redis backend beside `redis-benchmark` on the same server, in one
//! run: `cargo bench --bench redis --features redis`.
//!
//! Starts its own `redis-server` (and uses `redis-benchmark`, from the same
//! package). Measures decisions per second with 1 and 64 concurrent
//! callers (p50 / p99 latency), `redis-benchmark -P 16 -c 64` running
//! `EVALSHA` of the same script with the same arguments, the same 64
//! callers settling every decision (held in the background until the key's
//! next decision carries it, or sent in batches, one script call per
//! batch; and with `settle_delay(ZERO)`, every settlement sent in a
//! batch), the CPU time per decision of the
//! server and of this process, and the deny cache's effect when 64 callers
//! hammer one denied key. The 64-caller cases and `redis-benchmark -P 16`
//! are timed in turn three times; the best run of each is kept.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_sluice::backend::redis::{FailurePolicy, RedisBackend};
use tower_sluice::backend::{Acquire, Backend};
use tower_sluice::per_key::Policy;
use tower_sluice::{Quota, RateLimited};

#[path = "../tests/support/redis_server.rs"]
mod server;

const SCRIPT: &str = concat!(
    include_str!("../src/backend/redis/calendar.lua"),
    include_str!("../src/backend/redis/settle_group.lua"),
    include_str!("../src/backend/redis/script.lua")
);
const KEYS: u64 = 10_000;

fn backend(url: &str, deny_cache: usize) -> Arc<RedisBackend> {
    Arc::new(configured(url, deny_cache))
}

fn configured(url: &str, deny_cache: usize) -> RedisBackend {
    RedisBackend::from_url(url)
        .unwrap()
        .prefix("bench:")
        .deadline(Duration::from_secs(5))
        .failure_policy(FailurePolicy::FailClosed)
        .deny_cache(deny_cache)
}

struct Run {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// `callers` tasks deciding `total` times in all, over `KEYS` keys.
/// With `settle`, every admitted decision is settled at a true cost of 2
/// (estimated 1), and the run ends when Redis has applied every settlement.
async fn run(
    b: Arc<RedisBackend>,
    policy: Policy,
    callers: u64,
    total: u64,
    one_key: bool,
    settle: bool,
) -> Run {
    let settled_before = b.stats().settled + b.stats().settles_dropped;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let (b, policy) = (b.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity((total / callers) as usize);
            let mut errors = 0;
            let mut x = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..total / callers {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = if one_key { 0 } else { x % KEYS };
                let t = Instant::now();
                let r = match b.acquire(&key, &policy, 1, Duration::ZERO) {
                    Acquire::Ready(r) => r,
                    Acquire::Pending(f) => f.await,
                };
                lat.push(t.elapsed());
                if let (true, Ok(grant)) = (settle, &r) {
                    b.settle(&key, &policy, grant.charged(), 2);
                }
                if let Err(e) = r
                    && !e.is::<RateLimited>()
                {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        lat.extend(l);
        errors += e;
    }
    if settle {
        // As a service does before it exits: what is held is sent now.
        b.flush_settlements().await;
        let sent = settled_before + lat.len() as u64 - errors;
        while b.stats().settled + b.stats().settles_dropped < sent {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        errors += b.stats().settles_dropped;
    }
    let elapsed = start.elapsed();
    lat.sort();
    Run {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
        errors,
    }
}

/// How many times each case of 200 000 decisions is timed.
const ROUNDS: usize = 3;

/// One case timed: the run, the CPU per decision (server, client), the
/// script calls it made, and the settlements decisions carried.
#[derive(Default)]
struct Case {
    run: Option<Run>,
    cpu: (f64, f64),
    calls: u64,
    carried: u64,
}

impl Case {
    /// Times `f`, 200 000 decisions, with the CPU and calls it cost.
    fn measure(server: &server::RedisServer, f: impl FnOnce() -> Run) -> Case {
        let calls = script_calls(server);
        let cpu = Cpu::now(server);
        let run = f();
        Case {
            cpu: Cpu::now(server).per(cpu, 200_000.0),
            calls: script_calls(server) - calls,
            run: Some(run),
            carried: 0,
        }
    }

    /// Keeps `other` if it ran faster.
    fn keep(&mut self, other: Case) {
        let best = |c: &Case| c.run.as_ref().map_or(0.0, |r| r.per_sec);
        if best(&other) > best(self) {
            *self = other;
        }
    }
}

/// `redis-benchmark`'s requests per second for EVALSHA of our script.
fn redis_benchmark(port: u16, sha: &str, pipeline: u32, clients: u32, n: u32) -> f64 {
    // The same arguments as a decision of the policy below: cost 1, no
    // wait, consume, one quota (emission 1 us, burst 10^6: always allowed).
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(["-c", &clients.to_string(), "-P", &pipeline.to_string()])
        .args(["-n", &n.to_string(), "-r", &KEYS.to_string()])
        .args([
            "EVALSHA",
            sha,
            "1",
            "bench:__rand_int__",
            "0",
            "1",
            "1",
            "1000000",
            "1",
        ])
        .output()
        .expect("redis-benchmark runs (it comes with redis-server)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "EVALSHA ...: 51234.56 requests per second, p50=..."
    let rps = text
        .rsplit(':')
        .find_map(|part| {
            part.split_whitespace()
                .next()
                .and_then(|n| n.parse::<f64>().ok())
        })
        .unwrap_or_else(|| panic!("cannot read redis-benchmark output: {text}"));
    assert!(
        !text.contains("ERR") && !text.contains("NOSCRIPT"),
        "redis-benchmark: {text}"
    );
    rps
}

/// CPU time spent so far, in microseconds: by the server (`INFO cpu`) and
/// by this process (all its threads, from `/proc`; 0 where there is none).
#[derive(Clone, Copy)]
struct Cpu {
    server: f64,
    client: f64,
}

impl Cpu {
    fn now(server: &server::RedisServer) -> Self {
        let info = server.cli(&["INFO", "cpu"]);
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let server = (field("used_cpu_sys:") + field("used_cpu_user:")) * 1e6;
        let client = std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .filter_map(|t| {
                        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
                        s.split_whitespace().next()?.parse::<f64>().ok()
                    })
                    .sum::<f64>()
                    / 1e3
            })
            .unwrap_or(0.0);
        Cpu { server, client }
    }

    /// CPU microseconds per decision since `before`, (server, client).
    fn per(self, before: Cpu, decisions: f64) -> (f64, f64) {
        (
            (self.server - before.server) / decisions,
            (self.client - before.client) / decisions,
        )
    }
}

/// Script calls (`EVALSHA` and `EVAL`) the server has run.
fn script_calls(server: &server::RedisServer) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let server = server::RedisServer::start();
    let url = server.url();
    let sha = server
        .cli(&["SCRIPT", "LOAD", SCRIPT])
        .trim()
        .trim_matches('"')
        .to_string();
    assert_eq!(sha.len(), 40, "SCRIPT LOAD: {sha}");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Emission 1 us and a huge burst: every decision is allowed and writes,
    // as in the redis-benchmark run.
    let open = Policy::new(Quota::new(1_000_000, Duration::from_secs(1)));
    let b = backend(&url, 10_000);

    rt.block_on(run(b.clone(), open.clone(), 64, 20_000, false, false)); // warm up
    let one = rt.block_on(run(b.clone(), open.clone(), 1, 10_000, false, false));
    // The same decisions on a quota of tokens (the same script arguments),
    // each settled: held for the key's next decision, and (settle_delay
    // ZERO) every settlement sent on its own, in batches.
    let tokens = Policy::new(Quota::new(1_000_000, Duration::from_secs(1)).counting("tokens"));
    let at_once = Arc::new(configured(&url, 10_000).settle_delay(Duration::ZERO));
    // Each case timed in turn, ROUNDS times; the best run of each is kept
    // (on a shared machine, the others lost time to other work).
    let mut many = Case::default();
    let mut settling = Case::default();
    let mut settling_at_once = Case::default();
    let mut bench_p16 = Case::default();
    for _ in 0..ROUNDS {
        many.keep(Case::measure(&server, || {
            rt.block_on(run(b.clone(), open.clone(), 64, 200_000, false, false))
        }));
        let carried_before = b.stats().settles_carried;
        let mut case = Case::measure(&server, || {
            rt.block_on(run(b.clone(), tokens.clone(), 64, 200_000, false, true))
        });
        case.carried = b.stats().settles_carried - carried_before;
        settling.keep(case);
        bench_p16.keep(Case::measure(&server, || Run {
            per_sec: redis_benchmark(server.port(), &sha, 16, 64, 200_000),
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            errors: 0,
        }));
        settling_at_once.keep(Case::measure(&server, || {
            rt.block_on(run(
                at_once.clone(),
                tokens.clone(),
                64,
                200_000,
                false,
                true,
            ))
        }));
    }
    let bench_p1 = redis_benchmark(server.port(), &sha, 1, 64, 100_000);
    // Every decision is one call: the rest are the settle script's.
    let settle_calls = settling.calls - 200_000;
    let at_once_calls = settling_at_once.calls - 200_000;
    let carried = settling.carried;
    let cpu_many = many.cpu;
    let cpu_settling = settling.cpu;
    let cpu_bench = bench_p16.cpu;
    let cpu_at_once = settling_at_once.cpu;
    let (many, settling, settling_at_once, bench_p16) = (
        many.run.unwrap(),
        settling.run.unwrap(),
        settling_at_once.run.unwrap(),
        bench_p16.run.unwrap().per_sec,
    );

    // One abusive key (1 per minute) hammered by 64 callers.
    let tight = Policy::new(Quota::per_minute(1));
    let no_cache = rt.block_on(run(
        backend(&url, 0),
        tight.clone(),
        64,
        100_000,
        true,
        false,
    ));
    let cached = rt.block_on(run(
        backend(&url, 10_000),
        tight,
        64,
        1_000_000,
        true,
        false,
    ));

    let line = |name: &str, r: &Run| {
        println!(
            "  {name:<36} {:>9.0}/s  p50 {:>7.1?}  p99 {:>7.1?}  errors {}",
            r.per_sec, r.p50, r.p99, r.errors
        );
    };
    println!("\nredis backend (one server, one multiplexed connection; best of {ROUNDS} runs):");
    line("tower-sluice, 1 caller", &one);
    line("tower-sluice, 64 callers", &many);
    line("64 callers, each decision settled", &settling);
    line("the same, settle_delay(ZERO)", &settling_at_once);
    println!(
        "  {:<36} {bench_p16:>9.0}/s",
        "redis-benchmark -c 64 -P 16 EVALSHA"
    );
    println!(
        "  {:<36} {bench_p1:>9.0}/s",
        "redis-benchmark -c 64 -P 1 EVALSHA"
    );
    println!(
        "  ratio, 64 callers / redis-benchmark -P 16: {:.2}",
        many.per_sec / bench_p16
    );
    println!(
        "  ratio, settled decisions / redis-benchmark -P 16: {:.2}; settle_delay(ZERO) {:.2}",
        settling.per_sec / bench_p16,
        settling_at_once.per_sec / bench_p16
    );
    println!("\nCPU per decision (server; client), microseconds:");
    println!(
        "  64 callers {:.2}; {:.2}   settled {:.2}; {:.2}   settle_delay(ZERO) {:.2}; {:.2}   redis-benchmark -P 16 {:.2}",
        cpu_many.0,
        cpu_many.1,
        cpu_settling.0,
        cpu_settling.1,
        cpu_at_once.0,
        cpu_at_once.1,
        cpu_bench.0
    );
    println!(
        "  server CPU, redis-benchmark -P 16 / settled: {:.2}; / settle_delay(ZERO): {:.2}; / not settled: {:.2}",
        cpu_bench.0 / cpu_settling.0,
        cpu_bench.0 / cpu_at_once.0,
        cpu_bench.0 / cpu_many.0
    );
    println!(
        "  settlements carried by a decision: {carried} of 200000; settle script calls: {settle_calls}"
    );
    println!(
        "  settle_delay(ZERO): settle script calls: {at_once_calls} for 200000 settlements ({:.0} per call)",
        200_000.0 / at_once_calls.max(1) as f64
    );
    println!("\none denied key, 64 callers:");
    line("deny cache off", &no_cache);
    line("deny cache on", &cached);
    println!(
        "  deny cache speed-up: {:.1}x",
        cached.per_sec / no_cache.per_sec
    );
    assert_eq!(
        one.errors
            + many.errors
            + settling.errors
            + settling_at_once.errors
            + no_cache.errors
            + cached.errors,
        0
    );
}
