//! Arbitrary upstream hint fields for property tests: every header an
//! upstream uses to say how long to wait, with values well formed, absurd
//! and malformed.

use proptest::prelude::*;

/// A response: its status and its hint fields.
pub type Answer = (u16, Vec<(&'static str, Vec<u8>)>);

/// The fields an upstream uses to say how long to wait.
pub const FIELDS: [&str; 11] = [
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit-remaining",
    "ratelimit-reset",
    "grpc-retry-pushback-ms",
    "grpc-status",
    "date",
];

/// Numbers as an upstream may write them: small, huge, signed, `+`
/// prefixed, past `u64`, with spaces or fractions.
pub fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just(i64::MAX.to_string()),
        Just("99999999999".to_string()),
        "[0-9]{15,40}",
        any::<u32>().prop_map(|n| format!("+{n}")),
        any::<u32>().prop_map(|n| format!("-{n}")),
        "[ +-]{0,2}[0-9]{0,6}(\\.[0-9]{0,3})?[ ]?",
    ]
}

/// Structured-field lists, well formed or not: `"name";r=..;t=..`, with
/// garbage around.
pub fn sf_list() -> impl Strategy<Value = String> {
    let item = (
        "\"?[a-z-]{0,6}\"?",
        proptest::option::of(number()),
        proptest::option::of(number()),
        proptest::option::of(number()),
        "[;=,\" a-z0-9+-]{0,8}",
    )
        .prop_map(|(name, r, t, q, junk)| {
            let mut s = name;
            for (k, v) in [("r", r), ("t", t), ("q", q)] {
                if let Some(v) = v {
                    s.push_str(&format!(";{k}={v}"));
                }
            }
            s + &junk
        });
    proptest::collection::vec(item, 1..4).prop_map(|items| items.join(", "))
}

/// Any header value: numbers, lists, dates, text, bytes.
pub fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => number().prop_map(String::into_bytes),
        3 => sf_list().prop_map(String::into_bytes),
        1 => (1u32..9999, 0u32..24).prop_map(|(year, hour)| {
            format!("Wed, 21 Oct {year:04} {hour:02}:28:00 GMT").into_bytes()
        }),
        1 => "\\PC{0,40}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A few responses: a status and arbitrary hint fields each.
pub fn answers() -> impl Strategy<Value = Vec<Answer>> {
    let status = prop_oneof![Just(200u16), Just(429), Just(503), 100u16..600];
    let fields = proptest::collection::vec((0..FIELDS.len(), value()), 0..6)
        .prop_map(|f| f.into_iter().map(|(i, v)| (FIELDS[i], v)).collect());
    proptest::collection::vec((status, fields), 1..5)
}
