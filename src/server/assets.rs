//! The site's built files under `/pkg` (the CSS, and the JS and wasm of pages with islands):
//! their names, how they are sent and how long browsers keep them.
//!
//! A release build names each file after its content (`tally.<hash>.css`, cargo-leptos's
//! `hash-files`) and writes the hashes to `hash.txt` beside the binary, read here once. Such a
//! file never changes, so it is cached for a year, `immutable`: a returning visitor downloads
//! nothing until a new build, and then only what changed. Any other file is revalidated on each
//! use (`no-cache`). A file the build precompressed (`scripts/lib.sh`: `.br` and `.gz` beside
//! it) goes out as it is to a browser that accepts it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::CACHE_CONTROL;
use http::HeaderValue;
use leptos::config::LeptosOptions;
use std::path::{Path, PathBuf};

/// The content hashes of one build, as cargo-leptos writes them (`js: …`, `wasm: …`, `css: …`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildHashes {
    pub css: Option<String>,
}

impl BuildHashes {
    pub fn parse(text: &str) -> BuildHashes {
        let mut hashes = BuildHashes::default();
        for line in text.lines() {
            if let Some((kind, hash)) = line.split_once(':') {
                if kind.trim() == "css" && !hash.trim().is_empty() {
                    hashes.css = Some(hash.trim().to_string());
                }
            }
        }
        hashes
    }
}

/// `hash.txt` beside the running binary (where cargo-leptos writes it and where Leptos reads
/// it for the islands' script names).
fn hash_file(options: &LeptosOptions) -> Option<PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.join(options.hash_file.as_ref()))
}

/// This build's hashes, read once per process; `None` when its files are not hashed
/// (`options.hash_files`, which Leptos's own script names follow too).
pub fn build_hashes(options: &LeptosOptions) -> Option<&'static BuildHashes> {
    static HASHES: std::sync::OnceLock<Option<BuildHashes>> = std::sync::OnceLock::new();
    if !options.hash_files {
        return None;
    }
    HASHES
        .get_or_init(|| {
            let text = std::fs::read_to_string(hash_file(options)?).ok()?;
            Some(BuildHashes::parse(&text))
        })
        .as_ref()
}

/// Where the page's stylesheet is: `/pkg/tally.<hash>.css`, or `/pkg/tally.css` unhashed.
pub fn stylesheet_href(options: &LeptosOptions) -> String {
    let hash = build_hashes(options).and_then(|h| h.css.as_deref());
    let name = match hash {
        Some(hash) => format!("{}.{hash}.css", options.output_name),
        None => format!("{}.css", options.output_name),
    };
    format!("/{}/{name}", options.site_pkg_dir)
}

/// Whether `name` is a content-hashed file name: `stem.<hash>.{css,js,wasm}`, the hash being
/// what cargo-leptos writes (22 base64url characters; anything from 16 is taken).
pub fn is_hashed(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [stem, hash, ext] => {
            !stem.is_empty()
                && hash.len() >= 16
                && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && matches!(*ext, "css" | "js" | "wasm")
        }
        _ => false,
    }
}

/// `/pkg/…`. Precompressed files are used only when none is older than what it compresses (a
/// build without that step): otherwise responses are compressed on the fly. Brotli at its
/// highest level is about a fifth smaller than gzip, and compressing again for every first
/// visit costs the server CPU.
pub fn pkg_files(options: &LeptosOptions) -> axum::Router {
    let dir = Path::new(options.site_root.as_ref()).join(options.site_pkg_dir.as_ref());
    let serve = tower_http::services::ServeDir::new(&dir);
    let serve = if precompressed_current(&dir) { serve.precompressed_br().precompressed_gzip() } else { serve };
    axum::Router::new().fallback_service(serve).layer(axum::middleware::from_fn(cache_control))
}

/// A year and `immutable` for a hashed file, revalidation for any other.
async fn cache_control(req: Request, next: Next) -> Response {
    let hashed = is_hashed(req.uri().path().rsplit('/').next().unwrap_or_default());
    let mut res = next.run(req).await;
    if res.status().is_success() || res.status() == http::StatusCode::NOT_MODIFIED {
        let policy = if hashed { "public, max-age=31536000, immutable" } else { "no-cache" };
        res.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static(policy));
    }
    res
}

/// Whether `dir` holds precompressed files (`.br`, `.gz`) and none is older than its source.
fn precompressed_current(dir: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut found = false;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("br" | "gz")) {
            continue;
        }
        match (modified(&path), modified(&path.with_extension(""))) {
            (Some(compressed), Some(source)) if compressed >= source => found = true,
            _ => {
                tracing::warn!(file = %path.display(), "a precompressed asset is older than its source, or has none: assets are compressed on the fly");
                return false;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_file_names_the_stylesheet() {
        let hashes = BuildHashes::parse("js: Ab3_-xYz0123456789abcd\nwasm: Zz9\ncss: Qq1-_w2e3r4t5y6u7i8o9p\n");
        assert_eq!(hashes.css.as_deref(), Some("Qq1-_w2e3r4t5y6u7i8o9p"));
        assert_eq!(BuildHashes::parse(""), BuildHashes::default());
        assert_eq!(BuildHashes::parse("css: \n"), BuildHashes::default(), "an empty hash is none");
    }

    #[test]
    fn only_content_hashed_names_are_immutable() {
        assert!(is_hashed("tally.Qq1-_w2e3r4t5y6u7i8o9p.css"));
        assert!(is_hashed("tally.Ab3_-xYz0123456789abcd.wasm"));
        assert!(is_hashed("tally.Ab3_-xYz0123456789abcd.js"));
        for name in [
            "tally.css",
            "tally.wasm",
            "tally.js",
            "tally.short.css",
            "tally.Ab3_-xYz0123456789abcd.html",
            "tally.Ab3_-xYz0123456789abcd.wasm.br",
            ".Ab3_-xYz0123456789abcd.css",
            "tally.Ab3/xYz0123456789abcd.css",
        ] {
            assert!(!is_hashed(name), "{name}");
        }
    }
}
