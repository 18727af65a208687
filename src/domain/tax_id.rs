//! Tax ids (VAT numbers and their equivalents): the format each country uses, checked before a
//! value is saved or sent to Polar, and the Stripe-style type name Polar reports with it
//! (`eu_vat`, `gb_vat`, …). Format only: whether a number is registered is the tax
//! authority's business (VIES), which Polar checks at checkout.

/// A checked tax id: the normalised value (upper case, no spaces, dots or dashes; EU values
/// carry their country prefix) and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxId {
    pub value: String,
    pub kind: &'static str,
}

/// `(country, VAT prefix, body pattern)`. Pattern letters: `9` a digit, `A` a letter,
/// `X` a digit or letter; anything else is literal. Several patterns are separated by `|`.
const EU: &[(&str, &str, &str)] = &[
    ("AT", "ATU", "99999999"),
    ("BE", "BE", "0999999999|1999999999"),
    ("BG", "BG", "999999999|9999999999"),
    ("CY", "CY", "99999999A"),
    ("CZ", "CZ", "99999999|999999999|9999999999"),
    ("DE", "DE", "999999999"),
    ("DK", "DK", "99999999"),
    ("EE", "EE", "999999999"),
    ("GR", "EL", "999999999"),
    ("ES", "ES", "X9999999X"),
    ("FI", "FI", "99999999"),
    ("FR", "FR", "XX999999999"),
    ("HR", "HR", "99999999999"),
    ("HU", "HU", "99999999"),
    ("IE", "IE", "9999999A|9999999AA|9A99999A"),
    ("IT", "IT", "99999999999"),
    ("LT", "LT", "999999999|999999999999"),
    ("LU", "LU", "99999999"),
    ("LV", "LV", "99999999999"),
    ("MT", "MT", "99999999"),
    ("NL", "NL", "999999999B99"),
    ("PL", "PL", "9999999999"),
    ("PT", "PT", "999999999"),
    ("RO", "RO", "99|999|9999|99999|999999|9999999|99999999|999999999|9999999999"),
    ("SE", "SE", "999999999901"),
    ("SI", "SI", "99999999"),
    ("SK", "SK", "9999999999"),
];

/// Non-EU countries: `(country, prefix to strip if present, pattern, type)`.
const OTHER: &[(&str, &str, &str, &str)] = &[
    ("GB", "GB", "999999999|999999999999", "gb_vat"),
    ("CH", "CHE", "999999999MWST|999999999TVA|999999999IVA|999999999", "ch_vat"),
    ("NO", "NO", "999999999MVA|999999999", "no_vat"),
    ("US", "", "999999999", "us_ein"),
    ("AU", "", "99999999999", "au_abn"),
    ("CA", "", "999999999RT9999|999999999", "ca_bn"),
    ("IN", "", "99AAAAA9999A9X9", "in_gst"),
    ("NZ", "", "99999999|999999999", "nz_gst"),
];

fn matches(pattern: &str, s: &str) -> bool {
    pattern.split('|').any(|p| {
        p.len() == s.len()
            && p.chars().zip(s.chars()).all(|(p, c)| match p {
                '9' => c.is_ascii_digit(),
                'A' => c.is_ascii_uppercase(),
                'X' => c.is_ascii_digit() || c.is_ascii_uppercase(),
                lit => lit == c,
            })
    })
}

/// Whether Tally knows the tax id format of `country` (ISO 3166-1 alpha-2).
pub fn supported(country: &str) -> bool {
    EU.iter().any(|(c, ..)| *c == country) || OTHER.iter().any(|(c, ..)| *c == country)
}

/// Checks `raw` against the format of `country`; the error is a sentence for the form field.
pub fn validate(country: &str, raw: &str) -> Result<TaxId, String> {
    let country = country.trim().to_ascii_uppercase();
    let s: String = raw.chars().filter(|c| !matches!(c, ' ' | '.' | '-')).collect::<String>().to_ascii_uppercase();
    if s.is_empty() {
        return Err("Enter a tax id, or leave the field empty.".into());
    }
    if let Some((_, prefix, pattern)) = EU.iter().find(|(c, ..)| *c == country) {
        // The 2-letter prefix is optional on input and always stored.
        let short = &prefix[..2];
        let body = s.strip_prefix(short).unwrap_or(&s);
        let body = if *prefix == "ATU" { body.strip_prefix('U').unwrap_or(body) } else { body };
        if matches(pattern, body) {
            return Ok(TaxId { value: format!("{prefix}{body}"), kind: "eu_vat" });
        }
        return Err(format!(
            "That is not a {country} VAT number: expected {}, for example {}.",
            describe(prefix, pattern),
            example(prefix, pattern)
        ));
    }
    if let Some((_, prefix, pattern, kind)) = OTHER.iter().find(|(c, ..)| *c == country) {
        let body = if prefix.is_empty() { s.as_str() } else { s.strip_prefix(prefix).unwrap_or(&s) };
        if matches(pattern, body) {
            let value = if prefix.is_empty() { body.to_string() } else { format!("{prefix}{body}") };
            return Ok(TaxId { value, kind });
        }
        return Err(format!(
            "That is not a valid {country} tax id: expected {}, for example {}.",
            describe(prefix, pattern),
            example(prefix, pattern)
        ));
    }
    Err(format!("Tax ids for {country} are not supported yet; leave the field empty or contact support."))
}

fn describe(prefix: &str, pattern: &str) -> String {
    let first = pattern.split('|').next().unwrap_or_default();
    let digits = first.chars().filter(|c| *c == '9').count();
    if first.chars().all(|c| c == '9') {
        format!("{}{digits} digits", if prefix.is_empty() { String::new() } else { format!("{prefix} followed by ") })
    } else {
        format!("the {prefix}{first} pattern (9 = digit, A = letter)")
    }
}

fn example(prefix: &str, pattern: &str) -> String {
    let first = pattern.split('|').next().unwrap_or_default();
    let body: String = first
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            '9' => char::from(b'0' + ((i as u8 * 7 + 1) % 10)),
            'A' => 'B',
            'X' => '1',
            lit => lit,
        })
        .collect();
    format!("{prefix}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu_vat_numbers_are_normalised_with_their_prefix() {
        assert_eq!(
            validate("FR", "fr 61 954 506 077").unwrap(),
            TaxId { value: "FR61954506077".into(), kind: "eu_vat" }
        );
        assert_eq!(validate("DE", "123456789").unwrap().value, "DE123456789");
        assert_eq!(validate("AT", "ATU12345678").unwrap().value, "ATU12345678");
        assert_eq!(validate("GR", "EL123456789").unwrap().value, "EL123456789");
        assert_eq!(validate("NL", "NL123456789B01").unwrap().value, "NL123456789B01");
        assert_eq!(validate("SE", "556677889901").unwrap().value, "SE556677889901");
    }

    #[test]
    fn wrong_formats_get_a_sentence_naming_the_expected_shape() {
        let e = validate("DE", "DE12345").unwrap_err();
        assert!(e.contains("DE VAT number") && e.contains("9 digits"), "{e}");
        assert!(validate("FR", "FR123").is_err());
        assert!(validate("NL", "NL123456789").is_err());
        assert!(validate("US", "12-34").is_err());
        assert!(validate("ZZ", "123").unwrap_err().contains("not supported"));
        assert!(validate("DE", "  ").is_err());
    }

    #[test]
    fn other_countries_have_their_own_types() {
        assert_eq!(validate("GB", "GB 123 4567 89").unwrap(), TaxId { value: "GB123456789".into(), kind: "gb_vat" });
        assert_eq!(validate("US", "12-3456789").unwrap(), TaxId { value: "123456789".into(), kind: "us_ein" });
        assert_eq!(validate("CH", "CHE-123.456.789 MWST").unwrap().kind, "ch_vat");
        assert_eq!(validate("AU", "51 824 753 556").unwrap().kind, "au_abn");
    }

    #[test]
    fn every_example_in_an_error_message_is_itself_valid() {
        for (c, prefix, pattern) in EU {
            let ex = example(prefix, pattern);
            assert!(validate(c, &ex).is_ok(), "{c}: {ex}");
        }
        for (c, prefix, pattern, _) in OTHER {
            let ex = example(prefix, pattern);
            assert!(validate(c, &ex).is_ok(), "{c}: {ex}");
        }
    }
}
