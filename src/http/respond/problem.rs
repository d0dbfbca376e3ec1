//! RFC 9457 problem details bodies for rejections.

use std::fmt::Write as _;

use http::StatusCode;

use crate::http::{Rejection, RejectionKind};

/// The `type` of RFC 9457 problems from a quota (draft-10, section 5.1).
const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// The `type` of RFC 9457 problems from reduced capacity (section 5.2).
const REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";
/// An item name without its quotes and escapes.
pub(super) fn unquote(quoted: &str) -> String {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(quoted);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if !escaped && c == '\\' {
            escaped = true;
        } else {
            out.push(c);
            escaped = false;
        }
    }
    out
}

/// An RFC 9457 problem details object.
pub(super) fn problem(
    kind: RejectionKind,
    status: StatusCode,
    rejection: &Rejection<'_>,
    retry_secs: Option<u64>,
    violated: &[String],
) -> String {
    let (kind_uri, title) = match kind {
        RejectionKind::RateLimited | RejectionKind::TooManyInFlight => (
            QUOTA_EXCEEDED,
            "Request cannot be satisfied as assigned quota has been exceeded",
        ),
        RejectionKind::Unavailable => (
            REDUCED_CAPACITY,
            "Request cannot be satisfied due to temporary server capacity constraints",
        ),
        _ => ("about:blank", status.canonical_reason().unwrap_or("Error")),
    };
    let mut out = String::with_capacity(256);
    out.push_str("{\"type\":");
    json_string(&mut out, kind_uri);
    out.push_str(",\"title\":");
    json_string(&mut out, title);
    let _ = write!(out, ",\"status\":{}", status.as_u16());
    out.push_str(",\"detail\":");
    json_string(&mut out, &rejection.cause().to_string());
    if !violated.is_empty() {
        out.push_str(",\"violated-policies\":[");
        for (i, name) in violated.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_string(&mut out, name);
        }
        out.push(']');
    }
    if let Some(secs) = retry_secs {
        let _ = write!(out, ",\"retry-after\":{secs}");
    }
    out.push_str("}\n");
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn names_unquote() {
        assert_eq!(unquote(r#""free-per-minute""#), "free-per-minute");
        assert_eq!(unquote(r#""a\"b\\c""#), r#"a"b\c"#);
    }
}
