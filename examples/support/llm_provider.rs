//! A mock AI provider on 127.0.0.1 for the `llm_client` example and its
//! test: `POST /v1/chat/completions` with `{"prompt": .., "max_tokens": ..}`
//! answers `{"usage": {"prompt_tokens", "completion_tokens", "total_tokens"}}`.
//! It enforces a request budget and a token budget its clients are told
//! only through the OpenAI-style `x-ratelimit-*` fields, charging each
//! request its true tokens (one per 4 bytes of prompt, plus an answer of
//! 150 to 250 tokens that depends on the prompt), and answers 429 with
//! `retry-after-ms` when either budget is spent.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::post;
use tower_sluice::{Decision, Limiter, Quota};

/// What the provider served.
#[derive(Debug, Default)]
pub struct Stats {
    pub ok: AtomicU64,
    pub limited: AtomicU64,
    /// True tokens of the requests it served.
    pub tokens: AtomicU64,
}

struct Provider {
    requests: Limiter,
    tokens: Limiter,
    stats: Arc<Stats>,
}

/// The answer's length in tokens: 150 to 250, from the prompt.
pub fn completion_tokens(prompt: &str) -> u64 {
    let h = prompt
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    150 + h % 101
}

/// Starts the provider with its hidden budgets; returns its address and
/// what it served.
pub async fn start(requests: Quota, tokens: Quota) -> (SocketAddr, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    let provider = Arc::new(Provider {
        requests: Limiter::new(requests),
        tokens: Limiter::new(tokens),
        stats: stats.clone(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, stats)
}

/// A duration as OpenAI writes resets: `1.234s`, `20ms`.
fn go_duration(d: Duration) -> HeaderValue {
    let text = if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    };
    HeaderValue::from_str(&text).unwrap()
}

fn fields(headers: &mut HeaderMap, kind: &str, quota: Quota, d: &Decision) {
    headers.insert(
        axum::http::HeaderName::try_from(format!("x-ratelimit-limit-{kind}")).unwrap(),
        HeaderValue::from(quota.limit()),
    );
    let remaining = if d.is_allowed() { d.remaining() } else { 0 };
    headers.insert(
        axum::http::HeaderName::try_from(format!("x-ratelimit-remaining-{kind}")).unwrap(),
        HeaderValue::from(remaining),
    );
    headers.insert(
        axum::http::HeaderName::try_from(format!("x-ratelimit-reset-{kind}")).unwrap(),
        go_duration(d.reset_after()),
    );
}

async fn complete(
    State(p): State<Arc<Provider>>,
    Json(body): Json<serde_json::Value>,
) -> (StatusCode, HeaderMap, String) {
    let prompt = body["prompt"].as_str().unwrap_or_default();
    let prompt_tokens = (prompt.len() as u64).div_ceil(4);
    let completion = completion_tokens(prompt);
    let total = prompt_tokens + completion;
    let cost = u32::try_from(total).unwrap_or(u32::MAX);
    // Decided together: a refusal consumes from neither budget.
    let (req_peek, tok_peek) = (p.requests.peek(), p.tokens.peek_n(cost));
    let mut headers = HeaderMap::new();
    let admitted = match tok_peek {
        Ok(t) if req_peek.is_allowed() && t.is_allowed() => {
            Some((p.requests.check(), p.tokens.check_n(cost).unwrap()))
        }
        _ => None,
    };
    let quota = |l: &Limiter| l.quotas().next().unwrap();
    let Some((r, t)) = admitted.filter(|(r, t)| r.is_allowed() && t.is_allowed()) else {
        p.stats.limited.fetch_add(1, Ordering::Relaxed);
        let r = p.requests.peek();
        let t = p.tokens.peek_n(cost.min(p.tokens.max_cost())).unwrap();
        fields(&mut headers, "requests", quota(&p.requests), &r);
        fields(&mut headers, "tokens", quota(&p.tokens), &t);
        let wait = r
            .retry_after()
            .max(t.retry_after())
            .max(Duration::from_millis(1));
        headers.insert("retry-after-ms", HeaderValue::from(wait.as_millis() as u64));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            headers,
            "rate limited".into(),
        );
    };
    p.stats.ok.fetch_add(1, Ordering::Relaxed);
    p.stats.tokens.fetch_add(total, Ordering::Relaxed);
    fields(&mut headers, "requests", quota(&p.requests), &r);
    fields(&mut headers, "tokens", quota(&p.tokens), &t);
    // A moment of "generation".
    tokio::time::sleep(Duration::from_millis(20)).await;
    let usage = serde_json::json!({
        "choices": [{"message": {"content": "…"}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": total},
    });
    (StatusCode::OK, headers, usage.to_string())
}
