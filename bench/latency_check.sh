#!/usr/bin/env bash
# Latency model vs end-to-end latency on this machine's CPU (batch 1, 1 thread): profile with
# calibration as `proxyless run` does (--min-time 10, 20 calibration networks), then check on
# 40 fresh architectures. ONNX Runtime (the default runtime) and PyTorch eager for the fashion
# space; SPACES="fashion imagenet" adds the paper's space (~10 more minutes). Keep the machine
# otherwise idle: ~5 minutes for fashion.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/latency}
SPACES=${SPACES:-fashion}
mkdir -p "$OUT"
for space in $SPACES; do
  for backend in onnxruntime torch; do
    table="$OUT/$space-$backend.json"
    rm -f "$table"
    .venv/bin/proxyless profile --space "$space" --backend "$backend" --out "$table" \
      --threads 1 --batch 1 --min-time 10 --no-progress
    .venv/bin/proxyless latency-check --table "$table" --samples 40 --no-progress \
      --plot "$OUT/$space-$backend-check.png"
  done
done
