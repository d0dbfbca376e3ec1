use std::sync::atomic::Ordering::{Relaxed, Release};

use super::table::{CHUNK, Cold, Hot};
use super::window::bucket_of;
use super::*;
use crate::classify::Outcome;
use crate::observe::Observers;
use crate::observe::words::CircuitState;

fn dequeued(layer: &'static str) -> Event<'static> {
    Event::Dequeued {
        layer,
        waited: Duration::ZERO,
        depth: 0,
        queued: false,
    }
}

/// A monitor bound to a layer counts each event under its own layer
/// name (or the scope), also when one layer reports under two names,
/// and a layer shows in the snapshot only once it has reported.
#[test]
fn a_bound_monitor_counts_by_name_or_scope() {
    let monitor = Monitor::new();
    let bound = Observers::new(monitor.clone(), "queue");
    let scoped = Observers::new(monitor.scoped("upstream"), "queue");
    assert!(monitor.snapshot().layers.is_empty(), "nothing reported yet");
    for name in ["queue", "queue", "other", "queue"] {
        bound.emit(&dequeued(name));
    }
    // Another copy of the name's text is the same layer.
    bound.emit(&dequeued(String::from("queue").leak()));
    bound.emit(&Event::MissingKey {
        layer: "other",
        enforced: true,
    });
    scoped.emit(&dequeued("queue"));
    scoped.emit(&Event::MissingKey {
        layer: "per_key",
        enforced: true,
    });
    let rate = Observers::new(monitor.clone(), "rate_limit");
    rate.emit_allowed("rate_limit", || unreachable!("a monitor only counts"));
    let snapshot = monitor.snapshot();
    let names: Vec<&str> = snapshot.layers.iter().map(|l| l.name.as_str()).collect();
    // In the order they were bound (or, another name, first reported).
    assert_eq!(names, ["queue", "upstream", "other", "rate_limit"]);
    let requests = |name| snapshot.layer(name).unwrap().requests;
    assert_eq!(requests("queue"), 4);
    assert_eq!(requests("other"), 2);
    assert_eq!(snapshot.layer("other").unwrap().limited, 1);
    assert_eq!(requests("upstream"), 2);
    assert_eq!(requests("rate_limit"), 1);
    // Clones of a bound observer keep counting in the same figures.
    bound.clone().emit(&dequeued("queue"));
    assert_eq!(monitor.snapshot().layer("queue").unwrap().requests, 5);
}

/// Reports a per-key admission as the per-key layer does.
fn admit(o: &Observers, key: &u64, decision: &crate::gcra::Decision) -> RowHint {
    let weight = o.keyed_allowed_weight("per_key");
    o.emit_keyed_allowed("per_key", key, decision, weight)
}

/// A completion is counted in the row its admission found while that
/// row is still the key's; once another key has taken it over, the key
/// is looked up again (and, evicted, made anew), as an unbound
/// monitor's completion would be.
#[test]
fn a_completion_uses_the_admission_row_until_it_is_taken_over() {
    let monitor = Monitor::builder().sample_one_in(1).build();
    let bound = Observers::new(monitor.clone(), "per_key");
    let decision = crate::gcra::Decision::allowed(
        &crate::gcra::Params::new(crate::quota::Quota::per_second(1)),
        0,
        0,
    );
    let (a, b) = (1u64, 2u64);
    let at_a = admit(&bound, &a, &decision);
    assert_ne!(at_a.hash, 0, "a bound monitor says where it counted");
    let ms = Some(Duration::from_millis(5));
    bound.emit_completed("per_key", Some(&a), at_a, ms, true);
    let key = |k: &u64| monitor.key(k);
    let row = key(&a).unwrap();
    assert_eq!((row.requests, row.completed, row.failed), (1, 1, 0));
    assert_eq!(row.latency_ewma, ms);
    // `b` takes `a`'s row over (as a claim does; its figures are not
    // reset here, to tell them apart): `a`'s hint no longer matches.
    let chunk = monitor.inner.chunks[at_a.at / CHUNK].get().unwrap();
    let taken = &chunk.hot[at_a.at % CHUNK];
    taken.hash.store(b.key_hash().max(1), Release);
    bound.emit_completed("per_key", Some(&a), at_a, None, false);
    let (completed, failed) = (taken.completed.load(Relaxed), taken.failed.load(Relaxed));
    assert_eq!((completed, failed), (1, 0), "not counted in b's row");
    let row = key(&a).unwrap();
    assert_eq!(
        (row.requests, row.completed, row.failed),
        (0, 1, 1),
        "a, made anew"
    );
    let layer = monitor.snapshot().layer("per_key").unwrap().clone();
    assert_eq!((layer.requests, layer.completed, layer.failed), (1, 2, 1));
    // Other observers get the events, and no hint.
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let other = Observers::new(
        move |_: &Event<'_>| {
            counter.fetch_add(1, Relaxed);
        },
        "per_key",
    );
    let hint = admit(&other, &a, &decision);
    assert_eq!(hint.hash, 0);
    other.emit_completed("per_key", Some(&a), hint, None, true);
    assert_eq!(seen.load(Relaxed), 2);
}

/// The recent window moves by bucket: a request inside the current
/// bucket leaves it, the first one past its end starts the next (the
/// last bucket kept, weighted by how much of it is still inside the
/// window), one further on drops both.
#[test]
fn the_recent_window_rolls_at_the_end_of_its_bucket() {
    let chunk = Chunk::new(1);
    let row = chunk.row(0);
    let width = 1_000;
    row.reset("k".into(), 2_500, width);
    assert_eq!(row.hot.bucket_end.load(Relaxed), 3_000);
    let request = |now: u64, limited: bool| {
        row.roll(now, width);
        row.hot.requests.fetch_add(1, Relaxed);
        if limited {
            row.hot.limited.fetch_add(1, Relaxed);
        }
    };
    request(2_500, true);
    request(2_999, false);
    assert_eq!(row.recent(2_999, width), (2.0, 1.0));
    // The next bucket: the last one's counts, three quarters inside.
    request(3_250, false);
    assert_eq!(row.hot.bucket_end.load(Relaxed), 4_000);
    assert_eq!(row.recent(3_250, width), (1.0 + 2.0 * 0.75, 0.75));
    // Read (not rolled) a bucket on: the current one becomes the last.
    assert_eq!(row.recent(4_500, width), (0.5, 0.0));
    // Two buckets on: nothing recent, the totals stay.
    request(5_000, false);
    assert_eq!(row.hot.bucket_end.load(Relaxed), 6_000);
    assert_eq!(row.recent(5_000, width), (1.0, 0.0));
    assert_eq!(row.hot.requests.load(Relaxed), 4);
    // A window too wide to end: one bucket, for ever.
    row.reset("k".into(), 7, u64::MAX);
    assert_eq!(row.hot.bucket_end.load(Relaxed), u64::MAX);
    row.roll(u64::MAX - 1, u64::MAX);
    row.hot.requests.fetch_add(1, Relaxed);
    assert_eq!(row.recent(u64::MAX - 1, u64::MAX), (1.0, 0.0));
    // A bucket whose end is past the clock's range: its end saturates,
    // and it is still the current bucket.
    let half = 1 << 63;
    row.reset("k".into(), half + 5, half);
    assert_eq!(row.hot.bucket_end.load(Relaxed), u64::MAX);
    assert_eq!(bucket_of(u64::MAX, half), 1);
    row.roll(half + 9, half);
    row.hot.requests.fetch_add(1, Relaxed);
    assert_eq!(row.recent(half + 9, half), (1.0, 0.0));
}

/// A bound monitor counts a breaker call (reported without building
/// the event) as a monitor given the event does: requests,
/// completions, failures, latency and the breaker shown Closed.
#[test]
fn a_bound_breaker_call_counts_as_the_event() {
    let (bound_to, given) = (Monitor::new(), Monitor::new());
    let bound = Observers::new(bound_to.clone(), "circuit_breaker");
    let calls = [
        (Outcome::Success, None),
        (Outcome::Failure, Some(Duration::from_millis(4))),
        (Outcome::Success, Some(Duration::from_millis(2))),
        (Outcome::Ignore, None),
    ];
    for (outcome, latency) in calls {
        bound.emit_breaker_call("circuit_breaker", None, outcome, false, true, latency);
        given.on_event(&Event::BreakerCall {
            layer: "circuit_breaker",
            key: None,
            outcome,
            slow: false,
            counted: true,
            latency,
        });
    }
    let (a, b) = (bound_to.snapshot(), given.snapshot());
    assert_eq!(a, b);
    let l = a.layer("circuit_breaker").unwrap();
    assert_eq!((l.requests, l.completed, l.failed), (4, 4, 1));
    assert_eq!(l.breaker_state, Some(CircuitState::Closed));
    assert!(l.latency_ewma.is_some());
}

#[test]
fn a_row_is_168_bytes() {
    assert_eq!(std::mem::size_of::<Hot>(), 64);
    assert_eq!(
        std::mem::size_of::<Hot>() + std::mem::size_of::<Cold>(),
        168
    );
}

/// Counts stay exact when threads report at once (per-thread layer
/// counters, atomic key rows).
#[test]
fn counts_from_many_threads_are_exact() {
    let monitor = Monitor::builder().sample_one_in(1).build();
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let m = monitor.clone();
            std::thread::spawn(move || {
                for i in 0..10_000u64 {
                    let key = i % 8;
                    m.on_event(&Event::Completed {
                        layer: "per_key",
                        key: Some(&key),
                        latency: Some(Duration::from_millis(t + 1)),
                        success: (i / 8) % 10 != 0,
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let snap = monitor.snapshot();
    let layer = snap.layer("per_key").unwrap();
    assert_eq!((layer.completed, layer.failed), (40_000, 4_000));
    assert_eq!(snap.keys.len(), 8);
    for k in &snap.keys {
        assert_eq!((k.completed, k.failed), (5_000, 500), "{k:?}");
        let ms = k.latency_ewma.unwrap().as_secs_f64() * 1000.0;
        assert!((1.0..=4.0).contains(&ms), "{ms}");
    }
}

/// A new key whose rows are all taken evicts the least recently seen
/// of them; the table never holds more than `max_keys`.
#[test]
fn the_key_table_holds_max_keys() {
    let monitor = Monitor::builder().max_keys(100).build();
    for i in 0..1_000u64 {
        monitor.on_event(&Event::Completed {
            layer: "per_key",
            key: Some(&i),
            latency: None,
            success: true,
        });
    }
    let snap = monitor.snapshot();
    assert_eq!(snap.tracked_keys_max, 100);
    assert!(snap.keys.len() <= 100);
    assert_eq!(snap.keys.len() as u64 + snap.evicted_keys, 1_000);
    assert!(monitor.key(&999u64).is_some(), "the newest key is kept");
}
