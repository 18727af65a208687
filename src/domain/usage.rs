//! Overage and usage alerts: the rules the billing page and the ledger share.
//!
//! A plan allows overage when its Polar product has a metered price (`metered_unit`): that
//! price bills the period's overage credits at the cycle end, `unit_amount` cents each, at
//! most `cap_amount` cents. Tally only supports whole-cent unit prices (a fractional one is
//! refused with a clear log, and the plan then has no overage): the charge is then exact,
//! `min(units × unit, cap)`, with no rounding for Tally and Polar to disagree on.

use serde::{Deserialize, Serialize};

/// A plan's metered price for credits past the allotment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverageTerms {
    /// Cents per credit.
    pub unit_cents: i64,
    /// The most one period's overage costs, in cents; `None`: no cap.
    pub cap_cents: Option<i64>,
}

impl OverageTerms {
    /// What `units` overage credits cost: `min(units × unit, cap)`.
    pub fn charge_cents(self, units: i64) -> i64 {
        let raw = units.max(0).saturating_mul(self.unit_cents);
        self.cap_cents.map_or(raw, |cap| raw.min(cap))
    }

    /// The most overage credits one period may take under these terms and a user's own cap
    /// (the lower of the two caps; `None`: no limit).
    pub fn max_units(self, user_cap_cents: Option<i64>) -> Option<i64> {
        let cap = match (self.cap_cents, user_cap_cents) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        cap.map(|c| c.max(0) / self.unit_cents)
    }
}

/// Parses a Polar `unit_amount` (a decimal string of cents, e.g. `"1"` or `"1.00"`) as whole
/// cents. `None` for anything else: a fractional cent, zero, negative, or not a number.
pub fn whole_cents(unit_amount: &str) -> Option<i64> {
    let s = unit_amount.trim().trim_start_matches('+');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c == '0') {
        return None;
    }
    let cents: i64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    Some(cents).filter(|c| *c > 0)
}

/// The alerts a spend can fire, once per user and period each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alert {
    /// 80, 100 or 150 % of the period's allotment used.
    Percent(u16),
    /// The first credit of overage this period.
    OverageStarted,
    /// The balance fell under the user's threshold.
    Below(i64),
}

/// The percentages of the allotment that alert.
pub const ALERT_PERCENTS: [u16; 3] = [80, 100, 150];

impl Alert {
    /// The key the ledger stores it under (`usage_alerts.alert`).
    pub fn key(self) -> String {
        match self {
            Alert::Percent(p) => format!("percent_{p}"),
            Alert::OverageStarted => "overage".into(),
            Alert::Below(n) => format!("below:{n}"),
        }
    }

    pub fn from_key(key: &str) -> Option<Alert> {
        if key == "overage" {
            return Some(Alert::OverageStarted);
        }
        if let Some(p) = key.strip_prefix("percent_") {
            return p.parse().ok().filter(|p| ALERT_PERCENTS.contains(p)).map(Alert::Percent);
        }
        key.strip_prefix("below:").and_then(|n| n.parse().ok()).filter(|n| *n > 0).map(Alert::Below)
    }

    /// One sentence for a banner or a mail's subject.
    pub fn headline(self) -> String {
        match self {
            Alert::Percent(100) => "You have used all of this period's credits".into(),
            Alert::Percent(p) => format!("You have used {p} % of this period's credits"),
            Alert::OverageStarted => "You are now using overage credits".into(),
            Alert::Below(n) => {
                format!("Your balance fell under {} credits", crate::domain::money::group_thousands(n as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_cents_accepts_only_whole_positive_cents() {
        assert_eq!(whole_cents("1"), Some(1));
        assert_eq!(whole_cents("1.00"), Some(1));
        assert_eq!(whole_cents("+25"), Some(25));
        assert_eq!(whole_cents("0.5"), None);
        assert_eq!(whole_cents("0"), None);
        assert_eq!(whole_cents("-1"), None);
        assert_eq!(whole_cents("1e2"), None);
        assert_eq!(whole_cents(""), None);
        assert_eq!(whole_cents("."), None);
        assert_eq!(whole_cents("99999999999999999999"), None);
    }

    #[test]
    fn the_charge_is_units_times_price_capped() {
        let pro = OverageTerms { unit_cents: 1, cap_cents: Some(5000) };
        assert_eq!(pro.charge_cents(0), 0);
        assert_eq!(pro.charge_cents(1234), 1234);
        assert_eq!(pro.charge_cents(9000), 5000);
        assert_eq!(pro.charge_cents(-5), 0);
        assert_eq!(OverageTerms { unit_cents: 3, cap_cents: None }.charge_cents(i64::MAX), i64::MAX);
    }

    #[test]
    fn the_lower_cap_limits_the_units() {
        let pro = OverageTerms { unit_cents: 2, cap_cents: Some(5000) };
        assert_eq!(pro.max_units(None), Some(2500));
        assert_eq!(pro.max_units(Some(1001)), Some(500));
        assert_eq!(pro.max_units(Some(9000)), Some(2500));
        assert_eq!(OverageTerms { unit_cents: 2, cap_cents: None }.max_units(None), None);
    }

    #[test]
    fn alert_keys_round_trip() {
        for a in [Alert::Percent(80), Alert::Percent(100), Alert::Percent(150), Alert::OverageStarted, Alert::Below(25)]
        {
            assert_eq!(Alert::from_key(&a.key()), Some(a));
        }
        assert_eq!(Alert::from_key("percent_90"), None);
        assert_eq!(Alert::from_key("below:0"), None);
        assert_eq!(Alert::Percent(100).headline(), "You have used all of this period's credits");
    }
}
