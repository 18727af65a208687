//! Leptos' site options, read from the `LEPTOS_*` variables cargo-leptos sets, with the
//! defaults of this project's `Cargo.toml` when the binary is started directly.

use super::source::{var, ConfigError, Source};
use leptos::config::{Env, LeptosOptions};
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteOptions {
    pub output_name: String,
    pub site_root: String,
    pub pkg_dir: String,
    pub production: bool,
    /// The release build named the files after their content (`LEPTOS_HASH_FILES`; by default
    /// whether cargo-leptos wrote `hash.txt` beside this binary).
    pub hash_files: bool,
}

impl SiteOptions {
    pub(super) fn read(src: &dyn Source) -> Result<SiteOptions, ConfigError> {
        let env = |k: &str, d: &str| var(src, k).unwrap_or_else(|| d.to_string());
        Ok(SiteOptions {
            output_name: env("LEPTOS_OUTPUT_NAME", "tally"),
            site_root: env("LEPTOS_SITE_ROOT", "target/site"),
            pkg_dir: env("LEPTOS_SITE_PKG_DIR", "pkg"),
            production: env("LEPTOS_ENV", if cfg!(debug_assertions) { "DEV" } else { "PROD" })
                .eq_ignore_ascii_case("PROD"),
            hash_files: match var(src, "LEPTOS_HASH_FILES") {
                Some(v) => v.eq_ignore_ascii_case("true"),
                None => std::env::current_exe().is_ok_and(|exe| exe.with_file_name("hash.txt").exists()),
            },
        })
    }

    /// The options Leptos renders with, serving on `addr`.
    pub fn leptos_options(&self, addr: SocketAddr) -> LeptosOptions {
        LeptosOptions::builder()
            .output_name(self.output_name.as_str())
            .site_root(self.site_root.as_str())
            .site_pkg_dir(self.pkg_dir.as_str())
            .site_addr(addr)
            .env(if self.production { Env::PROD } else { Env::DEV })
            .hash_files(self.hash_files)
            .build()
    }
}
