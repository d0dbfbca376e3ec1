//! The deny cache: after Redis denies a key, deny it locally until the
//! denial's `retry_after` has passed.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::gcra::Decision;
use crate::util::IgnorePoison;

pub(super) struct DenyCache {
    max: usize,
    map: Mutex<HashMap<Vec<u8>, Denied>>,
}

#[derive(Clone, Copy)]
struct Denied {
    cost: u32,
    sent: u64,
    until: u64,
    decision: Decision,
}

impl DenyCache {
    pub(super) fn new(max: usize) -> Self {
        DenyCache {
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The cached denial of `key` for `cost`, aged to `now`, when it still
    /// holds past `max_wait`.
    #[inline]
    pub(super) fn check(&self, key: &[u8], cost: u32, now: u64, max_wait: u64) -> Option<Decision> {
        if self.max == 0 {
            return None;
        }
        let map = self.map.lock().ignore_poison();
        let d = map.get(key)?;
        (cost >= d.cost && now.saturating_add(max_wait) < d.until)
            .then(|| d.decision.aged(now.saturating_sub(d.sent)))
    }

    pub(super) fn insert(&self, key: &[u8], cost: u32, sent: u64, decision: Decision) {
        if self.max == 0 {
            return;
        }
        let until = sent.saturating_add(decision.retry_after_nanos());
        let mut map = self.map.lock().ignore_poison();
        if map.len() >= self.max && !map.contains_key(key) {
            map.retain(|_, d| d.until > sent);
            if map.len() >= self.max {
                return;
            }
        }
        map.insert(
            key.to_vec(),
            Denied {
                cost,
                sent,
                until,
                decision,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::quota::Quota;

    #[test]
    fn deny_cache_is_bounded_and_ages() {
        let q = Quota::per_second(1);
        let denied = Decision::remote(q, q.emission_nanos(), false, 500, 1_000);
        let cache = DenyCache::new(2);
        cache.insert(b"a", 1, 0, denied);
        cache.insert(b"b", 1, 0, denied);
        cache.insert(b"c", 1, 0, denied);
        assert!(cache.check(b"c", 1, 0, 0).is_none(), "over the bound");
        let hit = cache.check(b"a", 1, 200, 0).expect("still denied");
        assert_eq!(hit.retry_after(), Duration::from_nanos(300));
        assert!(cache.check(b"a", 1, 500, 0).is_none(), "expired");
        assert!(cache.check(b"a", 1, 200, 300).is_none(), "may wait it out");
        assert!(cache.check(b"a", 0, 200, 0).is_none(), "a smaller cost");
        // Expired entries make room.
        cache.insert(b"c", 1, 600, denied);
        assert!(cache.check(b"c", 1, 700, 0).is_some());
    }
}
