//! What the metered API sells: plain text statistics, and what a request for them costs.
//! Pure, so the browser could show a cost before calling, and the fuzzer can drive the parser.

use serde::Serialize;

/// The longest text one request may send, in characters.
pub const MAX_CHARS: usize = 100_000;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct TextStats {
    pub characters: usize,
    pub words: usize,
    pub lines: usize,
    pub sentences: usize,
}

/// Counts characters, words, lines and sentences.
pub fn text_stats(text: &str) -> TextStats {
    TextStats {
        characters: text.chars().count(),
        words: text.split_whitespace().count(),
        lines: if text.is_empty() { 0 } else { text.lines().count() },
        sentences: text.split(['.', '!', '?']).filter(|s| s.chars().any(|c| c.is_alphanumeric())).count(),
    }
}

/// One credit per started 1,000 characters, at least one.
pub fn cost_of(characters: usize) -> i64 {
    characters.div_ceil(1000).max(1) as i64
}

/// Why a request body was refused (nothing is spent for any of these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all (400 `malformed_json`), with the parser's message.
    Malformed(String),
    /// JSON, but `text` is missing, not a string or too long (422 `invalid_input`).
    Invalid(&'static str),
}

/// Reads `{"text": "…"}`: the text, or why the body is refused. Other keys are ignored.
pub fn parse_body(body: &[u8]) -> Result<String, BodyError> {
    #[derive(serde::Deserialize)]
    struct Body {
        text: Option<serde_json::Value>,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    match parsed.text {
        Some(serde_json::Value::String(s)) if s.chars().count() > MAX_CHARS => {
            Err(BodyError::Invalid("`text` may have at most 100000 characters."))
        }
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(BodyError::Invalid("`text` must be a string.")),
        None => Err(BodyError::Invalid("`text` is required.")),
    }
}

/// A client's `Idempotency-Key`: 1 to 255 printable ASCII characters (spaces allowed inside).
/// Anything else is refused rather than ignored: a key the server silently dropped would make
/// the client's retries spend again.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b)) && key.trim() == key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text() {
        assert_eq!(
            text_stats("Hello world. How are you?\nFine!"),
            TextStats { characters: 31, words: 6, lines: 2, sentences: 3 }
        );
        assert_eq!(text_stats(""), TextStats { characters: 0, words: 0, lines: 0, sentences: 0 });
        assert_eq!(text_stats("héllo"), TextStats { characters: 5, words: 1, lines: 1, sentences: 1 });
    }

    #[test]
    fn costs_one_credit_per_started_thousand_characters() {
        assert_eq!(cost_of(0), 1);
        assert_eq!(cost_of(1000), 1);
        assert_eq!(cost_of(1001), 2);
        assert_eq!(cost_of(100_000), 100);
    }

    #[test]
    fn bodies_are_parsed_or_refused_with_a_reason() {
        assert_eq!(parse_body(br#"{"text":"hi","other":1}"#), Ok("hi".into()));
        assert!(matches!(parse_body(br#"{"text": "#), Err(BodyError::Malformed(_))));
        assert_eq!(parse_body(br#"{"text":42}"#), Err(BodyError::Invalid("`text` must be a string.")));
        assert_eq!(parse_body(br#"{"txt":"x"}"#), Err(BodyError::Invalid("`text` is required.")));
        let long = format!(r#"{{"text":"{}"}}"#, "é".repeat(MAX_CHARS + 1));
        assert!(matches!(parse_body(long.as_bytes()), Err(BodyError::Invalid(_))));
        let just_fits = format!(r#"{{"text":"{}"}}"#, "é".repeat(MAX_CHARS));
        assert!(parse_body(just_fits.as_bytes()).is_ok(), "the limit counts characters, not bytes");
    }

    #[test]
    fn idempotency_keys_are_printable_and_bounded() {
        assert!(valid_idempotency_key("req-42"));
        assert!(valid_idempotency_key("k#2"), "any printable key is the client's own; the server derives the ledger's");
        assert!(valid_idempotency_key(&"a".repeat(255)));
        for bad in ["", " lead", "trail ", "tab\there", "é", &"a".repeat(256)] {
            assert!(!valid_idempotency_key(bad), "{bad:?}");
        }
    }
}
