//! `Serialize` and `Deserialize` for [`Quota`]: the string form, or a map
//! `{limit, period, burst, unit}` (`{limit, calendar, unit}` for a calendar
//! quota).

use std::fmt;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Quota;
use super::parse::parse_period;
use crate::calendar::Calendar;

/// Serialized as the string form (`"60/min;burst=10"`).
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl Serialize for Quota {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Deserialized from the string form (`"60/min"`, `"100000 tokens/min"`,
/// `"1000000 tokens/calendar-month"`) or from a map
/// `{limit, period, burst, unit}` where `period` is a string such as
/// `"1min"` or `"10s"` (or a number of seconds), and `burst` and `unit` (a
/// unit of cost, see [`Quota::counting`]) are optional, or
/// `{limit, calendar, unit}` for a calendar quota (`calendar`: `"minute"`,
/// `"hour"`, `"day"` or `"month"`; `unit` optional). An
/// unknown field, a field given twice or a period holding more than a
/// period (`"10s;burst=5"`) is an error.
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
impl<'de> Deserialize<'de> for Quota {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(QuotaVisitor)
    }
}

struct QuotaVisitor;

impl<'de> Visitor<'de> for QuotaVisitor {
    type Value = Quota;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quota such as \"60/min\" or {limit: 60, period: \"1min\", burst: 10}")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Quota, E> {
        v.parse().map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Quota, A::Error> {
        let mut limit: Option<u32> = None;
        let mut period: Option<Duration> = None;
        let mut burst: Option<u32> = None;
        let mut unit: Option<String> = None;
        let mut calendar: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "limit" if limit.is_some() => return Err(de::Error::duplicate_field("limit")),
                "burst" if burst.is_some() => return Err(de::Error::duplicate_field("burst")),
                "period" if period.is_some() => {
                    return Err(de::Error::duplicate_field("period"));
                }
                "unit" if unit.is_some() => return Err(de::Error::duplicate_field("unit")),
                "unit" => unit = Some(map.next_value()?),
                "calendar" if calendar.is_some() => {
                    return Err(de::Error::duplicate_field("calendar"));
                }
                "calendar" => calendar = Some(map.next_value()?),
                "limit" => limit = Some(map.next_value()?),
                "burst" => burst = Some(map.next_value()?),
                "period" => period = Some(map.next_value::<PeriodField>()?.0),
                other => {
                    return Err(de::Error::unknown_field(
                        other,
                        &["limit", "period", "burst", "unit", "calendar"],
                    ));
                }
            }
        }
        let limit = limit.ok_or_else(|| de::Error::missing_field("limit"))?;
        let with_unit = |quota: Quota| match &unit {
            Some(unit) => quota.try_counting(unit).map_err(de::Error::custom),
            None => Ok(quota),
        };
        if let Some(name) = calendar {
            if period.is_some() || burst.is_some_and(|b| b != limit) {
                return Err(de::Error::custom(
                    "a calendar quota takes `limit` and `calendar` only (its period is the \
                     calendar's, its burst its limit)",
                ));
            }
            let cal = Calendar::from_name(&name).ok_or_else(|| {
                de::Error::custom(format!(
                    "unknown calendar period {name:?} (expected minute, hour, day or month)"
                ))
            })?;
            return Quota::try_per_calendar(limit, cal)
                .map_err(de::Error::custom)
                .and_then(with_unit);
        }
        let period = period.ok_or_else(|| de::Error::missing_field("period"))?;
        let quota = Quota::try_with_burst(limit, period, burst.unwrap_or(limit))
            .map_err(de::Error::custom)?;
        with_unit(quota)
    }
}

/// A period: `"10s"`, `"min"`, `"1day"`, or a whole number of seconds.
struct PeriodField(Duration);

impl<'de> Deserialize<'de> for PeriodField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PeriodField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a period such as \"1min\", \"10s\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PeriodField, E> {
                Ok(PeriodField(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PeriodField, E> {
                u64::try_from(v)
                    .map(|v| PeriodField(Duration::from_secs(v)))
                    .map_err(|_| E::custom("period must not be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PeriodField, E> {
                parse_period(v).map(PeriodField).map_err(|why| {
                    E::custom(format!(
                        "invalid period {v:?}: {why}; expected a period such as \"1min\", \
                         \"10s\" or \"day\" (a burst goes in its own `burst` field)"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}
