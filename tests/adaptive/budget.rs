//! `ProviderBudgetLayer` on the paused clock: it waits for both budgets,
//! never past `max_wait`, corrects from usage, and steers by what the
//! upstream says, every upstream wait capped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::adaptive::{ProviderBudgetLayer, TokenSettlement};
use tower_sluice::{ExceedsBurst, Quota, RateLimited};

use super::within;

/// A request whose body is its token estimate.
type Req = Request<u32>;
type Res = Response<()>;

/// The estimate: the request's body.
fn body(req: &Req) -> u32 {
    *req.body()
}

/// The usage: the `x-usage` header of the response.
fn usage_header(res: &Res) -> Option<u64> {
    res.headers().get("x-usage")?.to_str().ok()?.parse().ok()
}

/// An answer: a status and header fields.
type Answer = (u16, Vec<(&'static str, String)>);

/// An upstream that records when each request arrived (from the start)
/// and answers with the next of `answers` (then 200 with no fields).
#[derive(Clone)]
struct Upstream {
    start: Instant,
    sent: Arc<Mutex<Vec<Duration>>>,
    answers: Arc<Mutex<Vec<Answer>>>,
}

impl Upstream {
    fn new(answers: Vec<Answer>) -> Self {
        let mut answers = answers;
        answers.reverse();
        Upstream {
            start: Instant::now(),
            sent: Arc::default(),
            answers: Arc::new(Mutex::new(answers)),
        }
    }

    fn service(
        &self,
    ) -> impl Service<Req, Response = Res, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let up = self.clone();
        service_fn(move |_req: Req| {
            let up = up.clone();
            async move {
                up.sent.lock().unwrap().push(up.start.elapsed());
                let (status, fields) = up.answers.lock().unwrap().pop().unwrap_or((200, vec![]));
                let mut res = Response::builder().status(status);
                for (k, v) in fields {
                    res = res.header(k, v);
                }
                Ok::<_, BoxError>(res.body(()).unwrap())
            }
        })
    }

    fn sent(&self) -> Vec<Duration> {
        self.sent.lock().unwrap().clone()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn req(tokens: u32) -> Req {
    Request::new(tokens)
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_token_budget() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![]);
        // 100 tokens a second; requests are plentiful.
        let budget =
            ProviderBudgetLayer::new(Quota::per_second(100), Quota::per_second(100)).estimate(body);
        let client = budget.layer(up.service());
        // Three requests of 60 tokens at once: the second waits for 20
        // tokens to refill (200 ms), the third for 60 more (600 ms).
        let (a, b, c) = tokio::join!(
            client.clone().oneshot(req(60)),
            client.clone().oneshot(req(60)),
            client.clone().oneshot(req(60)),
        );
        for r in [a, b, c] {
            r.unwrap();
        }
        assert_eq!(up.sent(), [ms(0), ms(200), ms(800)]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn waits_for_the_request_budget() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![]);
        // 2 requests a second, one at a time; tokens are plentiful.
        let budget = ProviderBudgetLayer::new(
            Quota::per_second(2).with_burst(1),
            Quota::per_second(10_000),
        )
        .estimate(body);
        let client = budget.layer(up.service());
        let (a, b, c) = tokio::join!(
            client.clone().oneshot(req(5)),
            client.clone().oneshot(req(5)),
            client.clone().oneshot(req(5)),
        );
        for r in [a, b, c] {
            r.unwrap();
        }
        assert_eq!(up.sent(), [ms(0), ms(500), ms(1_000)]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn never_waits_past_max_wait() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![]);
        let budget = ProviderBudgetLayer::new(Quota::per_second(100), Quota::per_second(100))
            .estimate(body)
            .max_wait(ms(500));
        let handle = budget.handle();
        let client = budget.layer(up.service());
        client.clone().oneshot(req(100)).await.unwrap();
        // The next 100 tokens are a second away: refused at once, and
        // nothing is consumed.
        let before = Instant::now();
        let err = client.clone().oneshot(req(100)).await.unwrap_err();
        assert_eq!(before.elapsed(), Duration::ZERO);
        let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert_eq!(limited.retry_after(), ms(1_000));
        assert_eq!(handle.requests_remaining(), 99);
        // Half of it is within the wait.
        client.clone().oneshot(req(50)).await.unwrap();
        assert_eq!(up.sent(), [ms(0), ms(500)]);
        // More than the burst could never pass.
        let err = client.clone().oneshot(req(101)).await.unwrap_err();
        let exceeds = err.downcast_ref::<ExceedsBurst>().expect("ExceedsBurst");
        assert_eq!(
            (exceeds.cost(), exceeds.quota()),
            (101, Quota::per_second(100))
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn corrects_from_usage() {
    within(ms(10_000), async {
        let answer = |n: u64| (200, vec![("x-usage", n.to_string())]);
        let up = Upstream::new(vec![answer(10), answer(100), answer(1_000_000)]);
        // Daily budgets: nothing refills during the test.
        let budget = ProviderBudgetLayer::new(Quota::per_day(100), Quota::per_day(1_000))
            .estimate(body)
            .usage(usage_header);
        let handle = budget.handle();
        let client = budget.layer(up.service());
        // Estimated 50, used 10: 40 refunded.
        client.clone().oneshot(req(50)).await.unwrap();
        assert_eq!(handle.tokens_remaining(), 990);
        // Estimated 50, used 100: 50 more charged.
        client.clone().oneshot(req(50)).await.unwrap();
        assert_eq!(handle.tokens_remaining(), 890);
        // An absurd usage is cut to the budget's burst: the budget is in
        // debt for at most one day's tokens, not a million.
        client.clone().oneshot(req(50)).await.unwrap();
        assert_eq!(handle.tokens_remaining(), 0);
        let err = client
            .clone()
            .oneshot(req(1))
            .await
            .map(|_| ())
            .unwrap_err();
        let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert!(
            limited.retry_after() > Duration::from_secs(3_600),
            "{limited:?}"
        );
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn debt_delays_later_requests_as_if_charged_up_front() {
    // 100 tokens a second; each first request is estimated at 10 tokens.
    // Used 100: the bucket is empty, so 50 more tokens are half a second
    // away. Used 250: 150 past the burst of 100 are owed too, so 50 more
    // are 2 s away.
    for (used, next) in [("100", ms(500)), ("250", ms(2_000))] {
        within(ms(10_000), async {
            let up = Upstream::new(vec![(200, vec![("x-usage", used.into())])]);
            let budget = ProviderBudgetLayer::new(Quota::per_second(100), Quota::per_second(100))
                .estimate(body)
                .usage(usage_header);
            let client = budget.layer(up.service());
            client.clone().oneshot(req(10)).await.unwrap();
            client.clone().oneshot(req(50)).await.unwrap();
            assert_eq!(up.sent(), [ms(0), next], "used {used}");
        })
        .await;
    }
}

#[tokio::test(start_paused = true)]
async fn settles_later_through_the_response() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![]);
        let budget =
            ProviderBudgetLayer::new(Quota::per_day(100), Quota::per_day(1_000)).estimate(body);
        let handle = budget.handle();
        let client = budget.layer(up.service());
        let mut res = client.clone().oneshot(req(300)).await.unwrap();
        assert_eq!(handle.tokens_remaining(), 700);
        let settlement = res.extensions_mut().remove::<TokenSettlement>().unwrap();
        assert_eq!(settlement.estimate(), 300);
        settlement.clone().settle(120);
        settlement.settle(5); // only the first settlement counts
        assert_eq!(handle.tokens_remaining(), 880);
        // Dropped unsettled: the estimate stands.
        drop(client.clone().oneshot(req(80)).await.unwrap());
        assert_eq!(handle.tokens_remaining(), 800);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn steers_by_a_spent_budget_and_retry_after() {
    within(ms(100_000), async {
        let up = Upstream::new(vec![
            // OpenAI-style: tokens spent until 2 s from now.
            (
                200,
                vec![
                    ("x-ratelimit-remaining-tokens", "0".into()),
                    ("x-ratelimit-reset-tokens", "2s".into()),
                ],
            ),
            // A 429 that asks for a day: capped to the upstream bound.
            (429, vec![("retry-after", "86400".into())]),
            // A 429 that names no wait: 1 s.
            (429, vec![]),
        ]);
        let budget = ProviderBudgetLayer::new(Quota::per_second(100), Quota::per_second(10_000))
            .estimate(body)
            .max_upstream_wait(Duration::from_secs(5))
            .max_wait(Duration::from_secs(30));
        let handle = budget.handle();
        let client = budget.layer(up.service());
        for _ in 0..4 {
            client.clone().oneshot(req(10)).await.unwrap();
        }
        assert_eq!(
            up.sent(),
            [ms(0), ms(2_000), ms(7_000), ms(8_000)],
            "paused for the reset, the capped Retry-After, then 1 s"
        );
        assert!(handle.paused_for().is_zero());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pause_past_max_wait_fails_at_once() {
    within(ms(100_000), async {
        let up = Upstream::new(vec![(429, vec![("retry-after", "20".into())])]);
        let budget = ProviderBudgetLayer::new(Quota::per_second(100), Quota::per_second(10_000))
            .estimate(body)
            .max_wait(Duration::from_secs(5));
        let handle = budget.handle();
        let client = budget.layer(up.service());
        // The 429 refunds its tokens.
        let res = client.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(res.status(), 429);
        assert_eq!(handle.tokens_remaining(), 10_000);
        assert_eq!(handle.paused_for(), Duration::from_secs(20));
        let before = Instant::now();
        let err = client.clone().oneshot(req(10)).await.unwrap_err();
        assert_eq!(before.elapsed(), Duration::ZERO);
        let limited = err.downcast_ref::<RateLimited>().expect("RateLimited");
        assert_eq!(limited.retry_after(), Duration::from_secs(20));
        assert_eq!(up.sent().len(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pause_that_arrives_while_waiting_is_honoured() {
    within(ms(100_000), async {
        let up = Upstream::new(vec![(429, vec![("retry-after-ms", "1500".into())])]);
        let budget = ProviderBudgetLayer::new(
            Quota::per_second(10).with_burst(1),
            Quota::per_second(10_000),
        )
        .estimate(body);
        let client = budget.layer(up.service());
        // The second is due at 100 ms; the first's 429 pauses until 1.5 s.
        let (a, b) = tokio::join!(
            client.clone().oneshot(req(1)),
            client.clone().oneshot(req(1))
        );
        assert_eq!(a.unwrap().status(), 429);
        b.unwrap();
        assert_eq!(up.sent(), [ms(0), ms(1_500)]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn brings_budgets_down_to_what_the_upstream_says_remains() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![(
            200,
            vec![
                ("x-ratelimit-remaining-requests", "3".into()),
                ("x-ratelimit-remaining-tokens", "400".into()),
                // Malformed fields are ignored.
                ("x-ratelimit-reset-requests", "-1s".into()),
            ],
        )]);
        let budget = ProviderBudgetLayer::new(Quota::per_day(100), Quota::per_day(1_000))
            .estimate(body)
            .usage(|_: &Res| Some(10));
        let handle = budget.handle();
        let client = budget.layer(up.service());
        client.clone().oneshot(req(10)).await.unwrap();
        assert_eq!(handle.requests_remaining(), 3);
        assert_eq!(handle.tokens_remaining(), 400);
        assert!(handle.paused_for().is_zero());
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_before_it_is_sent_gives_its_budget_back() {
    within(ms(10_000), async {
        let up = Upstream::new(vec![]);
        let budget = ProviderBudgetLayer::new(Quota::per_day(100), Quota::per_day(1_000))
            .estimate(body)
            .usage(|_: &Res| Some(0));
        let handle = budget.handle();
        let client = budget.layer(up.service());
        // Spend all but 100 tokens, then a request of 200 must wait.
        client.clone().oneshot(req(900)).await.unwrap();
        let mut svc = client.clone();
        let waiting = svc.ready().await.unwrap().call(req(200));
        assert_eq!(handle.requests_remaining(), 98);
        drop(waiting);
        assert_eq!(handle.requests_remaining(), 99);
        assert_eq!(up.sent().len(), 1);
    })
    .await;
}

#[test]
fn bounds() {
    fn ok<T: Clone + Send + Sync + 'static>() {}
    ok::<ProviderBudgetLayer>();
    ok::<tower_sluice::adaptive::ProviderBudgetHandle>();
}
