//! The in-memory and Redis backends give the same answers for the same
//! arrivals.
//!
//! Redis decides on its own clock (`TIME`), in real time; each reply
//! carries the Redis time of its decision, and the in-memory backend then
//! decides the same request on tokio's paused clock, advanced to the same
//! offset from the first decision. Quotas have emission intervals of whole
//! microseconds, so both count the same; every field is compared.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::backend::{Backend, Memory};

#[path = "../../../tests/support/redis_server.rs"]
mod server;

#[derive(Debug, Clone)]
struct Op {
    sleep_us: u64,
    cost: u32,
    max_wait_us: u64,
    peek: bool,
}

/// What a decision says, in one comparable shape.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    allowed: bool,
    quota: Quota,
    remaining: u32,
    retry_after: Duration,
    reset_after: Duration,
    wait: Duration,
}

fn from_memory(r: Acquire<crate::backend::Never>) -> Answer {
    let Acquire::Ready(r) = r;
    match r {
        Ok(g) => Answer {
            allowed: true,
            quota: g.decision().quota(),
            remaining: g.decision().remaining(),
            retry_after: g.decision().retry_after(),
            reset_after: g.decision().reset_after(),
            wait: g.wait(),
        },
        Err(e) => {
            let e = e.downcast_ref::<RateLimited>().expect("a denial");
            Answer {
                allowed: false,
                quota: e.quota(),
                remaining: e.remaining(),
                retry_after: e.retry_after(),
                reset_after: e.reset_after(),
                wait: Duration::ZERO,
            }
        }
    }
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let quota = (
        prop::sample::select(vec![200u64, 500, 1_000, 2_000]),
        1u32..=5,
        1u32..=6,
        prop::bool::ANY,
    )
        .prop_map(|(e_us, limit, burst, tokens)| {
            let q =
                Quota::new(limit, Duration::from_micros(e_us * u64::from(limit))).with_burst(burst);
            // Quotas of requests (charged 1) and of cost (charged the cost), mixed.
            if tokens { q.counting("tokens") } else { q }
        });
    // Calendar quotas beside them: per calendar minute and day, of
    // requests or of tokens.
    let calendar =
        (1u32..=8, prop::bool::ANY, prop::bool::ANY).prop_map(|(limit, minute, tokens)| {
            let q = if minute {
                Quota::per_calendar_minute(limit)
            } else {
                Quota::per_calendar_day(limit)
            };
            if tokens { q.counting("tokens") } else { q }
        });
    let quota = prop_oneof![3 => quota, 1 => calendar];
    prop::collection::vec(quota, 1..=3).prop_map(|qs| {
        let mut p = Policy::new(qs[0]);
        for q in &qs[1..] {
            p = p.and(*q).unwrap();
        }
        p
    })
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        (
            0u64..3_000,
            0u32..=3,
            prop::sample::select(vec![0u64, 0, 500, 5_000]),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(sleep_us, cost, max_wait_us, peek)| Op {
                sleep_us,
                cost,
                max_wait_us,
                peek,
            }),
        1..40,
    )
}

/// A Redis backend for these tests, and the runtime it runs on.
fn redis_backend(url: &str) -> (tokio::runtime::Runtime, RedisBackend) {
    let real = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = real.block_on(async {
        RedisBackend::from_url(url)
            .unwrap()
            .prefix(format!("sluice-conformance-{}:", std::process::id()))
            .deadline(Duration::from_secs(5))
    });
    (real, redis)
}

/// Runs `ops` under `policy` on Redis (key `name`) and on a fresh
/// in-memory backend, comparing every decision.
fn agree(
    real: &tokio::runtime::Runtime,
    redis: &RedisBackend,
    name: &str,
    policy: &Policy,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let key = redis.redis_key(name);
    let virt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    // Made at the first decision, with Redis' time as its UTC.
    let mut memory = None;
    let mut first = None;
    let mut elapsed_us = 0u64;
    for (i, op) in ops.iter().enumerate() {
        std::thread::sleep(Duration::from_micros(op.sleep_us));
        let cost = op.cost.min(policy.max_cost());
        let args = decide::script_args(
            policy,
            crate::cost::Charge::cost(cost),
            op.max_wait_us * 1_000,
            !op.peek,
        );
        let reply = real
            .block_on(redis.inner.eval(&key, args.nums(), args.units()))
            .map_err(|e| TestCaseError::fail(format!("redis: {e}")))?;
        let (decision, wait) = redis
            .inner
            .decision(&reply, policy)
            .ok_or_else(|| TestCaseError::fail(format!("bad reply {reply:?}")))?;
        let from_redis = Answer {
            allowed: decision.is_allowed(),
            quota: decision.quota(),
            remaining: decision.remaining(),
            retry_after: decision.retry_after(),
            reset_after: decision.reset_after(),
            wait: Duration::from_nanos(wait),
        };
        let now_us = u64::try_from(reply[6]).unwrap();
        let memory = memory.get_or_insert_with(|| {
            virt.block_on(async {
                crate::calendar::set_test_utc(
                    std::time::UNIX_EPOCH + Duration::from_micros(now_us),
                );
                Memory::<Vec<u8>>::new(16)
            })
        });
        let offset = now_us - *first.get_or_insert(now_us);
        let step = offset - elapsed_us;
        elapsed_us = offset;
        let from_memory = virt.block_on(async {
            tokio::time::advance(Duration::from_micros(step)).await;
            let max_wait = Duration::from_micros(op.max_wait_us);
            from_memory(if op.peek {
                memory.peek(&key, policy, cost)
            } else {
                memory.acquire(&key, policy, cost, max_wait)
            })
        });
        prop_assert_eq!(
            &from_redis,
            &from_memory,
            "decision {} ({:?}) at +{}us under {:?}",
            i,
            op,
            offset,
            policy
        );
    }
    Ok(())
}

#[test]
fn memory_and_redis_agree_on_every_field() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    runner
        .run(&(policy_strategy(), ops_strategy()), |(policy, ops)| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            agree(&real, &redis, &format!("case-{n}"), &policy, &ops)
        })
        .unwrap();
}

/// Requests and tokens per rolling period beside tokens and requests per
/// calendar day, with costs up to the burst, waits and peeks.
#[test]
fn memory_and_redis_agree_on_requests_tokens_and_calendar_tokens() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    // 6 requests per 6 ms, 20 tokens per 4 ms, 60 tokens and 40 requests
    // per calendar day.
    let policy = Policy::new(Quota::new(6, Duration::from_millis(6)))
        .and(Quota::new(20, Duration::from_millis(4)).counting("tokens"))
        .unwrap()
        .and(Quota::per_calendar_day(60).counting("tokens"))
        .unwrap()
        .and(Quota::per_calendar_day(40))
        .unwrap();
    assert_eq!(policy.max_cost(), 20);
    let costs = [7, 9, 0, 6, 20, 1, 3, 0, 12, 8, 5, 20, 2, 11, 4, 1, 1, 6];
    let ops: Vec<Op> = costs
        .iter()
        .enumerate()
        .map(|(i, &cost)| Op {
            sleep_us: [0, 700, 2_500, 300][i % 4],
            cost,
            max_wait_us: [0, 5_000, 0, 500][i % 4],
            peek: i % 5 == 4,
        })
        .collect();
    agree(&real, &redis, "mixed", &policy, &ops).unwrap();
}
