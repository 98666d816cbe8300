"""A table made through a profiling kit against `proxyless profile --backend onnxruntime` on
the same CPU, and the kit table's prediction of networks it has not seen.

    .venv/bin/python bench/kit_vs_profile.py --space fashion --out bench/results/kit

1. `proxyless profile --space SPACE --backend onnxruntime --threads 1 --calibrate 0`: the
   direct table.
2. `proxyless profile --space SPACE --kit DIR --kit-check 40`, then the kit's own script as a
   device would run it, with torch and proxyless made unimportable (`python profile_kit.py
   --threads 1`), then `proxyless profile --space SPACE --from-kit timings.json`: the kit
   table, calibrated on the kit's 20 calibration networks.
3. Per layer: kit / direct and the share within 10%, raw and on one time base, beside the
   control: the direct profile repeated after the kit, against the first. Then the kit
   table's calibrated prediction of the kit's 40 check networks (never used in the
   calibration) against their kit timings.
The tables are measured one after the other, each on the time base of its own first group's
anchor run: the ratio of two tables' anchors says how far the machine's speed moved between
their starts, and "one time base" divides it out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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


def compare(say, name: str, table: dict, direct: dict) -> dict[str, float]:
    """Per-layer ratios of `table` to `direct`, raw and on one time base (each table's entries
    are on the time base of its first group's anchor run: the ratio of the two anchors is
    how much faster the machine was at one table's start than at the other's)."""
    ratios = {key: table["entries"][key]["ms"] / direct["entries"][key]["ms"]
              for key in direct["entries"]}
    base = direct["meta"]["anchor_ms"] / table["meta"]["anchor_ms"]
    for label, factor in (("raw", 1.0), (f"one time base (x{base:.3f})", base)):
        ordered = sorted(r * factor for r in ratios.values())
        within = sum(abs(r - 1) <= 0.10 for r in ordered)
        tail = len(ordered) // 20
        say(f"{name}, {label}: median x{statistics.median(ordered):.3f}, 5th-95th percentile "
            f"x{ordered[tail]:.3f}-x{ordered[-1 - tail]:.3f}, worst x{ordered[0]:.3f} / "
            f"x{ordered[-1]:.3f}; within 10%: {within}/{len(ordered)} = "
            f"{100 * within / len(ordered):.1f}%")
    return ratios


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
    # the control: the direct profile once more, after the kit, as it drifts with the machine
    again_path = out / "direct_again.json"
    again_path.unlink(missing_ok=True)
    proxyless("profile", "--space", args.space, "--backend", "onnxruntime", "--threads", "1",
              "--calibrate", "0", "--out", str(again_path), "--no-progress")
    direct = json.loads(direct_path.read_text())
    table = json.loads(kit_table.read_text())
    again = json.loads(again_path.read_text())
    ratios = compare(say, "kit / direct", table, direct)
    compare(say, "direct again / direct (the control)", again, direct)
    check = table["meta"]["kit_check"]
    say(f"{check['samples']} unseen networks (timed through the kit): calibrated MAPE "
        f"{check['calibrated']['mape']:.2f}%, Spearman {check['calibrated']['spearman']:.3f}, "
        f"within 10%: {check['calibrated']['within_10pct']:.1f}% (goal >= 95%); table sum "
        f"alone: MAPE {check['table_sum']['mape']:.2f}%, within 10% "
        f"{check['table_sum']['within_10pct']:.1f}%")
    sys.path.insert(0, str(HERE / "src"))
    from proxyless.latency.kit import table_from_kit
    from proxyless.model.space import load_space

    _, detail = table_from_kit(load_space(args.space), timings)
    errors = sorted(((p - m) / m * 100, a) for p, m, a in zip(
        detail["predicted_ms"], detail["measured_ms"], detail["architectures"], strict=True))
    say("largest errors of the calibrated prediction: " + ", ".join(
        f"{e:+.1f}%" for e, _ in sorted(errors, key=lambda x: -abs(x[0]))[:4]))
    size = sum(f.stat().st_size for f in kit.rglob("*") if f.is_file()
               and not f.name.endswith(".weights"))
    written = sum(f.stat().st_size for f in kit.rglob("*.weights"))
    say(f"kit size as shipped: {size / 1e6:.1f} MB (the weights the script writes on the "
        f"device: {written / 1e6:.0f} MB)")
    (out / "check_networks.json").write_text(json.dumps(
        [{"arch": a, "error_pct": e} for e, a in errors], indent=1))
    shutil.rmtree(kit)  # tens of MB to GBs of graphs and generated weights: not kept
    (out / "kit_vs_profile.txt").write_text("\n".join(lines) + "\n")
    (out / "layer_ratios.json").write_text(json.dumps(ratios, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
