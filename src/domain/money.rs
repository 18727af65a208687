//! Money is integer minor units (cents) with a lower-case ISO 4217 currency, as Polar sends it.

/// Formats an amount in minor units for display, e.g. `1900, "usd"` → `$19`, `1950` → `$19.50`.
/// Whole amounts drop the cents: pricing pages read better that way.
pub fn format_cents(amount_cents: i64, currency: &str) -> String {
    let symbol = match currency.to_ascii_lowercase().as_str() {
        "usd" => "$",
        "eur" => "€",
        "gbp" => "£",
        _ => "",
    };
    let sign = if amount_cents < 0 { "-" } else { "" };
    let abs = amount_cents.unsigned_abs();
    let (whole, cents) = (abs / 100, abs % 100);
    let whole = group_thousands(whole);
    let number = if cents == 0 { whole } else { format!("{whole}.{cents:02}") };
    if symbol.is_empty() {
        format!("{sign}{number} {}", currency.to_ascii_uppercase())
    } else {
        format!("{sign}{symbol}{number}")
    }
}

/// Like [`format_cents`] but always with the cents (`$19.00`), as invoices and payment pages
/// show amounts.
pub fn format_cents_exact(amount_cents: i64, currency: &str) -> String {
    let short = format_cents(amount_cents, currency);
    if amount_cents % 100 != 0 {
        return short;
    }
    match short.rsplit_once(' ') {
        Some((number, code)) => format!("{number}.00 {code}"),
        None => format!("{short}.00"),
    }
}

/// `15000` → `15,000`. Used for credits and money alike.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_and_fractional_amounts() {
        assert_eq!(format_cents(1900, "usd"), "$19");
        assert_eq!(format_cents(1950, "usd"), "$19.50");
        assert_eq!(format_cents(123456789, "eur"), "€1,234,567.89");
        assert_eq!(format_cents(-500, "gbp"), "-£5");
        assert_eq!(format_cents(500, "sek"), "5 SEK");
    }

    #[test]
    fn exact_amounts_always_show_cents() {
        assert_eq!(format_cents_exact(1900, "usd"), "$19.00");
        assert_eq!(format_cents_exact(1950, "usd"), "$19.50");
        assert_eq!(format_cents_exact(150000, "sek"), "1,500.00 SEK");
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(15000), "15,000");
        assert_eq!(group_thousands(1234567), "1,234,567");
    }
}
