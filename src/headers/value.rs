//! Short field values cut from a per-thread buffer: a `RateLimit` value per
//! response without an allocation of its own.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// The size of the buffer values are cut from. A value keeps its buffer
/// alive until every value cut from it is dropped, so a long-lived
/// response holds at most this much.
const CHUNK: usize = 1024;

thread_local! {
    static BUFFER: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A [`HeaderValue`] holding a copy of `bytes` (visible ASCII), cut from
/// this thread's buffer: no allocation while the buffer has room (a
/// reference count per value instead), one per [`CHUNK`] otherwise; the
/// buffer is reused in place once all its values are dropped.
///
/// `None` when `bytes` holds a byte a field value cannot.
pub(crate) fn shared(bytes: &[u8]) -> Option<HeaderValue> {
    if bytes.len() > CHUNK / 4 {
        return HeaderValue::from_bytes(bytes).ok();
    }
    BUFFER
        .try_with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            if buffer.capacity() < bytes.len() {
                buffer.reserve(CHUNK);
            }
            buffer.extend_from_slice(bytes);
            HeaderValue::from_maybe_shared(buffer.split().freeze()).ok()
        })
        // The thread is being torn down: a value of its own.
        .unwrap_or_else(|_| HeaderValue::from_bytes(bytes).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_independent_copies() {
        let values: Vec<HeaderValue> = (0..200)
            .map(|i| shared(format!("\"per-hour\";r={i};t=1").as_bytes()).unwrap())
            .collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(value, &format!("\"per-hour\";r={i};t=1"));
        }
        // Dropped values free their room for the next ones.
        drop(values);
        let again: Vec<HeaderValue> = (0..200)
            .map(|i| shared(&[b'a' + (i % 26) as u8; 40]).unwrap())
            .collect();
        for (i, value) in again.iter().enumerate() {
            assert_eq!(value.as_bytes(), [b'a' + (i % 26) as u8; 40]);
        }
    }

    #[test]
    fn long_and_invalid_values() {
        let long = "x".repeat(CHUNK * 2);
        assert_eq!(shared(long.as_bytes()).unwrap(), long.as_str());
        assert!(shared(b"a\nb").is_none());
        assert_eq!(shared(b"").unwrap(), "");
    }
}
