//! Invoice documents: a one-page PDF (PDF 1.4, the standard Helvetica font, no dependencies)
//! carrying the seller, the billing name, address and tax id, the line and the totals.

use super::world::{Customer, Order, Org};
use crate::domain::money::format_cents_exact as format_cents;

/// `(invoice number, PDF bytes)`.
pub fn render(org: &Org, o: &Order, c: &Customer) -> (String, Vec<u8>) {
    let mut lines: Vec<(f32, String)> = vec![
        (20.0, format!("Invoice {}", o.invoice_number)),
        (11.0, format!("Date: {}", o.created_at.format("%Y-%m-%d"))),
        (11.0, format!("Seller: {} (via Polar, merchant of record)", org.name)),
        (11.0, String::new()),
        (13.0, "Bill to".into()),
        (11.0, o.billing_name.clone().or(c.name.clone()).unwrap_or_else(|| c.email.clone())),
    ];
    if let Some(a) = &o.billing_address {
        for part in [&a.line1, &a.line2].into_iter().flatten() {
            lines.push((11.0, part.clone()));
        }
        let city = [a.postal_code.clone(), a.city.clone(), a.state.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !city.is_empty() {
            lines.push((11.0, city));
        }
        lines.push((11.0, crate::domain::countries::name(&a.country).unwrap_or(&a.country).to_string()));
    }
    if let Some((value, kind)) = &c.tax_id {
        lines.push((11.0, format!("Tax id: {value} ({kind})")));
    }
    lines.push((11.0, c.email.clone()));
    lines.push((11.0, String::new()));
    lines.push((13.0, "Items".into()));
    lines.push((11.0, format!("{}    {}", o.description, format_cents(o.amount, &o.currency))));
    lines.push((11.0, String::new()));
    lines.push((11.0, format!("Subtotal: {}", format_cents(o.amount, &o.currency))));
    lines.push((11.0, format!("Tax: {}", format_cents(o.tax_amount, &o.currency))));
    lines.push((13.0, format!("Total: {}", format_cents(o.amount + o.tax_amount, &o.currency))));
    if o.refunded_amount > 0 {
        lines.push((
            11.0,
            format!(
                "Refunded: {} (tax {})",
                format_cents(o.refunded_amount + o.refunded_tax_amount, &o.currency),
                format_cents(o.refunded_tax_amount, &o.currency)
            ),
        ));
    }
    lines.push((11.0, format!("Status: {}", o.status)));
    (o.invoice_number.clone(), pdf(&lines))
}

/// Text as a PDF string literal in WinAnsi (Latin-1 subset); other characters become `?`.
fn pdf_string(s: &str) -> Vec<u8> {
    let mut out = vec![b'('];
    for ch in s.chars() {
        match ch {
            '(' | ')' | '\\' => {
                out.push(b'\\');
                out.push(ch as u8);
            }
            c if (c as u32) < 0x7f && (c as u32) >= 0x20 => out.push(c as u8),
            c if (0xa0..=0xff).contains(&(c as u32)) => out.push(c as u32 as u8),
            _ => out.push(b'?'),
        }
    }
    out.push(b')');
    out
}

fn pdf(lines: &[(f32, String)]) -> Vec<u8> {
    let mut content = Vec::new();
    let mut y = 780.0f32;
    for (size, text) in lines {
        y -= size * 1.5;
        content.extend_from_slice(format!("BT /F1 {size} Tf 56 {y:.1} Td ").as_bytes());
        content.extend(pdf_string(text));
        content.extend_from_slice(b" Tj ET\n");
    }
    let objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>".to_vec(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
        [format!("<< /Length {} >>\nstream\n", content.len()).into_bytes(), content, b"\nendstream".to_vec()].concat(),
    ];
    let mut out = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
    let mut offsets = vec![];
    for (i, obj) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(obj);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!("trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_xref_points_at_each_object() {
        let doc = pdf(&[(12.0, "Hello (world) \\ Müller €".into())]);
        assert!(doc.starts_with(b"%PDF-1.4"));
        let pos = doc.windows(10).rposition(|w| w == b"startxref\n").unwrap();
        let start: usize = std::str::from_utf8(&doc[pos + 10..]).unwrap().lines().next().unwrap().parse().unwrap();
        let xref = std::str::from_utf8(&doc[start..]).unwrap();
        assert!(xref.starts_with("xref"));
        let entries: Vec<usize> = xref.lines().skip(3).take(5).map(|l| l[..10].parse().unwrap()).collect();
        for (i, off) in entries.iter().enumerate() {
            assert!(doc[*off..].starts_with(format!("{} 0 obj", i + 1).as_bytes()));
        }
        assert!(doc.windows(7).any(|w| w == b"\\(world"));
    }
}
