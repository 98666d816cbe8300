#!/usr/bin/env bash
# Latency model vs end-to-end latency on this machine's CPU (torch backend, batch 1, 1 thread)
# for the fashion and imagenet presets: profile (with calibration), then check on 50 fresh
# architectures. Takes ~10 minutes; keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/latency}
mkdir -p "$OUT"
for space in fashion imagenet; do
  rm -f "$OUT/$space.json"
  .venv/bin/proxyless profile --space "$space" --out "$OUT/$space.json" --threads 1 --batch 1 \
    --no-progress
  .venv/bin/proxyless latency-check --table "$OUT/$space.json" --samples 50 --no-progress \
    --plot "$OUT/$space-check.png"
done
