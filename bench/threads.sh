#!/usr/bin/env bash
# One ONNX Runtime thread or two at batch 1 (the default `--profile-threads`): uniform networks
# of the fashion and imagenet spaces timed on 1 and 2 threads of ONNX Runtime and PyTorch, the
# settings interleaved over 3 rounds (`proxyless cross-latency`, medians). ~1.5 minutes; keep
# the machine otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/threads}
ARCHS=$(mktemp -d)
.venv/bin/python - "$ARCHS" <<'PY'
import sys
from proxyless import Architecture, load_space
for space in ("fashion", "imagenet"):
    for token in ("k3e3", "k5e6", "k7e6"):
        Architecture.uniform(load_space(space), token).save(f"{sys.argv[1]}/{space}-{token}.json")
PY
.venv/bin/proxyless cross-latency "$ARCHS"/fashion-*.json "$ARCHS"/imagenet-k3e3.json \
  "$ARCHS"/imagenet-k7e6.json --settings onnxruntime:b1:t1 onnxruntime:b1:t2 torch:b1:t1 \
  torch:b1:t2 --rounds 3 --out "$OUT" --no-progress
