//! The `llm_client` example's scenario over real HTTP on 127.0.0.1: many
//! tasks send prompts through one reqwest client behind a
//! `ProviderBudgetLayer` to a mock AI provider with hidden request and
//! token budgets (an axum server sending OpenAI-style fields). Every job
//! completes, with at most a few 429s, and the provider's token budget is
//! kept.

#[path = "../examples/support/llm_provider.rs"]
mod llm_provider;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_sluice::Quota;
use tower_sluice::adaptive::{ProviderBudgetLayer, TokenSettlement};

const MAX_TOKENS: u32 = 250;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_completes_within_the_providers_budgets() {
    let second = Duration::from_secs(1);
    let requests = Quota::new(30, second);
    let tokens = Quota::new(3_000, second);
    let (addr, served) = llm_provider::start(requests, tokens).await;
    let url = format!("http://{addr}/v1/chat/completions");

    let budget = ProviderBudgetLayer::new(requests, tokens)
        .estimate(|req: &reqwest::Request| {
            let body = req.body().and_then(|b| b.as_bytes()).map_or(0, |b| b.len());
            (body as u32).div_ceil(4) + MAX_TOKENS
        })
        .max_wait(Duration::from_secs(30));
    let client = ServiceBuilder::new()
        .layer(budget)
        .service(reqwest::Client::new());

    let too_many = Arc::new(AtomicU64::new(0));
    let (tasks, jobs) = (8, 6);
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (client, url, too_many) = (client.clone(), url.clone(), too_many.clone());
            tokio::spawn(async move {
                let mut done = 0;
                for job in 0..jobs {
                    let prompt =
                        format!("task {task}, job {job}: {}", "summarise this. ".repeat(10));
                    let body = serde_json::json!({ "prompt": prompt, "max_tokens": MAX_TOKENS });
                    for _attempt in 0..10 {
                        let req = reqwest::Client::new()
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .build()?;
                        let mut res = client.clone().oneshot(req).await?;
                        if res.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                            too_many.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        assert_eq!(res.status(), reqwest::StatusCode::OK);
                        let settlement = res
                            .extensions_mut()
                            .remove::<TokenSettlement>()
                            .expect("a settlement in the response");
                        let answer: serde_json::Value =
                            serde_json::from_slice(&res.bytes().await?)?;
                        let total = answer["usage"]["total_tokens"].as_u64().unwrap();
                        assert!(
                            total <= u64::from(settlement.estimate()),
                            "the estimate covers the answer"
                        );
                        settlement.settle(total);
                        done += 1;
                        break;
                    }
                }
                Ok::<u32, BoxError>(done)
            })
        })
        .collect();
    let mut done = 0;
    for h in handles {
        done += h.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();

    assert_eq!(done, tasks * jobs, "every job completed");
    assert_eq!(served.ok.load(Ordering::Relaxed), u64::from(tasks * jobs));
    let limited = too_many.load(Ordering::Relaxed);
    assert!(limited <= 3, "{limited} answers were 429");
    // Tokens served over the run: at most the burst plus the rate.
    let used = served.tokens.load(Ordering::Relaxed) as f64;
    let allowed = 3_000.0 + 3_000.0 * elapsed.as_secs_f64();
    assert!(used <= allowed, "{used} tokens in {elapsed:?}");
    // And the budget was used, not wasted: past the first burst the
    // client sends at least half the rate.
    let rate = (used - 3_000.0) / elapsed.as_secs_f64();
    assert!(rate >= 1_500.0, "{rate:.0} tokens/s past the burst");
}
