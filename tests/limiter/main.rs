//! The limiter against a reference model, the window guarantee, and
//! several OS threads on one limiter. Time-based cases run on tokio's
//! paused clock (feature `test-util`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tower_sluice::limits::{Limit, check_all, peek_all};
use tower_sluice::{Decision, Limiter, PerKeyLayer, Quota};

mod accessors;

/// The GCRA in its other classic form, the continuous-state leaky bucket:
/// a bucket holding `level` nanoseconds of work that drains one nanosecond
/// per nanosecond; a request adds `cost * T` unless that overflows `B * T`.
#[derive(Debug, Clone)]
struct LeakyBucket {
    t: u128,
    capacity: u128,
    level: u128,
    last: u128,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    remaining: u128,
    retry_after: u128,
    reset_after: u128,
}

impl LeakyBucket {
    fn new(q: Quota) -> Self {
        // T is period / limit rounded up to the nanosecond (documented).
        let t = q.period().as_nanos().div_ceil(u128::from(q.limit()));
        LeakyBucket {
            t,
            capacity: t * u128::from(q.burst()),
            level: 0,
            last: 0,
        }
    }

    fn drained(&self, now: u128) -> u128 {
        self.level.saturating_sub(now - self.last)
    }

    fn check(&mut self, now: u128, cost: u32) -> Outcome {
        let level = self.drained(now);
        let need = u128::from(cost) * self.t;
        if level + need > self.capacity {
            return Outcome {
                allowed: false,
                remaining: (self.capacity - level) / self.t,
                retry_after: level + need - self.capacity,
                reset_after: level,
            };
        }
        self.level = level + need;
        self.last = now;
        Outcome {
            allowed: true,
            remaining: (self.capacity - self.level) / self.t,
            retry_after: 0,
            reset_after: self.level,
        }
    }
}

fn outcome(d: &Decision) -> Outcome {
    Outcome {
        allowed: d.is_allowed(),
        remaining: u128::from(d.remaining()),
        retry_after: d.retry_after().as_nanos(),
        reset_after: d.reset_after().as_nanos(),
    }
}

fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

fn quota() -> impl Strategy<Value = Quota> {
    (1u32..=20, 1_000u64..=5_000_000_000, 1u32..=40).prop_filter_map(
        "a rate the limiter holds within 1 %",
        |(limit, period, burst)| {
            Quota::try_with_burst(limit, Duration::from_nanos(period), burst).ok()
        },
    )
}

/// Arrivals as (gap before it in nanoseconds, cost), sized to the quota.
fn trace(q: Quota) -> impl Strategy<Value = (Quota, Vec<(u64, u32)>)> {
    let t = q.emission_interval().as_nanos() as u64;
    let cost = prop_oneof![3 => Just(1u32), 1 => 1..=q.burst()];
    let gap = prop_oneof![2 => Just(0u64), 3 => 0..=t * 2, 1 => 0..=t * u64::from(q.burst()) * 2];
    prop::collection::vec((gap, cost), 1..150).prop_map(move |v| (q, v))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every decision (allowed, remaining, retry_after, reset_after) equals
    /// the leaky-bucket model's for the same arrivals.
    #[test]
    fn matches_the_leaky_bucket_model((q, arrivals) in quota().prop_flat_map(trace)) {
        paused(async move {
            let limiter = Limiter::new(q);
            let mut model = LeakyBucket::new(q);
            let mut now = 0u128;
            for (i, (gap, cost)) in arrivals.into_iter().enumerate() {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                let got = outcome(&limiter.check_n(cost).unwrap());
                let want = model.check(now, cost);
                prop_assert_eq!(got, want, "arrival {} at {} ns, cost {}, quota {}", i, now, cost, q);
            }
            Ok(())
        })?;
    }

    /// Several quotas: a request passes only if every quota's model admits
    /// it, and then it is charged to all; a denial charges none.
    #[test]
    fn several_quotas_match_independent_models(
        (q1, arrivals) in quota().prop_flat_map(trace),
        q2 in quota(),
        q3 in quota(),
    ) {
        paused(async move {
            let quotas = [q1, q2, q3];
            let limiter = Limiter::new(q1).and(q2).and(q3);
            let mut models: Vec<LeakyBucket> = quotas.iter().map(|q| LeakyBucket::new(*q)).collect();
            let mut now = 0u128;
            for (gap, cost) in arrivals {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                let cost = cost.min(limiter.max_cost());
                let got = outcome(&limiter.check_n(cost).unwrap());
                // Dry-run every model first.
                let dry: Vec<Outcome> = models.iter().map(|m| m.clone().check(now, cost)).collect();
                let all = dry.iter().all(|o| o.allowed);
                prop_assert_eq!(got.allowed, all);
                if all {
                    let after: Vec<Outcome> = models.iter_mut().map(|m| m.check(now, cost)).collect();
                    let tightest = after.iter().min_by_key(|o| o.remaining).unwrap();
                    prop_assert_eq!(got.remaining, tightest.remaining);
                } else {
                    let worst = dry.iter().filter(|o| !o.allowed).max_by_key(|o| o.retry_after).unwrap();
                    prop_assert_eq!(got.retry_after, worst.retry_after);
                }
            }
            Ok(())
        })?;
    }

    /// Over any window [a, a + w], admitted cost is at most B + w / T.
    #[test]
    fn window_guarantee((q, arrivals) in quota().prop_flat_map(trace)) {
        paused(async move {
            let limiter = Limiter::new(q);
            let t = q.emission_interval().as_nanos();
            let b = u128::from(q.burst());
            let mut now = 0u128;
            let mut admitted: Vec<(u128, u128)> = Vec::new();
            for (gap, cost) in arrivals {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                if limiter.check_n(cost).unwrap().is_allowed() {
                    admitted.push((now, u128::from(cost)));
                }
            }
            for i in 0..admitted.len() {
                let mut sum = 0;
                for j in i..admitted.len() {
                    sum += admitted[j].1;
                    let w = admitted[j].0 - admitted[i].0;
                    prop_assert!(sum * t <= b * t + w,
                        "{} admitted in {} ns; bound {} + {}/{}", sum, w, b, w, t);
                }
            }
            Ok(())
        })?;
    }

    /// `peek` reports what `check` would decide and consumes nothing.
    #[test]
    fn peek_predicts_check_without_consuming((q, arrivals) in quota().prop_flat_map(trace)) {
        paused(async move {
            let limiter = Limiter::new(q).and(Quota::per_day(1_000_000));
            for (gap, cost) in arrivals {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                let cost = cost.min(limiter.max_cost());
                let first = limiter.peek_n(cost).unwrap();
                prop_assert_eq!(limiter.peek_n(cost).unwrap(), first);
                let real = limiter.check_n(cost).unwrap();
                prop_assert_eq!(real.is_allowed(), first.is_allowed());
                prop_assert_eq!(real.retry_after(), first.retry_after());
                if real.is_allowed() {
                    prop_assert_eq!(real.remaining(), first.remaining());
                }
            }
            Ok(())
        })?;
    }

    /// Display parses back to an equal quota.
    #[test]
    fn display_round_trips(limit in 1u32.., period in 1u64..=1_000_000_000_000_000, burst in 1u32..) {
        if let Ok(q) = Quota::try_with_burst(limit, Duration::from_nanos(period), burst) {
            prop_assert_eq!(q.to_string().parse::<Quota>(), Ok(q));
        }
    }

    /// Arbitrary input never panics; it parses or says why not.
    #[test]
    fn parsing_never_panics(s in ".{0,40}") {
        if let Err(e) = s.parse::<Quota>() {
            prop_assert!(e.to_string().starts_with("invalid quota"));
        }
    }
}

#[test]
fn cost_above_burst_is_an_error_not_a_wait() {
    let limiter = Limiter::new(Quota::per_second(10).with_burst(5)).and(Quota::per_minute(100));
    let err = limiter.check_n(6).unwrap_err();
    assert_eq!(err.cost(), 6);
    assert_eq!(err.quota(), Quota::per_second(10).with_burst(5));
    assert!(err.to_string().contains("can never pass"), "{err}");
    assert!(limiter.peek_n(6).is_err());
    // Nothing was consumed.
    assert!(limiter.check_n(5).unwrap().is_allowed());
}

#[test]
fn a_changed_cost_quota_moves_the_burst_check_with_it() {
    let tokens = |n| Quota::per_minute(n).counting("tokens");
    let limiter = Limiter::new(Quota::per_minute(60)).and(tokens(1_000));
    assert!(limiter.check_cost(900).unwrap().is_allowed());
    // Lowered: 600 is now above the burst, an error naming the new quota.
    limiter
        .set_quotas([Quota::per_minute(60), tokens(500)])
        .unwrap();
    let err = limiter.check_cost(600).unwrap_err();
    assert_eq!((err.cost(), err.quota()), (600, tokens(500)));
    // Raised again: 600 fits the burst (and waits for the bucket, which
    // still holds the 900 charged).
    limiter
        .set_quotas([Quota::per_minute(60), tokens(10_000)])
        .unwrap();
    assert!(limiter.check_cost(600).is_ok());
    assert!(limiter.check_cost(10_001).is_err());
    // Cost 0 is free whatever the quotas.
    assert!(limiter.check_cost(0).unwrap().is_allowed());
}

#[test]
fn denied_request_consumes_from_no_quota() {
    paused(async {
        let limiter = Limiter::new(Quota::per_second(1)).and(Quota::per_minute(3));
        assert!(limiter.check().is_allowed());
        // Denied by the second-based quota: the minute quota keeps its 2.
        for _ in 0..10 {
            assert!(!limiter.check().is_allowed());
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check().is_allowed());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.check().is_allowed());
        tokio::time::advance(Duration::from_secs(1)).await;
        let d = limiter.check();
        assert!(!d.is_allowed());
        assert_eq!(d.quota(), Quota::per_minute(3));
        assert_eq!(d.retry_after(), Duration::from_secs(17));
    });
}

/// Real threads on the real clock: the total admitted never exceeds
/// `B + elapsed / T`, and the limiter is not trivially denying either.
#[test]
fn threads_never_exceed_the_bound() {
    let threads = 4;
    for quota in [
        Quota::per_second(2_000).with_burst(50),
        Quota::new(1, Duration::from_millis(7)),
    ] {
        let limiter = Arc::new(Limiter::new(quota));
        let start = Instant::now();
        let admitted = AtomicU64::new(0);
        let run = Duration::from_millis(300);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    while start.elapsed() < run {
                        if limiter.check().is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        let elapsed = start.elapsed().as_nanos();
        let t = quota.emission_interval().as_nanos();
        let admitted = u128::from(admitted.into_inner());
        let bound = u128::from(quota.burst()) + elapsed / t;
        assert!(
            admitted <= bound,
            "{quota}: {admitted} admitted, bound {bound}"
        );
        assert!(
            admitted * 2 >= bound,
            "{quota}: only {admitted} admitted of {bound}"
        );
    }
}

/// Several quotas under contention: no quota's bound is exceeded, even
/// with the rollbacks that races cause.
#[test]
fn threads_with_several_quotas_respect_every_bound() {
    let fast = Quota::per_second(5_000).with_burst(20);
    let slow = Quota::new(300, Duration::from_millis(100)).with_burst(100);
    let limiter = Arc::new(Limiter::new(fast).and(slow));
    let start = Instant::now();
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while start.elapsed() < Duration::from_millis(300) {
                    if limiter.check().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_nanos();
    let admitted = u128::from(admitted.into_inner());
    for q in [fast, slow] {
        let bound = u128::from(q.burst()) + elapsed / q.emission_interval().as_nanos();
        assert!(admitted <= bound, "{q}: {admitted} admitted, bound {bound}");
    }
    // The slow quota is the binding one: 100 + 3000/s * 0.3 s = 1000.
    assert!(admitted >= 500, "only {admitted} admitted");
}

#[cfg(feature = "serde")]
#[test]
fn serde_from_string_and_map() {
    let q: Quota = serde_json::from_str("\"60/min;burst=10\"").unwrap();
    assert_eq!(q, Quota::per_minute(60).with_burst(10));
    assert_eq!(serde_json::to_string(&q).unwrap(), "\"60/min;burst=10\"");
    let q: Quota = serde_json::from_str(r#"{"limit": 100, "period": "10s"}"#).unwrap();
    assert_eq!(q, Quota::new(100, Duration::from_secs(10)));
    let q: Quota = serde_json::from_str(r#"{"limit": 5, "period": 60, "burst": 2}"#).unwrap();
    assert_eq!(q, Quota::per_minute(5).with_burst(2));
    // A calendar quota of cost, as a string and as a map.
    let monthly = Quota::per_calendar_month(1_000_000).counting("tokens");
    let json = serde_json::to_string(&monthly).unwrap();
    assert_eq!(json, "\"1000000 tokens/calendar-month\"");
    assert_eq!(serde_json::from_str::<Quota>(&json).unwrap(), monthly);
    let q: Quota =
        serde_json::from_str(r#"{"limit": 1000000, "calendar": "month", "unit": "tokens"}"#)
            .unwrap();
    assert_eq!(q, monthly);
    let q: Quota =
        serde_json::from_str(r#"{"unit": "tokens", "limit": 5, "period": "1s"}"#).unwrap();
    assert_eq!(q, Quota::per_second(5).counting("tokens"));
    for (bad, why) in [
        (r#""0/min""#, "limit must be at least 1"),
        (
            r#"{"limit": 0, "period": "1s"}"#,
            "`limit` must be at least 1",
        ),
        (r#"{"limit": 5}"#, "missing field `period`"),
        (r#"{"limit": 5, "period": "1fortnight"}"#, "invalid period"),
        (
            r#"{"limit": 5, "period": "1s", "burst": 0}"#,
            "`burst` must be at least 1",
        ),
        (
            r#"{"limit": 5, "period": "1s", "brust": 2}"#,
            "unknown field `brust`",
        ),
        ("17", "a quota such as"),
        // The period is a period: a burst inside it is refused, not dropped.
        (
            r#"{"limit": 10, "period": "10s;burst=5"}"#,
            "invalid period \"10s;burst=5\"",
        ),
        (r#"{"limit": 10, "period": "1/10s"}"#, "invalid period"),
        // A key given twice is refused, not last-wins.
        (
            r#"{"limit": 10, "limit": 20, "period": "1s"}"#,
            "duplicate field `limit`",
        ),
        (
            r#"{"limit": 10, "period": "1s", "period": "1min"}"#,
            "duplicate field `period`",
        ),
        (
            r#"{"limit": 10, "period": "1s", "burst": 2, "burst": 3}"#,
            "duplicate field `burst`",
        ),
        // A rate rounding would change by more than 1 %.
        (
            r#"{"limit": 4294967295, "period": "4294967296ns"}"#,
            "one request every 2ns",
        ),
        (r#""4294967295/4294967296ns""#, "one request every 2ns"),
        (
            r#"{"limit": 5, "calendar": "day", "unit": "two words"}"#,
            "holds ' '",
        ),
        (
            r#"{"limit": 5, "calendar": "day", "unit": "tokens", "unit": "bytes"}"#,
            "duplicate field `unit`",
        ),
        (
            r#"{"limit": 5, "calendar": "week", "unit": "tokens"}"#,
            "unknown calendar period",
        ),
    ] {
        let err = serde_json::from_str::<Quota>(bad).unwrap_err().to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

/// One limit of a `check_all` trace in the model: a leaky bucket per
/// quota.
fn model_admits(models: &[&LeakyBucket], now: u128) -> Result<(), u128> {
    // The longest wait among the quotas that refuse.
    let mut wait = None;
    for m in models {
        let o = (*m).clone().check(now, 1);
        if !o.allowed && wait.is_none_or(|w| o.retry_after > w) {
            wait = Some(o.retry_after);
        }
    }
    wait.map_or(Ok(()), Err)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// `check_all` over two limiters (one of two quotas) and two keys of a
    /// per-key layer charges every limit or none, exactly as independent
    /// leaky-bucket models admitting only together; `peek_all` agrees and
    /// consumes nothing.
    #[test]
    fn check_all_matches_models_charged_together(
        q in prop::collection::vec(quota(), 4),
        ops in prop::collection::vec((0u64..=3_000_000_000, 0usize..8, any::<bool>()), 1..120),
    ) {
        paused(async move {
            let global = Limiter::new(q[0]);
            let endpoint = Arc::new(Limiter::new(q[1]).and(q[2]));
            let layer = PerKeyLayer::new(q[3], |k: &u8| Some(*k));
            let users = layer.handle();
            let mut m_global = LeakyBucket::new(q[0]);
            let mut m_endpoint = [LeakyBucket::new(q[1]), LeakyBucket::new(q[2])];
            let mut m_users = [LeakyBucket::new(q[3]), LeakyBucket::new(q[3])];
            let mut now = 0u128;
            for (gap, set, peek) in ops {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                let key = (set % 2) as u8;
                let user = users.limit(&key);
                // Which limits this request must pass: a non-empty subset.
                let mut limits: Vec<&dyn Limit> = vec![&user];
                let mut models: Vec<&LeakyBucket> = vec![&m_users[usize::from(key)]];
                if set & 2 != 0 {
                    limits.push(&global);
                    models.push(&m_global);
                }
                if set & 4 != 0 {
                    limits.push(&endpoint);
                    models.extend(m_endpoint.iter());
                }
                let want = model_admits(&models, now);
                let got = if peek { peek_all(&limits) } else { check_all(&limits) };
                match (&got, want) {
                    (Ok(_), Ok(())) => {}
                    (Err(refused), Err(wait)) => {
                        prop_assert_eq!(refused.retry_after().as_nanos(), wait);
                    }
                    _ => prop_assert!(false, "got {:?}, model {:?} at {} ns", got, want, now),
                }
                if got.is_ok() && !peek {
                    m_users[usize::from(key)].check(now, 1);
                    if set & 2 != 0 {
                        m_global.check(now, 1);
                    }
                    if set & 4 != 0 {
                        for m in &mut m_endpoint {
                            m.check(now, 1);
                        }
                    }
                }
                // Every limit's own state agrees with its model afterwards.
                let g = global.peek();
                let o = m_global.clone().check(now, 1);
                prop_assert_eq!(g.is_allowed(), o.allowed);
                prop_assert_eq!(u128::from(g.remaining()), o.remaining);
            }
            Ok(())
        })?;
    }
}

#[test]
fn check_all_with_no_limits_is_an_error() {
    let refused = check_all(&[]).unwrap_err();
    assert!(refused.to_string().contains("at least one limit"));
    assert!(peek_all(&[]).is_err());
}

#[test]
fn a_limit_listed_twice_is_charged_twice() {
    let limiter = Limiter::new(Quota::per_hour(3));
    assert_eq!(check_all(&[&limiter, &limiter]).unwrap().remaining(), 1);
    // Two more would exceed: refused, and nothing charged.
    assert!(check_all(&[&limiter, &limiter]).is_err());
    assert!(limiter.check().is_allowed(), "the last one is still there");
}

/// What a limiter has left now (`peek` answers as if it admitted).
fn left(limiter: &Limiter) -> u64 {
    let d = limiter.peek();
    if d.is_allowed() {
        u64::from(d.remaining()) + 1
    } else {
        0
    }
}

/// Threads charge a per-user limit, a global limit and an endpoint limit
/// together (and one thread the global limit alone) with quotas that do
/// not refill during the test. One user and one endpoint run out; the
/// others do not. No limit admits more than its quota; the exhausted ones
/// admit exactly their quota (a refused request held none of it); and
/// the others are charged exactly for the requests they admitted (a
/// refused request charged nothing).
#[test]
fn threads_charge_all_or_nothing_and_never_exceed_a_quota() {
    const USERS: u64 = 3;
    const BIG: u32 = 100_000;
    // T = 864 s: nothing refills while the test runs.
    let big = Quota::new(BIG, Duration::from_secs(86_400_000));
    let global = Arc::new(Limiter::new(big));
    let endpoints = [
        Arc::new(Limiter::new(big)),
        Arc::new(Limiter::new(Quota::per_day(400))),
    ];
    let layer = PerKeyLayer::new(big, |k: &u64| Some(*k)).max_keys(64);
    let users = layer.handle();
    users.set_policy(0, Quota::per_day(200));
    let per_user: Vec<AtomicU64> = (0..USERS).map(|_| AtomicU64::new(0)).collect();
    let per_endpoint = [AtomicU64::new(0), AtomicU64::new(0)];
    let global_alone = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (global, endpoints, users) = (&global, &endpoints, &users);
            let (per_user, per_endpoint, refused) = (&per_user, &per_endpoint, &refused);
            s.spawn(move || {
                for i in 0..3_000u64 {
                    let user = (t + i) % USERS;
                    let e = usize::from((i / 3 + t) % 2 == 0);
                    let limit = users.limit(&user);
                    match check_all(&[&limit, global, &endpoints[e]]) {
                        Ok(_) => {
                            per_user[user as usize].fetch_add(1, Ordering::Relaxed);
                            per_endpoint[e].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..3_000 {
                if global.check().is_allowed() {
                    global_alone.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    });
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let users_total: u64 = per_user.iter().map(n).sum();
    assert_eq!(users_total, per_endpoint.iter().map(n).sum::<u64>());
    assert!(n(&refused) > 0, "the test reaches the limits");
    // The exhausted limits admitted exactly their quota.
    assert_eq!(n(&per_user[0]), 200);
    assert_eq!(n(&per_endpoint[1]), 400);
    assert_eq!(left(&endpoints[1]), 0);
    // The others are charged exactly what they admitted.
    let global_total = users_total + n(&global_alone);
    assert_eq!(left(&global), u64::from(BIG) - global_total);
    assert_eq!(left(&endpoints[0]), u64::from(BIG) - n(&per_endpoint[0]));
    for user in 1..USERS {
        let admitted = n(&per_user[user as usize]);
        let left = users.states(&user).iter().next().unwrap().remaining();
        assert_eq!(u64::from(left), u64::from(BIG) - admitted, "user {user}");
    }
}

// ------------------------------------------------- changing the quota

/// How many pass at once now.
fn drain(limiter: &Limiter) -> u32 {
    let mut n = 0;
    while limiter.check().is_allowed() {
        n += 1;
    }
    n
}

#[test]
fn a_quota_change_keeps_what_the_bucket_holds() {
    paused(async {
        let sec = Duration::from_secs(1);
        // Raised while empty: no burst; the next request at the new rate.
        let limiter = Limiter::new(Quota::per_minute(60));
        assert_eq!(drain(&limiter), 60);
        limiter.set_quota(Quota::per_minute(120)).unwrap();
        let denied = limiter.check();
        assert!(!denied.is_allowed());
        assert_eq!(denied.retry_after(), sec / 2);
        tokio::time::advance(sec / 2).await;
        assert_eq!(drain(&limiter), 1);

        // A raised burst from a full bucket: what it held, then refills.
        let limiter = Limiter::new(Quota::per_minute(60).with_burst(10));
        limiter.set_quota(Quota::per_minute(60)).unwrap();
        assert_eq!(drain(&limiter), 10, "no burst that was never earned");
        tokio::time::advance(5 * sec).await;
        assert_eq!(drain(&limiter), 5);

        // Lowered with 30 held: the new burst of 10, not 30.
        let limiter = Limiter::new(Quota::per_minute(60));
        for _ in 0..30 {
            assert!(limiter.check().is_allowed());
        }
        limiter.set_quota(Quota::per_minute(10)).unwrap();
        assert_eq!(drain(&limiter), 10);
        tokio::time::advance(5 * sec).await;
        assert_eq!(drain(&limiter), 0);
        tokio::time::advance(sec).await;
        assert_eq!(drain(&limiter), 1, "one every 6 s");

        // Lowered while empty: nothing refills.
        let limiter = Limiter::new(Quota::per_minute(60));
        assert_eq!(drain(&limiter), 60);
        limiter.set_quota(Quota::per_minute(10)).unwrap();
        tokio::time::advance(5 * sec).await;
        assert_eq!(drain(&limiter), 0);
        tokio::time::advance(sec).await;
        assert_eq!(drain(&limiter), 1);

        // Decisions report the new quota; several quotas change together.
        let limiter = Limiter::new(Quota::per_minute(60)).and(Quota::per_day(100));
        assert!(limiter.set_quota(Quota::per_minute(1)).is_err());
        assert!(limiter.set_quotas([Quota::per_minute(1)]).is_err());
        assert!(
            limiter
                .quotas()
                .eq([Quota::per_minute(60), Quota::per_day(100)])
        );
        limiter
            .set_quotas([Quota::per_minute(2), Quota::per_day(100)])
            .unwrap();
        assert_eq!(limiter.check().quota(), Quota::per_minute(2));
        assert_eq!(drain(&limiter), 1);
        assert_eq!(limiter.check().quota(), Quota::per_minute(2));
    });
}

#[test]
fn every_clone_of_a_layer_follows_a_quota_change() {
    use tower::{BoxError, ServiceExt, service_fn};
    use tower_sluice::{RateLimitLayer, RateLimited};
    paused(async {
        let layer = RateLimitLayer::new(Quota::per_minute(1)).reject();
        let svc = tower::Layer::layer(&layer, service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
        svc.clone().oneshot(()).await.unwrap();
        let err = svc.clone().oneshot(()).await.unwrap_err();
        assert!(err.is::<RateLimited>());
        layer.limiter().set_quota(Quota::per_second(10)).unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        svc.clone().oneshot(()).await.unwrap();
        let err = svc.clone().oneshot(()).await.unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().unwrap();
        assert_eq!(limited.limit(), 10);
        assert_eq!(limited.retry_after(), Duration::from_millis(100));
    });
}

/// Real threads deciding while another changes the quota back and forth:
/// while the lower quota holds, at most its burst and rate pass (plus one
/// decision per thread racing with the change); over the whole run, never
/// more than the higher quota allows.
#[test]
fn threads_under_quota_changes_keep_each_bound() {
    let threads: u128 = 4;
    let high = Quota::per_second(4_000).with_burst(40);
    let low = Quota::per_second(400).with_burst(4);
    let limiter = Arc::new(Limiter::new(high));
    let admitted = AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let mut low_phases = Vec::new();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if limiter.check().is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        for round in 0..30 {
            let hold = Duration::from_millis(if round % 5 == 0 { 30 } else { 2 });
            std::thread::sleep(hold);
            limiter.set_quota(low).unwrap();
            let before = admitted.load(Ordering::Relaxed);
            let since = Instant::now();
            std::thread::sleep(hold);
            let count = admitted.load(Ordering::Relaxed) - before;
            let elapsed = since.elapsed();
            limiter.set_quota(high).unwrap();
            low_phases.push((u128::from(count), elapsed));
        }
        done.store(true, Ordering::Relaxed);
    });
    let t_low = low.emission_interval().as_nanos();
    for (count, elapsed) in low_phases {
        let bound = u128::from(low.burst()) + elapsed.as_nanos() / t_low + 1 + threads;
        assert!(
            count <= bound,
            "{count} passed under {low} in {elapsed:?}, bound {bound}"
        );
    }
    let elapsed = start.elapsed().as_nanos();
    let bound = u128::from(high.burst()) + elapsed / high.emission_interval().as_nanos() + threads;
    let admitted = u128::from(admitted.into_inner());
    assert!(admitted <= bound, "{admitted} admitted, bound {bound}");
    assert!(admitted > 0);
}

impl LeakyBucket {
    /// The quota changes to `q` at `now`: what the bucket holds, in
    /// requests, is kept, up to the new burst.
    fn set_quota(&mut self, now: u128, q: Quota) {
        let level = self.drained(now);
        let new = LeakyBucket::new(q);
        let held = ((self.capacity - level) * new.t / self.t).min(new.capacity);
        *self = LeakyBucket {
            level: new.capacity - held,
            last: now,
            ..new
        };
    }
}

#[derive(Debug, Clone)]
enum Op {
    Wait(u64),
    Check(u32),
    Set(Quota),
}

fn ops() -> impl Strategy<Value = (Quota, Vec<Op>)> {
    (quota(), prop::collection::vec(quota(), 1..4)).prop_flat_map(|(first, others)| {
        let op = prop_oneof![
            3 => (0u64..3_000_000_000).prop_map(Op::Wait),
            4 => (1u32..=5).prop_map(Op::Check),
            1 => prop::sample::select(others).prop_map(Op::Set),
        ];
        (Just(first), prop::collection::vec(op, 1..120))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Changing the quota while deciding: every decision equals the leaky
    /// bucket model's, where a change keeps what the bucket holds (in
    /// requests, up to the new burst) and the bucket then fills at the new
    /// rate.
    #[test]
    fn quota_changes_match_the_model((first, ops) in ops()) {
        paused(async move {
            let limiter = Limiter::new(first);
            let mut model = LeakyBucket::new(first);
            let mut quota = first;
            let mut now = 0u128;
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Wait(gap) => {
                        tokio::time::advance(Duration::from_nanos(gap)).await;
                        now += u128::from(gap);
                    }
                    Op::Check(cost) if cost > quota.burst() => {
                        prop_assert!(limiter.check_n(cost).is_err());
                    }
                    Op::Check(cost) => {
                        let got = outcome(&limiter.check_n(cost).unwrap());
                        let want = model.check(now, cost);
                        prop_assert_eq!(got, want, "op {} at {} ns, cost {}, quota {}", i, now, cost, quota);
                    }
                    Op::Set(q) => {
                        limiter.set_quota(q).unwrap();
                        model.set_quota(now, q);
                        quota = q;
                    }
                }
            }
            Ok(())
        })?;
    }
}

// ---------------------------------------------------------------------------
// Cost: quotas of requests and quotas of a unit, charged 1 and the cost.

/// A quota of requests or of tokens.
fn mixed_quota() -> impl Strategy<Value = Quota> {
    (quota(), prop::bool::ANY).prop_map(|(q, tokens)| if tokens { q.counting("tokens") } else { q })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `check_cost` against one leaky-bucket model per quota: a quota of
    /// requests is charged 1, a quota of tokens the cost; the request
    /// passes only if every model admits it, a denial charges none and
    /// names the quota needing the longest wait, cost 0 charges nothing,
    /// and a cost above a token quota's burst is an error that charges
    /// nothing.
    #[test]
    fn check_cost_matches_models_by_unit(
        q1 in mixed_quota(),
        q2 in mixed_quota(),
        q3 in mixed_quota(),
        arrivals in prop::collection::vec((0u64..=20_000_000, 0u32..=45), 1..150),
    ) {
        paused(async move {
            let quotas = [q1, q2, q3];
            let limiter = Limiter::new(q1).and(q2).and(q3);
            let mut models: Vec<LeakyBucket> = quotas.iter().map(|q| LeakyBucket::new(*q)).collect();
            let charge = |q: &Quota, cost: u32| if q.counts_requests() { 1 } else { cost };
            let mut now = 0u128;
            for (gap, cost) in arrivals {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                let over = quotas.iter().find(|q| !q.counts_requests() && cost > q.burst());
                let got = match (limiter.check_cost(cost), over) {
                    (Err(e), Some(q)) => {
                        prop_assert_eq!(e.cost(), cost);
                        prop_assert_eq!(e.quota(), *q);
                        continue;
                    }
                    (Ok(d), None) => d,
                    (got, over) => {
                        prop_assert!(false, "cost {} gave {:?}, over {:?}", cost, got, over);
                        unreachable!()
                    }
                };
                if cost == 0 {
                    prop_assert!(got.is_allowed());
                    continue;
                }
                let dry: Vec<Outcome> = models
                    .iter()
                    .zip(&quotas)
                    .map(|(m, q)| m.clone().check(now, charge(q, cost)))
                    .collect();
                let all = dry.iter().all(|o| o.allowed);
                prop_assert_eq!(got.is_allowed(), all, "cost {} at {} ns", cost, now);
                if all {
                    for (m, q) in models.iter_mut().zip(&quotas) {
                        m.check(now, charge(q, cost));
                    }
                } else {
                    let worst = dry.iter().filter(|o| !o.allowed).map(|o| o.retry_after).max().unwrap();
                    prop_assert_eq!(got.retry_after().as_nanos(), worst);
                    // The refusal names a quota that refused, with its unit.
                    let i = quotas.iter().position(|q| *q == got.quota()).unwrap();
                    prop_assert!(!dry[i].allowed);
                    prop_assert_eq!(dry[i].retry_after, worst);
                }
                // Every quota's state agrees with its model afterwards.
                for ((d, m), q) in limiter.states().iter().zip(&models).zip(&quotas) {
                    let left = (m.capacity - m.drained(now)) / m.t;
                    prop_assert_eq!(u128::from(d.remaining()), left, "{}", q);
                }
            }
            Ok(())
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `check_cost` on a limiter of one quota (its own fast path) against
    /// a leaky-bucket model: a quota of requests is charged 1 whatever the
    /// cost (a cost above its burst included), a quota of tokens the cost;
    /// cost 0 is allowed and charges nothing; a cost above a token quota's
    /// burst is an error that charges nothing.
    #[test]
    fn check_cost_of_one_quota_matches_its_model(
        q in mixed_quota(),
        arrivals in prop::collection::vec((0u64..=20_000_000, 0u32..=45), 1..150),
    ) {
        paused(async move {
            let limiter = Limiter::new(q);
            let mut model = LeakyBucket::new(q);
            let mut now = 0u128;
            for (gap, cost) in arrivals {
                tokio::time::advance(Duration::from_nanos(gap)).await;
                now += u128::from(gap);
                let left_before = limiter.states()[0].remaining();
                let got = limiter.check_cost(cost);
                if !q.counts_requests() && cost > q.burst() {
                    let e = got.unwrap_err();
                    prop_assert_eq!((e.cost(), e.quota()), (cost, q));
                } else if cost == 0 {
                    prop_assert!(got.unwrap().is_allowed());
                    prop_assert_eq!(limiter.states()[0].remaining(), left_before);
                } else {
                    let got = got.unwrap();
                    let n = if q.counts_requests() { 1 } else { cost };
                    let want = model.check(now, n);
                    prop_assert_eq!(got.is_allowed(), want.allowed, "cost {} at {} ns", cost, now);
                    if !want.allowed {
                        prop_assert_eq!(got.retry_after().as_nanos(), want.retry_after);
                    }
                }
                let left = (model.capacity - model.drained(now)) / model.t;
                prop_assert_eq!(u128::from(limiter.states()[0].remaining()), left, "{}", q);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn a_policy_of_requests_and_tokens_decides_together() {
    // 60 requests a minute AND 100 000 tokens a minute AND 1 000 000 tokens a day.
    let limiter = Limiter::new(Quota::per_minute(60))
        .and(Quota::per_minute(100_000).counting("tokens"))
        .and(Quota::per_day(1_000_000).counting("tokens"));
    assert!(limiter.check_cost(90_000).unwrap().is_allowed());
    // The minute's tokens refuse the next 20 000, which consumes nothing.
    let denied = limiter.check_cost(20_000).unwrap();
    assert!(!denied.is_allowed());
    assert_eq!(
        denied.quota(),
        Quota::per_minute(100_000).counting("tokens")
    );
    // 10 000 more tokens take 6 s to refill (100 000 a minute).
    assert_eq!(denied.retry_after(), Duration::from_secs(6));
    let err = denied.into_result().unwrap_err();
    assert!(err.to_string().contains("100000 tokens per 1m"), "{err}");
    let left: Vec<u32> = limiter.states().iter().map(|d| d.remaining()).collect();
    assert_eq!(left, [59, 10_000, 910_000]);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert!(limiter.check_cost(20_000).unwrap().is_allowed());
    // Cost 0: no charge at all, not even a request.
    assert!(limiter.check_cost(0).unwrap().is_allowed());
    // (60 a minute: 6 s refilled 6 requests, then one was charged.)
    assert_eq!(limiter.states()[0].remaining(), 59);
    // Above the minute's burst: an error naming cost, burst and quota.
    let err = limiter.check_cost(100_001).unwrap_err();
    assert_eq!((err.cost(), err.quota().burst()), (100_001, 100_000));
    assert!(err.to_string().contains("100001 tokens"), "{err}");
    // `check_n` stays a batch: it charges every quota n.
    let limiter =
        Limiter::new(Quota::per_minute(60)).and(Quota::per_minute(1_000).counting("tokens"));
    limiter.check_n(10).unwrap();
    let left: Vec<u32> = limiter.states().iter().map(|d| d.remaining()).collect();
    assert_eq!(left, [50, 990]);
}

/// Real threads charging random costs: no quota of cost admits more than
/// `B + elapsed / T` units, no quota of requests more than its requests.
#[test]
fn threads_never_exceed_a_cost_quota() {
    let tokens = Quota::per_second(200_000)
        .with_burst(5_000)
        .counting("tokens");
    let requests = Quota::per_second(2_000).with_burst(50);
    let limiter = Arc::new(Limiter::new(requests).and(tokens));
    let start = Instant::now();
    let admitted_tokens = AtomicU64::new(0);
    let admitted_requests = AtomicU64::new(0);
    let run = Duration::from_millis(300);
    std::thread::scope(|s| {
        for seed in 0..4u64 {
            let (limiter, admitted_tokens, admitted_requests) =
                (&limiter, &admitted_tokens, &admitted_requests);
            s.spawn(move || {
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while start.elapsed() < run {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let cost = (x % 400) as u32;
                    if cost > 0 && limiter.check_cost(cost).unwrap().is_allowed() {
                        admitted_tokens.fetch_add(u64::from(cost), Ordering::Relaxed);
                        admitted_requests.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed().as_nanos();
    for (quota, admitted) in [(tokens, admitted_tokens), (requests, admitted_requests)] {
        let admitted = u128::from(admitted.into_inner());
        let bound = u128::from(quota.burst()) + elapsed / quota.emission_interval().as_nanos();
        assert!(
            admitted <= bound,
            "{quota}: {admitted} admitted, bound {bound}"
        );
        // Not trivially denying either (loosely: the machine may be busy).
        assert!(admitted > 0, "{quota}: nothing admitted");
    }
}

mod calendar;
mod cost_calendar;
