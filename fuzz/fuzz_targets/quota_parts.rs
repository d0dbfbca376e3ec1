//! `Quota::try_new` / `try_with_burst` over arbitrary parts: no panic,
//! every quota valid and equal to what its string and map forms read back.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_sluice::Quota;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
struct Parts {
    limit: u32,
    secs: u64,
    nanos: u32,
    burst: Option<u32>,
}

fuzz_target!(|p: Parts| {
    let period = Duration::new(p.secs, p.nanos % 1_000_000_000);
    let burst = p.burst.unwrap_or(p.limit);
    let built = Quota::try_with_burst(p.limit, period, burst);
    if p.burst.is_none() {
        assert_eq!(Quota::try_new(p.limit, period), built);
    }
    match built {
        Ok(q) => {
            assert_eq!((q.limit(), q.period(), q.burst()), (p.limit, period, burst));
            common::check_quota(q);
            let map = format!(
                r#"{{"limit":{},"period":"{}ns","burst":{}}}"#,
                p.limit,
                period.as_nanos(),
                burst
            );
            assert_eq!(serde_json::from_str::<Quota>(&map).ok(), Some(q), "{map}");
        }
        Err(e) => assert!(e.to_string().starts_with("invalid quota"), "{e}"),
    }
});
