//! A key's recent window (two fixed buckets) and the EWMA of response
//! times.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::table::KeyRow;

impl KeyRow<'_> {
    /// Starts a new bucket if `now` is past the current one. One thread
    /// moves the bucket; requests counted while it does may land in either
    /// bucket (the window is an estimate).
    #[inline]
    pub(super) fn roll(&self, now: u64, width: u64) {
        let end = self.hot.bucket_end.load(Relaxed);
        if now >= end {
            self.roll_over(now, width, end);
        }
    }

    #[cold]
    fn roll_over(&self, now: u64, width: u64, end: u64) {
        let bucket = now / width;
        let current = bucket_of(end, width);
        if bucket <= current
            || self
                .hot
                .bucket_end
                .compare_exchange(end, bucket_end(bucket, width), Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let requests = self.hot.requests.load(Relaxed);
        let limited = self.all_limited();
        let (prev_r, prev_l) = if bucket == current + 1 {
            (
                requests.saturating_sub(self.base_requests.load(Relaxed)),
                limited.saturating_sub(self.base_limited.load(Relaxed)),
            )
        } else {
            (0, 0)
        };
        self.prev_requests.store(prev_r, Relaxed);
        self.prev_limited.store(prev_l, Relaxed);
        self.base_requests.store(requests, Relaxed);
        self.base_limited.store(limited, Relaxed);
    }

    /// (requests, limited) over the last `width`, estimated: the current
    /// bucket plus the previous one weighted by how much of it is still
    /// inside the window.
    pub(super) fn recent(&self, now: u64, width: u64) -> (f64, f64) {
        let bucket = now / width;
        let current = bucket_of(self.hot.bucket_end.load(Relaxed), width);
        let cur_r = self
            .hot
            .requests
            .load(Relaxed)
            .saturating_sub(self.base_requests.load(Relaxed));
        let cur_l = self
            .all_limited()
            .saturating_sub(self.base_limited.load(Relaxed));
        let (cur_r, cur_l, prev_r, prev_l) = if bucket <= current {
            (
                cur_r,
                cur_l,
                self.prev_requests.load(Relaxed),
                self.prev_limited.load(Relaxed),
            )
        } else if bucket == current + 1 {
            (0, 0, cur_r, cur_l)
        } else {
            (0, 0, 0, 0)
        };
        let into = (now % width) as f64 / width as f64;
        let w = 1.0 - into;
        (
            cur_r as f64 + prev_r as f64 * w,
            cur_l as f64 + prev_l as f64 * w,
        )
    }
}

/// The end of bucket `bucket` of `width` nanoseconds (saturated).
#[inline]
pub(super) fn bucket_end(bucket: u64, width: u64) -> u64 {
    bucket.saturating_add(1).saturating_mul(width)
}

/// The bucket whose end is `end`: the one before `end / width` for an
/// exact end, the one `end` falls in for an end saturated at `u64::MAX`
/// (a bucket that ends past the clock's range, which only a width of
/// centuries makes).
#[inline]
pub(super) fn bucket_of(end: u64, width: u64) -> u64 {
    if end.is_multiple_of(width) {
        (end / width).saturating_sub(1)
    } else {
        end / width
    }
}

/// An EWMA in an atomic (f64 bits; `u64::MAX` = no sample yet).
pub(super) struct AtomicEwma(pub(super) AtomicU64);

impl Default for AtomicEwma {
    fn default() -> Self {
        AtomicEwma(AtomicU64::new(u64::MAX))
    }
}

impl AtomicEwma {
    pub(super) fn add(&self, sample: f64, alpha: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            let next = if bits == u64::MAX {
                sample
            } else {
                let v = f64::from_bits(bits);
                v + alpha * (sample - v)
            };
            Some(next.to_bits())
        });
    }

    pub(super) fn get(&self) -> Option<f64> {
        let bits = self.0.load(Relaxed);
        (bits != u64::MAX).then(|| f64::from_bits(bits))
    }
}
