//! `RateLimit-Policy` values kept for the life of the process, so that
//! each response's copy of one is free (no reference count to change).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;

/// How many distinct values are kept (a few hundred bytes each at most,
/// usually tens); beyond, values are shared by reference count.
const MAX_KEPT: usize = 1024;

static KEPT: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

/// `value` as a [`HeaderValue`]: one kept for the life of the process
/// (formatted once per distinct policy, not per response), or, past
/// [`MAX_KEPT`] distinct values, an owned one. `None` when `value` holds a
/// byte a field value cannot.
pub(crate) fn kept(value: String) -> Option<HeaderValue> {
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    let kept = kept.get_or_insert_with(HashSet::new);
    let value: &'static str = match kept.get(value.as_str()) {
        Some(found) => found,
        None if kept.len() >= MAX_KEPT => return HeaderValue::try_from(value).ok(),
        None => {
            let leaked: &'static str = Box::leak(value.into_boxed_str());
            kept.insert(leaked);
            leaked
        }
    };
    // Checked above: visible ASCII and tabs only, so this cannot panic.
    Some(HeaderValue::from_static(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_kept_once() {
        let a = kept(r#""kept-test";q=1;w=60"#.to_string()).unwrap();
        let b = kept(r#""kept-test";q=1;w=60"#.to_string()).unwrap();
        assert_eq!(a, r#""kept-test";q=1;w=60"#);
        // The same kept text, not two copies.
        assert_eq!(a.as_bytes().as_ptr(), b.as_bytes().as_ptr());
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(kept("a\nb".to_string()).is_none());
        assert!(kept("é".to_string()).is_none());
    }
}
