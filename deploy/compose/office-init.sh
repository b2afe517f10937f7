#!/bin/sh
# One office's init step (compose.yaml's <office>-init services): creates
# the office in its data volume if the volume is empty, enables the metrics
# listener on loopback for the image's HEALTHCHECK, and publishes what peer
# offices need to pin it (its office CA, fingerprint and endpoint: public
# files, no key) in the shared exchange volume. Run again, it leaves an
# existing office as it is and publishes the same files again.
#
# Environment: OFFICE (required); PORT (gRPC, default 7443);
# METRICS_LISTEN (default 127.0.0.1:9464; empty leaves the metrics listener
# off, and the HEALTHCHECK then fails); DATA (default /var/lib/casemesh);
# EXCHANGE (default /exchange).
set -eu

: "${OFFICE:?set OFFICE to the office id}"
PORT=${PORT:-7443}
METRICS_LISTEN=${METRICS_LISTEN-127.0.0.1:9464}
DATA=${DATA:-/var/lib/casemesh}
EXCHANGE=${EXCHANGE:-/exchange}

if [ -e "$DATA/casemesh.toml" ]; then
  echo "$OFFICE: the office exists in $DATA; init skipped"
elif [ -n "$(ls -A "$DATA")" ]; then
  echo "$OFFICE: $DATA holds files but no casemesh.toml; refusing to touch it" >&2
  exit 1
else
  # The node certificate names the compose service ($OFFICE), which is
  # the host name peers and users reach it by on the compose network.
  casemesh init --office "$OFFICE" --data "$DATA" --host "$OFFICE" \
    --listen "0.0.0.0:$PORT"
fi

# The HEALTHCHECK asks the metrics listener for /healthz: enable it on
# loopback, where it speaks plain HTTP. init writes an empty [metrics]
# table; an office whose table sets a listen address already keeps it.
config=$DATA/casemesh.toml
metrics_listen_set() {
  awk '/^\[/ { table = $1 }
       table == "[metrics]" && /^[[:space:]]*listen[[:space:]]*=/ { found = 1 }
       END { exit !found }' "$config"
}
if [ -n "$METRICS_LISTEN" ] && ! metrics_listen_set; then
  if grep -q '^\[metrics\]' "$config"; then
    sed "/^\[metrics\]/a listen = \"$METRICS_LISTEN\"" "$config" >"$config.new"
  else
    { cat "$config"; printf '\n[metrics]\nlisten = "%s"\n' "$METRICS_LISTEN"; } >"$config.new"
  fi
  # Over the old file's contents, so that its owner and mode stay.
  cat "$config.new" >"$config"
  rm "$config.new"
  echo "$OFFICE: metrics listener enabled on $METRICS_LISTEN"
fi

# Each file is written under a temporary name and renamed, so that a peer's
# setup step never reads half of one.
publish() {
  cat >"$EXCHANGE/.$1.tmp"
  mv "$EXCHANGE/.$1.tmp" "$EXCHANGE/$1"
}
publish "$OFFICE-office-ca.pem" <"$DATA/office-ca.pem"
casemesh fingerprint --data "$DATA" | publish "$OFFICE.fingerprint"
echo "https://$OFFICE:$PORT" | publish "$OFFICE.endpoint"
echo "$OFFICE: published $(cat "$EXCHANGE/$OFFICE.fingerprint") at $(cat "$EXCHANGE/$OFFICE.endpoint")"
