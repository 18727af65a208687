//! The Tally server binary: read the configuration, then serve (or run a maintenance command).

/// The server's allocator (see Cargo.toml: glibc's malloc was a sixth of a page render's CPU).
#[cfg(feature = "ssr")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally::server::cli::main().await
}

#[cfg(not(feature = "ssr"))]
pub fn main() {
    // The browser build has no binary; its entry point is `tally::hydrate`.
}
