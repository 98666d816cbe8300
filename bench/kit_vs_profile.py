"""A table made through a profiling kit against `proxyless profile --backend onnxruntime` on
the same CPU, and the kit table's prediction of networks it has not seen.

    .venv/bin/python bench/kit_vs_profile.py --space fashion --out bench/results/kit

1. `proxyless profile --space SPACE --backend onnxruntime --threads 1 --calibrate 0`: the
   direct table.
2. `proxyless profile --space SPACE --kit DIR --kit-check 40`, then the kit's own script as a
   device would run it, with torch and proxyless made unimportable (`python profile_kit.py
   --threads 1`), then `proxyless profile --space SPACE --from-kit timings.json`: the kit
   table, calibrated on the kit's 20 calibration networks.
3. Per layer: kit / direct, the share within 10%; and the kit table's calibrated prediction of
   the kit's 40 check networks (never used in the calibration) against their kit timings.
The two tables are measured one after the other, each on its own anchor time base; the
anchor network's latency in each says how far the machine's speed moved between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
WITHOUT_TORCH = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['proxyless'] = "
                 "None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def proxyless(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(HERE / "src")}
    done = subprocess.run([sys.executable, "-m", "proxyless.cli", *args], env=env,
                          capture_output=True, text=True, check=True)
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="fashion")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", type=int, default=40, help="unseen networks in the kit")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    started = time.perf_counter()
    direct_path = out / "direct.json"
    direct_path.unlink(missing_ok=True)
    proxyless("profile", "--space", args.space, "--backend", "onnxruntime", "--threads", "1",
              "--calibrate", "0", "--out", str(direct_path), "--no-progress")
    say(f"direct profile: {time.perf_counter() - started:.0f} s")
    kit = out / "kit"
    started = time.perf_counter()
    say(proxyless("profile", "--space", args.space, "--kit", str(kit), "--kit-check",
                  str(args.check), "--no-progress").splitlines()[0])
    say(f"kit made in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    timings = out / "timings.json"
    subprocess.run([sys.executable, "-c", WITHOUT_TORCH, str(kit / "profile_kit.py"),
                    "--threads", "1", "--out", str(timings)], check=True, capture_output=True)
    say(f"kit timed by profile_kit.py (no torch, no proxyless) in "
        f"{time.perf_counter() - started:.0f} s")
    kit_table = out / "kit_table.json"
    say(proxyless("profile", "--space", args.space, "--from-kit", str(timings), "--out",
                  str(kit_table)).rstrip())
    direct = json.loads(direct_path.read_text())
    table = json.loads(kit_table.read_text())
    ratios = {key: table["entries"][key]["ms"] / direct["entries"][key]["ms"]
              for key in direct["entries"]}
    within = [abs(r - 1) <= 0.10 for r in ratios.values()]
    ordered = sorted(ratios.values())
    anchors = direct["meta"]["anchor_ms"], table["meta"]["anchor_ms"]
    say(f"anchor network: direct {anchors[0]:.4f} ms, kit {anchors[1]:.4f} ms "
        f"(x{anchors[1] / anchors[0]:.3f})")
    tail = len(ordered) // 20
    say(f"per layer, kit / direct over {len(ratios)} layers: median "
        f"x{statistics.median(ordered):.3f}, 5th-95th percentile x{ordered[tail]:.3f}-"
        f"x{ordered[-1 - tail]:.3f}, worst x{ordered[0]:.3f} / x{ordered[-1]:.3f}")
    say(f"layers within 10% of the direct profile: {sum(within)}/{len(within)} = "
        f"{100 * sum(within) / len(within):.1f}% (goal >= 95%)")
    check = table["meta"]["kit_check"]
    say(f"{check['samples']} unseen networks (timed through the kit): calibrated MAPE "
        f"{check['calibrated']['mape']:.2f}%, Spearman {check['calibrated']['spearman']:.3f}, "
        f"within 10%: {check['calibrated']['within_10pct']:.1f}% (goal >= 95%); table sum "
        f"alone: MAPE {check['table_sum']['mape']:.2f}%, within 10% "
        f"{check['table_sum']['within_10pct']:.1f}%")
    size = sum(f.stat().st_size for f in kit.rglob("*") if f.is_file()
               and not f.name.endswith(".weights"))
    say(f"kit size as shipped (without the weights the script writes): {size / 1e6:.1f} MB")
    (out / "kit_vs_profile.txt").write_text("\n".join(lines) + "\n")
    (out / "layer_ratios.json").write_text(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
