//! `Quota` from arbitrary JSON: no panic, and every quota read is valid
//! and round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sluice::Quota;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = serde_json::from_slice::<Quota>(data) {
        common::check_quota(q);
    }
});
