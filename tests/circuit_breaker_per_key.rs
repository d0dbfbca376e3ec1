//! Per-key circuit breakers (`CircuitBreakerLayer::per_key`) on tokio's
//! paused clock (feature `test-util`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_sluice::circuit_breaker::{CircuitState, PerKeyCircuitBreakerHandle};
use tower_sluice::observe::Event;
use tower_sluice::{CircuitBreakerLayer, CircuitOpen};

/// A request to `host` (none: no key).
#[derive(Debug)]
struct Req {
    host: Option<String>,
    call: Call,
}

#[derive(Debug)]
enum Call {
    Ok,
    Fail,
    /// Answers when told (true = success).
    Wait(oneshot::Receiver<bool>),
}

fn req(host: &str, call: Call) -> Req {
    Req {
        host: Some(host.to_string()),
        call,
    }
}

type Upstream = tower::util::BoxCloneSyncService<Req, String, BoxError>;

/// Counts the calls that reach it, per host.
fn upstream(hits: Arc<Mutex<Vec<Option<String>>>>) -> Upstream {
    tower::util::BoxCloneSyncService::new(tower::service_fn(move |r: Req| {
        hits.lock().unwrap().push(r.host.clone());
        async move {
            match r.call {
                Call::Ok => Ok(r.host.unwrap_or_default()),
                Call::Fail => Err("upstream failed".into()),
                Call::Wait(rx) => match rx.await {
                    Ok(true) => Ok(r.host.unwrap_or_default()),
                    _ => Err("upstream failed".into()),
                },
            }
        }
    }))
}

fn by_host(r: &Req) -> Option<String> {
    r.host.clone()
}

type Svc = tower::util::BoxCloneSyncService<Req, String, BoxError>;

struct Fixture {
    svc: Svc,
    handle: PerKeyCircuitBreakerHandle<String>,
    hits: Arc<Mutex<Vec<Option<String>>>>,
}

/// Opens after 3 failures in a row, for 5 s (no jitter).
fn fixture(max_keys: usize, layer: CircuitBreakerLayer) -> Fixture {
    let layer = layer
        .per_key(by_host as fn(&Req) -> Option<String>)
        .max_keys(max_keys);
    let hits = Arc::new(Mutex::new(Vec::new()));
    Fixture {
        handle: layer.handle(),
        svc: Svc::new(layer.layer(upstream(hits.clone()))),
        hits,
    }
}

fn consecutive(n: u32) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .consecutive_failures(n)
        .open_duration(Duration::from_secs(5))
        .open_jitter(0.0)
        .permitted_calls_in_half_open(1)
        .build()
        .unwrap()
}

impl Fixture {
    async fn call(&mut self, r: Req) -> Result<String, BoxError> {
        self.svc.ready().await.unwrap().call(r).await
    }

    fn hits_of(&self, host: &str) -> usize {
        let hits = self.hits.lock().unwrap();
        hits.iter().filter(|h| h.as_deref() == Some(host)).count()
    }
}

fn is_open(r: &Result<String, BoxError>) -> bool {
    r.as_ref().err().is_some_and(|e| e.is::<CircuitOpen>())
}

#[tokio::test(start_paused = true)]
async fn a_failing_host_opens_only_its_breaker() {
    let mut f = fixture(100, consecutive(3));
    for _ in 0..3 {
        assert!(!is_open(&f.call(req("a", Call::Fail)).await));
        assert_eq!(f.call(req("b", Call::Ok)).await.unwrap(), "b");
    }
    assert_eq!(f.handle.state("a"), Some(CircuitState::Open));
    assert_eq!(f.handle.state("b"), Some(CircuitState::Closed));

    // "a" is refused without reaching the upstream; "b" keeps passing.
    for _ in 0..10 {
        assert!(is_open(&f.call(req("a", Call::Ok)).await));
        assert_eq!(f.call(req("b", Call::Ok)).await.unwrap(), "b");
    }
    assert_eq!(f.hits_of("a"), 3);
    assert_eq!(f.hits_of("b"), 13);

    // After the open duration "a" admits a trial, which closes it.
    advance(Duration::from_secs(5)).await;
    assert_eq!(f.handle.state("a"), Some(CircuitState::HalfOpen));
    assert_eq!(f.call(req("a", Call::Ok)).await.unwrap(), "a");
    assert_eq!(f.handle.state("a"), Some(CircuitState::Closed));
    assert_eq!(f.handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_share_the_default_breaker() {
    let mut f = fixture(100, consecutive(2));
    for _ in 0..2 {
        let _ = f
            .call(Req {
                host: None,
                call: Call::Fail,
            })
            .await;
    }
    let default = f.handle.default_breaker();
    assert_eq!(default.state(), CircuitState::Open);
    assert!(is_open(
        &f.call(Req {
            host: None,
            call: Call::Ok
        })
        .await
    ));
    // Keyed requests are not affected, and the default is no key's.
    assert_eq!(f.call(req("a", Call::Ok)).await.unwrap(), "a");
    assert_eq!(f.handle.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_handle_reads_and_steers_breakers_by_key() {
    let mut f = fixture(100, consecutive(3));
    assert_eq!(f.handle.state("a"), None);
    assert!(f.handle.is_empty());
    f.call(req("a", Call::Ok)).await.unwrap();
    f.call(req("b", Call::Fail)).await.unwrap_err();
    assert_eq!(f.handle.state("a"), Some(CircuitState::Closed));
    let stats = f.handle.stats("b").unwrap();
    assert_eq!(
        (stats.calls, stats.failures, stats.consecutive_failures),
        (1, 1, 1)
    );

    // Forcing one key open refuses it alone.
    assert!(f.handle.force_open(&"a".to_string()));
    assert_eq!(f.handle.state("a"), Some(CircuitState::ForcedOpen));
    assert!(is_open(&f.call(req("a", Call::Ok)).await));
    assert_eq!(f.call(req("b", Call::Ok)).await.unwrap(), "b");

    // A key can be forced before it is ever called.
    assert!(f.handle.force_open(&"c".to_string()));
    assert!(is_open(&f.call(req("c", Call::Ok)).await));
    assert_eq!(f.hits_of("c"), 0);

    assert!(f.handle.force_closed(&"a".to_string()));
    assert_eq!(f.handle.state("a"), Some(CircuitState::ForcedClosed));
    for _ in 0..5 {
        assert!(!is_open(&f.call(req("a", Call::Fail)).await));
    }
    assert!(f.handle.reset("a"));
    assert_eq!(f.handle.state("a"), Some(CircuitState::Closed));
    assert_eq!(f.handle.stats("a").unwrap().calls, 0);
    assert!(!f.handle.reset("nobody"));
    assert_eq!(f.handle.len(), 3);
    assert_eq!(f.handle.max_keys(), 100);
}

#[tokio::test(start_paused = true)]
async fn the_bound_holds_under_a_flood_of_keys() {
    let mut f = fixture(100, consecutive(2));
    // "down" opens; "busy" has a call in flight.
    for _ in 0..2 {
        f.call(req("down", Call::Fail)).await.unwrap_err();
    }
    assert_eq!(f.handle.state("down"), Some(CircuitState::Open));
    let (tx, rx) = oneshot::channel();
    let mut svc = f.svc.clone();
    let busy = tokio::spawn(async move {
        svc.ready()
            .await
            .unwrap()
            .call(req("busy", Call::Wait(rx)))
            .await
    });
    tokio::task::yield_now().await;
    assert_eq!(f.hits_of("busy"), 1);

    for i in 0..10_000 {
        f.call(req(&format!("host-{i}"), Call::Ok)).await.unwrap();
        assert!(f.handle.len() <= 100, "{} keys", f.handle.len());
        if i % 1000 == 0 {
            assert!(is_open(&f.call(req("down", Call::Ok)).await));
        }
    }
    assert_eq!(f.handle.len(), 100);
    // The open key was never forgotten: it still refuses, and the upstream
    // never saw it again.
    assert_eq!(f.handle.state("down"), Some(CircuitState::Open));
    assert!(is_open(&f.call(req("down", Call::Ok)).await));
    assert_eq!(f.hits_of("down"), 2);
    // Nor the key with a call in flight.
    assert_eq!(f.handle.state("busy"), Some(CircuitState::Closed));
    tx.send(true).unwrap();
    assert_eq!(busy.await.unwrap().unwrap(), "busy");
    assert_eq!(f.handle.stats("busy").unwrap().calls, 1);
    // The most recent keys are held, the oldest forgotten.
    assert_eq!(f.handle.state("host-9999"), Some(CircuitState::Closed));
    assert_eq!(f.handle.state("host-0"), None);
}

#[tokio::test(start_paused = true)]
async fn a_full_store_of_open_breakers_sends_new_keys_to_the_default() {
    let mut f = fixture(64, consecutive(1));
    for i in 0..64 {
        f.call(req(&format!("down-{i}"), Call::Fail))
            .await
            .unwrap_err();
    }
    assert_eq!(f.handle.len(), 64);
    // No breaker can be forgotten: a new key goes through the default one.
    f.call(req("new", Call::Ok)).await.unwrap();
    assert_eq!(f.handle.state("new"), None);
    assert_eq!(f.handle.default_breaker().stats().calls, 1);
    assert!(!f.handle.force_open(&"new".to_string()));
    assert_eq!(f.handle.len(), 64);
    // Every open key still refuses.
    for i in 0..64 {
        assert!(is_open(&f.call(req(&format!("down-{i}"), Call::Ok)).await));
    }
    // Once one is reset, the new key gets a breaker of its own.
    assert!(f.handle.reset("down-0"));
    f.call(req("new", Call::Ok)).await.unwrap();
    assert_eq!(f.handle.state("new"), Some(CircuitState::Closed));
    assert_eq!(f.handle.state("down-0"), None);
    assert_eq!(f.handle.len(), 64);
}

#[tokio::test(start_paused = true)]
async fn events_carry_the_key() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let layer = consecutive(1).observer(move |e: &Event<'_>| {
        let kind = match e {
            Event::BreakerStateChanged { from, to, .. } => format!("{from:?}->{to:?}"),
            Event::BreakerRejected { .. } => "rejected".to_string(),
            Event::BreakerCall { outcome, .. } => format!("call {outcome:?}"),
            Event::StoreFull { .. } => "full".to_string(),
            _ => return,
        };
        let key = e.key().map(|k| format!("{k:?}"));
        seen.lock().unwrap().push((key, kind));
    });
    let mut f = fixture(64, layer);
    f.call(req("a", Call::Fail)).await.unwrap_err();
    assert!(is_open(&f.call(req("a", Call::Ok)).await));
    f.call(Req {
        host: None,
        call: Call::Ok,
    })
    .await
    .unwrap();
    let a = Some(r#""a""#.to_string());
    assert_eq!(
        *events.lock().unwrap(),
        [
            (a.clone(), "Closed->Open".to_string()),
            (a.clone(), "call Failure".to_string()),
            (a, "rejected".to_string()),
            (None, "call Success".to_string()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_breakers() {
    let f = fixture(100, consecutive(2));
    for _ in 0..2 {
        f.svc
            .clone()
            .oneshot(req("a", Call::Fail))
            .await
            .unwrap_err();
    }
    let err = f.svc.clone().oneshot(req("a", Call::Ok)).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(f.hits_of("a"), 2);
}
