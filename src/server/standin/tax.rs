//! Sales tax as Polar charges it as the merchant of record: VAT (or GST) by the buyer's billing
//! country, added on top of the price (the catalogue's prices are tax-exclusive), rounded half
//! up to the cent. A business buyer with a valid VAT id of their own country's scheme is
//! reverse-charged (no tax), a consumer is not. Refunds give back tax in proportion to the net
//! amount refunded, and all of what is left with the last refund, so the totals always match.
//!
//! The rates are the standard ones; a country that is not listed is charged no tax (Polar
//! collects only where it is registered).

/// Standard rates in basis points (1 % = 100).
const RATES: &[(&str, i64)] = &[
    ("AT", 2000),
    ("BE", 2100),
    ("BG", 2000),
    ("CY", 1900),
    ("CZ", 2100),
    ("DE", 1900),
    ("DK", 2500),
    ("EE", 2400),
    ("ES", 2100),
    ("FI", 2550),
    ("FR", 2000),
    ("GR", 2400),
    ("HR", 2500),
    ("HU", 2700),
    ("IE", 2300),
    ("IT", 2200),
    ("LT", 2100),
    ("LU", 1700),
    ("LV", 2100),
    ("MT", 1800),
    ("NL", 2100),
    ("PL", 2300),
    ("PT", 2300),
    ("RO", 2100),
    ("SE", 2500),
    ("SI", 2200),
    ("SK", 2300),
    ("GB", 2000),
    ("NO", 2500),
    ("CH", 810),
    ("AU", 1000),
    ("NZ", 1500),
    ("JP", 1000),
    ("CA", 500),
    ("IN", 1800),
];

/// The tax id schemes that reverse-charge in their own country.
const REVERSE_CHARGE: &[&str] = &["eu_vat", "gb_vat", "ch_vat", "no_vat", "au_abn", "nz_gst", "in_gst", "ca_bn"];

/// The rate for a buyer in `country`, in basis points.
pub fn rate(country: &str) -> i64 {
    RATES.iter().find(|(c, _)| *c == country).map(|(_, r)| *r).unwrap_or(0)
}

/// Whether a buyer in `country` with `tax_id` (value, type) is reverse-charged.
pub fn reverse_charged(country: &str, tax_id: Option<&(String, String)>) -> bool {
    tax_id.is_some_and(|(value, kind)| {
        // The id must be the buyer country's own (its normalised form, prefix included, is itself).
        REVERSE_CHARGE.contains(&kind.as_str())
            && crate::domain::tax_id::validate(country, value)
                .is_ok_and(|t| t.kind == kind.as_str() && t.value == *value)
    })
}

/// The tax on `net` cents for a buyer in `country` (none known: no tax).
pub fn tax_on(net: i64, country: Option<&str>, tax_id: Option<&(String, String)>) -> i64 {
    let Some(country) = country else { return 0 };
    if net <= 0 || reverse_charged(country, tax_id) {
        return 0;
    }
    ((net as i128 * rate(country) as i128 + 5_000) / 10_000) as i64
}

/// The tax given back with a refund of `amount` net cents, of an order of `net` cents that
/// carried `tax`, of which `tax_refunded` was already given back.
pub fn tax_refunded_with(amount: i64, net: i64, already_refunded: i64, tax: i64, tax_refunded: i64) -> i64 {
    let tax_left = (tax - tax_refunded).max(0);
    if net <= 0 || amount >= net - already_refunded {
        return tax_left;
    }
    (((tax as i128 * amount as i128) + net as i128 / 2) / net as i128).min(tax_left as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_depends_on_the_country_and_rounds_half_up() {
        assert_eq!(tax_on(500, Some("DE"), None), 95);
        assert_eq!(tax_on(1900, Some("FR"), None), 380);
        assert_eq!(tax_on(900, Some("FI"), None), 230, "25.5 % of 9.00 is 2.295");
        assert_eq!(tax_on(500, Some("US"), None), 0);
        assert_eq!(tax_on(500, None, None), 0);
    }

    #[test]
    fn a_valid_vat_id_of_the_buyers_country_is_reverse_charged() {
        let de = ("DE123456789".to_string(), "eu_vat".to_string());
        assert_eq!(tax_on(500, Some("DE"), Some(&de)), 0);
        assert_eq!(tax_on(500, Some("FR"), Some(&de)), 100, "a German VAT id does not reverse-charge a French buyer");
        let us = ("123456789".to_string(), "us_ein".to_string());
        assert_eq!(tax_on(500, Some("US"), Some(&us)), 0);
    }

    #[test]
    fn refunds_give_back_tax_in_proportion_and_the_rest_at_the_end() {
        // 5.00 + 0.95 VAT, refunded 2.00 then 3.00.
        let first = tax_refunded_with(200, 500, 0, 95, 0);
        assert_eq!(first, 38);
        assert_eq!(tax_refunded_with(300, 500, 200, 95, first), 57);
        assert_eq!(first + 57, 95);
    }
}
