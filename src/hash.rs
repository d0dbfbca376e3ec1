//! Spreading a hash before a few of its bits pick a shard or a row.

/// `hash` with its bits mixed so that any run of its upper bits depends on
/// all of them: a shift folds the high half into the low, and an odd
/// multiplier carries the low bits up.
///
/// hashbrown's default hasher is made for hashbrown, which takes its bucket
/// from the low bits and its tags from the top seven; a few bits taken from
/// elsewhere are not evenly spread for every key type and seed (for IPv4
/// addresses of one range, bits 40..44 left some of 16 shards empty and
/// others at twice their share). Whoever picks a shard or a row from a few
/// bits of such a hash takes them from `spread(hash)`.
#[inline]
pub(crate) fn spread(hash: u64) -> u64 {
    (hash ^ (hash >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The shard, among `mask + 1` (a power of two), of a key whose hashbrown
/// hash is `hash`: bits 40.. of the [spread](spread) hash (hashbrown itself
/// uses the low bits of the hash for the bucket and the top 7 for its
/// tags).
#[inline]
pub(crate) fn shard_index(hash: u64, mask: usize) -> usize {
    (spread(hash) >> 40) as usize & mask
}
