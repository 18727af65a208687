//! The Tally server binary: read the configuration, then serve (or run a maintenance command).

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> std::process::ExitCode {
    tally::server::cli::main().await
}

#[cfg(not(feature = "ssr"))]
pub fn main() {
    // The browser build has no binary; its entry point is `tally::hydrate`.
}
