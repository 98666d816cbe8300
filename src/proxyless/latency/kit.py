"""Profiling kits: latency tables of devices that cannot run PyTorch (a phone, a Raspberry Pi,
a Jetson with only ONNX Runtime).

    >>> make_kit(load_space("fashion"), "kit/")            # here: ONNX files + profile_kit.py
    $ python profile_kit.py --threads 1 --out timings.json  # there: numpy + onnxruntime only
    >>> table, check = table_from_kit(load_space("fashion"), "timings.json")   # here again

A kit holds every distinct layer of the space as an ONNX graph (`profile.layer_workloads`,
exported as `--backend onnxruntime` times them: `timer.export_onnx`), the anchor network, the
calibration networks `profile` would measure and as many more (`KIT_CALIBRATION`, drawn with
`calibration.CALIBRATION_SEED`), networks for a latency check (`check.CHECK_SEED`),
`kit.json` (what each file is, with its SHA-256) and `profile_kit.py`. The graphs keep their
weights outside (ONNX external data): the script writes random ones on the device, so a kit
of the imagenet space is a few MB, not GBs.
The table made from the timings is calibrated on the calibration networks, and checked on the
check networks as `latency-check` would check it here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, write_json_atomic
from proxyless.latency.calibration import (
    CALIBRATION_SEED,
    Calibration,
    checked_fit,
)
from proxyless.latency.check import CHECK_SEED, prediction_metrics
from proxyless.latency.cost import latency_model
from proxyless.latency.measure import anchor_architecture, spread_architectures
from proxyless.latency.profile import layer_workloads
from proxyless.latency.table import Entry, LatencyTable
from proxyless.latency.timer import export_onnx
from proxyless.model.architecture import decode
from proxyless.model.network import build_network
from proxyless.model.space import SearchSpace

KIT_FORMAT = "proxyless-kit/1"  # profile_kit.py carries the same: a kit and its script agree
SCRIPT = Path(__file__).with_name("profile_kit.py")
EXTERNAL_MIN_BYTES = 1024  # float tensors at least this large go to the generated weights
CHECK_NETWORKS = 20
# Calibration networks a kit carries: twice `profile`'s 20 (the first 20 are the same). On the
# fashion space 20 left 90-97% of unseen networks within 10% of the prediction, depending on
# the draw, 40 left 98-99% (resampled from two kits' 60 timed networks, bench/README.md);
# the device times one more group of networks (~20 s at the default --min-time).
KIT_CALIBRATION = 40


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version() -> str:
    try:
        return importlib.metadata.version("proxyless")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def _graph_without_weights(onnx_bytes: bytes, weights_file: str) -> tuple[bytes, dict | None]:
    """The graph with its large float initializers moved to external data in `weights_file`
    (which the device's script writes), and where each lies in that file."""
    import onnx  # heavy: loaded only where a kit is made
    from onnx.external_data_helper import set_external_data

    model = onnx.load_from_string(onnx_bytes)
    tensors, offset = [], 0
    for tensor in model.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        raw = tensor.raw_data or np.asarray(tensor.float_data, dtype="<f4").tobytes()
        if len(raw) < EXTERNAL_MIN_BYTES:
            continue
        set_external_data(tensor, weights_file, offset=offset, length=len(raw))
        tensor.ClearField("raw_data")
        tensor.ClearField("float_data")
        tensors.append({"offset": offset, "length": len(raw), "dims": list(tensor.dims)})
        offset += len(raw)
    weights = {"file": weights_file, "size": offset, "tensors": tensors} if tensors else None
    return model.SerializeToString(), weights


def make_kit(space: SearchSpace, folder: str | Path, batch: int = 1,
             calibration: int = KIT_CALIBRATION, check: int = CHECK_NETWORKS,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the kit of `space` into `folder` (made, or emptied of an older kit's files);
    returns its manifest."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / "kit.json").exists():
        raise ProxylessError(f"--kit {folder} holds other files; give a new or empty folder "
                             "(a kit's own folder is made again)")
    for sub in ("layers", "networks"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    workloads: list[dict[str, Any]] = []

    def add(name: str, sub: str, module: torch.nn.Module, shape: tuple[int, ...],
            **about: Any) -> None:
        graph, weights = _graph_without_weights(
            export_onnx(module.eval(), torch.randn(shape)), f"{name}.weights")
        path = folder / sub / f"{name}.onnx"
        path.write_bytes(graph)
        workloads.append({"name": name, "file": f"{sub}/{name}.onnx", "sha256": _sha256(graph),
                          "input": list(shape), "weights": weights, **about})

    layers = layer_workloads(space, batch)
    for n, (key, (build, shape)) in enumerate(layers.items()):
        add(f"l{n:04d}", "layers", build(), shape, kind="layer", key=key)
        if progress and (n + 1) % 50 == 0:
            progress(f"exported {n + 1}/{len(layers)} layers")
    networks = {"anchor": [anchor_architecture(space)],
                "calibration": spread_architectures(space, calibration, CALIBRATION_SEED),
                "check": spread_architectures(space, check, CHECK_SEED)}
    for role, archs in networks.items():
        for n, arch in enumerate(archs):
            add(f"{role}{n:03d}" if role != "anchor" else "anchor", "networks",
                build_network(arch), space.input_shape(batch), kind="network", role=role,
                arch=arch.encode())
    shutil.copyfile(SCRIPT, folder / "profile_kit.py")
    manifest = {"format": KIT_FORMAT, "proxyless": _version(), "space": space.to_dict(),
                "batch": batch, "anchor": "anchor",
                "script_sha256": _sha256((folder / "profile_kit.py").read_bytes()),
                "workloads": workloads}
    write_json_atomic(folder / "kit.json", manifest)
    (folder / "README.txt").write_text(
        f"A proxyless profiling kit of the space {space.name!r} ({len(layers)} layers, "
        f"{sum(len(a) for a in networks.values())} networks, batch {batch}).\n\n"
        "On the device (Python 3.8+, numpy and onnxruntime):\n"
        "    python profile_kit.py --threads 1 --out timings.json\n\n"
        "Back here:\n"
        f"    proxyless profile --space {space.name} --from-kit timings.json --out TABLE\n")
    return manifest


def _timings(path: str | Path, space: SearchSpace) -> dict[str, Any]:
    """A kit's timings.json, refused where it is of another kit version or another space."""
    data = read_mapping(path, "kit timings")
    if "timings" in data and "kit_sha256" in data and "format" not in data:
        out = str(path)[:-len(".progress")] if str(path).endswith(".progress") else "TIMINGS"
        raise ProxylessError(f"{path} is an unfinished timing (profile_kit.py's progress "
                             f"file, {len(data['timings'])} workloads so far): on the device, "
                             f"run `python profile_kit.py --out {Path(out).name}` again (it "
                             "goes on from there), then pass the file it writes to --from-kit")
    if "script_sha256" in data and "workloads" in data and "timings" not in data:
        raise ProxylessError(f"{path} is a kit's manifest, not its timings: on the device, run "
                             "`python profile_kit.py --out timings.json` in the kit's folder, "
                             "then pass timings.json to --from-kit")
    if data.get("format") != KIT_FORMAT:
        raise ProxylessError(f"{path} is of kit version {data.get('format')!r}, this proxyless "
                             f"reads {KIT_FORMAT!r}; make the kit again with this version and "
                             "time it again")
    kit = data.get("kit")
    if not isinstance(kit, dict) or kit.get("space") != space.to_dict():
        name = kit.get("space", {}).get("name") if isinstance(kit, dict) else None
        raise ProxylessError(f"{path} was timed with a kit of the space {name!r}, not of "
                             f"{space.name!r} as given; pass that space to --space")
    manifest = Path(path).parent / "kit.json"  # the kit the timings were made with, here
    if manifest.is_file() and data.get("kit_sha256") != _sha256(manifest.read_bytes()):
        raise ProxylessError(f"{path} was not timed with the kit beside it ({manifest} has "
                             "another SHA-256 than the timings record): the kit was changed "
                             "or the files were mixed up; time this kit again on the device")
    timings, works = data.get("timings"), data.get("workloads")
    if not isinstance(timings, dict) or not isinstance(works, list) or not all(
            isinstance(w, dict) and w.get("name") in timings for w in works):
        raise ProxylessError(f"{path} lacks timings of some of its kit's workloads (an "
                             "unfinished or edited file); run profile_kit.py again")
    for name, t in timings.items():
        ms = t.get("ms") if isinstance(t, dict) else None
        if not isinstance(ms, (int, float)) or not np.isfinite(ms) or ms <= 0:
            raise ProxylessError(f"{path}: the timing of {name!r} is not a positive number "
                                 f"({ms!r}); run profile_kit.py again")
    return data


def table_from_kit(space: SearchSpace, timings_path: str | Path) -> tuple[LatencyTable, dict]:
    """The latency table of the device that ran the kit, calibrated on its calibration
    networks; and how well it predicts the kit's check networks (latency-check's figures)."""
    data = _timings(timings_path, space)
    timings, device = data["timings"], data.get("device", {})
    layers = {w["key"]: timings[w["name"]] for w in data["workloads"] if w["kind"] == "layer"}
    missing = set(layer_workloads(space, int(data["kit"]["batch"]))) - set(layers)
    if missing:
        raise ProxylessError(f"{timings_path} lacks {len(missing)} layers of the space "
                             f"{space.name!r}; make the kit again")
    meta = {"backend": "onnxruntime", "device": "cpu", "threads": int(device.get("threads", 1)),
            "batch": int(data["kit"]["batch"]), "cpu": str(device.get("cpu", "unknown")),
            "machine": str(device.get("machine", "")), "python": str(device.get("python", "")),
            "onnxruntime": str(device.get("onnxruntime", "")), "space": space.to_dict(),
            **{k: data.get("settings", {}).get(k) for k in ("warmup", "repeats", "min_time")},
            "statistic": "p10", "source": "kit", "kit": str(timings_path),
            "date": str(data.get("date", "")),
            "anchor_arch": anchor_architecture(space).encode(),
            "anchor_ms": float(data["anchor_ms"])}
    table = LatencyTable({k: Entry(float(t["ms"]), float(t.get("spread", 0.0)),
                                   int(t.get("count", 0))) for k, t in layers.items()},
                         {k: v for k, v in meta.items() if v is not None})
    networks = {role: [(decode(space, w["arch"]), timings[w["name"]]["ms"])
                       for w in data["workloads"] if w.get("role") == role]
                for role in ("calibration", "check")}
    calibration = None
    if networks["calibration"]:
        archs, measured = zip(*networks["calibration"], strict=True)
        calibration = checked_fit(list(archs), list(measured), table)
        table.calibration = calibration.to_dict()
    check: dict[str, Any] = {}
    if len(networks["check"]) >= 3:
        archs, measured = zip(*networks["check"], strict=True)
        plain = latency_model(table, space, calibrated=False)
        fitted = latency_model(table, space)
        truth = np.asarray(measured)
        predicted = np.array([fitted.predict(a) for a in archs])
        check = {"samples": len(archs), "device": meta["cpu"],
                 "calibrated": prediction_metrics(predicted, truth),
                 "table_sum": prediction_metrics(
                     np.array([plain.predict(a) for a in archs]), truth),
                 "measured_ms": truth.tolist(), "predicted_ms": predicted.tolist(),
                 "architectures": [a.encode() for a in archs]}
        if (calibration is not None and calibration.refused is None
                and check["calibrated"]["mape"] > check["table_sum"]["mape"]):
            # worse on networks it was not fitted on: the plain sum predicts better
            calibration = calibration.refuse(
                f"it predicts the {len(archs)} check networks worse than the plain sum, MAPE "
                f"{check['calibrated']['mape']:.1f}% vs {check['table_sum']['mape']:.1f}%")
            table.calibration = calibration.to_dict()
            check["calibrated"] = check["table_sum"]
            check["predicted_ms"] = [plain.predict(a) for a in archs]
    return table, check


def kit_summary(table: LatencyTable, check: dict) -> str:
    lines = [f"{len(table.entries)} layers timed on {table.meta['cpu']} (onnxruntime "
             f"{table.meta.get('onnxruntime')}, {table.meta['threads']} thread(s), batch "
             f"{table.meta['batch']})"]
    if table.calibration:
        lines.append(Calibration.from_dict(table.calibration).summary())
    if check:
        c, p = check["calibrated"], check["table_sum"]
        lines.append(f"check on {check['samples']} other networks timed by the kit: MAPE "
                     f"{p['mape']:.2f}% -> {c['mape']:.2f}% calibrated, Spearman "
                     f"{c['spearman']:.3f}, within 10%: {c['within_10pct']:.0f}%")
    return "\n".join(lines)
