//! `str::parse::<Quota>` over arbitrary text: no panic, a `Parse` error
//! that shows the syntax, and every quota it returns valid and reading
//! back equal from its `Display` form; the serde string form agrees.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sluice::{Quota, QuotaError};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = s.parse::<Quota>();
    match &parsed {
        Ok(q) => common::check_quota(*q),
        Err(e) => {
            assert!(matches!(e, QuotaError::Parse { .. }), "{e:?}");
            assert!(e.to_string().contains("expected LIMIT/"), "{e}");
        }
    }
    let from_serde = serde_json::from_value::<Quota>(serde_json::Value::String(s.to_owned()));
    assert_eq!(from_serde.ok(), parsed.ok(), "{s:?}");
});
