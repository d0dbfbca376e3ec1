//! What every event says about where it came from: the layer's name and,
//! from per-key layers, the request's key.

use super::*;

/// `(layer, key)` of every event seen.
type Seen = Arc<Mutex<Vec<(&'static str, Option<String>)>>>;

/// Records `(layer, key)` of every event.
fn recorder() -> (Seen, impl Fn(&Event<'_>) + Send + Sync + 'static) {
    let seen = Seen::default();
    let log = seen.clone();
    let observer = move |e: &Event<'_>| {
        let key = e.key().map(|k| format!("{k:?}"));
        log.lock().unwrap().push((e.layer(), key));
    };
    (seen, observer)
}

#[tokio::test(start_paused = true)]
async fn a_shared_limit_names_its_layer_and_no_key() {
    let (seen, observer) = recorder();
    let svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(Quota::per_second(10))
                .reject()
                .observer(observer),
        )
        .service(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    svc.oneshot(()).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|(layer, key)| *layer == "rate_limit" && key.is_none()),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_per_key_limit_names_the_key_of_each_event() {
    let (seen, observer) = recorder();
    let svc = ServiceBuilder::new()
        .layer(PerKeyLayer::new(Quota::per_second(10), |user: &u64| Some(*user)).observer(observer))
        .service(service_fn(|_: u64| async { Ok::<_, BoxError>(()) }));
    svc.oneshot(42).await.unwrap();
    // Decided, then completed.
    let key = Some("42".to_owned());
    assert_eq!(
        *seen.lock().unwrap(),
        [("per_key", key.clone()), ("per_key", key)]
    );
}
