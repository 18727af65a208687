//! Credit arithmetic: how an allotment becomes spendable over its period, and what a plan
//! upgrade mid-period is worth. Pure functions of their inputs (the clock is a parameter).

use chrono::{DateTime, Duration, FixedOffset, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// How a paid plan's monthly allotment becomes spendable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllotmentPolicy {
    /// Each day of the period adds allotment ÷ days; the last day adds the remainder, so the
    /// period adds exactly the allotment. The default.
    DailyAccrual,
    /// The whole allotment at period start.
    AllAtPeriodStart,
}

/// A user's credits right now, by where they come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub total: i64,
    pub allotment: i64,
    pub purchased: i64,
    pub free: i64,
    pub adjustment: i64,
    /// Allotment credits scheduled but not yet accrued this period.
    pub pending_allotment: i64,
    pub next_accrual_at: Option<DateTime<Utc>>,
}

/// One scheduled addition of credits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accrual {
    pub due_at: DateTime<Utc>,
    pub amount: i64,
}

/// The moments at which the days of `[start, end)` begin: `start` itself, then every midnight
/// (in the day-boundary offset) strictly inside the period.
pub fn day_starts(start: DateTime<Utc>, end: DateTime<Utc>, boundary: FixedOffset) -> Vec<DateTime<Utc>> {
    let mut out = vec![start];
    if end <= start {
        return out;
    }
    let local = start.with_timezone(&boundary);
    let mut midnight = boundary
        .from_local_datetime(&local.date_naive().and_time(NaiveTime::MIN))
        .single()
        .expect("fixed offsets have no gaps")
        .with_timezone(&Utc)
        + Duration::days(1);
    while midnight < end {
        out.push(midnight);
        midnight += Duration::days(1);
    }
    out
}

/// The schedule that makes `total` credits spendable over `[start, end)` under `policy`.
/// The amounts always sum to `total`; days that would add nothing are left out.
pub fn allotment_schedule(
    policy: AllotmentPolicy,
    total: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    boundary: FixedOffset,
) -> Vec<Accrual> {
    if total <= 0 {
        return Vec::new();
    }
    match policy {
        AllotmentPolicy::AllAtPeriodStart => vec![Accrual { due_at: start, amount: total }],
        AllotmentPolicy::DailyAccrual => {
            let days = day_starts(start, end, boundary);
            let n = days.len() as i64;
            let per_day = total / n;
            let last = total - per_day * (n - 1);
            days.iter()
                .enumerate()
                .map(|(i, d)| Accrual { due_at: *d, amount: if i as i64 == n - 1 { last } else { per_day } })
                .filter(|a| a.amount > 0)
                .collect()
        }
    }
}

/// Extra credits for moving up to a plan with `new_allotment` at `now` during
/// `[start, end)`, when the period already carries `granted_level` (the largest allotment the
/// period has been granted at, initially the old plan's).
///
/// extra = (new − granted_level) × (end − now) / (end − start), rounded down, never negative.
///
/// Because the period's level only ever rises and downgrades wait for renewal, switching
/// back and forth earns nothing: returning to a plan the period has already been granted at
/// adds 0.
pub fn upgrade_extra(
    granted_level: i64,
    new_allotment: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> i64 {
    if new_allotment <= granted_level || now >= end || end <= start {
        return 0;
    }
    let now = now.max(start);
    let remaining = (end - now).num_seconds() as i128;
    let length = (end - start).num_seconds() as i128;
    (((new_allotment - granted_level) as i128 * remaining) / length) as i64
}

/// Parses a day-boundary offset such as `+00:00`, `-05:00` or `UTC`.
pub fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("utc") || s == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn utc() -> FixedOffset {
        FixedOffset::east_opt(0).unwrap()
    }

    #[test]
    fn a_period_starting_at_midnight_has_one_day_per_calendar_day() {
        let days = day_starts(t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"), utc());
        assert_eq!(days.len(), 30);
        assert_eq!(days[1], t("2026-11-02T00:00:00Z"));
        assert_eq!(*days.last().unwrap(), t("2026-11-30T00:00:00Z"));
    }

    #[test]
    fn a_mid_day_start_gets_a_short_first_day() {
        let days = day_starts(t("2026-11-15T10:00:00Z"), t("2026-12-15T10:00:00Z"), utc());
        assert_eq!(days[0], t("2026-11-15T10:00:00Z"));
        assert_eq!(days[1], t("2026-11-16T00:00:00Z"));
        assert_eq!(days.len(), 31, "15 Nov (part), 16 Nov … 15 Dec (part)");
    }

    #[test]
    fn the_day_boundary_follows_the_configured_offset() {
        let plus2 = parse_offset("+02:00").unwrap();
        let days = day_starts(t("2026-11-01T00:00:00Z"), t("2026-11-03T00:00:00Z"), plus2);
        // Local midnights at 22:00Z.
        assert_eq!(days, vec![t("2026-11-01T00:00:00Z"), t("2026-11-01T22:00:00Z"), t("2026-11-02T22:00:00Z")]);
    }

    #[test]
    fn daily_accrual_adds_exactly_the_allotment_with_the_remainder_last() {
        let s = allotment_schedule(
            AllotmentPolicy::DailyAccrual,
            5000,
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
            utc(),
        );
        assert_eq!(s.len(), 30);
        assert!(s[..29].iter().all(|a| a.amount == 166));
        assert_eq!(s[29].amount, 5000 - 166 * 29);
        assert_eq!(s.iter().map(|a| a.amount).sum::<i64>(), 5000);
        assert_eq!(s[0].due_at, t("2026-11-01T00:00:00Z"));
    }

    #[test]
    fn tiny_allotments_still_sum_exactly() {
        let s = allotment_schedule(
            AllotmentPolicy::DailyAccrual,
            7,
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
            utc(),
        );
        assert_eq!(s.iter().map(|a| a.amount).sum::<i64>(), 7);
        assert!(s.iter().all(|a| a.amount > 0));
    }

    #[test]
    fn all_at_period_start_is_one_accrual() {
        let s = allotment_schedule(
            AllotmentPolicy::AllAtPeriodStart,
            15000,
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
            utc(),
        );
        assert_eq!(s, vec![Accrual { due_at: t("2026-11-01T00:00:00Z"), amount: 15000 }]);
    }

    #[test]
    fn an_upgrade_halfway_grants_half_the_difference() {
        let (start, end) = (t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"));
        assert_eq!(upgrade_extra(5000, 15000, start, end, t("2026-11-16T00:00:00Z")), 5000);
        assert_eq!(upgrade_extra(5000, 15000, start, end, start), 10000);
        assert_eq!(upgrade_extra(5000, 15000, start, end, end), 0);
    }

    #[test]
    fn switching_back_and_forth_earns_nothing() {
        let (start, end) = (t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"));
        let now = t("2026-11-11T00:00:00Z");
        let first = upgrade_extra(5000, 15000, start, end, now);
        // Down to Pro (effective at renewal: the period's level stays 15,000), then up again.
        let again = upgrade_extra(15000, 15000, start, end, now);
        assert!(first > 0);
        assert_eq!(again, 0);
        // A downgrade never grants.
        assert_eq!(upgrade_extra(15000, 5000, start, end, now), 0);
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("UTC"), FixedOffset::east_opt(0));
        assert_eq!(parse_offset("-05:30"), FixedOffset::east_opt(-(5 * 3600 + 1800)));
        assert_eq!(parse_offset("+14:00"), FixedOffset::east_opt(14 * 3600));
        assert_eq!(parse_offset("Europe/Paris"), None);
        assert_eq!(parse_offset("+15:00"), None);
    }
}
