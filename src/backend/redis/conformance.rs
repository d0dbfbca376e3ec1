//! The in-memory and Redis backends give the same answers for the same
//! arrivals.
//!
//! Redis decides on its own clock (`TIME`), in real time; each reply
//! carries the Redis time of its decision, and the in-memory backend then
//! decides the same request on tokio's paused clock, advanced to the same
//! offset from the first decision. Quotas have emission intervals of whole
//! microseconds, so both count the same; every field is compared.
//!
//! Settlements run the same way: Redis settles on its clock (the settle
//! script's reply carries its time), then memory settles the same request
//! at the same offset, and the decisions after it are compared.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::backend::{Backend, Charged, Memory};

#[path = "../../../tests/support/redis_server.rs"]
pub(super) mod server;

#[derive(Debug, Clone)]
struct Op {
    sleep_us: u64,
    cost: u32,
    max_wait_us: u64,
    peek: bool,
    /// Instead of deciding: settles an earlier admitted request (the
    /// `n`th of those not settled yet, modulo their number) at this true
    /// cost.
    settle: Option<(usize, u32)>,
    /// The settlement is carried by the next decision that consumes (as
    /// the backend does with a settlement held for its key), instead of
    /// sent on its own.
    carried: bool,
}

impl Op {
    fn decide(sleep_us: u64, cost: u32, max_wait_us: u64, peek: bool) -> Self {
        Op {
            sleep_us,
            cost,
            max_wait_us,
            peek,
            settle: None,
            carried: false,
        }
    }

    /// Settles the `n`th admitted request not settled yet at `true_cost`.
    fn settle(sleep_us: u64, n: usize, true_cost: u32) -> Self {
        Op {
            settle: Some((n, true_cost)),
            ..Op::decide(sleep_us, 0, 0, false)
        }
    }

    /// [`settle`](Self::settle), carried by the next decision.
    fn carried(sleep_us: u64, n: usize, true_cost: u32) -> Self {
        Op {
            carried: true,
            ..Op::settle(sleep_us, n, true_cost)
        }
    }
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

/// The answer, and what an admitted request was charged.
fn from_memory(r: Acquire<crate::backend::Never>) -> (Answer, Option<Charged>) {
    let Acquire::Ready(r) = r;
    match r {
        Ok(g) => (
            Answer {
                allowed: true,
                quota: g.decision().quota(),
                remaining: g.decision().remaining(),
                retry_after: g.decision().retry_after(),
                reset_after: g.decision().reset_after(),
                wait: g.wait(),
            },
            Some(g.charged()),
        ),
        Err(e) => {
            let e = e.downcast_ref::<RateLimited>().expect("a denial");
            let answer = Answer {
                allowed: false,
                quota: e.quota(),
                remaining: e.remaining(),
                retry_after: e.retry_after(),
                reset_after: e.reset_after(),
                wait: Duration::ZERO,
            };
            (answer, None)
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
    let decide = (
        0u64..3_000,
        0u32..=3,
        prop::sample::select(vec![0u64, 0, 500, 5_000]),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(sleep_us, cost, max_wait_us, peek)| {
            Op::decide(sleep_us, cost, max_wait_us, peek)
        });
    // Settling an earlier request: more than its estimate (a debt, past
    // the burst), less (a refund, skipped if a later request relied on
    // it), or the same.
    let settle = (0u64..3_000, 0usize..8, 0u32..=9, prop::bool::ANY).prop_map(
        |(sleep_us, n, true_cost, carried)| match carried {
            true => Op::carried(sleep_us, n, true_cost),
            false => Op::settle(sleep_us, n, true_cost),
        },
    );
    prop::collection::vec(prop_oneof![4 => decide, 1 => settle], 1..40)
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
    let mut memory: Option<Memory<Vec<u8>>> = None;
    let mut first = None;
    let mut elapsed_us = 0u64;
    // Admitted requests not settled yet: what Redis and memory charged.
    let mut admitted: Vec<(Charged, Charged)> = Vec::new();
    // Settlements waiting for the next decision that consumes: what Redis
    // and memory charged, and the true cost.
    let mut carry: Vec<(Charged, Charged, u32)> = Vec::new();
    let mut advance_to = |now_us: u64| {
        let offset = now_us - *first.get_or_insert(now_us);
        let step = offset - elapsed_us;
        elapsed_us = offset;
        (offset, step)
    };
    for (i, op) in ops.iter().enumerate() {
        std::thread::sleep(Duration::from_micros(op.sleep_us));
        if let Some((n, true_cost)) = op.settle {
            if admitted.is_empty() {
                continue;
            }
            let (on_redis, in_memory) = admitted.remove(n % admitted.len());
            if op.carried {
                carry.push((on_redis, in_memory, true_cost));
                continue;
            }
            let args = settle::settle_args(policy, on_redis, true_cost, (0, 0));
            let [_, now_us] = real
                .block_on(redis.inner.settle_now(&[(&key, &args)], 0))
                .map_err(|e| TestCaseError::fail(format!("redis settle: {e:?}")))?;
            let (_, step) = advance_to(u64::try_from(now_us).unwrap());
            let memory = memory.as_ref().expect("a request was admitted");
            virt.block_on(async {
                tokio::time::advance(Duration::from_micros(step)).await;
                memory.settle(&key, policy, in_memory, true_cost);
            });
            continue;
        }
        let cost = op.cost.min(policy.max_cost());
        let args = decide::script_args(
            policy,
            crate::cost::Charge::cost(cost),
            op.max_wait_us * 1_000,
            !op.peek,
        );
        // Settlements that change something, as the backend holds them.
        let held = match op.peek {
            true => None,
            false => held::Held::carrying(
                &key,
                carry
                    .iter()
                    .filter(|(r, _, c)| r.estimate != *c)
                    .map(|(r, _, c)| settle::settle_args(policy, *r, *c, (0, 0))),
            ),
        };
        let reply = real
            .block_on(
                redis
                    .inner
                    .eval(&key, args.nums(), args.units(), held.as_ref()),
            )
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
        let (offset, step) = advance_to(now_us);
        let (from_memory, charged) = virt.block_on(async {
            tokio::time::advance(Duration::from_micros(step)).await;
            if !op.peek {
                // What the decision carried, applied first at its time.
                for (_, in_memory, true_cost) in carry.drain(..) {
                    memory.settle(&key, policy, in_memory, true_cost);
                }
            }
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
        if let (false, Some(charged)) = (op.peek, charged) {
            admitted.push((Charged::new(cost, decide::stamps(&reply)), charged));
        }
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
        .map(|(i, &cost)| {
            Op::decide(
                [0, 700, 2_500, 300][i % 4],
                cost,
                [0, 5_000, 0, 500][i % 4],
                i % 5 == 4,
            )
        })
        .collect();
    agree(&real, &redis, "mixed", &policy, &ops).unwrap();
}

/// 10 tokens per 10 ms (one each millisecond, a burst of 10) beside 4
/// requests per 40 ms.
fn tokens_and_requests() -> Policy {
    Policy::new(Quota::new(10, Duration::from_millis(10)).counting("tokens"))
        .and(Quota::new(4, Duration::from_millis(40)))
        .unwrap()
}

/// More than estimated: the difference is a debt, past the burst, that
/// the next requests wait out, on Redis as in memory.
#[test]
fn memory_and_redis_agree_on_debt() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    let ops = [
        Op::decide(0, 4, 0, false),
        // Estimated 4, really 25: 21 more, 15 past the burst.
        Op::settle(0, 0, 25),
        Op::decide(0, 1, 0, true),
        Op::decide(0, 1, 0, false),
        Op::decide(2_000, 1, 50_000, false),
        Op::decide(0, 1, 0, true),
    ];
    agree(&real, &redis, "debt", &tokens_and_requests(), &ops).unwrap();
    // A calendar quota of tokens: the debt adds to the window charged.
    let daily = Policy::new(Quota::per_calendar_day(50).counting("tokens"))
        .and(Quota::per_calendar_day(10))
        .unwrap();
    let ops = [
        Op::decide(0, 10, 0, false),
        Op::settle(0, 0, 45),
        Op::decide(0, 5, 0, false),
        Op::decide(0, 1, 0, true),
    ];
    agree(&real, &redis, "debt-daily", &daily, &ops).unwrap();
}

/// Less than estimated: given back, on Redis as in memory.
#[test]
fn memory_and_redis_agree_on_refund() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    let ops = [
        Op::decide(0, 9, 0, false),
        // Estimated 9, really 2: 7 back.
        Op::settle(0, 0, 2),
        Op::decide(0, 7, 0, false),
        Op::decide(0, 1, 0, true),
    ];
    agree(&real, &redis, "refund", &tokens_and_requests(), &ops).unwrap();
    let daily = Policy::new(Quota::per_calendar_day(20).counting("tokens"));
    let ops = [
        Op::decide(0, 15, 0, false),
        Op::decide(0, 3, 0, false),
        // Counts add up: the window gives back the 12 even after a later charge.
        Op::settle(0, 0, 3),
        Op::decide(0, 14, 0, false),
        Op::decide(0, 1, 0, true),
    ];
    agree(&real, &redis, "refund-daily", &daily, &ops).unwrap();
}

/// A refund after a later admission is skipped (the later request relied
/// on the state the first one left), on Redis as in memory; the requests
/// quota keeps its charge whatever the settlement.
#[test]
fn memory_and_redis_agree_on_a_refund_skipped_after_a_later_admission() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    let policy = tokens_and_requests();
    let ops = [
        Op::decide(0, 8, 0, false),
        Op::decide(0, 1, 0, false),
        // The first request settles at 0 after the second was admitted.
        Op::settle(0, 0, 0),
        Op::decide(0, 2, 0, true),
        Op::decide(0, 1, 0, false),
    ];
    agree(&real, &redis, "refund-skipped", &policy, &ops).unwrap();

    // Directly: the refund leaves the TATs as they were, and a debt moves
    // only the tokens' TAT.
    let key = redis.redis_key("untouched");
    let tats = |real: &tokio::runtime::Runtime| -> Vec<u64> {
        let raw: String = real.block_on(async {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap()
        });
        raw.split(' ').map(|t| t.parse().unwrap()).collect()
    };
    let charge = |real: &tokio::runtime::Runtime, cost: u32| {
        let args = decide::script_args(&policy, crate::cost::Charge::cost(cost), 0, true);
        let reply = real
            .block_on(redis.inner.eval(&key, args.nums(), args.units(), None))
            .unwrap();
        assert_eq!(reply[0], 1, "admitted: {reply:?}");
        Charged::new(cost, decide::stamps(&reply))
    };
    let settle = |real: &tokio::runtime::Runtime, charged, true_cost| {
        let args = settle::settle_args(&policy, charged, true_cost, (0, 0));
        let [changed, now] = real
            .block_on(redis.inner.settle_now(&[(&key, &args)], 0))
            .unwrap();
        (changed, u64::try_from(now).unwrap())
    };
    let first = charge(&real, 8);
    let _second = charge(&real, 1);
    let before = tats(&real);
    assert_eq!(settle(&real, first, 0).0, 0, "nothing given back");
    assert_eq!(tats(&real), before);
    let third = charge(&real, 1);
    let before = tats(&real);
    let (changed, now) = settle(&real, third, 6);
    assert_eq!(changed, 1, "a debt of 5 tokens");
    let after = tats(&real);
    // From the TAT, or from now if the bucket has refilled since (a slow
    // machine).
    assert_eq!(
        after[0],
        before[0].max(now) + 5 * 1_000,
        "5 tokens of 1 ms each"
    );
    assert_eq!(after[1], before[1], "the requests quota keeps its charge");
}

/// Settling through [`Backend::settle`]: sent in the background and
/// counted; with Redis down, dropped and counted, never a panic or a wait.
#[test]
fn settlements_are_sent_in_the_background_and_dropped_when_redis_is_down() {
    let (url, _server) = server::RedisServer::url_or_start();
    let (real, redis) = redis_backend(&url);
    let policy = Policy::new(Quota::per_minute(10).counting("tokens"));
    real.block_on(async {
        let Acquire::Pending(decision) =
            Backend::<&str>::acquire(&redis, &"bg", &policy, 2, Duration::ZERO)
        else {
            panic!("redis decides in a future");
        };
        let grant = decision.await.unwrap();
        redis.settle(&"bg", &policy, grant.charged(), 9);
        // The call returned at once; the settlement lands shortly after.
        for _ in 0..500 {
            if redis.stats().settled == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(redis.stats().settled, 1);
        // 2 + 7 tokens are charged: 1 left of the burst of 10, which the
        // peek takes.
        let Acquire::Pending(peek) = Backend::<&str>::peek(&redis, &"bg", &policy, 1) else {
            panic!()
        };
        assert_eq!(peek.await.unwrap().decision().remaining(), 0);
    });

    let (real, down) = redis_backend("redis://127.0.0.1:1");
    real.block_on(async {
        let charged = Charged::new(2, [1, 1, 0, 0]);
        for _ in 0..5 {
            down.settle(&"k", &policy, charged, 9);
        }
        for _ in 0..500 {
            if down.stats().settles_dropped == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let stats = down.stats();
        assert_eq!((stats.settled, stats.settles_dropped), (0, 5));
    });
    // Without a runtime, and no task of the backend to send it: dropped
    // at once.
    let (_real, idle) = redis_backend("redis://127.0.0.1:1");
    idle.settle(&"k", &policy, Charged::new(2, [0; 4]), 9);
    assert_eq!(idle.stats().settles_dropped, 1);
}
