//! The `llm_proxy` example's scenario over real HTTP on 127.0.0.1: an axum
//! API in front of a mock model, limited per API key by 60 requests and
//! 100 000 tokens a minute and a calendar day's tokens, charging each
//! prompt its estimate and settling at the model's `usage`.
//!
//! Real time passes here. The minute quotas refill while a test runs (a
//! token every 0.6 ms), so their counts are checked within a margin; the
//! day's quota does not refill, so its counts are exact.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/llm_proxy.rs"]
mod llm_proxy;

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use llm_proxy::{Answer, Keys, MAX_ANSWER_TOKENS, ask, ask_unsized, body, model, prompt_of};
use reqwest::StatusCode;
use tower_sluice::calendar;

const POLICY: &str = concat!(
    r#""per-minute";q=60;w=60, "tokens-per-minute";q=100000;w=60;qu="tokens", "#,
    r#""tokens-calendar-day";q=1000000;w=86400;qu="tokens""#
);

/// Starts the proxy at 2024-03-10 12:00:00 UTC: twelve hours to the end of
/// the day.
async fn proxy() -> (SocketAddr, Keys, reqwest::Client) {
    calendar::set_test_utc(UNIX_EPOCH + Duration::from_secs(1_710_072_000));
    let (addr, keys) = llm_proxy::start().await.unwrap();
    (addr, keys, reqwest::Client::new())
}

/// What the proxy charges up front for `prompt`.
fn estimate(prompt: &str, stream: bool) -> u32 {
    (body(prompt, stream).len() as u32).div_ceil(4) + MAX_ANSWER_TOKENS
}

/// The `r` of the item `name` in a `RateLimit` field.
fn remaining(answer: &Answer, name: &str) -> u32 {
    let field = answer.field("ratelimit");
    let item = field
        .split(", ")
        .find(|item| item.starts_with(&format!("\"{name}\";")))
        .unwrap_or_else(|| panic!("no {name} in {field}"));
    let r = item.split(';').find_map(|p| p.strip_prefix("r=")).unwrap();
    r.parse().unwrap()
}

/// The tokens charged to `key` today.
fn charged_today(keys: &Keys, key: &str) -> u32 {
    keys.usage(&key.to_string())[0].used()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokens_quota_refuses_a_key_with_retry_after_and_qu_fields() {
    let (addr, keys, client) = proxy().await;
    // About 48 000 tokens estimated each, about 40 100 used.
    let prompt = prompt_of(40_000);
    let (est, used) = (
        estimate(&prompt, false),
        model::usage(&prompt).total_tokens(),
    );

    for _ in 0..2 {
        let a = ask(&client, addr, "bob", &prompt).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.field("ratelimit-policy"), POLICY);
    }
    let a = ask(&client, addr, "bob", &prompt).await.unwrap();
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.field("ratelimit-policy"), POLICY);
    // Refused by the minute's tokens: the two settled answers and this
    // estimate are 28 000 tokens over, 17 s at 100 000 a minute.
    let over = 2 * used + est - 100_000;
    let retry: u64 = a.field("retry-after").parse().unwrap();
    let want = (u64::from(over) * 60).div_ceil(100_000);
    assert!((want - 2..=want).contains(&retry), "{retry}, want {want}");
    assert!(
        a.body
            .starts_with("rate limit exceeded: 100000 tokens per 1m; retry after"),
        "{}",
        a.body
    );
    // One item per quota, the token quotas counting tokens.
    let rate_limit = a.field("ratelimit");
    assert!(
        rate_limit.starts_with(r#""per-minute";r=58;t=1, "#),
        "{rate_limit}"
    );
    assert!(
        rate_limit.contains(&format!(
            r#""tokens-per-minute";r={}"#,
            remaining(&a, "tokens-per-minute")
        )),
        "{rate_limit}"
    );
    assert!(remaining(&a, "tokens-per-minute") < est);
    assert!(
        rate_limit.ends_with(&format!(
            r#""tokens-calendar-day";r={};t=43200"#,
            1_000_000 - 2 * used
        )),
        "{rate_limit}"
    );
    // The refusal consumed nothing.
    assert_eq!(charged_today(&keys, "bob"), 2 * used);
    // Another key has its own budget.
    let a = ask(&client, addr, "bobs-colleague", &prompt).await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_requests_quota_refuses_the_61st_small_prompt() {
    let (addr, _keys, client) = proxy().await;
    // Each estimate is about 8 000 tokens; settled at about 100 each, they
    // leave the minute's tokens for the requests quota to run out first.
    let mut admitted = 0;
    let refused = loop {
        let a = ask(&client, addr, "carol", "ping").await.unwrap();
        if a.status != StatusCode::OK {
            break a;
        }
        admitted += 1;
        assert!(admitted <= 63, "never refused");
    };
    // 60, or a request or two more that came back while the 60 ran.
    assert!((60..=62).contains(&admitted), "{admitted}");
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.field("retry-after"), "1");
    assert!(
        refused
            .field("ratelimit")
            .starts_with(r#""per-minute";r=0;t=1, "#),
        "{}",
        refused.field("ratelimit")
    );
    assert!(
        refused
            .body
            .starts_with("rate limit exceeded: 60 per 1m; retry after"),
        "{}",
        refused.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_estimate_above_the_token_burst_is_413_and_a_bad_body_is_settled_at_zero() {
    let (addr, keys, client) = proxy().await;
    let prompt = prompt_of(120_000);
    let a = ask(&client, addr, "dave", &prompt).await.unwrap();
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.field("retry-after"), "-");
    let want = format!(
        "request cost {} tokens exceeds the burst of 100000 tokens",
        estimate(&prompt, false)
    );
    assert!(a.body.starts_with(&want), "{}", a.body);
    assert_eq!(charged_today(&keys, "dave"), 0);
    // A body the model cannot read is settled at zero.
    let res = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-api-key", "dave")
        .body("{\"no prompt\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(charged_today(&keys, "dave"), 0);
    let a = ask(&client, addr, "dave", "ping").await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    // The 413 consumed nothing; the 400 its one request.
    assert_eq!(remaining(&a, "per-minute"), 58);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settling_at_the_usage_changes_what_the_next_request_sees() {
    let (addr, keys, client) = proxy().await;
    let prompt = prompt_of(4_000);
    let (est, used) = (
        estimate(&prompt, false),
        model::usage(&prompt).total_tokens(),
    );
    assert!(used + 7_000 < est, "the estimate reserves a long answer");

    let first = ask(&client, addr, "sam", &prompt).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.total_tokens(), Some(u64::from(used)));
    // The answer's fields: the estimate charged.
    assert_eq!(remaining(&first, "tokens-calendar-day"), 1_000_000 - est);
    let minute = remaining(&first, "tokens-per-minute");
    assert!(
        (100_000 - est..100_000 - est + 3_000).contains(&minute),
        "{minute}"
    );
    // Then settled at the usage.
    assert_eq!(charged_today(&keys, "sam"), used);

    // The next request is judged with the usage, not the estimate.
    let second = ask(&client, addr, "sam", &prompt).await.unwrap();
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(
        remaining(&second, "tokens-calendar-day"),
        1_000_000 - used - est
    );
    let minute = remaining(&second, "tokens-per-minute");
    let want = 100_000 - used - est;
    assert!(
        (want..want + 3_000).contains(&minute),
        "{minute}, want {want}"
    );
    assert_eq!(charged_today(&keys, "sam"), 2 * used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_above_the_estimate_is_a_debt_the_next_request_sees() {
    let (addr, keys, client) = proxy().await;
    // No declared length: charged the answer alone, 8 000 tokens.
    let prompt = prompt_of(40_000);
    let used = model::usage(&prompt).total_tokens();
    let first = ask_unsized(&client, addr, "frank", &prompt).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        remaining(&first, "tokens-calendar-day"),
        1_000_000 - MAX_ANSWER_TOKENS
    );
    assert_eq!(charged_today(&keys, "frank"), used);

    let next = ask(&client, addr, "frank", "ping").await.unwrap();
    assert_eq!(next.status, StatusCode::OK);
    let est = estimate("ping", false);
    assert_eq!(
        remaining(&next, "tokens-calendar-day"),
        1_000_000 - used - est
    );
    let minute = remaining(&next, "tokens-per-minute");
    let want = 100_000 - used - est;
    assert!(
        (want..want + 3_000).contains(&minute),
        "{minute}, want {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_settled_when_its_stream_ends() {
    let (addr, keys, client) = proxy().await;
    let prompt = prompt_of(4_000);
    let (est, used) = (
        estimate(&prompt, true),
        model::usage(&prompt).total_tokens(),
    );

    let mut res = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-api-key", "sue")
        .header("content-type", "application/json")
        .body(body(&prompt, true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    assert_eq!(res.headers()["ratelimit-policy"], POLICY);
    // The first piece: the stream runs, its estimate charged.
    let first = res.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: {\"delta\":"), "{first:?}");
    assert_eq!(charged_today(&keys, "sue"), est);

    let mut events = String::from_utf8(first.to_vec()).unwrap();
    while let Some(chunk) = res.chunk().await.unwrap() {
        events.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let usage = format!("\"total_tokens\":{used}");
    assert!(events.contains(&usage), "{events}");
    assert!(events.trim_end().ends_with("data: [DONE]"), "{events}");
    // The stream has ended: settled at the usage it reported.
    assert_eq!(charged_today(&keys, "sue"), used);
    let a = ask(&client, addr, "sue", "ping").await.unwrap();
    assert_eq!(
        remaining(&a, "tokens-calendar-day"),
        1_000_000 - used - estimate("ping", false)
    );
}
