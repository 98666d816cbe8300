"""Networks specialised per device (issue 13): the paper's GPU / CPU / mobile table, on what
this machine reaches.

1. `proxyless run` on the `fashion` space and the same data for three latency settings that
   differ in kind: PyTorch batch 1 with 1 thread (latency), ONNX Runtime batch 1 with 1 thread
   (what CPU deployments run), PyTorch batch 64 with 2 threads (throughput). Each run profiles
   its own table (cached), searches at the same fraction of its own latency range, retrains
   the found network (`--retrain-epochs`) and reports. A run folder that finished is kept.
2. `proxyless cross-latency` over the three found networks (each measured on every setting):
   `OUT/matrix.md`, `matrix.json`, `architectures.png`.
3. `proxyless compare` over the three runs: `OUT/compare/`.
4. The authors' released networks (GPU, CPU, mobile; imagenet space, 224x224) in a matrix of
   their own: measured on the same kinds of settings here (batch 16 for throughput, to keep
   the minutes down) and predicted on the Pixel 1 with the authors' table:
   `OUT/released/matrix.md`.

    .venv/bin/python bench/devices.py                  # ~35 min on 2 cores, keep them idle

Every step is a `proxyless` command, printed before it runs, so any of them can be rerun by
hand.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path

SETTINGS = {  # name: (backend, batch, threads)
    "torch-b1-t1": ("torch", 1, 1),
    "onnxruntime-b1-t1": ("onnxruntime", 1, 1),
    "torch-b64-t2": ("torch", 64, 2),
}
REFERENCE = Path(str(resources.files("proxyless") / "reference"))


def proxyless(*args: str) -> None:
    command = [sys.executable, "-m", "proxyless.cli", *args]
    print("$ proxyless " + " ".join(args), flush=True)
    subprocess.run(command, check=True)


def run_folder(out: Path, name: str, args) -> Path:
    backend, batch, threads = SETTINGS[name]
    folder = out / name
    if (folder / "results.json").exists():
        print(f"{name}: done before ({folder})", flush=True)
        return folder
    options = ["run", "--out", str(folder), "--budget", args.budget,
               "--retrain-epochs", str(args.retrain_epochs), "--profile-backend", backend,
               "--profile-batch", str(batch), "--profile-threads", str(threads),
               "--threads", "2", "--no-progress"]
    if folder.exists():
        options.append("--resume")
    proxyless(*options)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="bench/results/devices")
    parser.add_argument("--budget", default="quick")
    parser.add_argument("--retrain-epochs", type=int, default=3)
    parser.add_argument("--min-time", type=float, default=5.0,
                        help="seconds of timing per setting in the matrices")
    parser.add_argument("--skip-released", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [run_folder(out, name, args) for name in SETTINGS]
    settings = [f"{b}:b{n}:t{t}" for b, n, t in SETTINGS.values()]
    proxyless("cross-latency", *map(str, runs), "--settings", *settings,
              "--min-time", str(args.min_time), "--out", str(out), "--no-progress")
    proxyless("compare", *map(str, runs), "--out", str(out / "compare"))
    if not args.skip_released:
        released = [str(REFERENCE / f"proxyless_{n}.config") for n in ("gpu", "cpu", "mobile")]
        proxyless("cross-latency", *released, "--names", "GPU model", "CPU model",
                  "mobile model", "--settings", "torch:b1:t1", "onnxruntime:b1:t1",
                  "torch:b16:t2", "--table", str(REFERENCE / "mobile_trim.yaml"),
                  "--min-time", str(args.min_time), "--out", str(out / "released"),
                  "--no-progress")


if __name__ == "__main__":
    main()
