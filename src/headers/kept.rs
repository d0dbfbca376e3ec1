//! `RateLimit-Policy` values kept for the life of the process, so that
//! each response's copy of one is free (no reference count to change).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use http::HeaderValue;

/// How many distinct values are kept (a few hundred bytes each at most,
/// usually tens); beyond, values are shared by reference count.
const MAX_KEPT: usize = 1024;

static KEPT: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

thread_local! {
    /// The values this thread has seen kept: found without the lock, so
    /// that a resolver making a new policy per request does not contend.
    static SEEN: RefCell<HashSet<&'static str>> = RefCell::new(HashSet::new());
}

/// `value` as a [`HeaderValue`]: one kept for the life of the process
/// (formatted once per distinct policy, not per response), or, past
/// [`MAX_KEPT`] distinct values or with bytes outside visible ASCII, an
/// owned one. `None` when `value` holds a byte a field value cannot.
pub(crate) fn kept(value: String) -> Option<HeaderValue> {
    if !value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        // Not kept: `HeaderValue::from_static` takes visible ASCII only.
        return HeaderValue::try_from(value).ok();
    }
    let seen = SEEN
        .try_with(|seen| seen.borrow().get(value.as_str()).copied())
        .ok()
        .flatten();
    let value: &'static str = match seen {
        Some(found) => found,
        None => match keep(value) {
            Ok(kept) => {
                let _ = SEEN.try_with(|seen| seen.borrow_mut().insert(kept));
                kept
            }
            Err(owned) => return HeaderValue::try_from(owned).ok(),
        },
    };
    // Checked above: visible ASCII and tabs only, so this cannot panic.
    Some(HeaderValue::from_static(value))
}

/// The kept copy of `value`, kept now if need be; `value` back when
/// [`MAX_KEPT`] values are kept already.
fn keep(value: String) -> Result<&'static str, String> {
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    let kept = kept.get_or_insert_with(HashSet::new);
    if let Some(found) = kept.get(value.as_str()) {
        return Ok(found);
    }
    if kept.len() >= MAX_KEPT {
        return Err(value);
    }
    let leaked: &'static str = Box::leak(value.into_boxed_str());
    kept.insert(leaked);
    Ok(leaked)
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
        // Another thread finds the same text.
        let c = std::thread::spawn(|| kept(r#""kept-test";q=1;w=60"#.to_string()).unwrap())
            .join()
            .unwrap();
        assert_eq!(a.as_bytes().as_ptr(), c.as_bytes().as_ptr());
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(kept("a\nb".to_string()).is_none());
        // Allowed in a field, though not kept.
        assert_eq!(kept("é".to_string()).unwrap().as_bytes(), "é".as_bytes());
    }
}
