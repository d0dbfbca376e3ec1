//! `cargo run --example llm_client --features axum,reqwest`: many tasks
//! sending prompts through one reqwest client to a local mock AI provider
//! that enforces a request budget and a token budget, and says so only in
//! OpenAI-style `x-ratelimit-*` fields.
//!
//! A `ProviderBudgetLayer` with the provider's published budgets charges
//! each prompt its estimated tokens before sending, waits until both
//! budgets have room, settles the true count from the answer's `usage`,
//! and follows the provider's fields. Every job completes, with few or no
//! 429s. So that the example runs in seconds, the provider's "minute"
//! lasts one second.

#[path = "support/llm_provider.rs"]
mod llm_provider;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_sluice::Quota;
use tower_sluice::adaptive::{ProviderBudgetLayer, TokenSettlement};

/// The provider's minute, scaled down.
const MINUTE: Duration = Duration::from_secs(1);
const REQUESTS_PER_MINUTE: u32 = 30;
const TOKENS_PER_MINUTE: u32 = 3_000;
/// The answer's length the client asks for at most.
const MAX_TOKENS: u32 = 250;
const TASKS: usize = 8;
const JOBS_PER_TASK: usize = 6;

/// What a run did.
pub struct Report {
    pub jobs: usize,
    /// Answers of 429 (the provider refused: its fields said so).
    pub answered_429: u64,
    /// Tokens the answers' `usage` reported.
    pub tokens: u64,
    /// Answers settled at their true count.
    pub settled: u64,
    /// Answers longer than the estimate charged for them.
    pub over_estimate: u64,
    pub elapsed: Duration,
    /// What the provider served.
    pub served: Arc<llm_provider::Stats>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let report = run().await?;
    let minutes = report.elapsed.as_secs_f64() / MINUTE.as_secs_f64();
    println!(
        "{} jobs done in {:.1?}: {} answered, {} answered 429",
        report.jobs,
        report.elapsed,
        report.served.ok.load(Ordering::Relaxed),
        report.answered_429,
    );
    println!(
        "achieved {:.0} tokens/min (a burst of {TOKENS_PER_MINUTE} included) for a limit of {TOKENS_PER_MINUTE} tokens/min; {:.1} requests/min for a limit of {REQUESTS_PER_MINUTE}",
        report.tokens as f64 / minutes,
        report.jobs as f64 / minutes,
    );
    Ok(())
}

/// Starts the mock provider and sends every job through one client.
pub async fn run() -> Result<Report, BoxError> {
    let requests = Quota::new(REQUESTS_PER_MINUTE, MINUTE);
    let tokens = Quota::new(TOKENS_PER_MINUTE, MINUTE);
    let (addr, served) = llm_provider::start(requests, tokens).await;
    let url = format!("http://{addr}/v1/chat/completions");

    // The budgets the provider publishes. A prompt costs one token per 4
    // bytes of body, plus the longest answer it may get; the answer's
    // `usage` corrects that once known.
    let budget = ProviderBudgetLayer::new(requests, tokens)
        .estimate(|req: &reqwest::Request| {
            let body = req.body().and_then(|b| b.as_bytes()).map_or(0, |b| b.len());
            (body as u32).div_ceil(4) + MAX_TOKENS
        })
        .max_wait(Duration::from_secs(30));
    let client = ServiceBuilder::new()
        .layer(budget)
        .service(reqwest::Client::new());

    let answered_429 = Arc::new(AtomicU64::new(0));
    let over_estimate = Arc::new(AtomicU64::new(0));
    let settled = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (client, url) = (client.clone(), url.clone());
            let (answered_429, over_estimate, settled) =
                (answered_429.clone(), over_estimate.clone(), settled.clone());
            tokio::spawn(async move {
                let mut used = 0;
                for job in 0..JOBS_PER_TASK {
                    let prompt =
                        format!("task {task}, job {job}: {}", "summarise this. ".repeat(10));
                    let body = serde_json::json!({ "prompt": prompt, "max_tokens": MAX_TOKENS });
                    loop {
                        let req = reqwest::Client::new()
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .build()?;
                        let mut res = client.clone().oneshot(req).await?;
                        if res.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                            // The layer already paused for the provider's wait.
                            answered_429.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        let settlement = res.extensions_mut().remove::<TokenSettlement>();
                        let answer: serde_json::Value =
                            serde_json::from_slice(&res.error_for_status()?.bytes().await?)?;
                        let total = answer["usage"]["total_tokens"].as_u64().unwrap_or(0);
                        if let Some(settlement) = settlement {
                            if total > u64::from(settlement.estimate()) {
                                over_estimate.fetch_add(1, Ordering::Relaxed);
                            }
                            settlement.settle(total);
                            settled.fetch_add(1, Ordering::Relaxed);
                        }
                        used += total;
                        break;
                    }
                }
                Ok::<u64, BoxError>(used)
            })
        })
        .collect();
    let mut used = 0;
    for task in tasks {
        used += task.await??;
    }
    Ok(Report {
        jobs: TASKS * JOBS_PER_TASK,
        answered_429: answered_429.load(Ordering::Relaxed),
        tokens: used,
        settled: settled.load(Ordering::Relaxed),
        over_estimate: over_estimate.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        served,
    })
}
