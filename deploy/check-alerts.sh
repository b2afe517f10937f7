#!/usr/bin/env bash
# Checks the monitoring files in deploy/: the alerting rules and their unit
# tests with promtool, the example Prometheus configuration, and the
# Grafana dashboard's JSON. Run by .ci/run; touches nothing outside a
# temporary directory (and, if promtool is missing, a cache directory).
#
# promtool comes from PATH, from $PROMTOOL, or else from Debian's
# `prometheus` package: the .deb is downloaded with `apt-get download` and
# unpacked into the cache directory, not installed, so no Prometheus service
# is created or started.
set -euo pipefail
cd "$(dirname "$0")"

cache="${CASEMESH_TOOLS:-$HOME/.cache/casemesh/tools}/prometheus"

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then
    echo "$PROMTOOL"
  elif command -v promtool >/dev/null 2>&1; then
    command -v promtool
  elif [ -x "$cache/usr/bin/promtool" ]; then
    echo "$cache/usr/bin/promtool"
  else
    return 1
  fi
}

if ! promtool=$(find_promtool); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool is missing: install Prometheus's promtool, or set PROMTOOL" >&2
    exit 1
  fi
  echo "== promtool from Debian's prometheus package (unpacked into $cache)"
  download=$(mktemp -d)
  # apt-get download writes into the current directory as the _apt user
  # where it can (and warns when it cannot): let _apt own the directory.
  chown _apt "$download" 2>/dev/null || true
  if ! (cd "$download" && timeout 300 apt-get download -q prometheus); then
    timeout 300 apt-get update -qq
    (cd "$download" && timeout 300 apt-get download -q prometheus)
  fi
  mkdir -p "$cache"
  dpkg-deb -x "$download"/prometheus_*.deb "$cache"
  rm -rf "$download"
  promtool="$cache/usr/bin/promtool"
fi
"$promtool" --version 2>&1 | head -n 1

echo "== promtool check rules prometheus/alerts.yml"
"$promtool" check rules prometheus/alerts.yml

echo "== promtool test rules prometheus/alerts.test.yml"
"$promtool" test rules prometheus/alerts.test.yml

# promtool checks that the client certificate and key the https job names
# exist. They are an auditor's credentials on a Prometheus server, never in
# this repository: check a copy whose paths point at empty stand-ins (their
# contents are not read), with alerts.yml beside it as prometheus.yml
# expects.
echo "== promtool check config prometheus/prometheus.yml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$promtool" check config --syntax-only prometheus/prometheus.yml
cp prometheus/prometheus.yml prometheus/alerts.yml "$work/"
mkdir -p "$work/certs/phila-da"
touch "$work/certs/phila-da/ca.pem" "$work/certs/phila-da/prometheus-cert.pem" \
  "$work/certs/phila-da/prometheus-key.pem"
sed -i "s#/etc/prometheus/casemesh/#$work/certs/#g" "$work/prometheus.yml"
if grep -v '^[[:space:]]*#' "$work/prometheus.yml" | grep -q /etc/prometheus; then
  echo "prometheus.yml names a file under /etc/prometheus this check does not stand in for" >&2
  exit 1
fi
"$promtool" check config "$work/prometheus.yml"

echo "== the Grafana dashboard is JSON"
python3 -m json.tool grafana/casemesh.json >/dev/null
echo "grafana/casemesh.json: valid JSON"
