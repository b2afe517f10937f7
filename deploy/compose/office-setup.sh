#!/bin/sh
# One office's setup step (compose.yaml's <office>-setup services), run
# against its running node with the office's first admin certificate: pins
# every peer office from the files their init steps published (checking the
# fingerprint); for the office that shares the case, writes a record in it
# and grants the collection to the peers; for an office that receives it,
# waits until its node holds the case. Idempotent: what is already pinned,
# written or granted is left as it is. Every wait is bounded.
#
# Environment: OFFICE and PEERS (space-separated office ids) required;
# SHARE_COLLECTION (a case to write a record in and grant) and SHARE_TO
# (the peers to grant it to; default PEERS) optional; EXPECT_ORIGIN and
# EXPECT_COLLECTION (a case this office must come to hold, from that
# office) optional; PORT (default 7443); DATA (default /var/lib/casemesh);
# EXCHANGE (default /exchange); WAIT_SECONDS (default 90).
set -eu

: "${OFFICE:?set OFFICE to the office id}"
: "${PEERS:?set PEERS to the peer office ids}"
PORT=${PORT:-7443}
DATA=${DATA:-/var/lib/casemesh}
EXCHANGE=${EXCHANGE:-/exchange}
WAIT_SECONDS=${WAIT_SECONDS:-90}
SHARE_COLLECTION=${SHARE_COLLECTION:-}
SHARE_TO=${SHARE_TO:-$PEERS}
EXPECT_ORIGIN=${EXPECT_ORIGIN:-}
EXPECT_COLLECTION=${EXPECT_COLLECTION:-}

# The CLI reaches the node by its service name, as a user on the compose
# network would (--data would use 127.0.0.1, which is this container's own).
cm() {
  casemesh "$@" --endpoint "https://$OFFICE:$PORT" \
    --cert "$DATA/admin/admin-cert.pem" --key "$DATA/admin/admin-key.pem" \
    --ca "$DATA/office-ca.pem"
}

# wait_for WHAT COMMAND...: runs COMMAND every second until it succeeds, for
# at most WAIT_SECONDS; then fails, showing COMMAND's last output.
wait_for() {
  what=$1
  shift
  waited=0
  until "$@" >/dev/null 2>&1; do
    waited=$((waited + 1))
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
      echo "$OFFICE: gave up after ${WAIT_SECONDS}s waiting for $what:" >&2
      "$@" >&2 || true
      exit 1
    fi
    sleep 1
  done
}

published() {
  [ -s "$EXCHANGE/$1-office-ca.pem" ] && [ -s "$EXCHANGE/$1.fingerprint" ] &&
    [ -s "$EXCHANGE/$1.endpoint" ]
}

wait_for "its node to answer" cm status

for peer in $PEERS; do
  if cm peer list | awk 'NR > 1 { print $1 }' | grep -qx "$peer"; then
    echo "$OFFICE: $peer is pinned already"
    continue
  fi
  wait_for "$peer's published office CA" published "$peer"
  cm peer add --office "$peer" --peer-endpoint "$(cat "$EXCHANGE/$peer.endpoint")" \
    --ca-cert "$EXCHANGE/$peer-office-ca.pem" \
    --fingerprint "$(cat "$EXCHANGE/$peer.fingerprint")"
done

if [ -n "$SHARE_COLLECTION" ]; then
  if [ -n "$(cm record list --collection "$SHARE_COLLECTION" --origin "$OFFICE" | awk 'NR > 1')" ]; then
    echo "$OFFICE: case $SHARE_COLLECTION holds records already"
  else
    id=$(cm record put --collection "$SHARE_COLLECTION" --kind incident-report \
      --title "Stop on Broad St" \
      --body "Incident report written by $OFFICE's compose setup step.")
    echo "$OFFICE: wrote $id in case $SHARE_COLLECTION"
  fi
  for peer in $SHARE_TO; do
    if cm share list --peer "$peer" |
      grep -Eq "^g-[^ ]+ +$peer +collection $SHARE_COLLECTION +active"; then
      echo "$OFFICE: case $SHARE_COLLECTION is granted to $peer already"
    else
      grant=$(cm share grant --peer "$peer" --collection "$SHARE_COLLECTION")
      echo "$OFFICE: granted case $SHARE_COLLECTION to $peer ($grant)"
    fi
  done
fi

# The records of a case this office was granted, from its origin.
holds() {
  [ -n "$(cm record list --collection "$EXPECT_COLLECTION" --origin "$EXPECT_ORIGIN" | awk 'NR > 1')" ]
}
if [ -n "$EXPECT_ORIGIN" ] && [ -n "$EXPECT_COLLECTION" ]; then
  wait_for "$EXPECT_ORIGIN's case $EXPECT_COLLECTION to arrive" holds
  echo "$OFFICE: holds $EXPECT_ORIGIN's case $EXPECT_COLLECTION:"
  cm record list --collection "$EXPECT_COLLECTION" --origin "$EXPECT_ORIGIN"
fi
echo "$OFFICE: set up"
