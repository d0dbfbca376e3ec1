//! Health of Redis, per node: a small breaker per node (one for a single
//! server, one per master of a Cluster), probed by a task of its own while
//! the node is down.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use super::{BACKEND, Inner};
use crate::observe::Event;
use crate::util::IgnorePoison;

/// Where a decision goes.
pub(super) enum Route {
    Redis,
    Probe,
    Skip,
}

/// The breaker's settings, shared by every node.
#[derive(Clone, Copy)]
pub(super) struct Breaker {
    pub(super) threshold: u32,
    /// The first probe interval (nanoseconds).
    pub(super) first: u64,
    /// The longest probe interval (nanoseconds).
    pub(super) max: u64,
}

impl Breaker {
    pub(super) fn new(threshold: u32, first: Duration, max: Duration) -> Self {
        let first = u64::try_from(first.as_nanos()).unwrap_or(u64::MAX).max(1);
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX).max(first);
        Breaker {
            threshold: threshold.max(1),
            first,
            max,
        }
    }
}

/// The health of one node (or of the whole server).
pub(super) struct Health {
    breaker: Breaker,
    /// The node's address, for logs (empty for a single server).
    name: String,
    failures: AtomicU32,
    /// Clock time of the next probe while the node is down; 0 while it is up.
    pub(super) open_until: AtomicU64,
    /// Clock time the node was last found down.
    down_at: AtomicU64,
    backoff: AtomicU64,
    /// A decision is probing (when no probe task could be started).
    probing: AtomicBool,
    /// A probe task runs for this node.
    prober: AtomicBool,
    /// A key on this node (the last that failed): what a probe asks about.
    probe_key: Mutex<Vec<u8>>,
}

impl Health {
    pub(super) fn new(breaker: Breaker, name: String) -> Self {
        Health {
            breaker,
            name,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            down_at: AtomicU64::new(0),
            backoff: AtomicU64::new(breaker.first),
            probing: AtomicBool::new(false),
            prober: AtomicBool::new(false),
            probe_key: Mutex::new(Vec::new()),
        }
    }

    #[inline]
    pub(super) fn is_up(&self) -> bool {
        self.open_until.load(Ordering::Acquire) == 0
    }

    #[inline]
    pub(super) fn route(&self, now: u64) -> Route {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            Route::Redis
        } else if self.prober.load(Ordering::Acquire)
            || now < until
            || self.probing.swap(true, Ordering::AcqRel)
        {
            Route::Skip
        } else {
            Route::Probe
        }
    }

    /// Nanoseconds until the next probe (the first probe interval while up).
    pub(super) fn retry_after(&self, now: u64) -> u64 {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            self.breaker.first
        } else {
            until.saturating_sub(now).max(1_000_000)
        }
    }

    /// A decision Redis answered, for a call sent at `sent`. While the node
    /// is down, only a probe, or a call sent since it went down, brings it
    /// back: the late answer of a call sent before (in flight when it
    /// failed) says nothing about the node now.
    #[inline]
    pub(super) fn success(&self, inner: &Inner, sent: u64, probe: bool) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Acquire) != 0
            && (probe || sent >= self.down_at.load(Ordering::Acquire))
        {
            self.open_until.store(0, Ordering::Release);
            self.backoff.store(self.breaker.first, Ordering::Relaxed);
            self.probing.store(false, Ordering::Release);
            inner.stats.came_back.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "tower_sluice::redis",
                node = %self.name,
                "redis is back: decisions go to redis again"
            );
            inner.observers.emit(&Event::BackendStateChanged {
                backend: BACKEND,
                available: true,
            });
        }
    }

    /// A decision for `key` failed at `now`. The third consecutive failure
    /// (by default) takes the node down and starts its probe task.
    pub(super) fn failure(self: &Arc<Self>, inner: &Arc<Inner>, key: &[u8], now: u64, probe: bool) {
        if probe {
            self.probe_failed(now);
            self.probing.store(false, Ordering::Release);
            return;
        }
        if self.open_until.load(Ordering::Acquire) == 0 {
            self.set_probe_key(key);
        }
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.breaker.threshold {
            let until = now.saturating_add(self.breaker.first).max(1);
            // Before the circuit opens, so that no late answer finds it
            // open with an older time.
            self.down_at.store(now, Ordering::Release);
            if self
                .open_until
                .compare_exchange(0, until, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.backoff.store(self.breaker.first, Ordering::Relaxed);
                inner.stats.went_down.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    target: "tower_sluice::redis",
                    failures,
                    node = %self.name,
                    policy = ?inner.failure,
                    "redis is failing: applying the failure policy until a probe succeeds"
                );
                inner.observers.emit(&Event::BackendStateChanged {
                    backend: BACKEND,
                    available: false,
                });
                self.start_prober(inner);
            }
        }
    }

    /// The next probe after a failed one: the interval doubles up to the
    /// longest.
    fn probe_failed(&self, now: u64) -> u64 {
        let backoff = self
            .backoff
            .load(Ordering::Relaxed)
            .saturating_mul(2)
            .min(self.breaker.max);
        self.backoff.store(backoff, Ordering::Relaxed);
        self.open_until
            .store(now.saturating_add(backoff).max(1), Ordering::Release);
        backoff
    }

    /// Starts the probe task, unless one runs. Without a tokio runtime to
    /// run it on, a decision probes instead (one at a time).
    fn start_prober(self: &Arc<Self>, inner: &Arc<Inner>) {
        if self.prober.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (inner, health) = (Arc::downgrade(inner), self.clone());
                drop(runtime.spawn(probe_task(inner, health)));
            }
            Err(_) => self.prober.store(false, Ordering::Release),
        }
    }

    fn set_probe_key(&self, key: &[u8]) {
        let mut k = self.probe_key.lock().ignore_poison();
        if *k != key {
            k.clear();
            k.extend_from_slice(key);
        }
    }

    fn probe_key(&self, inner: &Inner) -> Vec<u8> {
        let k = self.probe_key.lock().ignore_poison();
        if k.is_empty() {
            let mut key = inner.prefix.clone();
            key.extend_from_slice(b"probe");
            key
        } else {
            k.clone()
        }
    }
}

/// Probes a down node every probe interval until it answers, then returns
/// it to Redis. One task per down node, never one per request; it ends
/// when the node is back or the backend is dropped.
async fn probe_task(inner: Weak<Inner>, health: Arc<Health>) {
    // However the task ends (even dropped with its runtime), decisions
    // probe again, or a new task starts.
    struct Ended<'a>(&'a Health);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            self.0.prober.store(false, Ordering::Release);
        }
    }
    let ended = Ended(&health);
    let mut wait = health.breaker.first;
    loop {
        tokio::time::sleep(Duration::from_nanos(wait)).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if health.is_up() {
            health.prober.store(false, Ordering::Release);
            // Down again since: this task carries on, unless another took over.
            if health.is_up() || health.prober.swap(true, Ordering::AcqRel) {
                std::mem::forget(ended);
                return;
            }
        }
        inner.refresh_topology().await;
        let Some(key) = inner
            .nodes
            .key_on(&health, health.probe_key(&inner), &inner.prefix)
        else {
            // The node holds no slot any more: no key is decided by it.
            health.open_until.store(0, Ordering::Release);
            return;
        };
        health.set_probe_key(&key);
        let sent = inner.clock.now();
        if inner.probe(&key).await {
            health.success(&inner, sent, true);
            wait = health.breaker.first;
        } else {
            wait = health.probe_failed(inner.clock.now());
        }
    }
}

// ---------------------------------------------------------------------
// Nodes: one health for a single server; one per master of a Cluster.

/// The health of every node, and which node holds a key.
pub(super) struct Nodes {
    breaker: Breaker,
    /// A single server, or the slots of a Cluster no known node holds.
    single: Arc<Health>,
    /// A Cluster's slot map, once learned.
    cluster: Option<RwLock<SlotMap>>,
}

/// Which master holds each slot, as last learned from the cluster.
#[derive(Default)]
pub(super) struct SlotMap {
    /// Node index + 1 per slot (0: unknown); empty until learned.
    slots: Vec<u16>,
    nodes: Vec<Arc<Health>>,
    /// Clock time it was learned.
    pub(super) learned_at: u64,
}

/// The most masters tracked one by one; the slots of any more share the
/// backend's health.
const MAX_NODES: usize = 4096;
const SLOTS: usize = 16384;

impl Nodes {
    pub(super) fn new(breaker: Breaker, cluster: bool) -> Self {
        Nodes {
            breaker,
            single: Arc::new(Health::new(breaker, String::new())),
            cluster: cluster.then(|| RwLock::new(SlotMap::default())),
        }
    }

    /// The same nodes with new breaker settings (before first use).
    pub(super) fn with_breaker(&self, breaker: Breaker) -> Self {
        Nodes::new(breaker, self.cluster.is_some())
    }

    /// The health of the node that holds `key`.
    #[inline]
    pub(super) fn of(&self, key: &[u8]) -> Arc<Health> {
        let Some(map) = &self.cluster else {
            return self.single.clone();
        };
        let map = map.read().ignore_poison();
        match map.slots.get(usize::from(slot(key))) {
            Some(&i) if i > 0 => map.nodes[usize::from(i - 1)].clone(),
            _ => self.single.clone(),
        }
    }

    /// `key` if `health` is its node's, else a key on that node, if it
    /// still holds a slot.
    pub(super) fn key_on(
        &self,
        health: &Arc<Health>,
        key: Vec<u8>,
        prefix: &[u8],
    ) -> Option<Vec<u8>> {
        if Arc::ptr_eq(&self.of(&key), health) {
            return Some(key);
        }
        // A tag per try lands on a slot in about one try per 16384/slots.
        (0..100_000u32).find_map(|n| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(format!("probe:{{{n}}}").as_bytes());
            Arc::ptr_eq(&self.of(&key), health).then_some(key)
        })
    }

    /// Whether every node is up.
    pub(super) fn all_up(&self) -> bool {
        self.single.is_up()
            && self.cluster.as_ref().is_none_or(|map| {
                let map = map.read().ignore_poison();
                map.nodes.iter().all(|h| h.is_up())
            })
    }

    /// When the slot map was last learned (0: never); `None` off Cluster.
    pub(super) fn learned_at(&self) -> Option<u64> {
        let map = self.cluster.as_ref()?;
        Some(map.read().ignore_poison().learned_at)
    }

    /// Takes a new slot map (`(first slot, last slot, master address)`
    /// ranges), keeping the health of the masters it already knew.
    pub(super) fn learn(&self, ranges: &[(u16, u16, String)], now: u64) {
        let Some(map) = &self.cluster else { return };
        let mut map = map.write().ignore_poison();
        let mut nodes: Vec<Arc<Health>> = Vec::new();
        let mut slots = vec![0u16; SLOTS];
        for (first, last, name) in ranges {
            let i = match nodes.iter().position(|h| &h.name == name) {
                Some(i) => i,
                None if nodes.len() < MAX_NODES => {
                    let known = map.nodes.iter().find(|h| &h.name == name).cloned();
                    nodes.push(
                        known.unwrap_or_else(|| Arc::new(Health::new(self.breaker, name.clone()))),
                    );
                    nodes.len() - 1
                }
                None => continue,
            };
            let index = u16::try_from(i + 1).unwrap_or(0);
            let (first, last) = (usize::from(*first), usize::from(*last).min(SLOTS - 1));
            if first <= last {
                slots[first..=last].fill(index);
            }
        }
        *map = SlotMap {
            slots,
            nodes,
            learned_at: now.max(1),
        };
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag
/// (the bytes between the first `{` and the next `}`, when not empty), or
/// of the whole key, modulo 16384.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slots Redis documents (CLUSTER KEYSLOT).
    #[test]
    fn slots_follow_redis() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"), "an empty tag hashes all");
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
    }

    #[test]
    fn keys_map_to_their_master() {
        let nodes = Nodes::new(
            Breaker::new(3, Duration::from_millis(250), Duration::from_millis(250)),
            true,
        );
        let before = nodes.of(b"foo");
        assert!(Arc::ptr_eq(&before, &nodes.single), "unknown: one health");
        let ranges = [
            (0, 5460, "a:1".to_string()),
            (5461, 10922, "b:2".to_string()),
            (10923, 16383, "c:3".to_string()),
        ];
        nodes.learn(&ranges, 5);
        let (foo, bar) = (nodes.of(b"foo"), nodes.of(b"bar"));
        assert_eq!((foo.name.as_str(), bar.name.as_str()), ("c:3", "a:1"));
        // A new map keeps the health of the masters it knew.
        nodes.learn(&ranges[..2], 6);
        assert!(Arc::ptr_eq(&nodes.of(b"bar"), &bar));
        assert!(Arc::ptr_eq(&nodes.of(b"foo"), &nodes.single), "no master");
        assert_eq!(nodes.learned_at(), Some(6));
    }
}
