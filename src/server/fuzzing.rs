//! The properties the fuzz targets check (`fuzz/fuzz_targets/`, run by `scripts/fuzz`), kept
//! here so the corpora can also be replayed by the ordinary tests
//! (`tests/integration/fuzz_corpus.rs`). Each function takes arbitrary bytes and panics only
//! when a property fails.

use crate::domain::tax_id::validate;
use crate::domain::text_stats::{cost_of, parse_body, text_stats, valid_idempotency_key, MAX_CHARS};
use crate::server::billing::sync::{pack_credits, refund_of, subscription_allotment, MAX_METADATA_CREDITS};
use crate::server::config::Config;
use crate::server::polar::models::{Customer, CustomerState, Order, Subscription};
use crate::server::polar::webhook_signature::{sign, verify, KeyScheme, SignedHeaders};
use crate::server::webhooks::events::WebhookEvent;
use std::collections::HashMap;
use std::sync::OnceLock;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_767_225_600;

fn text(p: Option<&[u8]>) -> Option<&str> {
    p.and_then(|b| std::str::from_utf8(b).ok())
}

/// The webhook signature check never panics on any headers and body, accepts exactly what was
/// signed with the endpoint's secret under either of Polar's key schemes, and refuses the same
/// message with a byte of the body changed. Input: `id 0xff timestamp 0xff signature 0xff body`.
pub fn webhook_verify(data: &[u8]) {
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let (id, ts, sig) = (text(parts.next()), text(parts.next()), text(parts.next()));
    let body = parts.next().unwrap_or_default();
    let _ = verify(SECRET, SignedHeaders { id, timestamp: ts, signature: sig }, body, NOW);
    let Some(id) = id.filter(|i| !i.is_empty()) else { return };
    for scheme in [KeyScheme::Legacy, KeyScheme::Standard] {
        let Some(good) = sign(SECRET, scheme, id, NOW, body) else { panic!("the secret has both forms") };
        let ts = NOW.to_string();
        let headers = SignedHeaders { id: Some(id), timestamp: Some(&ts), signature: Some(&good) };
        assert!(verify(SECRET, headers, body, NOW).is_ok(), "a signed message must verify");
        if let Some(first) = body.first() {
            let mut tampered = body.to_vec();
            tampered[0] = first ^ 1;
            assert!(verify(SECRET, headers, &tampered, NOW).is_err(), "a changed body must not verify");
        }
    }
}

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let env: HashMap<String, String> =
            [("SESSION_SECRET", "fuzz-session-secret-fuzz-session-secret"), ("POLAR_STANDIN_STATE_FILE", "off")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        match Config::from_source(&env, String::new) {
            Ok(c) => c,
            Err(e) => panic!("fuzz configuration: {e}"),
        }
    })
}

/// Whatever a verified webhook carries, the parsers that read it (whose user it is, what a
/// refund says, what a plan's period grants, what a pack grants, the typed wire models) never
/// panic, and what they accept is within bounds.
pub fn webhook_event(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let kind = payload["type"].as_str().unwrap_or("order.paid").to_string();
    let _ = WebhookEvent::user_hint(&kind, &payload);
    let _ = WebhookEvent::parse(&kind, &payload);
    let d = &payload["data"];
    if let Ok(order) = serde_json::from_value::<Order>(d.clone()) {
        if let Ok((refunded, net, _)) = refund_of(&order) {
            assert!(refunded >= 0 && net >= 0);
        }
        if let Ok(Some(credits)) = pack_credits(config(), &order) {
            assert!((1..=MAX_METADATA_CREDITS).contains(&credits));
        }
    }
    if let Ok(sub) = serde_json::from_value::<Subscription>(d.clone()) {
        if let Ok(Some((_, credits))) = subscription_allotment(config(), &sub) {
            assert!((0..=MAX_METADATA_CREDITS).contains(&credits), "{credits}");
        }
    }
    let _ = serde_json::from_value::<CustomerState>(d.clone());
    let _ = serde_json::from_value::<Customer>(d.clone());
}

/// The tax-id validator never panics, and what it accepts is normalised for good: validating
/// the normalised value again gives it back unchanged. Input: two bytes naming a country, then
/// the id.
pub fn tax_id(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let country: String = data[..2].iter().map(|b| (b'A' + b % 26) as char).collect();
    let Ok(raw) = std::str::from_utf8(&data[2..]) else { return };
    if let Ok(t) = validate(&country, raw) {
        assert_eq!(validate(&country, &t.value).as_ref(), Ok(&t), "a normalised id validates to itself");
        assert!(t.value.len() <= 40 && t.value.chars().all(|c| c.is_ascii_alphanumeric()), "{t:?}");
    }
}

/// The metered API's request parsing never panics on any body or `Idempotency-Key`; an
/// accepted text is within the limit and costs at least one credit, never more than one per
/// 1,000 characters started. Input: `key \n body`.
pub fn metered_request(data: &[u8]) {
    let (key, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    if let Ok(k) = std::str::from_utf8(key) {
        if valid_idempotency_key(k) {
            assert!(!k.is_empty() && k.len() <= 255 && k.is_ascii());
        }
    }
    if let Ok(text) = parse_body(body) {
        let stats = text_stats(&text);
        assert!(stats.characters <= MAX_CHARS);
        let cost = cost_of(stats.characters);
        assert!(cost >= 1 && cost <= (MAX_CHARS as i64) / 1000 + 1);
        assert!(stats.words <= stats.characters && stats.sentences <= stats.characters.max(1));
    }
}

/// The target of each name (for the corpus replay).
pub fn target(name: &str) -> Option<fn(&[u8])> {
    Some(match name {
        "webhook_verify" => webhook_verify,
        "webhook_event" => webhook_event,
        "tax_id" => tax_id,
        "metered_request" => metered_request,
        _ => return None,
    })
}
