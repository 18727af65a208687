# Shared by scripts/run and scripts/test: installs what a fresh Debian/Ubuntu machine lacks.
# Every step is skipped when its tool is already there, so a second run costs nothing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CARGO_LEPTOS_VERSION=0.3.10   # 0.3.11 needs rustc 1.96
LEPTOSFMT_VERSION=0.1.33
export PATH="$HOME/.cargo/bin:$ROOT/end2end/node_modules/.bin:$PATH"
# The server binary cargo-leptos builds (honours CARGO_TARGET_DIR, as CI sets it).
TALLY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tally"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "need root for: $*" >&2; return 1; fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# The wasm-bindgen version pinned in Cargo.lock; the CLI must match it exactly.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}

ensure_build_tools() {
  command -v cargo >/dev/null || { echo "Rust is not installed: see https://rustup.rs" >&2; exit 1; }
  if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -q "$CARGO_LEPTOS_VERSION"; then
    log "installing cargo-leptos $CARGO_LEPTOS_VERSION (about 15 minutes, once)"
    cargo install --locked cargo-leptos --version "$CARGO_LEPTOS_VERSION"
  fi
  local wbg; wbg="$(wasm_bindgen_version)"
  if ! wasm-bindgen --version 2>/dev/null | grep -q " $wbg\$"; then
    log "installing wasm-bindgen-cli $wbg (must equal Cargo.lock's wasm-bindgen)"
    # Not --locked: its lock file names a webpki-roots release the registry does not serve.
    cargo install --force wasm-bindgen-cli --version "$wbg"
  fi
  if ! leptosfmt --version 2>/dev/null | grep -q "$LEPTOSFMT_VERSION"; then
    log "installing leptosfmt $LEPTOSFMT_VERSION (the view! formatter, about a minute)"
    cargo install --locked leptosfmt --version "$LEPTOSFMT_VERSION"
  fi
  command -v npm >/dev/null || { log "installing Node.js and npm"; apt_install nodejs npm; }
  if [ ! -x "$ROOT/end2end/node_modules/.bin/wasm-opt" ] || [ "$ROOT/end2end/package-lock.json" -nt "$ROOT/end2end/node_modules/.package-lock.json" ]; then
    log "installing npm packages (Playwright, binaryen's wasm-opt)"
    (cd "$ROOT/end2end" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${DATABASE_URL:-}" ]; then
    log "installing PostgreSQL (server binaries for the embedded database)"
    apt_install postgresql
  fi
  command -v psql >/dev/null || apt_install postgresql-client
}

# Debian's redis-server: the REDIS_URL cache tests start a throwaway one on a free port.
ensure_redis() {
  command -v redis-server >/dev/null || { log "installing redis-server for the REDIS_URL tests"; apt_install redis-server; }
}

# Debian's nginx: the reverse-proxy tests put a real one in front of the app.
ensure_nginx() {
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || { log "installing nginx for the reverse-proxy tests"; apt_install nginx; }
}

# aiosmtpd (PyPI): the real SMTP server the mail tests send through (tests/support/smtp_sink.py).
ensure_smtp_sink() {
  python3 -c 'import aiosmtpd' 2>/dev/null || { log "installing aiosmtpd for the mail tests"; python3 -m pip install --quiet --disable-pip-version-check aiosmtpd; }
}

# Starts nginx from tests/support/nginx.conf on 127.0.0.1:$1 in front of $2 (host:port), with
# its files under $3; prints its pid.
start_nginx() {
  local port="$1" upstream="$2" dir="$3" bin
  bin="$(command -v nginx || echo /usr/sbin/nginx)"
  mkdir -p "$dir"
  sed -e "s|{listen}|127.0.0.1:$port|" -e "s|{upstream}|$upstream|" -e "s|{dir}|$dir|g" "$ROOT/tests/support/nginx.conf" >"$dir/nginx.conf"
  "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >/dev/null 2>&1 &
  echo $!
}

ensure_browser() {
  if [ ! -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ]; then
    log "installing Debian's Chromium for the browser tests"
    apt_install chromium
  fi
}

# Release build of the server and the hydrated wasm bundle (wasm-opt from npm binaryen).
build_release() {
  log "building Tally (release)"
  (cd "$ROOT" && cargo leptos build --release)
  prune_site
  precompress_site
}

# The release build names the site's files after their content (tally.<hash>.css, the hashes in
# hash.txt beside the binary); files of earlier builds leave target/site/pkg, so only what this
# build's pages reference is served and precompressed.
prune_site() {
  local hashes f name keep
  hashes="$(dirname "$TALLY_BIN")/hash.txt"
  [ -f "$hashes" ] || return 0
  keep="$(awk -F': *' 'NF == 2 { print "tally." $2 "." $1 }' "$hashes")"
  for f in "$ROOT"/target/site/pkg/*; do
    [ -f "$f" ] || continue
    name="$(basename "$f")"
    name="${name%.br}"
    name="${name%.gz}"
    grep -qxF "$name" <<<"$keep" || rm -f "$f"
  done
}

# Brotli (-q 11) and gzip (-9) beside each wasm, JS and CSS file of the site, served as they are
# to browsers that accept them (the app ignores them when one is older than its source). Without
# brotli, and no way to install it, only gzip: the app then serves gzip to every browser.
precompress_site() {
  command -v brotli >/dev/null || { log "installing brotli"; apt_install brotli || true; }
  local f br=1
  command -v brotli >/dev/null || { br=0; log "brotli unavailable: precompressing with gzip only"; }
  for f in "$ROOT"/target/site/pkg/*.wasm "$ROOT"/target/site/pkg/*.js "$ROOT"/target/site/pkg/*.css; do
    [ -f "$f" ] || continue
    rm -f "$f.br"
    gzip -9 -n -k -f "$f"
    [ "$br" = 0 ] || brotli -q 11 -k -f "$f"
    # The source's exact time (brotli keeps whole seconds): the app takes an older file for stale.
    touch -r "$f" "$f.gz"
    [ "$br" = 0 ] || touch -r "$f" "$f.br"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
