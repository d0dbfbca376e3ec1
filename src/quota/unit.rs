//! What a quota counts: requests, or a named unit of cost (`tokens`,
//! `bytes`, `credits`).
//!
//! A unit name is kept once per process and a quota holds a small number
//! for it, so a quota stays `Copy` and two quotas compare and hash by their
//! unit's name without touching it.

use std::sync::{Mutex, OnceLock};

use crate::util::IgnorePoison;

/// The name of the unit a quota counts by default.
pub(crate) const REQUESTS: &str = "requests";

/// The longest unit name accepted.
pub(crate) const MAX_UNIT_LEN: usize = 32;

/// How many distinct cost units one process may name. Units are few (a
/// service names a handful); the bound keeps names read from configuration
/// from growing memory without end.
pub(crate) const MAX_UNITS: usize = 64;

/// A quota's unit: 0 for requests, otherwise the slot of a cost unit's
/// name (plus one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Unit(u16);

static NAMES: [OnceLock<&'static str>; MAX_UNITS] = [const { OnceLock::new() }; MAX_UNITS];
static INTERN: Mutex<()> = Mutex::new(());

impl Unit {
    /// Requests: every request is charged 1.
    pub(crate) const REQUESTS: Unit = Unit(0);

    /// Whether a quota of this unit is charged a request's cost (rather
    /// than 1 per request).
    #[inline]
    pub(crate) const fn is_cost(self) -> bool {
        self.0 != 0
    }

    /// The unit's name (`requests` for requests).
    pub(crate) fn name(self) -> &'static str {
        match self.0 {
            0 => REQUESTS,
            n => NAMES[usize::from(n) - 1].get().copied().unwrap_or(REQUESTS),
        }
    }

    /// The unit named `name` (`requests` or `request` for requests), or why
    /// the name is refused.
    pub(crate) fn named(name: &str) -> Result<Unit, String> {
        if name.eq_ignore_ascii_case(REQUESTS) || name.eq_ignore_ascii_case("request") {
            return Ok(Unit::REQUESTS);
        }
        validate(name)?;
        if let Some(unit) = find(name) {
            return Ok(unit);
        }
        let _serial = INTERN.lock().ignore_poison();
        if let Some(unit) = find(name) {
            return Ok(unit);
        }
        let slot = NAMES
            .iter()
            .position(|n| n.get().is_none())
            .ok_or_else(|| {
                format!(
                    "a process names at most {MAX_UNITS} cost units; {name:?} would be one more"
                )
            })?;
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let _ = NAMES[slot].set(leaked);
        Ok(Unit(slot as u16 + 1))
    }
}

fn find(name: &str) -> Option<Unit> {
    NAMES
        .iter()
        .map_while(|n| n.get())
        .position(|n| *n == name)
        .map(|i| Unit(i as u16 + 1))
}

/// A unit name is a token: a letter, then letters, digits, `-`, `_` or `.`,
/// at most [`MAX_UNIT_LEN`] characters (what an HTTP `qu` parameter and the
/// quota's string form can carry unquoted).
fn validate(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("unit name is empty".to_owned()),
        Some(c) if !c.is_ascii_alphabetic() => {
            return Err(format!("unit name {name:?} must start with a letter"));
        }
        Some(_) => {}
    }
    if name.len() > MAX_UNIT_LEN {
        return Err(format!(
            "unit name {name:?} is longer than {MAX_UNIT_LEN} characters"
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "unit name {name:?} holds {bad:?}; use letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_once() {
        let a = Unit::named("tokens").unwrap();
        let b = Unit::named("tokens").unwrap();
        assert_eq!(a, b);
        assert!(a.is_cost());
        assert_eq!(a.name(), "tokens");
        assert_ne!(Unit::named("bytes").unwrap(), a);
        assert_eq!(Unit::named("requests"), Ok(Unit::REQUESTS));
        assert_eq!(Unit::named("Request"), Ok(Unit::REQUESTS));
        assert!(!Unit::REQUESTS.is_cost());
        assert_eq!(Unit::REQUESTS.name(), "requests");
    }

    #[test]
    fn bad_names_say_why() {
        for (name, why) in [
            ("", "empty"),
            ("1tokens", "start with a letter"),
            ("to kens", "holds ' '"),
            ("tok/ens", "holds '/'"),
            ("t\"", "holds '\"'"),
            (&"t".repeat(33), "longer than 32"),
        ] {
            let err = Unit::named(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
    }
}
