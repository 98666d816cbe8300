"""Time a proxyless profiling kit on this device: needs only Python 3.8+, numpy and onnxruntime.

    python profile_kit.py --threads 1 --out timings.json

This file is copied into every kit made by `proxyless profile --space SPACE --kit DIR`; run it
from anywhere, inside the kit's folder or naming it (`--kit DIR`). It checks the kit (every
file's SHA-256, and that the kit and this script are of one version), writes each graph's
weights (random values: latency does not depend on them, and the kit stays small), then times
every layer and network as `proxyless profile --backend onnxruntime` does: round-robin for at
least --min-time seconds and --repeats rounds, one untimed run then two timed ones per visit,
the 10th percentile kept, and a fixed anchor network timed beside every group so that drift in
the device's speed is divided out. Bring timings.json back and make the table with
`proxyless profile --space SPACE --from-kit timings.json --out TABLE`.
"""

import argparse
import hashlib
import json
import os
import platform
import sys
import time

try:  # all the device needs besides Python; a clear message where one is missing (main)
    import numpy
    import onnxruntime as ort
except ImportError as missing:
    numpy = ort = None
    MISSING = missing

KIT_FORMAT = "proxyless-kit/1"
FLOAT32 = 1  # ONNX TensorProto.FLOAT


def fail(message):
    sys.exit(f"profile_kit.py: {message}")


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_kit(folder):
    """The kit's manifest, after checking its version and every file's hash."""
    manifest_path = os.path.join(folder, "kit.json")
    if not os.path.isfile(manifest_path):
        fail(f"no kit.json in {folder!r}; run this script inside the kit's folder or pass "
             "--kit DIR")
    try:
        with open(manifest_path) as f:
            kit = json.load(f)
    except (OSError, ValueError) as err:
        fail(f"{manifest_path} cannot be read ({err}); copy the kit again")
    if not isinstance(kit, dict) or kit.get("format") != KIT_FORMAT:
        found = kit.get("format") if isinstance(kit, dict) else None
        fail(f"this kit is of version {found!r}, this script of {KIT_FORMAT!r} (made by "
             "another proxyless); use the profile_kit.py that came with the kit, or make the "
             "kit again")
    own = sha256(os.path.abspath(__file__))
    if kit.get("script_sha256") not in (None, own) and os.path.samefile(
            os.path.dirname(os.path.abspath(__file__)), folder):
        fail("profile_kit.py differs from the kit's own (its SHA-256 does not match "
             "kit.json); copy the kit again")
    damaged = []
    for work in kit["workloads"]:
        path = os.path.join(folder, work["file"])
        if not os.path.isfile(path) or sha256(path) != work["sha256"]:
            damaged.append(work["file"])
    if damaged:
        fail(f"{len(damaged)} file(s) of the kit are missing or changed (e.g. {damaged[0]}); "
             "copy the whole kit folder again")
    return kit


def write_weights(folder, work, numpy):
    """The graph's external weights file: random values in the right shapes (a fixed seed,
    scaled like a layer's initialisation so nothing overflows or goes subnormal)."""
    weights = work.get("weights")
    if not weights:
        return
    data = bytearray(weights["size"])
    rng = numpy.random.default_rng(0)
    for tensor in weights["tensors"]:
        count = tensor["length"] // 4
        fan_in = 1
        for dim in tensor["dims"][1:]:
            fan_in *= dim
        values = (rng.uniform(-1.0, 1.0, count) / max(fan_in, 1) ** 0.5).astype("<f4")
        data[tensor["offset"]:tensor["offset"] + tensor["length"]] = values.tobytes()
    path = os.path.join(folder, os.path.dirname(work["file"]), weights["file"])
    with open(path, "wb") as f:
        f.write(data)


def session(folder, work, threads, numpy, ort):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    model = ort.InferenceSession(os.path.join(folder, work["file"]), options,
                                 providers=["CPUExecutionProvider"])
    rng = numpy.random.default_rng(1)
    feed = {"x": rng.standard_normal(work["input"]).astype(numpy.float32)}
    return lambda: model.run(None, feed)


def time_group(runs, warmup, repeats, min_time, numpy):
    """(p10 ms, interquartile range ms, runs timed) of each run, timed round-robin."""
    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    started, rounds = time.perf_counter(), 0
    while rounds < repeats or time.perf_counter() - started < min_time:
        for run, record in zip(runs, times):
            run()  # untimed: each visit times the workload with its weights in cache
            for _ in range(2):
                t = time.perf_counter()
                run()
                record.append((time.perf_counter() - t) * 1e3)
        rounds += 1
    out = []
    for record in times:
        q10, q25, q75 = numpy.percentile(numpy.asarray(record), [10, 25, 75])
        out.append((float(q10), float(q75 - q25), len(record)))
    return out


def write_json(path, data):
    """Write `path` whole or not at all (a kill mid-write leaves the previous file)."""
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(partial, path)


def resume(path, kit_sha, settings):
    """(timings, anchor reference) of an earlier, interrupted run of this kit with these
    settings; nothing where there was none (or it was of another kit or other settings)."""
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return {}, None
    if saved.get("kit_sha256") != kit_sha or saved.get("settings") != settings:
        print(f"{path}: of another kit or other settings; timing everything again")
        return {}, None
    print(f"resuming: {len(saved['timings'])} workloads already timed ({path})")
    return saved["timings"], saved["reference"]


def device_info(threads, numpy, ort):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "onnxruntime": ort.__version__, "threads": threads}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", default=os.path.dirname(os.path.abspath(__file__)),
                        help="the kit's folder (default: this script's)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--out", default="timings.json", help="where to write the timings")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--min-time", type=float, default=20.0,
                        help="seconds of round-robin timing per group (default 20)")
    parser.add_argument("--chunk", type=int, default=128,
                        help="workloads per group, timed together on one time base")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.warmup < 0 or args.min_time < 0 \
            or args.chunk < 1:
        fail("--threads, --repeats and --chunk must be >= 1, --warmup and --min-time >= 0")
    if numpy is None or ort is None:
        fail(f"{MISSING}; install them with `pip install numpy onnxruntime`")
    kit = load_kit(args.kit)
    works = {w["name"]: w for w in kit["workloads"]}
    anchor = works[kit["anchor"]]
    for work in kit["workloads"]:
        write_weights(args.kit, work, numpy)
    kit_sha = sha256(os.path.join(args.kit, "kit.json"))
    settings = {"warmup": args.warmup, "repeats": args.repeats, "min_time": args.min_time,
                "threads": args.threads, "statistic": "p10"}
    progress_file = args.out + ".progress"
    timings, reference = resume(progress_file, kit_sha, settings)
    todo = [w for w in kit["workloads"]
            if w["name"] != anchor["name"] and w["name"] not in timings]
    groups = [todo[i:i + args.chunk] for i in range(0, len(todo), args.chunk)]
    anchor_run = session(args.kit, anchor, args.threads, numpy, ort)
    for number, group in enumerate(groups, 1):
        runs = [session(args.kit, w, args.threads, numpy, ort) for w in group]
        results = time_group([*runs, anchor_run], args.warmup, args.repeats, args.min_time,
                             numpy)
        anchor_ms = results[-1][0]
        reference = reference or anchor_ms
        speed = anchor_ms / reference
        for work, (ms, spread, count) in zip(group, results):
            timings[work["name"]] = {"ms": ms / speed, "spread": spread / speed,
                                     "count": count, "raw_ms": ms, "speed": speed}
        # after every group: an interrupted run (--out the same) goes on from here
        write_json(progress_file, {"kit_sha256": kit_sha, "settings": settings,
                                   "reference": reference, "timings": timings})
        print(f"group {number}/{len(groups)}: {len(group)} workloads, anchor {anchor_ms:.3f} "
              f"ms (speed x{speed:.3f})", flush=True)
    timings[anchor["name"]] = {"ms": reference, "spread": 0.0, "count": 0,
                               "raw_ms": reference, "speed": 1.0}
    result = {"format": KIT_FORMAT, "kit_sha256": kit_sha,
              "kit": {k: v for k, v in kit.items() if k != "workloads"},
              "workloads": [{k: w[k] for k in ("name", "kind", "key", "arch", "role")
                             if k in w} for w in kit["workloads"]],
              "device": device_info(args.threads, numpy, ort), "settings": settings,
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "anchor_ms": reference, "timings": timings}
    write_json(args.out, result)
    os.remove(progress_file)
    print(f"{len(timings)} timings -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
