"""Measuring latency on the device at hand: every distinct layer of a space, or whole networks.

    >>> table = profile_space(load_space("fashion"), "table.json", backend="torch", threads=1)
    >>> ms = measure_network(arch, Timer("torch", threads=1))

Each measurement warms up, then times `repeats` runs one by one and keeps the median and the
interquartile range. CPU timing fixes the thread count; CUDA timing synchronizes the device
around every run. The ONNX Runtime backend exports the module to ONNX and times an
`onnxruntime.InferenceSession` at the same thread count: what CPU deployments run.
Profiling saves the table after every entry, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime
import io
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from proxyless.arch import Architecture
from proxyless.errors import ProxylessError
from proxyless.latency.table import Entry, LatencyTable
from proxyless.net import build_network
from proxyless.ops import Block, Classifier, ConvBNAct, MBConv, build_op
from proxyless.runtime import resolve_device
from proxyless.space import SearchSpace
from proxyless.walk import candidate_layers, fixed_layers

BACKENDS = ("torch", "onnxruntime")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(backend: str, device: str, threads: int, batch: int) -> dict:
    """What a measurement depends on; a cached table is reused only when all of it matches."""
    info = {"backend": backend, "device": device, "threads": threads, "batch": batch,
            "cpu": cpu_model(), "machine": platform.machine(), "torch": torch.__version__,
            "python": platform.python_version()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(resolve_device(device))
    if backend == "onnxruntime":
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def _export_onnx(module: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False)
    return buffer.getvalue()


class Timer:
    """Times an `nn.Module` at a fixed input shape on one backend, device and thread count."""

    def __init__(self, backend: str = "torch", device: str = "cpu", threads: int = 1,
                 warmup: int = 10, repeats: int = 50) -> None:
        if backend not in BACKENDS:
            raise ProxylessError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if backend == "onnxruntime" and device != "cpu":
            raise ProxylessError("--backend onnxruntime measures on the CPU; use --device cpu")
        if threads < 1 or warmup < 0 or repeats < 1:
            raise ProxylessError("--threads and --repeats must be >= 1, warm-up >= 0")
        self.backend, self.threads = backend, threads
        self.device = resolve_device(device)
        self.warmup, self.repeats = warmup, repeats

    def _runner(self, module: nn.Module, shape: tuple[int, ...]) -> Callable[[], object]:
        module = module.eval()
        example = torch.randn(shape)
        if self.backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(_export_onnx(module, example), options,
                                           providers=["CPUExecutionProvider"])
            feed = {"x": example.numpy()}
            return lambda: session.run(None, feed)
        module = module.to(self.device)
        x = example.to(self.device)
        if self.device.type == "cuda":
            def run() -> object:
                with torch.inference_mode():
                    out = module(x)
                torch.cuda.synchronize(self.device)
                return out
            return run

        def run_cpu() -> object:
            with torch.inference_mode():
                return module(x)
        return run_cpu

    def measure(self, module: nn.Module, shape: tuple[int, ...]) -> Entry:
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            run = self._runner(module, shape)
            for _ in range(self.warmup):
                run()
            times = []
            for _ in range(self.repeats):
                started = time.perf_counter()
                run()
                times.append((time.perf_counter() - started) * 1e3)
        finally:
            torch.set_num_threads(previous)
        quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
        return Entry(statistics.median(times), quartiles[2] - quartiles[0], len(times))


def layer_workloads(space: SearchSpace, batch: int) -> dict[str, tuple[Callable[[], nn.Module],
                                                                       tuple[int, ...]]]:
    """Every distinct layer of the space: key -> (module factory, input shape)."""
    s = space
    size, fs = s.stem_out_size, s.final_size
    fixed = fixed_layers(space)
    work = {
        fixed[0].key: (lambda: ConvBNAct(s.in_channels, s.stem_channels, s.stem.kernel,
                                         s.stem.stride),
                       (batch, s.in_channels, s.input_size, s.input_size)),
        fixed[1].key: (lambda: MBConv(s.stem_channels, s.first_block_channels,
                                      s.first_block.kernel, 1, 1),
                       (batch, s.stem_channels, size, size)),
        fixed[2].key: (lambda: ConvBNAct(s.last_channels, s.feature_mix_channels, 1),
                       (batch, s.last_channels, fs, fs)),
        fixed[3].key: (lambda: Classifier(s.feature_mix_channels, s.num_classes),
                       (batch, s.feature_mix_channels, fs, fs)),
    }
    for slot, row in zip(space.slots(), candidate_layers(space), strict=True):
        for layer in row:
            if layer.key and layer.key not in work:
                def factory(token=layer.token, slot=slot) -> nn.Module:
                    op = build_op(token, slot.in_channels, slot.out_channels, slot.stride)
                    return Block(op, slot.has_skip)
                work[layer.key] = (factory, (batch, slot.in_channels, slot.in_size,
                                             slot.in_size))
    return work


def profile_space(space: SearchSpace, out: str | Path, timer: Timer, batch: int = 1,
                  progress: bool = True, log: Callable[[str], None] = print) -> LatencyTable:
    """Measure every distinct layer of `space`; resumes a partial table at `out`."""
    out = Path(out)
    meta = {**fingerprint(timer.backend, str(timer.device), timer.threads, batch),
            "space": space.to_dict(), "warmup": timer.warmup, "repeats": timer.repeats}
    table = LatencyTable(meta=meta)
    if out.exists():
        table = LatencyTable.load(out)
        table.meta.pop("path", None)
        same = {k: table.meta.get(k) for k in meta if k != "date"}
        if same != {k: v for k, v in meta.items() if k != "date"}:
            diff = [k for k in meta if k != "date" and table.meta.get(k) != meta[k]]
            raise ProxylessError(f"{out} holds a table measured with other settings "
                                 f"({', '.join(diff)}); use another --out, or delete it")
        if table.entries:
            log(f"resuming {out}: {len(table.entries)} entries already measured")
    workloads = layer_workloads(space, batch)
    todo = [k for k in workloads if k not in table.entries]
    torch.manual_seed(0)
    for key in tqdm(todo, desc="profile", unit="op", disable=not progress):
        factory, shape = workloads[key]
        table.entries[key] = timer.measure(factory(), shape)
        table.meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        table.save(out)
    if not todo:
        table.save(out)
    return table


def measure_network(arch: Architecture, timer: Timer, batch: int = 1) -> Entry:
    """End-to-end latency of the standalone network of `arch`."""
    s = arch.space
    return timer.measure(build_network(arch), (batch, s.in_channels, s.input_size, s.input_size))


def spread_architectures(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """Random architectures spread from light to heavy: each draws its blocks from its own
    random preference over the candidates (Dirichlet), so the sample covers the latency range
    instead of piling up around the mean as uniform draws do."""
    rng = np.random.default_rng(seed)
    tokens = list(space.candidates)
    archs = []
    for _ in range(count):
        preference = rng.dirichlet(np.full(len(tokens), 0.5))
        chosen = []
        for slot in space.slots():
            weights = np.array([preference[tokens.index(t)] for t in slot.candidates]) + 1e-9
            chosen.append(slot.candidates[rng.choice(len(slot.candidates),
                                                     p=weights / weights.sum())])
        archs.append(Architecture(space, tuple(chosen)))
    return archs
