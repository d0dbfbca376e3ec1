//! Settling a request's true cost after its response (per-key layer and
//! the in-memory backend; the shared rate limit in `rate_limit.rs`), on tokio's paused clock (feature `test-util`),
//! against a reference model, and from several threads at once.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
use tower_sluice::backend::{Acquire, Backend, Charged, Memory};
use tower_sluice::cost::Settlement;
use tower_sluice::per_key::Policy;
use tower_sluice::{PerKeyLayer, Quota, RateLimited};

#[path = "../support/token_api.rs"]
mod token_api;

mod e2e;
mod rate_limit;

const MS: Duration = Duration::from_millis(1);

/// A prompt: its user, the estimate charged up front, and what it really
/// costs (the inner service answers with it).
#[derive(Debug, Clone, Copy)]
struct Prompt {
    user: &'static str,
    estimate: u32,
    used: u32,
}

/// What the inner service answers: the true cost, if it reports one.
#[derive(Debug, Clone, Copy)]
struct Answer {
    used: Option<u32>,
}

fn prompt(estimate: u32, used: u32) -> Prompt {
    Prompt {
        user: "ann",
        estimate,
        used,
    }
}

/// 100 tokens a second per user (one token every 10 ms), burst 100.
fn tokens() -> Quota {
    Quota::per_second(100).counting("tokens")
}

fn layer(
    policy: impl Into<Policy>,
) -> PerKeyLayer<
    &'static str,
    impl Clone + tower_sluice::per_key::KeyExtractor<Prompt, Key = &'static str>,
> {
    PerKeyLayer::new(policy, |p: &Prompt| Some(p.user))
        .cost(|p: &Prompt| p.estimate)
        .settle(|a: &Answer| a.used)
}

fn answering()
-> impl tower::Service<Prompt, Response = Answer, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|p: Prompt| async move { Ok::<_, BoxError>(Answer { used: Some(p.used) }) })
}

fn retry_after(err: &BoxError) -> Duration {
    err.downcast_ref::<RateLimited>()
        .expect("rate limited")
        .retry_after()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debt_delays_the_next_request_exactly() {
    let svc = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(answering());
    // Estimated 10, cost 150: 140 more, past the burst of 100.
    svc.clone().oneshot(prompt(10, 150)).await.unwrap();
    // The bucket owes 50 tokens beyond empty: a prompt of 10 waits for
    // 60 tokens, 600 ms, exactly as if 150 had been charged up front.
    let err = svc.clone().oneshot(prompt(10, 10)).await.unwrap_err();
    assert_eq!(retry_after(&err), 600 * MS);
    advance(599 * MS).await;
    let err = svc.clone().oneshot(prompt(10, 10)).await.unwrap_err();
    assert_eq!(retry_after(&err), MS);
    advance(MS).await;
    svc.clone().oneshot(prompt(10, 10)).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn debt_matches_charging_the_true_cost_up_front() {
    let settled = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(answering());
    let upfront = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(answering());
    settled.clone().oneshot(prompt(20, 90)).await.unwrap();
    upfront.clone().oneshot(prompt(90, 90)).await.unwrap();
    for _ in 0..30 {
        let a = settled
            .clone()
            .oneshot(prompt(7, 7))
            .await
            .map_err(|e| retry_after(&e));
        let b = upfront
            .clone()
            .oneshot(prompt(7, 7))
            .await
            .map_err(|e| retry_after(&e));
        assert_eq!(a.map(|_| ()), b.map(|_| ()));
        advance(13 * MS).await;
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refund_lets_the_next_request_pass_exactly() {
    let svc = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(answering());
    // Estimated the whole burst, used 30: 70 come back.
    svc.clone().oneshot(prompt(100, 30)).await.unwrap();
    svc.clone().oneshot(prompt(70, 70)).await.unwrap();
    let err = svc.clone().oneshot(prompt(1, 1)).await.unwrap_err();
    assert_eq!(retry_after(&err), 10 * MS);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refund_is_skipped_once_a_later_request_relied_on_it() {
    let svc = ServiceBuilder::new()
        .layer(
            PerKeyLayer::new(tokens(), HandleReq::user)
                .cost(|r: &HandleReq| r.estimate)
                .settle_handle::<HandleReq>(),
        )
        .service(service_fn(|r: HandleReq| async move {
            Ok::<_, BoxError>(r.settlement.expect("handed a settlement"))
        }));
    let first = svc.clone().oneshot(HandleReq::new(60)).await.unwrap();
    let _second = svc.clone().oneshot(HandleReq::new(40)).await.unwrap();
    // The second was judged with the first's 60 counted: no refund now.
    assert!(first.settle(0));
    let err = svc.clone().oneshot(HandleReq::new(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), 10 * MS);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_or_unsettled_responses_keep_the_estimate() {
    // The answer reports no usage: the estimate stays.
    let svc = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(service_fn(|_: Prompt| async {
            Ok::<_, BoxError>(Answer { used: None })
        }));
    svc.clone().oneshot(prompt(100, 1)).await.unwrap();
    assert!(svc.clone().oneshot(prompt(1, 1)).await.is_err());

    // A response future dropped before its response: the estimate stays.
    let svc = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(service_fn(|p: Prompt| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, BoxError>(Answer { used: Some(p.used) })
        }));
    let pending = svc.clone().oneshot(prompt(100, 0));
    let _ = tokio::time::timeout(MS, pending).await;
    let err = svc.clone().oneshot(prompt(1, 1)).await.unwrap_err();
    assert_eq!(retry_after(&err), 9 * MS);

    // An error keeps the estimate too.
    let svc = ServiceBuilder::new()
        .layer(layer(tokens()))
        .service(service_fn(|_: Prompt| async {
            Err::<Answer, BoxError>("down".into())
        }));
    let _ = svc.clone().oneshot(prompt(100, 0)).await;
    assert!(
        svc.clone()
            .oneshot(prompt(1, 1))
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
}

/// A request of our own that carries its settlement.
#[derive(Debug)]
struct HandleReq {
    estimate: u32,
    settlement: Option<Settlement>,
}

impl HandleReq {
    fn new(estimate: u32) -> Self {
        HandleReq {
            estimate,
            settlement: None,
        }
    }
}

impl tower_sluice::cost::Settleable for HandleReq {
    fn attach(&mut self, settlement: Settlement) {
        self.settlement = Some(settlement);
    }
}

impl HandleReq {
    fn user(&self) -> Option<&'static str> {
        Some("ann")
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn only_the_first_settle_counts() {
    // The handler settles at 10; the hook would say 100: the handler's wins.
    let svc = ServiceBuilder::new()
        .layer(
            PerKeyLayer::new(tokens(), HandleReq::user)
                .cost(|r: &HandleReq| r.estimate)
                .settle_handle::<HandleReq>()
                .settle(|_: &Settlement| Some(100)),
        )
        .service(service_fn(|r: HandleReq| async move {
            let settlement = r.settlement.expect("handed a settlement");
            assert!(!settlement.is_settled());
            assert!(settlement.settle(10));
            assert!(!settlement.clone().settle(90));
            assert!(settlement.is_settled());
            Ok::<_, BoxError>(settlement)
        }));
    let settlement = svc.clone().oneshot(HandleReq::new(50)).await.unwrap();
    assert!(!settlement.settle(100));
    // Settled at 10 (not 90, not the hook's 100): 90 tokens left; the
    // next is settled at 10 too: 80 left.
    svc.clone().oneshot(HandleReq::new(90)).await.unwrap();
    assert!(svc.clone().oneshot(HandleReq::new(81)).await.is_err());
    svc.clone().oneshot(HandleReq::new(80)).await.unwrap();
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn request_quotas_are_never_settled() {
    // 3 requests a second AND 100 tokens a second.
    let policy = Policy::new(Quota::per_second(3)).and(tokens()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer(policy))
        .service(answering());
    for _ in 0..3 {
        // Settled to 0 tokens: the request still counts.
        svc.clone().oneshot(prompt(5, 0)).await.unwrap();
    }
    let err = svc.clone().oneshot(prompt(1, 1)).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert!(limited.quota().counts_requests());
}

/// Five failed logins a minute per user; successful ones settle to zero.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn login_recipe_charges_only_failures() {
    #[derive(Clone, Copy)]
    struct Login {
        user: &'static str,
        ok: bool,
    }
    let svc = ServiceBuilder::new()
        .layer(
            PerKeyLayer::new(Quota::per_minute(5).counting("failures"), |l: &Login| {
                Some(l.user)
            })
            .cost(|_: &Login| 1)
            .settle(|ok: &bool| ok.then_some(0)),
        )
        .service(service_fn(
            |l: Login| async move { Ok::<_, BoxError>(l.ok) },
        ));
    let good = Login {
        user: "ann",
        ok: true,
    };
    let bad = Login {
        user: "ann",
        ok: false,
    };
    for _ in 0..100 {
        assert!(svc.clone().oneshot(good).await.unwrap());
    }
    for _ in 0..4 {
        assert!(!svc.clone().oneshot(bad).await.unwrap());
        assert!(svc.clone().oneshot(good).await.unwrap());
    }
    assert!(!svc.clone().oneshot(bad).await.unwrap());
    // Five failures: the next attempt, good or bad (each is charged 1 up
    // front), waits a failure's share of the minute.
    let err = svc.clone().oneshot(good).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_secs(12));
    advance(Duration::from_secs(12)).await;
    assert!(svc.clone().oneshot(good).await.unwrap());
    // Other users are untouched.
    assert!(
        svc.clone()
            .oneshot(Login {
                user: "bob",
                ok: false
            })
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn calendar_quotas_settle_within_their_window() {
    let day = Quota::per_calendar_day(1_000).counting("tokens");
    let store = Memory::<&str>::new(100);
    let policy = Policy::new(day);
    let grant = |cost| match store.acquire(&"ann", &policy, cost, Duration::ZERO) {
        Acquire::Ready(r) => r,
        Acquire::Pending(n) => match n {},
    };
    let remaining = || {
        store
            .states(&"ann", &policy)
            .iter()
            .next()
            .unwrap()
            .remaining()
    };
    let a = grant(100).unwrap().charged();
    let b = grant(100).unwrap().charged();
    // Calendar counts add up: a refund within the window is exact even
    // after later charges.
    store.settle(&"ann", &policy, a, 40);
    assert_eq!(remaining(), 860);
    // A debt past the limit: nothing more passes in this window (the
    // next one starts empty).
    store.settle(&"ann", &policy, b, 2_000);
    assert_eq!(remaining(), 0);
    let err = grant(1).unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(limited.reset_after(), limited.retry_after());
    assert!(grant(1).is_err());
}

/// A reference model of one key: per quota a leaky bucket (its `tat`, in
/// nanoseconds); an admission charges every quota, a settlement adds the
/// extra to the quotas that count cost, or takes the difference back where
/// the bucket is as the request left it (nothing admitted or settled since).
#[derive(Debug, Clone)]
struct Model {
    /// `(emission, window, counts cost)` per quota.
    quotas: Vec<(u64, u64, bool)>,
    tats: Vec<u64>,
}

impl Model {
    fn admit(&mut self, now: u64, cost: u32) -> Result<Vec<u64>, u64> {
        let mut news = Vec::new();
        let mut wait = 0;
        for (i, &(t, w, counts_cost)) in self.quotas.iter().enumerate() {
            let n = if counts_cost { u64::from(cost) } else { 1 };
            let new = self.tats[i].max(now) + n * t;
            wait = wait.max((new - now).saturating_sub(w));
            news.push(new);
        }
        if wait > 0 {
            return Err(wait);
        }
        self.tats = news.clone();
        Ok(news)
    }

    fn settle(&mut self, now: u64, stamps: &[u64], estimate: u32, actual: u32) {
        for (i, &(t, _, counts_cost)) in self.quotas.iter().enumerate() {
            if !counts_cost {
                continue;
            }
            if actual > estimate {
                self.tats[i] = self.tats[i].max(now) + u64::from(actual - estimate) * t;
            } else if self.tats[i] == stamps[i] {
                self.tats[i] -= u64::from(estimate - actual) * t;
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Advance(u64),
    Admit(u32),
    /// Settle the `i`th admitted request (modulo their number) at a cost.
    Settle(usize, u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..300).prop_map(Op::Advance),
        (1u32..=60).prop_map(Op::Admit),
        (0usize..16, 0u32..150).prop_map(|(i, c)| Op::Settle(i, c)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn settlement_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let requests = Quota::per_second(20);
            let tokens = Quota::per_second(100).counting("tokens");
            let daily = Quota::per_minute(3_000).counting("tokens").with_burst(200);
            let policy = Policy::new(requests).and(tokens).unwrap().and(daily).unwrap();
            let store = Memory::<u8>::new(10);
            let mut model = Model {
                quotas: [requests, tokens, daily]
                    .iter()
                    .map(|q| {
                        let t = q.period().as_nanos() as u64 / u64::from(q.limit());
                        (t, t * u64::from(q.burst()), !q.counts_requests())
                    })
                    .collect(),
                tats: vec![0; 3],
            };
            let origin = Instant::now();
            let mut admitted: Vec<(Charged, Vec<u64>, bool)> = Vec::new();
            for op in ops {
                let now = origin.elapsed().as_nanos() as u64;
                match op {
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Admit(cost) => {
                        let got = match store.acquire(&0, &policy, cost, Duration::ZERO) {
                            Acquire::Ready(r) => r,
                            Acquire::Pending(n) => match n {},
                        };
                        let want = model.admit(now, cost);
                        match (got, want) {
                            (Ok(grant), Ok(stamps)) => admitted.push((grant.charged(), stamps, false)),
                            (Err(e), Err(wait)) => {
                                let got = e.downcast_ref::<RateLimited>().unwrap().retry_after();
                                prop_assert_eq!(got, Duration::from_nanos(wait));
                            }
                            (got, want) => prop_assert!(false, "got {:?}, model {:?}", got.map(|g| g.charged()), want),
                        }
                    }
                    Op::Settle(i, actual) if !admitted.is_empty() => {
                        let n = admitted.len();
                        let (charged, stamps, settled) = &mut admitted[i % n];
                        if !*settled {
                            *settled = true;
                            store.settle(&0, &policy, *charged, actual);
                            model.settle(now, stamps, charged.estimate(), actual);
                        }
                    }
                    Op::Settle(..) => {}
                }
                let now = origin.elapsed().as_nanos() as u64;
                let states: Vec<Duration> = store.states(&0, &policy).iter().map(|d| d.reset_after()).collect();
                let want: Vec<Duration> = model.tats.iter().map(|&t| Duration::from_nanos(t.saturating_sub(now))).collect();
                prop_assert_eq!(states, want);
            }
            Ok(())
        })?;
    }
}

/// Threads admitting and settling at once: the final state is the sum of
/// the true costs, none lost, none invented.
#[test]
fn threads_settling_at_once_lose_and_invent_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let handle = rt.handle().clone();
    let _enter = rt.enter();
    // A token every microsecond, a burst of 10 million: nothing is refused.
    let quota = Quota::per_second(1_000_000)
        .counting("tokens")
        .with_burst(10_000_000);
    let policy = Policy::new(quota);
    let store = Arc::new(Memory::<u8>::new(10));
    const THREADS: u32 = 4;
    const EACH: u32 = 500;
    // Debts only: exact whatever the interleaving.
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, policy, handle) = (store.clone(), policy.clone(), handle.clone());
            std::thread::spawn(move || {
                let _enter = handle.enter();
                let mut sum = 0u64;
                for i in 0..EACH {
                    let estimate = 1 + (i + t) % 5;
                    let Acquire::Ready(Ok(grant)) =
                        store.acquire(&0, &policy, estimate, Duration::ZERO)
                    else {
                        panic!("refused")
                    };
                    let actual = estimate + (i * 7 + t) % 11;
                    store.settle(&0, &policy, grant.charged(), actual);
                    sum += u64::from(actual);
                }
                sum
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let charged = store
        .states(&0, &policy)
        .iter()
        .next()
        .unwrap()
        .reset_after();
    assert_eq!(charged, Duration::from_micros(total));

    // Refunds at once: each refund either happens exactly or is skipped,
    // so what stays charged is at least the true costs and at most the
    // estimates. Then settle everything left by debts, exactly.
    let before = charged.as_micros() as u64;
    let grants: Vec<Charged> = (0..400)
        .map(|_| match store.acquire(&0, &policy, 10, Duration::ZERO) {
            Acquire::Ready(Ok(g)) => g.charged(),
            _ => panic!("refused"),
        })
        .collect();
    let grants = Arc::new(grants);
    let threads: Vec<_> = (0..THREADS as usize)
        .map(|t| {
            let (store, policy, handle, grants) = (
                store.clone(),
                policy.clone(),
                handle.clone(),
                grants.clone(),
            );
            std::thread::spawn(move || {
                let _enter = handle.enter();
                for g in grants.iter().skip(t).step_by(THREADS as usize).rev() {
                    store.settle(&0, &policy, *g, 4);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let after = store
        .states(&0, &policy)
        .iter()
        .next()
        .unwrap()
        .reset_after()
        .as_micros() as u64;
    assert!(
        after >= before + 400 * 4,
        "invented capacity: {after} < {}",
        before + 400 * 4
    );
    assert!(
        after <= before + 400 * 10,
        "lost a charge: {after} > {}",
        before + 400 * 10
    );
    // Every refund gives back exactly 6: what stays is a multiple of 6 off.
    assert_eq!((before + 400 * 10 - after) % 6, 0);
}
