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
