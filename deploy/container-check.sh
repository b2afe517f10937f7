#!/usr/bin/env bash
# Checks the container deployment as far as a machine without any image
# registry allows, and says exactly what ran and what did not:
#
#   1. installs podman, buildah, runc, catatonit and busybox-static from
#      Debian if missing (as root, with apt-get);
#   2. assembles a root filesystem from this machine: the release binary
#      (built if missing), the shared libraries `ldd` lists, /etc/passwd and
#      /etc/group with the casemesh user (10001), the CA roots, busybox as
#      /bin/sh and the core utilities, and /var/lib/casemesh owned by 10001;
#   3. builds the runtime image from it with deploy/Containerfile.local
#      (FROM scratch: deploy/Containerfile's runtime stage without its base
#      image) as localhost/casemesh:check, and checks its configuration:
#      non-root user, entrypoint and command, volume, ports, healthcheck;
#   4. runs `casemesh --version` in it, trying the runtime settings this
#      kind of sandbox may need, in order, and keeps the first that works;
#   5. runs deploy/compose.yaml's three offices in one pod with
#      deploy/compose-in-pod.py (loopback only: the pod has no network but
#      its own loopback), twice, the second time on the volumes the first
#      left, and checks that the case reached nyc-da and boston-da.
#
# deploy/Containerfile itself is not built: its base images come from a
# registry. Nothing here contacts any address but 127.0.0.1 (apt-get
# aside): every podman call is given `--pull never` or needs no image, and
# the registries configuration it uses lists no registry.
#
# Usage: deploy/container-check.sh [--keep]
#   --keep  leave the image and podman storage in the work directory.
# Everything (podman storage, volumes, the root filesystem) lives in one
# work directory under /var/tmp, removed at the end unless --keep.
# Needs root (rootful podman). Not part of CI. Exit status 1 if a step
# failed.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

keep=0
if [ "${1:-}" = "--keep" ]; then
  keep=1
fi

image=localhost/casemesh:check
work=$(mktemp -d /var/tmp/casemesh-container-check.XXXXXX)
results=()

# result STATUS TEXT: records a line of the final report and prints it.
result() {
  results+=("$(printf '%-8s %s' "$1" "$2")")
  printf '>> %-8s %s\n' "$1" "$2"
}

podman_cmd=(podman --root "$work/storage" --runroot "$work/run" --storage-driver overlay)
buildah_cmd=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver overlay)

finish() {
  status=$?
  set +e
  if [ "$keep" -eq 0 ]; then
    "${podman_cmd[@]}" pod rm -f casemesh-check_pod >/dev/null 2>&1 || true
    "${podman_cmd[@]}" rm -af >/dev/null 2>&1 || true
    "${podman_cmd[@]}" volume prune -f >/dev/null 2>&1 || true
    "${podman_cmd[@]}" rmi -af >/dev/null 2>&1 || true
    # Overlay mounts may outlive podman's own cleanup.
    "${podman_cmd[@]}" system reset -f >/dev/null 2>&1 || true
    grep -o "$work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$work"
  fi
  echo
  echo "== container check: what ran"
  printf '%s\n' "${results[@]}"
  if [ "$keep" -eq 1 ]; then
    echo "kept: $work (podman --root $work/storage --runroot $work/run)"
  fi
  exit "$status"
}
trap finish EXIT

failed=0
fail() {
  result FAILED "$1"
  failed=1
}

# --- 1. Tools -----------------------------------------------------------------
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root: rootful podman and its storage need it" >&2
  exit 1
fi
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v runc >/dev/null 2>&1 || missing+=(runc)
command -v catatonit >/dev/null 2>&1 || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
/usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
fi
result ok "tools: $(podman --version), $(buildah --version | cut -d' ' -f1-3), $(runc --version | head -n1)"

# No registry at all: an image name that is not in local storage fails
# instead of being looked up anywhere.
printf 'unqualified-search-registries = []\n' >"$work/registries.conf"
export CONTAINERS_REGISTRIES_CONF=$work/registries.conf
# No systemd here: cgroups by cgroupfs, events to a file.
containers_conf() {
  # containers_conf FILE RUNTIME [ULIMIT...]
  local file=$1 runtime=$2
  shift 2
  {
    echo "[containers]"
    if [ "$#" -gt 0 ]; then
      printf 'default_ulimits = ['
      printf '"%s", ' "$@" | sed 's/, $//'
      printf ']\n'
    fi
    echo "[engine]"
    echo "runtime = \"$runtime\""
    echo "cgroup_manager = \"cgroupfs\""
    echo "events_logger = \"file\""
  } >"$file"
}

# --- 2. The root filesystem ---------------------------------------------------
target=${CARGO_TARGET_DIR:-$repo/target}
binary=$target/release/casemesh
if [ ! -x "$binary" ]; then
  echo "== cargo build --release --locked (no $binary yet)"
  cargo build --release --locked
fi
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc/ssl/certs,tmp,usr/local/bin,var/lib/casemesh}
install -m 0755 "$binary" "$rootfs/usr/local/bin/casemesh"
# The libraries and the loader, at the paths the binary asks for.
ldd "$binary" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
install -m 0755 /bin/busybox "$rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\ncasemesh:x:10001:10001:casemesh:/var/lib/casemesh:/usr/sbin/nologin\n' \
  >"$rootfs/etc/passwd"
printf 'root:x:0:\ncasemesh:x:10001:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
fi
chmod 1777 "$rootfs/tmp"
chown 10001:10001 "$rootfs/var/lib/casemesh"
chmod 0700 "$rootfs/var/lib/casemesh"
# ADD of a local tar keeps the owners in the archive (COPY would make
# everything root's, the data directory included).
context=$work/context
mkdir -p "$context"
tar -C "$rootfs" --numeric-owner -cf "$context/rootfs.tar" .
sed 's#^COPY \. /$#ADD rootfs.tar /#' deploy/Containerfile.local >"$context/Containerfile"
if ! grep -q '^ADD rootfs.tar /$' "$context/Containerfile"; then
  echo "deploy/Containerfile.local no longer has the line 'COPY . /' this script replaces" >&2
  exit 1
fi
result ok "root filesystem: $(du -sh "$rootfs" | cut -f1) ($(find "$rootfs" -type f | wc -l) files: casemesh, $(ldd "$binary" | grep -c '/') libraries, busybox)"

# --- 3. The image ---------------------------------------------------------------
containers_conf "$work/containers.conf" runc
export CONTAINERS_CONF=$work/containers.conf
if build_log=$(timeout 600 "${buildah_cmd[@]}" bud --pull-never --format docker \
  -f "$context/Containerfile" -t "$image" "$context" 2>&1); then
  size=$("${podman_cmd[@]}" image inspect --format '{{.Size}}' "$image")
  result ok "image $image built from deploy/Containerfile.local: $((size / 1000000)) MB"
else
  echo "$build_log" >&2
  fail "image build (buildah bud -f deploy/Containerfile.local): $(echo "$build_log" | tail -n 3)"
  exit 1
fi

"${podman_cmd[@]}" image inspect "$image" >"$work/inspect.json"
if config_report=$(/usr/bin/python3 - "$work/inspect.json" <<'EOF'
import json, sys
img = json.load(open(sys.argv[1]))[0]
c = img["Config"]
checks = [
    ("user is 10001:10001 (not root)", c.get("User") == "10001:10001"),
    ("entrypoint /usr/local/bin/casemesh", c.get("Entrypoint") == ["/usr/local/bin/casemesh"]),
    ("command serve --data /var/lib/casemesh", c.get("Cmd") == ["serve", "--data", "/var/lib/casemesh"]),
    ("volume /var/lib/casemesh", "/var/lib/casemesh" in (c.get("Volumes") or {})),
    ("ports 7443, 7444, 9464", set(c.get("ExposedPorts") or {}) == {"7443/tcp", "7444/tcp", "9464/tcp"}),
    ("healthcheck casemesh healthcheck --addr 127.0.0.1:9464",
     (img.get("Healthcheck") or c.get("Healthcheck") or {}).get("Test")
     == ["CMD", "/usr/local/bin/casemesh", "healthcheck", "--addr", "127.0.0.1:9464"]),
    ("stop signal SIGTERM", c.get("StopSignal") == "SIGTERM"),
]
for what, ok in checks:
    print(("ok       " if ok else "FAILED   ") + what)
sys.exit(0 if all(ok for _, ok in checks) else 1)
EOF
); then
  result ok "image configuration: $(echo "$config_report" | sed 's/^ok *//' | paste -sd ';' | sed 's/;/; /g')"
else
  echo "$config_report"
  fail "image configuration: $(echo "$config_report" | grep FAILED | paste -sd ';')"
fi

# --- 4. Running a container -----------------------------------------------------
# Options of every one-off run: no image is pulled, no network, and no
# healthcheck (podman would try to start its timer through systemd, which
# is not running here; the nodes' healthchecks are run by hand below).
once=(--rm --pull never --network none --no-healthcheck)
# Each setting in turn, until `casemesh --version` runs: podman's defaults
# (crun); crun with open-file and process limits no higher than this
# sandbox's own (podman otherwise asks for more than it may set); the same
# without cgroups; runc; runc with those limits.
attempt() {
  # attempt LABEL RUNTIME RUN_OPTIONS ULIMITS...
  local label=$1 runtime=$2 opts=$3
  shift 3
  containers_conf "$work/containers.conf" "$runtime" "$@"
  local out
  # shellcheck disable=SC2086 # opts holds separate podman options
  if out=$(timeout 120 "${podman_cmd[@]}" run "${once[@]}" $opts "$image" --version 2>"$work/stderr"); then
    result ok "container ran ($label): casemesh --version printed: $out"
    return 0
  fi
  result failed "container ($label): $(tail -n 1 "$work/stderr")"
  return 1
}
nofile=$(ulimit -Hn)
nproc=4096
ran=0
limits="nofile=$nofile:$nofile nproc=$nproc:$nproc"
for spec in "podman defaults (crun)|crun||" \
  "crun, nofile=$nofile nproc=$nproc|crun||$limits" \
  "crun, nofile=$nofile nproc=$nproc, --cgroups=disabled|crun|--cgroups=disabled|$limits" \
  "runc|runc||" \
  "runc, nofile=$nofile nproc=$nproc|runc||$limits"; do
  IFS='|' read -r label runtime opts ulimits <<<"$spec"
  # shellcheck disable=SC2086 # ulimits holds separate values
  if attempt "$label" "$runtime" "$opts" $ulimits; then
    ran=1
    break
  fi
done
if [ "$ran" -eq 0 ]; then
  fail "no container ran; the federation was not tried"
  exit 1
fi

# The non-root user inside, and what it may write.
if out=$(timeout 120 "${podman_cmd[@]}" run "${once[@]}" --entrypoint /bin/sh "$image" \
  -c 'id -u; id -g; stat -c "%u:%g %a" /var/lib/casemesh' 2>"$work/stderr"); then
  result ok "inside: uid $(echo "$out" | sed -n 1p), gid $(echo "$out" | sed -n 2p), /var/lib/casemesh $(echo "$out" | sed -n 3p)"
else
  fail "inside: $out $(cat "$work/stderr")"
fi

# `casemesh init` into a fresh volume, as the image's user: the volume's
# mount point is the data directory.
"${podman_cmd[@]}" volume create casemesh-check-init >/dev/null
if out=$(timeout 120 "${podman_cmd[@]}" run "${once[@]}" \
  -v casemesh-check-init:/var/lib/casemesh "$image" \
  init --office phila-da --data /var/lib/casemesh --host phila-da --listen 0.0.0.0:7443 2>&1); then
  result ok "init into an empty volume as uid 10001: $(echo "$out" | grep 'office fingerprint')"
  # The admin's files out of the volume, as docs/operating.md says to.
  "${podman_cmd[@]}" create --name casemesh-check-cp -v casemesh-check-init:/var/lib/casemesh "$image" >/dev/null
  if out=$("${podman_cmd[@]}" cp casemesh-check-cp:/var/lib/casemesh/admin "$work/admin-out" 2>&1) &&
    [ -s "$work/admin-out/admin-cert.pem" ] && [ -s "$work/admin-out/admin-key.pem" ]; then
    result ok "podman cp of /var/lib/casemesh/admin out of the volume: $(cd "$work/admin-out" && echo *)"
  else
    fail "podman cp of /var/lib/casemesh/admin out of the volume: $out"
  fi
  rm -rf "$work/admin-out"
  "${podman_cmd[@]}" rm -f casemesh-check-cp >/dev/null
else
  fail "init into an empty volume: $(echo "$out" | tail -n 2)"
fi
"${podman_cmd[@]}" volume rm -f casemesh-check-init >/dev/null

# --- 5. The three offices of compose.yaml ------------------------------------------
health=(--no-health)
if timeout 60 "${podman_cmd[@]}" run "${once[@]}" "$image" healthcheck --help >/dev/null 2>&1; then
  health=()
else
  result note "this casemesh has no healthcheck command (the metrics listener is not in it): the nodes run without [metrics], readiness is \`casemesh status\` inside the container, and HEALTHCHECK is not exercised"
fi
if timeout 900 /usr/bin/python3 deploy/compose-in-pod.py --podman "${podman_cmd[*]}" --image "$image" \
  --compose deploy/compose.yaml --workdir "$work" "${health[@]}" | tee "$work/compose.log"; then
  rounds=$(grep -c 'every one-shot service exited 0' "$work/compose.log" || true)
  arrived=$(grep -c "holds phila-da's case 2026-0042:" "$work/compose.log" || true)
  again=$(grep -c 'already' "$work/compose.log" || true)
  result ok "compose.yaml in a pod: $rounds rounds up; the case arrived $arrived times (nyc-da, boston-da, each round); $again steps found their work done already in round 2"
else
  fail "compose.yaml in a pod: $(grep -A3 '^FAILED' "$work/compose.log" | tail -n +2 | head -n 3 | paste -sd ' ')"
fi

[ "$failed" -eq 0 ]
