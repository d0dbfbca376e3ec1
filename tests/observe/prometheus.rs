//! Scrapes the `prometheus` example's output and checks names, labels and
//! values.

use std::collections::HashMap;

#[path = "../../examples/prometheus.rs"]
mod example;

/// `name{a="x",b="y"} value` lines, keyed by `name{labels sorted}`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("closing brace");
                let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
                labels.sort_unstable();
                format!("{name}{{{}}}", labels.join(","))
            }
            None => series.to_owned(),
        };
        assert!(
            out.insert(key, value).is_none(),
            "duplicate series {line:?}"
        );
    }
    out
}

#[tokio::test]
async fn prometheus_text_has_the_documented_series() {
    let text = tokio::time::timeout(std::time::Duration::from_secs(30), example::scrape())
        .await
        .expect("example hung");
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    // alice: 3 allowed, 2 limited; bob gets the second key label; carol is
    // over the cap of 2 and counted as "other".
    assert_eq!(
        get(r#"sluice_requests_total{key="\"alice\"",layer="per_key",outcome="allowed"}"#),
        3.0
    );
    assert_eq!(
        get(r#"sluice_requests_total{key="\"alice\"",layer="per_key",outcome="limited"}"#),
        2.0
    );
    assert_eq!(
        get(r#"sluice_requests_total{key="\"bob\"",layer="per_key",outcome="allowed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sluice_requests_total{key="other",layer="per_key",outcome="allowed"}"#),
        1.0
    );
    assert!(!text.contains("carol"), "key label cap exceeded");
    // The breaker: 2 failures, open, 2 refused.
    assert_eq!(get(r#"sluice_breaker_state{layer="circuit_breaker"}"#), 1.0);
    assert_eq!(
        get(r#"sluice_breaker_transitions_total{from="closed",layer="circuit_breaker",to="open"}"#),
        1.0
    );
    assert_eq!(
        get(r#"sluice_breaker_calls_total{layer="circuit_breaker",outcome="failure"}"#),
        2.0
    );
    assert_eq!(
        get(r#"sluice_requests_total{layer="circuit_breaker",outcome="breaker_rejected"}"#),
        2.0
    );
    assert_eq!(
        get(r#"sluice_latency_seconds_count{layer="circuit_breaker"}"#),
        2.0
    );
    // The queue: one waited, then it emptied.
    assert_eq!(get(r#"sluice_queue_depth{layer="queue"}"#), 0.0);
    assert_eq!(
        get(r#"sluice_requests_total{layer="queue",outcome="dequeued"}"#),
        1.0
    );
    assert_eq!(get(r#"sluice_wait_seconds_count{layer="queue"}"#), 1.0);
    assert!(get(r#"sluice_wait_seconds_sum{layer="queue"}"#) >= 0.015);
}

/// A shadow per-key layer counts the refusals it let through (no key, over
/// the in-flight cap) under their `shadow_` outcomes; an enforcing layer
/// under the plain ones.
#[test]
fn shadow_refusals_have_their_own_outcomes() {
    use std::convert::Infallible;
    use std::task::{Context, Waker};
    use tower::{Layer, Service, service_fn};
    use tower_sluice::per_key::Policy;
    use tower_sluice::{PerKeyLayer, Quota};

    for shadow in [false, true] {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let policy = Policy::new(Quota::per_second(100)).max_in_flight(1);
            let layer = PerKeyLayer::new(policy, |r: &Option<&'static str>| r.map(str::to_owned))
                .observer(tower_sluice::observe::MetricsObserver::new());
            let layer = if shadow { layer.shadow() } else { layer };
            let mut svc = layer.layer(service_fn(|_: Option<&'static str>| {
                std::future::pending::<Result<(), Infallible>>()
            }));
            let cx = &mut Context::from_waker(Waker::noop());
            let mut call = |r| {
                assert!(svc.poll_ready(cx).is_ready());
                svc.call(r)
            };
            // "a" holds its one slot while a second "a" and a keyless
            // request arrive.
            let calls = [call(Some("a")), call(Some("a")), call(None)];
            drop(calls);
        });
        let text = handle.render();
        let m = parse(&text);
        let get = |outcome: &str| {
            m.get(&format!(
                r#"sluice_requests_total{{layer="per_key",outcome="{outcome}"}}"#
            ))
            .copied()
        };
        let prefix = if shadow { "shadow_" } else { "" };
        let other = if shadow { "" } else { "shadow_" };
        for outcome in ["in_flight_limited", "missing_key"] {
            assert_eq!(get(&format!("{prefix}{outcome}")), Some(1.0), "{text}");
            assert_eq!(get(&format!("{other}{outcome}")), None, "{text}");
        }
    }
}
