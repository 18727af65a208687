# Shared by the benchmarks that run the release app (scripts/bench-pages, scripts/bench-size):
# starts it on its own database and the built-in Polar stand-in, signs accounts up over HTTP,
# and measures what a first visit to a page downloads.
# shellcheck shell=bash

# Starts the release app on a fresh database named $1; sets BENCH_BASE, BENCH_DB_URL,
# BENCH_ADMIN_URL, BENCH_CONTROLS and BENCH_WORK (logs), and stops the app on exit.
bench_start_app() {
  local db="$1" port
  BENCH_ADMIN_URL="${TEST_DATABASE_URL:-$("$TALLY_BIN" db-url)}"
  psql "$BENCH_ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  BENCH_DB_URL="${BENCH_ADMIN_URL%/*}/$db"
  port="$(free_port)"
  BENCH_BASE="http://127.0.0.1:$port"
  BENCH_CONTROLS="$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
  BENCH_WORK="$ROOT/target/$db"
  rm -rf "$BENCH_WORK" && mkdir -p "$BENCH_WORK"
  log "starting the release app on $BENCH_BASE (local mode, its own database)"
  DATABASE_URL="$BENCH_DB_URL" LEPTOS_SITE_ADDR="127.0.0.1:$port" APP_URL="$BENCH_BASE" POLAR_MODE=local \
    POLAR_STANDIN_STATE_FILE=off POLAR_STANDIN_CONTROLS_TOKEN="$BENCH_CONTROLS" SIGNUP_MAX_PER_HOUR=1000 \
    LEPTOS_SITE_ROOT=target/site LEPTOS_ENV=PROD RUST_LOG=warn \
    "$TALLY_BIN" serve >"$BENCH_WORK/server.log" 2>&1 &
  BENCH_SERVER=$!
  trap 'kill $BENCH_SERVER 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do curl -fs "$BENCH_BASE/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
}

# Signs up $1 over HTTP as a browser without JavaScript would; prints the session cookie.
bench_sign_up() {
  local email="$1" jar="$BENCH_WORK/$1.jar"
  curl -fs -o /dev/null -c "$jar" -H "Origin: $BENCH_BASE" -H "Accept: text/html" \
    --data-urlencode "email=$email" --data-urlencode "password=correct horse battery" "$BENCH_BASE/api/signup"
  awk '$6 ~ /tally_session$/ { print $6 "=" $7 }' "$jar"
}

# What a first visit to page $1 (with cookie $2, if any) downloads: the page and every asset it
# references (/pkg, /assets). Prints one line per file: "path identity gzip browser", the bytes
# as served to a client that accepts nothing, one that accepts gzip only, and one that accepts
# what browsers do (gzip, deflate, br: precompressed brotli where the build made it).
bench_first_visit() {
  local path="$1" cookie="${2:-}" html asset h=()
  [ -z "$cookie" ] || h=(-H "Cookie: $cookie")
  html="$(curl -fs --compressed "${h[@]}" "$BENCH_BASE$path")"
  size() { curl -fs "${h[@]}" -H "Accept-Encoding: $1" -o /dev/null -w '%{size_download}' "$BENCH_BASE$asset"; }
  for asset in "$path" $(printf '%s' "$html" | grep -oE '(href|src)="/(pkg|assets)[^"]+"' | sed -E 's/^(href|src)="//; s/"$//' | sort -u); do
    echo "$asset $(size identity) $(size gzip) $(size 'gzip, deflate, br')"
  done
}
