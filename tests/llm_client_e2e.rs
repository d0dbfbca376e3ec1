//! The `llm_client` example's scenario over real HTTP on 127.0.0.1, run as
//! the example runs it: many tasks send prompts through one reqwest client
//! behind a `ProviderBudgetLayer` to a mock AI provider with hidden request
//! and token budgets (an axum server sending OpenAI-style fields). Every
//! job completes, with at most a few 429s, and the provider's token budget
//! is kept.

#[path = "../examples/llm_client.rs"]
#[allow(dead_code)]
mod example;

use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_completes_within_the_providers_budgets() {
    let report = tokio::time::timeout(Duration::from_secs(120), example::run())
        .await
        .expect("the run finishes")
        .expect("every request is answered");
    let jobs = report.jobs as u64;
    assert_eq!(
        report.served.ok.load(Ordering::Relaxed),
        jobs,
        "every job completed"
    );
    assert_eq!(report.settled, jobs, "every answer carried its settlement");
    assert_eq!(report.over_estimate, 0, "the estimate covers the answer");
    assert!(
        report.answered_429 <= 3,
        "{} answers were 429",
        report.answered_429
    );
    // Tokens served over the run: at most the burst plus the rate (3 000
    // tokens a second).
    let elapsed = report.elapsed.as_secs_f64();
    let used = report.served.tokens.load(Ordering::Relaxed) as f64;
    assert_eq!(
        used, report.tokens as f64,
        "the answers' usage is what was served"
    );
    let allowed = 3_000.0 + 3_000.0 * elapsed;
    assert!(used <= allowed, "{used} tokens in {elapsed:.2} s");
    // And the budget was used, not wasted: past the first burst the
    // client sends at least half the rate.
    let rate = (used - 3_000.0) / elapsed;
    assert!(rate >= 1_500.0, "{rate:.0} tokens/s past the burst");
}
