#!/usr/bin/env bash
# The status page, tested in a real browser: Debian's chromium driven by
# playwright-core (tests/browser/status_page.mjs).
#
# Two offices, phila-da and nyc-da, are made and pinned to each other
# through the debug `casemesh` binary, in a temporary directory, on
# loopback ports; phila-da serves its status page (refreshed every 2 s) and
# issues an auditor's certificate, which the browser presents.
#
# Installs what it needs if it is missing: Debian's chromium (apt-get, as
# root) and playwright-core at the version tests/browser/package-lock.json
# pins, into $CARGO_TARGET_DIR/browser-test (never a browser download).
# Writes the page's screenshot to $CARGO_TARGET_DIR/status-page.png.
# Nothing it starts talks to anything but 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD

target=${CARGO_TARGET_DIR:-target}
case $target in
  /*) ;;
  *) target=$repo/$target ;;
esac
chromium=/usr/bin/chromium
# Bounded waits, in seconds.
ready_secs=60

say() { printf '== %s\n' "$*"; }
die() {
  printf 'status_page.sh: %s\n' "$*" >&2
  exit 1
}

# --- What the test runs on -------------------------------------------------

if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "$chromium is missing: install Debian's chromium (as root: apt-get install --no-install-recommends chromium)"
  fi
  say "apt-get install chromium"
  apt-get install -y -qq --no-install-recommends chromium \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } \
    || die "could not install Debian's chromium"
  [ -x "$chromium" ] || die "Debian's chromium installed no $chromium"
fi

command -v node >/dev/null 2>&1 || die "node (version 20 or later) is missing"
command -v npm >/dev/null 2>&1 || die "npm is missing"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "node $(node --version) is too old: playwright-core needs 20 or later"

# playwright-core at the pinned version, installed again only when the lock
# file changes. It has no install script and downloads no browser.
modules=$target/browser-test
if ! cmp -s tests/browser/package-lock.json "$modules/package-lock.json" \
  || [ ! -f "$modules/node_modules/playwright-core/package.json" ]; then
  say "npm ci playwright-core (into $modules)"
  mkdir -p "$modules"
  cp tests/browser/package.json tests/browser/package-lock.json "$modules/"
  (cd "$modules" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

# The debug binary, or the one CASEMESH_BIN names.
if [ -n "${CASEMESH_BIN:-}" ]; then
  bin=$CASEMESH_BIN
else
  say "cargo build (the casemesh binary)"
  cargo build --quiet --bin casemesh
  bin=$target/debug/casemesh
fi
[ -x "$bin" ] || die "no casemesh binary at $bin"

printf 'chromium: %s\nplaywright-core: %s\nnode: %s\n' \
  "$("$chromium" --version 2>/dev/null)" \
  "$(node -p "require('$modules/node_modules/playwright-core/package.json').version")" \
  "$(node --version)"

# --- Two offices on loopback -----------------------------------------------

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  # SIGTERM, then (after 10 s) SIGKILL: nothing outlives the test.
  local pid deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    for log in "$work"/*.log; do
      [ -f "$log" ] || continue
      printf '\n--- last lines of %s\n' "${log##*/}" >&2
      tail -n 30 "$log" >&2
    done
  fi
  # It holds the offices' private keys.
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Three free loopback ports, bound at once so that they differ.
read -r phila_port nyc_port page_port < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# `casemesh init` of office $1 listening on port $2; sets $fingerprint.
init() {
  local out
  out=$("$bin" init --office "$1" --data "$work/$1" --listen "127.0.0.1:$2")
  fingerprint=$(sed -n 's/^ *office fingerprint: *//p' <<<"$out")
  [[ $fingerprint == sha256:* ]] || die "init of $1 printed no fingerprint:
$out"
}
init phila-da "$phila_port"
phila_fingerprint=$fingerprint
init nyc-da "$nyc_port"
nyc_fingerprint=$fingerprint

# phila-da's status page: `listen` and `refresh_secs` set inside the
# [status_page] table init wrote.
refresh_secs=2
toml=$work/phila-da/casemesh.toml
awk -v listen="127.0.0.1:$page_port" -v refresh="$refresh_secs" '
  /^\[/ { in_page = ($0 == "[status_page]") }
  in_page && /^refresh_secs *=/ { print "listen = \"" listen "\""; print "refresh_secs = " refresh; done = 1; next }
  { print }
  END { if (!done) exit 1 }
' "$toml" >"$toml.new" || die "no refresh_secs in the [status_page] table of $toml"
mv "$toml.new" "$toml"
"$bin" check-config --data "$work/phila-da" >"$work/check-config.out" \
  || die "check-config refused phila-da's casemesh.toml: $(cat "$work/check-config.out")"

for office in phila-da nyc-da; do
  "$bin" serve --data "$work/$office" >"$work/$office.out" 2>"$work/$office.log" &
  pids+=("$!")
done

# Until $2 succeeds, for at most $ready_secs; $1 says what is awaited.
wait_for() {
  local what=$1
  shift
  local deadline=$((SECONDS + ready_secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "waited ${ready_secs} s for $what"
    fi
    for pid in "${pids[@]}"; do
      kill -0 "$pid" 2>/dev/null || die "a casemesh serve exited while waiting for $what"
    done
    sleep 0.2
  done
}
wait_for "phila-da's node to answer" "$bin" status --data "$work/phila-da"
wait_for "nyc-da's node to answer" "$bin" status --data "$work/nyc-da"
# The node binds its status page before it serves gRPC: no probe of that
# port here (a bare TCP connection would be logged as a refused handshake).

say "pinning phila-da and nyc-da to each other"
"$bin" peer add --office nyc-da --peer-endpoint "https://127.0.0.1:$nyc_port" \
  --ca-cert "$work/nyc-da/office-ca.pem" --fingerprint "$nyc_fingerprint" \
  --data "$work/phila-da"
"$bin" peer add --office phila-da --peer-endpoint "https://127.0.0.1:$phila_port" \
  --ca-cert "$work/phila-da/office-ca.pem" --fingerprint "$phila_fingerprint" \
  --data "$work/nyc-da"

# Records for the grant the browser test makes, and an auditor to look.
for title in "Stop on Broad St" "Statement of the bus driver" "Bodycam log"; do
  "$bin" record put --collection 2026-0042 --kind report --title "$title" \
    --body "$title, as written at phila-da" --data "$work/phila-da" >/dev/null
done
"$bin" user issue --name ada --role auditor --out "$work/ada" --data "$work/phila-da" >/dev/null
# Another auditor's certificate as the PKCS#12 file a browser imports
# (`user issue --p12`), its password random and in a 0600 file.
p12_password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
(umask 077 && printf '%s\n' "$p12_password" >"$work/p12-password")
"$bin" user issue --name grace --role auditor --out "$work/grace" --p12 \
  --p12-password-file "$work/p12-password" --data "$work/phila-da" >/dev/null
p12=$work/grace/grace.p12
[ -f "$p12" ] || die "user issue --p12 wrote no $p12"

say "node tests/browser/status_page.mjs (chromium at https://127.0.0.1:$page_port/)"
CASEMESH_BIN=$bin \
  PHILA_DATA=$work/phila-da \
  STATUS_URL=https://127.0.0.1:$page_port/ \
  REFRESH_SECS=$refresh_secs \
  CLIENT_CERT=$work/ada/ada-cert.pem \
  CLIENT_KEY=$work/ada/ada-key.pem \
  CLIENT_P12=$p12 \
  CLIENT_P12_PASSPHRASE=$p12_password \
  CHROMIUM=$chromium \
  BROWSER_TEST_MODULES=$modules \
  SCREENSHOT=$target/status-page.png \
  node tests/browser/status_page.mjs
