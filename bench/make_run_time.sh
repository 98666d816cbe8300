#!/usr/bin/env bash
# What a new user's `make run` takes on this machine: a fresh clone of HEAD, its virtual
# environment made first (timed apart: `make venv`), an empty latency cache (so the device is
# profiled as on a first run), the defaults. Prints the wall time of the job, the CPU it ran
# on and the result lines, and keeps the log in OUT:
#   bench/make_run_time.sh                   # ~17 min on the 2-core Xeon we build on
# The README's and --help's times for `make run` quote this script's figure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-bench/results/make-run}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$ROOT" "$work/clone"
cd "$work/clone"
commit=$(git rev-parse --short HEAD)
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
start=$(date +%s)
make venv > "$work/make-venv.log" 2>&1
venv_seconds=$(( $(date +%s) - start ))
start=$(date +%s)
PROXYLESS_CACHE="$work/cache" make run > "$work/make-run.log" 2>&1
seconds=$(( $(date +%s) - start ))
cp "$work/make-run.log" "$ROOT/$OUT/make-run.log"
cp "$(ls -d runs/*/ | head -1)results.json" "$ROOT/$OUT/results.json"
{
  echo "make run on a fresh clone of $commit, empty latency cache, defaults"
  echo "cpu: $cpu ($(nproc) cores)"
  echo "make venv: $venv_seconds s"
  echo "make run, wall time: $((seconds / 60)) min $((seconds % 60)) s ($seconds s)"
  tail -n 4 "$work/make-run.log"
} | tee "$ROOT/$OUT/make_run_time.txt"
