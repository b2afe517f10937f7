#!/usr/bin/env bash
# Runs casemesh's fuzz targets on the stable toolchain, one after another,
# one libFuzzer job each, and prints per target the inputs executed, the
# time taken (wall and CPU) and the crashes found.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 510: the 7 targets then take about 60
# minutes of one core. Without TARGETs, all of them run.
#
# cargo-fuzz is installed if missing (`cargo install cargo-fuzz --locked`);
# it and the fuzz crate's dependencies come from crates.io, and nothing
# else is contacted. RUSTC_BOOTSTRAP=1 lets stable rustc take the flags
# cargo-fuzz passes. Built without a sanitizer (casemesh forbids `unsafe`,
# so the fuzzer looks for panics and overflows, which debug assertions
# catch); set FUZZ_SANITIZER=address to build with ASan instead.
#
# Each target starts from fuzz/seeds/<target> (committed, regenerated with
# `cargo run --example fuzz_seeds`) and keeps what it finds in
# fuzz/corpus/<target>; a crashing input lands in fuzz/artifacts/<target>,
# the output of each run in fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"

ALL=(store_values record_canonical audit_entry feed_item bundle_verify bundle_members requests)
per_target=${1:-510}
shift || true
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${ALL[@]}"); fi
case $per_target in '' | *[!0-9]*)
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
  ;;
esac

export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
# All targets at once (they share the build of casemesh). Debug
# assertions on: integer overflow panics, as in tests.
cargo fuzz build --sanitizer "$sanitizer" --debug-assertions --target-dir "$target_dir"

mkdir -p logs
printf '%-18s %12s %8s %8s %8s\n' target executions wall_s cpu_s crashes >logs/summary.txt
for t in "${targets[@]}"; do
  bin=$target_dir/$triple/release/$t
  mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
  before=$(find "artifacts/$t" -type f | wc -l)
  start=$(date +%s)
  TIMEFORMAT='%U %S'
  rc=0
  { time "$bin" -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      "corpus/$t" "seeds/$t" 2>"logs/$t.log"; } 2>"logs/$t.time" || rc=$?
  wall=$(($(date +%s) - start))
  cpu=$(awk '{ printf "%d", $1 + $2 }' "logs/$t.time")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -n 1)
  crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
  printf '%-18s %12s %8s %8s %8s\n' "$t" "${execs:-?}" "$wall" "$cpu" "$crashes" | tee -a logs/summary.txt
  if [ "$rc" -ne 0 ] && [ "$crashes" -eq 0 ]; then
    echo "$t: the fuzzer exited with $rc and left no input; see fuzz/logs/$t.log" >&2
  fi
done
echo
cat logs/summary.txt
