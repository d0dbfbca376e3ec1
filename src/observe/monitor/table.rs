//! The key table: `max_keys` rows in chunks, found by hash without a lock;
//! a new key claims a free row near its home or evicts the least recently
//! seen there.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};

use super::Inner;
use super::bound::RowHint;
use super::window::{AtomicEwma, bucket_end};
use crate::observe::EventKey;
use crate::util::IgnorePoison;

/// Rows of the key table allocated together, on first use.
pub(super) const CHUNK: usize = 64;
/// A key lives within this many rows of its home row (in its chunk,
/// wrapping around), and a new key whose rows are all taken evicts the
/// least recently seen of them.
const PROBE: usize = 8;

/// Rows of the key table. Lookups read the hashes without a lock; adding a
/// key (or evicting one) takes `claim`. Rows are never removed, only
/// replaced: a lookup may stop at the first free row.
pub(super) struct Chunk {
    pub(super) hot: Box<[Hot]>,
    cold: Box<[Cold]>,
    claim: Mutex<()>,
}

impl Chunk {
    pub(super) fn new(len: usize) -> Self {
        Chunk {
            hot: (0..len).map(|_| Hot::default()).collect(),
            cold: (0..len).map(|_| Cold::default()).collect(),
            claim: Mutex::new(()),
        }
    }

    #[inline]
    pub(super) fn row(&self, i: usize) -> KeyRow<'_> {
        KeyRow {
            hot: &self.hot[i],
            cold: &self.cold[i],
            at: i,
        }
    }

    /// The rows a key whose home is `home` may live in.
    #[inline]
    fn probe(&self, home: usize) -> impl Iterator<Item = usize> {
        let len = self.hot.len();
        (home..home + PROBE.min(len)).map(move |i| if i >= len { i - len } else { i })
    }

    #[inline]
    pub(super) fn find(&self, home: usize, hash: u64) -> Option<KeyRow<'_>> {
        for i in self.probe(home) {
            match self.hot[i].hash.load(Acquire) {
                h if h == hash => return Some(self.row(i)),
                0 => return None,
                _ => {}
            }
        }
        None
    }
}

/// A key's figures, all atomics, so events update them without a lock:
/// what every request and completion touches in one cache line (`hot`),
/// the rest apart (`cold`, also reached through `Deref`).
///
/// The recent window is kept as two fixed buckets, from the totals: the
/// current bucket's counts are the totals minus their values when it
/// started (`base_*`), the previous bucket's are kept (`prev_*`).
#[derive(Clone, Copy)]
pub(super) struct KeyRow<'a> {
    pub(super) hot: &'a Hot,
    cold: &'a Cold,
    /// Its index in its chunk.
    pub(super) at: usize,
}

impl std::ops::Deref for KeyRow<'_> {
    type Target = Cold;
    fn deref(&self) -> &Cold {
        self.cold
    }
}

#[derive(Default)]
#[repr(align(64))]
pub(super) struct Hot {
    /// The key's hash; 0 = free.
    pub(super) hash: AtomicU64,
    pub(super) requests: AtomicU64,
    pub(super) limited: AtomicU64,
    pub(super) shadow_limited: AtomicU64,
    pub(super) completed: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) last_seen: AtomicU64,
    /// When the current bucket of the recent window ends (the start of the
    /// next one; saturated at `u64::MAX`): a request compares it with the
    /// time, no division.
    pub(super) bucket_end: AtomicU64,
}

#[derive(Default)]
pub(super) struct Cold {
    /// The key's `Debug` text, written when the row is claimed.
    pub(super) name: Mutex<Box<str>>,
    /// Of the timed completions.
    pub(super) latency: AtomicEwma,
    pub(super) waited: AtomicU64,
    pub(super) wait_nanos: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) gave_up: AtomicU64,
    /// One bit per rate rule that has fired for this key.
    pub(super) fired: AtomicU64,
    pub(super) base_requests: AtomicU64,
    pub(super) base_limited: AtomicU64,
    pub(super) prev_requests: AtomicU64,
    pub(super) prev_limited: AtomicU64,
}

impl KeyRow<'_> {
    /// Makes the row `name`'s, all figures zero (under the chunk's
    /// `claim`, the hash cleared).
    pub(super) fn reset(&self, name: Box<str>, now: u64, width: u64) {
        *self.name.lock().ignore_poison() = name;
        for a in [
            &self.hot.requests,
            &self.hot.limited,
            &self.hot.shadow_limited,
            &self.waited,
            &self.wait_nanos,
            &self.hot.completed,
            &self.hot.failed,
            &self.retries,
            &self.gave_up,
            &self.fired,
            &self.base_requests,
            &self.base_limited,
            &self.prev_requests,
            &self.prev_limited,
        ] {
            a.store(0, Relaxed);
        }
        self.latency.0.store(u64::MAX, Relaxed);
        self.hot.last_seen.store(now, Relaxed);
        self.hot
            .bucket_end
            .store(bucket_end(now / width, width), Relaxed);
    }

    pub(super) fn name(&self) -> String {
        self.name.lock().ignore_poison().to_string()
    }

    /// Limited and shadow-limited requests, over the whole run.
    #[inline]
    pub(super) fn all_limited(&self) -> u64 {
        self.hot.limited.load(Relaxed) + self.hot.shadow_limited.load(Relaxed)
    }
}

impl Inner {
    /// The chunk a key hash belongs to, and its home row there (from the
    /// hash's high bits, scaled to `max_keys`).
    #[inline]
    pub(super) fn home(&self, hash: u64) -> (usize, usize) {
        let spread = crate::hash::spread(hash);
        let row = ((u128::from(spread) * self.max_keys as u128) >> 64) as usize;
        (row / CHUNK, row % CHUNK)
    }

    /// The row of a key hash, if the key is tracked.
    pub(super) fn find(&self, hash: u64) -> Option<KeyRow<'_>> {
        let (chunk, home) = self.home(hash);
        self.chunks[chunk].get()?.find(home, hash)
    }

    /// The row of `key` (hash `hash`), made if new: in a free row near its
    /// home, or in place of the least recently seen key there.
    #[inline(always)]
    pub(super) fn row(&self, hash: u64, key: &dyn EventKey, now: u64) -> KeyRow<'_> {
        let (chunk, home) = self.home(hash);
        let chunk = match self.chunks[chunk].get() {
            Some(c) => c,
            None => self.new_chunk(chunk),
        };
        match chunk.find(home, hash) {
            Some(row) => row,
            None => self.claim(chunk, home, hash, key, now),
        }
    }

    #[cold]
    fn new_chunk(&self, i: usize) -> &Chunk {
        self.chunks[i].get_or_init(|| {
            // The last chunk holds what is left of `max_keys`.
            Chunk::new(self.max_keys.saturating_sub(i * CHUNK).clamp(1, CHUNK))
        })
    }

    #[cold]
    pub(super) fn claim<'a>(
        &self,
        chunk: &'a Chunk,
        home: usize,
        hash: u64,
        key: &dyn EventKey,
        now: u64,
    ) -> KeyRow<'a> {
        let _guard = chunk.claim.lock().ignore_poison();
        if let Some(row) = chunk.find(home, hash) {
            // Added by another thread meanwhile.
            return row;
        }
        let i = match chunk
            .probe(home)
            .find(|&i| chunk.hot[i].hash.load(Relaxed) == 0)
        {
            Some(i) => i,
            None => {
                let i = chunk
                    .probe(home)
                    .min_by_key(|&i| chunk.hot[i].last_seen.load(Relaxed))
                    .expect("a chunk has rows");
                // Lookups of the old key miss from here on.
                chunk.hot[i].hash.store(0, Release);
                self.evicted.fetch_add(1, Relaxed);
                i
            }
        };
        let mut name = String::new();
        let _ = write!(name, "{key:?}");
        let row = chunk.row(i);
        row.reset(name.into_boxed_str(), now, self.window);
        row.hot.hash.store(hash, Release);
        row
    }

    /// The row of `key`, made if new, for an event other than a request.
    #[cold]
    pub(super) fn row_of(&self, key: &dyn EventKey) -> KeyRow<'_> {
        self.row(key.key_hash().max(1), key, 0)
    }

    /// The row `hint` names, if it still holds the key it was found for.
    #[inline]
    pub(super) fn row_at(&self, hint: RowHint) -> Option<KeyRow<'_>> {
        if hint.hash == 0 {
            return None;
        }
        let chunk = self.chunks.get(hint.at / CHUNK)?.get()?;
        let i = hint.at % CHUNK;
        let hot = chunk.hot.get(i)?;
        (hot.hash.load(Acquire) == hint.hash).then(|| chunk.row(i))
    }
}
