//! Alert rules, evaluated as events arrive: a key's limited rate, a
//! breaker opening, a backend falling back.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Inner;
use super::counters::LayerStats;
use super::table::KeyRow;
use crate::observe::FailureAction;
use crate::observe::alert::{Alert, Alerts, RuleKind};
use crate::observe::words::CircuitState;

impl Inner {
    /// Whether a rate rule that fired for `row` is still above its re-arm
    /// level now: a key that went quiet reads as recovered without waiting
    /// for its next request (which is when the rule itself re-arms).
    pub(super) fn alerting(&self, row: &KeyRow<'_>, now: u64) -> bool {
        let fired = row.fired.load(Relaxed);
        let Some(alerts) = self.alerts.as_ref().filter(|_| fired != 0) else {
            return false;
        };
        let (requests, limited) = row.recent(now, self.window);
        let rate = if requests > 0.0 {
            limited / requests
        } else {
            0.0
        };
        alerts.rules().iter().enumerate().any(|(i, rule)| {
            fired & (1 << i) != 0
                && matches!(rule.kind, RuleKind::LimitedRate { rearm_below, .. } if rate >= rearm_below)
        })
    }

    pub(super) fn rate_alerts(
        &self,
        alerts: &Alerts,
        scope: &'static str,
        row: &KeyRow<'_>,
        now: u64,
    ) {
        let (requests, limited) = row.recent(now, self.window);
        let rate = if requests > 0.0 {
            limited / requests
        } else {
            0.0
        };
        for (i, rule) in alerts.rules().iter().enumerate() {
            let RuleKind::LimitedRate {
                threshold,
                rearm_below,
                min_requests,
            } = rule.kind
            else {
                continue;
            };
            let bit = 1u64 << i;
            if row.fired.load(Relaxed) & bit == 0 {
                // The bit is set by one thread only: the rule fires once.
                if requests >= min_requests as f64
                    && rate >= threshold
                    && row.fired.fetch_or(bit, Relaxed) & bit == 0
                {
                    alerts.fire(
                        i,
                        Alert::LimitedRate {
                            scope,
                            key: row.name(),
                            rate,
                            requests: requests.round() as u64,
                            window: Duration::from_nanos(self.window),
                        },
                    );
                }
            } else if rate < rearm_below {
                row.fired.fetch_and(!bit, Relaxed);
            }
        }
    }
    pub(super) fn breaker_alerts(&self, l: &LayerStats, from: CircuitState, to: CircuitState) {
        let Some(alerts) = &self.alerts else { return };
        match to {
            CircuitState::Open | CircuitState::ForcedOpen => {
                if !l.breaker_alerted.swap(true, Relaxed) {
                    for (i, rule) in alerts.rules().iter().enumerate() {
                        if let RuleKind::BreakerOpened = rule.kind {
                            alerts.fire(
                                i,
                                Alert::BreakerOpened {
                                    scope: l.name,
                                    from,
                                    forced: to == CircuitState::ForcedOpen,
                                },
                            );
                        }
                    }
                }
            }
            CircuitState::Closed | CircuitState::ForcedClosed => {
                l.breaker_alerted.store(false, Relaxed);
            }
            CircuitState::HalfOpen => {}
        }
    }

    pub(super) fn backend_alert(&self, l: &LayerStats, action: FailureAction) {
        let Some(alerts) = &self.alerts else { return };
        if l.backend_alerted.swap(true, Relaxed) {
            return;
        }
        for (i, rule) in alerts.rules().iter().enumerate() {
            if let RuleKind::BackendFallback = rule.kind {
                alerts.fire(
                    i,
                    Alert::BackendFallback {
                        backend: l.name,
                        action,
                    },
                );
            }
        }
    }
}
