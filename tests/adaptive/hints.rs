//! What an upstream's hints can do to `AimdLayer` with `HttpStatus`: no
//! value crashes it, and no wait it asks for (`Retry-After`, or a quota
//! that resets later) holds a request longer than the layer's cap
//! (`max_pause`, by default `MAX_UPSTREAM_WAIT`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Response};

use proptest::prelude::*;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_sluice::adaptive::{
    AdaptiveConcurrencyLayer, AdaptiveThrottleLayer, AimdLayer, GradientLimit,
};
use tower_sluice::classify::HttpStatus;
use tower_sluice::{MAX_UPSTREAM_WAIT, Quota};

use super::within;

/// One answer of the upstream: a status and header fields (as bytes, so
/// that any value a `HeaderValue` accepts can be sent).
#[path = "../support/hint_fields.rs"]
mod hint_fields;

use hint_fields::{Answer, answers};

fn answer(status: u16, fields: &[(&'static str, &str)]) -> Answer {
    (
        status,
        fields
            .iter()
            .map(|(k, v)| (*k, v.as_bytes().to_vec()))
            .collect(),
    )
}

/// Answers each request with the next of `script`, then with the last one
/// again.
fn upstream(
    script: Vec<Answer>,
) -> impl Service<(), Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    let script = Arc::new(Mutex::new((0usize, script)));
    service_fn(move |()| {
        let mut s = script.lock().unwrap();
        let i = s.0.min(s.1.len() - 1);
        s.0 += 1;
        let (status, fields) = s.1[i].clone();
        let mut res = Response::builder().status(status);
        for (name, value) in fields {
            if let Ok(value) = HeaderValue::from_bytes(&value) {
                res = res.header(HeaderName::from_static(name), value);
            }
        }
        let res = res.body(()).unwrap();
        async move { Ok::<_, BoxError>(res) }
    })
}

/// Sends `n` requests one after another; returns how long each waited for
/// its turn.
async fn waits<S>(client: &mut S, n: usize) -> Vec<Duration>
where
    S: Service<(), Response = Response<()>, Error = BoxError>,
{
    let mut waits = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let ready = client.ready().await.unwrap();
        waits.push(start.elapsed());
        ready.call(()).await.unwrap();
    }
    waits
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_survives_an_upstream_reporting_u64_max_remaining() {
    let max = u64::MAX.to_string();
    for answer in [
        answer(
            200,
            &[("x-ratelimit-remaining", &max), ("x-ratelimit-reset", "5")],
        ),
        answer(200, &[("ratelimit", &format!(r#""a";r={max};t=5"#))]),
    ] {
        let mut client = AimdLayer::new(Quota::per_second(10))
            .classify(HttpStatus)
            .layer(upstream(vec![answer]));
        let waits = within(Duration::from_secs(60), waits(&mut client, 5)).await;
        // Nothing is left to wait for: the local pace alone, 100 ms.
        assert!(
            waits.iter().all(|w| *w <= Duration::from_millis(100)),
            "{waits:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_pacing_survives_resets_too_far_to_add() {
    let max = u64::MAX.to_string();
    for fields in [
        vec![("ratelimit", format!(r#""a";r=1;t={max}"#))],
        vec![("ratelimit", format!(r#""a";r=0;t={max}"#))],
        vec![
            ("x-ratelimit-remaining", "1".to_string()),
            ("x-ratelimit-reset", "99999999999".to_string()),
        ],
        vec![
            ("x-ratelimit-remaining", "0".to_string()),
            ("x-ratelimit-reset", "99999999999".to_string()),
        ],
    ] {
        let fields: Vec<_> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut client = AimdLayer::new(Quota::per_second(10))
            .classify(HttpStatus)
            .layer(upstream(vec![answer(200, &fields)]));
        let waits = within(Duration::from_secs(3_600), waits(&mut client, 4)).await;
        assert!(
            waits.iter().all(|w| *w <= MAX_UPSTREAM_WAIT),
            "{fields:?}: {waits:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aimd_waits_for_an_upstream_reset_at_most_the_cap() {
    let day = [
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "86400"),
    ];
    let month = [("ratelimit", r#""a";r=0;t=2592000"#)];
    for fields in [&day[..], &month[..]] {
        for (cap, layer) in [
            (MAX_UPSTREAM_WAIT, AimdLayer::new(Quota::per_second(10))),
            (
                Duration::from_secs(5),
                AimdLayer::new(Quota::per_second(10)).max_pause(Duration::from_secs(5)),
            ),
        ] {
            let mut client = layer
                .classify(HttpStatus)
                .layer(upstream(vec![answer(200, fields)]));
            // Would hold the second request for a day (or a month).
            let waits = within(Duration::from_secs(600), waits(&mut client, 3)).await;
            assert_eq!(waits[0], Duration::ZERO);
            // Each request after an answer saying nothing is left waits
            // for the reset, cut to the cap.
            assert_eq!(waits[1..], [cap, cap], "{fields:?}");
        }
    }
    // A 429's `Retry-After` is cut to the same cap.
    let mut client = AimdLayer::new(Quota::per_second(10))
        .classify(HttpStatus)
        .layer(upstream(vec![
            answer(429, &[("retry-after", "86400")]),
            answer(200, &[]),
        ]));
    let waits = within(Duration::from_secs(600), waits(&mut client, 2)).await;
    assert_eq!(waits[1], MAX_UPSTREAM_WAIT);
}

// ------------------------------------------------------------ properties

/// Runs `f` on a fresh paused-clock runtime.
fn paused<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the upstream answers, `AimdLayer` neither panics nor holds
    /// a request longer than its cap (or its own pace, at most 1 s at its
    /// floor of 1 request a second).
    #[test]
    fn aimd_waits_no_longer_than_the_cap(
        script in answers(),
        cap in prop_oneof![
            Just(None),
            Just(Some(Duration::ZERO)),
            (1u64..120_000).prop_map(|ms| Some(Duration::from_millis(ms))),
        ],
    ) {
        let n = script.len() + 1;
        let mut layer = AimdLayer::new(Quota::per_second(10));
        if let Some(cap) = cap {
            layer = layer.max_pause(cap);
        }
        let bound = cap.unwrap_or(MAX_UPSTREAM_WAIT).max(Duration::from_secs(1));
        let mut client = layer.classify(HttpStatus).layer(upstream(script));
        let waits = paused(async {
            within(Duration::from_secs(3_600), waits(&mut client, n)).await
        });
        for w in &waits {
            prop_assert!(*w <= bound, "waited {w:?}, bound {bound:?}: {waits:?}");
        }
    }

    /// The throttle and the adaptive concurrency limit read responses
    /// through `HttpStatus` too: no answer makes them panic or wait.
    #[test]
    fn throttle_and_concurrency_never_wait_for_an_upstream(script in answers()) {
        let n = script.len() + 1;
        paused(async {
            let start = Instant::now();
            let mut throttle = AdaptiveThrottleLayer::new()
                .seed(1)
                .classify(HttpStatus)
                .layer(upstream(script.clone()));
            let mut concurrency = AdaptiveConcurrencyLayer::new(GradientLimit::new())
                .classify(HttpStatus)
                .layer(upstream(script));
            for _ in 0..n {
                // Refusals are fine; waits and panics are not.
                let _ = throttle.ready().await.unwrap().call(()).await;
                let _ = concurrency.ready().await.unwrap().call(()).await;
            }
            assert_eq!(start.elapsed(), Duration::ZERO);
        });
    }
}
