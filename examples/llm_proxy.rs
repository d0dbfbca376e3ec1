//! `cargo run --example llm_proxy --features axum`: an LLM API in front of
//! a mock model, limited per API key by requests *and* tokens.
//!
//! Per API key (`x-api-key`):
//!
//! | quota | limit |
//! |---|---|
//! | requests | 60 a minute |
//! | tokens | 100 000 a minute |
//! | tokens | 1 000 000 a calendar day (UTC); 50 000 for `trial-` keys |
//!
//! A prompt is charged its estimate up front: one token per 4 bytes of
//! request body, plus the longest answer the model may write. Once the
//! model has answered, the request is settled at the `usage` it reports:
//! a whole answer by the layer's response hook, a streamed (SSE) answer by
//! the stream itself when it ends. Less than the estimate is given back,
//! more is a debt the key's next requests wait out.
//!
//! A request over a quota gets 429 with `Retry-After` and the
//! `RateLimit-Policy` / `RateLimit` fields, one item per quota
//! (`qu="tokens"` on the token quotas); an estimate above the minute's
//! 100 000 tokens could never pass and gets 413; a request without an API
//! key gets 401.
//!
//! The example starts the proxy on a free port of 127.0.0.1, sends a
//! scripted sequence of requests with reqwest (one of them a streamed
//! answer), prints what happened to each (admitted, or refused by which
//! quota, with the fields), and ends with the tokens charged to each key.
//! It takes about a second.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Request};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tokio::sync::mpsc;
use tower_sluice::backend::Memory;
use tower_sluice::cost::Settlement;
use tower_sluice::http::HeaderKey;
use tower_sluice::per_key::{PerKeyHandle, Policy};
use tower_sluice::{PerKeyLayer, Quota};

/// Requests a minute, per API key.
pub const REQUESTS_PER_MINUTE: u32 = 60;
/// Tokens a minute, per API key.
pub const TOKENS_PER_MINUTE: u32 = 100_000;
/// Tokens a calendar day (UTC), per API key.
pub const TOKENS_PER_DAY: u32 = 1_000_000;
/// Tokens a calendar day for keys starting with `trial-`.
pub const TRIAL_TOKENS_PER_DAY: u32 = 50_000;
/// The longest answer the model may write, in tokens: what the estimate
/// reserves for the answer.
pub const MAX_ANSWER_TOKENS: u32 = 8_000;

/// The policy of a key with `daily` tokens a day.
pub fn policy(daily: u32) -> Policy {
    Policy::new(Quota::per_minute(REQUESTS_PER_MINUTE))
        .and(Quota::per_minute(TOKENS_PER_MINUTE).counting("tokens"))
        .and_then(|p| p.and(Quota::per_calendar_day(daily).counting("tokens")))
        .expect("three quotas fit in a policy")
}

/// A prompt's estimate, charged before the model runs: one token per 4
/// bytes of body (its declared length), plus the longest answer. A body
/// sent without a length is charged the answer alone: settling at the
/// model's `usage` charges the rest, as a debt the key's next requests
/// wait out.
pub fn estimate(req: &Request) -> u32 {
    let body = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    u32::try_from(body.div_ceil(4))
        .unwrap_or(u32::MAX)
        .saturating_add(MAX_ANSWER_TOKENS)
}

/// The mock model: it counts one token per 4 bytes of prompt and answers
/// with 100 to 200 tokens, depending on the prompt.
pub mod model {
    use std::time::Duration;

    use tokio::sync::mpsc;

    /// What a completion used, as the model reports it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Usage {
        /// Tokens of the prompt.
        pub prompt_tokens: u32,
        /// Tokens of the answer.
        pub completion_tokens: u32,
    }

    impl Usage {
        /// Nothing used: the model never ran.
        pub const NONE: Usage = Usage {
            prompt_tokens: 0,
            completion_tokens: 0,
        };

        /// Both together: what the key is charged in the end.
        pub fn total_tokens(&self) -> u32 {
            self.prompt_tokens.saturating_add(self.completion_tokens)
        }

        /// The `usage` object of an answer.
        pub fn to_json(self) -> serde_json::Value {
            serde_json::json!({
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "total_tokens": self.total_tokens(),
            })
        }
    }

    /// The usage of an answer to `prompt`.
    pub fn usage(prompt: &str) -> Usage {
        let prompt_tokens = u32::try_from(prompt.len().div_ceil(4)).unwrap_or(u32::MAX);
        Usage {
            prompt_tokens,
            completion_tokens: 100 + (prompt.len() % 101) as u32,
        }
    }

    /// The answer's text: one word a token.
    fn words(tokens: u32) -> String {
        "lorem ".repeat(tokens as usize)
    }

    /// A whole answer at once.
    pub async fn complete(prompt: &str) -> (String, Usage) {
        let usage = usage(prompt);
        tokio::time::sleep(Duration::from_millis(10)).await;
        (words(usage.completion_tokens), usage)
    }

    /// Pieces of the answer to `prompt`, sent as they are written, then
    /// the usage.
    pub fn stream(prompt: &str) -> mpsc::Receiver<Result<String, Usage>> {
        let usage = usage(prompt);
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let pieces = 5;
            for i in 0..pieces {
                tokio::time::sleep(Duration::from_millis(40)).await;
                let tokens = usage.completion_tokens / pieces
                    + u32::from(i < usage.completion_tokens % pieces);
                if tx.send(Ok(words(tokens))).await.is_err() {
                    return; // the client went away
                }
            }
            let _ = tx.send(Err(usage)).await;
        });
        rx
    }
}

/// The proxy's limit: the policy per API key, charging each request its
/// estimate, answering refusals with 429 (or 413) and the fields.
pub fn limit() -> PerKeyLayer<String, HeaderKey> {
    let trial = policy(TRIAL_TOKENS_PER_DAY);
    PerKeyLayer::new(policy(TOKENS_PER_DAY), HeaderKey::from_static("x-api-key"))
        .policy_for(move |key: &String| key.starts_with("trial-").then(|| trial.clone()))
}

/// A handle on the proxy's per-key limits.
pub type Keys = PerKeyHandle<String, Memory<String>>;

/// The proxy, and a handle on its per-key limits (for the report at the
/// end, or a dashboard).
pub fn app() -> (Router, Keys) {
    let limit = limit();
    let keys = limit.handle();
    let limit = limit
        .cost(estimate as fn(&Request) -> u32)
        // A whole answer is settled at the usage the handler put in its
        // extensions; a streamed one by the stream, when it ends.
        .settle(|res: &Response| {
            res.extensions()
                .get::<model::Usage>()
                .map(|u| u.total_tokens())
        })
        .http()
        .missing_key_status(StatusCode::UNAUTHORIZED);
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .route_layer(limit);
    (app, keys)
}

/// Starts the proxy on a free port of 127.0.0.1.
pub async fn start() -> std::io::Result<(SocketAddr, Keys)> {
    let (app, keys) = app();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((addr, keys))
}

/// `POST /v1/chat/completions` with `{"prompt": .., "stream": ..}`: the
/// model's answer as JSON with its `usage` (which settles the request), or,
/// with `"stream": true`, as server-sent events ending with the usage,
/// settled through the request's [`Settlement`] when the stream ends.
///
/// A request the model never sees (a body that is not such JSON) gets 400
/// and is settled at zero.
async fn complete(settlement: Option<Extension<Settlement>>, body: Bytes) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(prompt) = body["prompt"].as_str() else {
        let mut response =
            (StatusCode::BAD_REQUEST, "expected {\"prompt\": \"..\"}\n").into_response();
        response.extensions_mut().insert(model::Usage::NONE);
        return response;
    };
    if body["stream"].as_bool() == Some(true) {
        let pieces = Pieces {
            model: model::stream(prompt),
            usage: None,
            settlement: settlement.map(|Extension(s)| s),
            done: false,
        };
        return Sse::new(pieces).into_response();
    }
    let (answer, usage) = model::complete(prompt).await;
    let json = serde_json::json!({ "answer": answer, "usage": usage.to_json() });
    let mut response = Json(json).into_response();
    response.extensions_mut().insert(usage);
    response
}

/// The events of a streamed answer: a `delta` per piece of the model's
/// answer, then its `usage`, then `[DONE]`. When the stream ends, it
/// settles the request at the usage; a stream dropped before (the client
/// went away) keeps the estimate.
struct Pieces {
    model: mpsc::Receiver<Result<String, model::Usage>>,
    usage: Option<model::Usage>,
    settlement: Option<Settlement>,
    done: bool,
}

impl futures_core::Stream for Pieces {
    type Item = Result<Event, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            if let (Some(settlement), Some(usage)) = (self.settlement.take(), self.usage) {
                settlement.settle(usage.total_tokens());
            }
            return Poll::Ready(None);
        }
        let event = match std::task::ready!(self.model.poll_recv(cx)) {
            Some(Ok(piece)) => {
                Event::default().data(serde_json::json!({ "delta": piece }).to_string())
            }
            Some(Err(usage)) => {
                self.usage = Some(usage);
                Event::default().data(serde_json::json!({ "usage": usage.to_json() }).to_string())
            }
            None => {
                self.done = true;
                Event::default().data("[DONE]")
            }
        };
        Poll::Ready(Some(Ok(event)))
    }
}

// ---------------------------------------------------------------------------
// The scripted client.

/// What the proxy answered to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    /// A header's value, or "-".
    pub fn field(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }

    /// The `usage.total_tokens` of a JSON answer.
    pub fn total_tokens(&self) -> Option<u64> {
        let json: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        json["usage"]["total_tokens"].as_u64()
    }
}

/// The body of a request with `prompt`.
pub fn body(prompt: &str, stream: bool) -> String {
    serde_json::json!({ "prompt": prompt, "stream": stream }).to_string()
}

/// Sends `prompt` for `key` and reads the whole answer.
pub async fn ask(
    client: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    prompt: &str,
) -> reqwest::Result<Answer> {
    send(client, addr, key, body(prompt, false).into()).await
}

/// Sends `prompt` for `key` as a stream of one chunk, without a
/// `Content-Length`, and reads the whole answer.
pub async fn ask_unsized(
    client: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    prompt: &str,
) -> reqwest::Result<Answer> {
    let chunk = bytes::Bytes::from(body(prompt, false));
    send(
        client,
        addr,
        key,
        reqwest::Body::wrap_stream(OneChunk(Some(chunk))),
    )
    .await
}

async fn send(
    client: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    body: reqwest::Body,
) -> reqwest::Result<Answer> {
    let res = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    let (status, headers) = (res.status(), res.headers().clone());
    let body = res.text().await?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A request body of one chunk, of no declared length.
struct OneChunk(Option<bytes::Bytes>);

impl futures_core::Stream for OneChunk {
    type Item = Result<bytes::Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.0.take().map(Ok))
    }
}

/// A prompt of about `tokens` tokens.
pub fn prompt_of(tokens: usize) -> String {
    "four".repeat(tokens)
}

fn report(what: &str, a: &Answer) {
    match a.status {
        StatusCode::OK => println!(
            "{what}: 200, usage {} tokens\n    RateLimit: {}",
            a.total_tokens().map_or("-".into(), |t| t.to_string()),
            a.field("ratelimit")
        ),
        status => println!(
            "{what}: {} {}\n    Retry-After: {}\n    RateLimit: {}\n    {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            a.field("retry-after"),
            a.field("ratelimit"),
            a.body.trim_end()
        ),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (addr, keys) = start().await?;
    let client = reqwest::Client::new();
    println!("LLM proxy on http://{addr}/v1/chat/completions");

    // The policy, as every answer states it.
    let first = ask(&client, addr, "alice", "Say hello.").await?;
    println!("RateLimit-Policy: {}\n", first.field("ratelimit-policy"));
    report("alice, a short prompt", &first);

    // A streamed answer: events as the model writes them.
    let mut res = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("x-api-key", "alice")
        .header("content-type", "application/json")
        .body(body("Tell me a story.", true))
        .send()
        .await?;
    println!(
        "alice, a streamed answer: {}\n    RateLimit: {}",
        res.status().as_u16(),
        res.headers()["ratelimit"].to_str()?
    );
    while let Some(chunk) = res.chunk().await? {
        for line in String::from_utf8_lossy(&chunk).lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                let shown = if data.len() > 60 { &data[..60] } else { data };
                println!(
                    "    event: {shown}{}",
                    if data.len() > 60 { "…" } else { "" }
                );
            }
        }
    }

    // Bob sends long prompts: about 48 000 tokens estimated each, 40 100
    // used; the third is refused by the minute's tokens.
    println!();
    let long = prompt_of(40_000);
    for i in 1..=3 {
        let a = ask(&client, addr, "bob", &long).await?;
        report(&format!("bob, long prompt {i}"), &a);
    }

    // Carol sends many small ones: the 61st in a minute is refused.
    println!();
    let mut admitted = 0;
    let refused = loop {
        let a = ask(&client, addr, "carol", "ping").await?;
        if a.status != StatusCode::OK {
            break a;
        }
        admitted += 1;
    };
    report(&format!("carol, after {admitted} small prompts"), &refused);

    // More than a minute's tokens at once can never pass.
    println!();
    let a = ask(&client, addr, "dave", &prompt_of(120_000)).await?;
    report("dave, a 480 kB prompt", &a);

    // A trial key has 50 000 tokens a day.
    println!();
    for i in 1..=2 {
        let a = ask(&client, addr, "trial-erin", &prompt_of(25_000)).await?;
        report(&format!("trial-erin, prompt {i}"), &a);
    }

    // Frank sends a long prompt without a length: charged the answer
    // alone, then settled at the usage, a debt his next prompt sees.
    println!();
    let a = ask_unsized(&client, addr, "frank", &prompt_of(40_000)).await?;
    report("frank, a 160 kB prompt of no declared length", &a);
    let a = ask(&client, addr, "frank", "ping").await?;
    report("frank, then a short prompt", &a);

    // No API key.
    let res = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body("hi", false))
        .send()
        .await?;
    println!("\nno API key: {}", res.status().as_u16());

    println!("\ntokens charged per key today:");
    println!("  key          requests left/min  tokens left/min  tokens today");
    for key in ["alice", "bob", "carol", "dave", "trial-erin", "frank"] {
        let key = key.to_string();
        let states = keys.states(&key);
        let left: Vec<u32> = states.iter().map(|d| d.remaining()).collect();
        let today = keys.usage(&key)[0].used();
        println!("  {key:<12} {:>17}  {:>15}  {today:>12}", left[0], left[1]);
    }
    Ok(())
}
