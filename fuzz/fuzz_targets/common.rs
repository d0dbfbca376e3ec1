//! Invariants every target checks on a `Quota` it obtained.

use tower_sluice::Quota;

/// A valid quota: positive parts, a spacing the limiter holds within 1 %
/// of the asked rate, a burst window that fits its arithmetic, and a
/// string and serde form that read back equal.
pub fn check_quota(q: Quota) {
    assert!(q.limit() >= 1 && q.burst() >= 1, "{q:?}");
    assert!(!q.period().is_zero(), "{q:?}");
    let period = q.period().as_nanos();
    let interval = q.emission_interval().as_nanos();
    assert!(interval >= 1, "{q:?}");
    let spaced = interval * u128::from(q.limit());
    assert!(spaced >= period, "{q:?}: spacing rounded down");
    assert!(
        100 * (spaced - period) <= spaced,
        "{q:?}: enforced more than 1 % slower than asked"
    );
    assert!(interval * u128::from(q.burst()) <= 1 << 62, "{q:?}: window");

    let shown = q.to_string();
    assert_eq!(shown.parse::<Quota>(), Ok(q), "{shown}");
    let json = serde_json::to_string(&q).expect("a quota serializes");
    assert_eq!(serde_json::from_str::<Quota>(&json).ok(), Some(q), "{json}");
}
