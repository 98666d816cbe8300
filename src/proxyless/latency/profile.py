"""Measuring latency on the device at hand: every distinct layer of a space, or whole networks.

    >>> table = profile_space(load_space("fashion"), "table.json", backend="torch", threads=1)
    >>> ms = measure_network(arch, Timer("torch", threads=1))

Workloads are warmed up, then timed round-robin (see `Timer`), keeping a low percentile and
the interquartile range. CPU timing fixes the thread count; CUDA timing synchronizes the
device around every run. The ONNX Runtime backend exports the module to ONNX and times an
`onnxruntime.InferenceSession` at the same thread count: what CPU deployments run.
Every group of workloads is measured together with a fixed anchor network, and the entries are
put on the table's time base (see `measure_anchored`). Profiling saves the table after every
chunk of entries, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import datetime
import io
import platform
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
from proxyless.space import ZERO, SearchSpace
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
    """Times `nn.Module`s at fixed input shapes on one backend, device and thread count.

    Shared machines drift between speed states for seconds at a time (seen here: the same
    network at 5.5 ms for 5 s, then 8.2 ms for 12 s). So workloads are measured together,
    round-robin, for at least `min_time` seconds and `repeats` rounds, and each keeps a low
    percentile of its runs: every workload is sampled across the same states, and the figure
    is the latency of the machine when nothing else slows it down. Each visit runs the
    workload once untimed, then times two runs, so what ran before it does not matter.
    """

    def __init__(self, backend: str = "torch", device: str = "cpu", threads: int = 1,
                 warmup: int = 10, repeats: int = 50, min_time: float = 20.0) -> None:
        if backend not in BACKENDS:
            raise ProxylessError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        if backend == "onnxruntime" and device != "cpu":
            raise ProxylessError("--backend onnxruntime measures on the CPU; use --device cpu")
        if threads < 1 or warmup < 0 or repeats < 1 or min_time < 0:
            raise ProxylessError("--threads and --repeats must be >= 1, warm-up and "
                                 "--min-time >= 0")
        self.backend, self.threads = backend, threads
        self.device = resolve_device(device)
        self.warmup, self.repeats, self.min_time = warmup, repeats, min_time

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

    def measure_many(self, workloads: list[tuple[nn.Module, tuple[int, ...]]],
                     progress: bool = False, desc: str = "measure") -> list[Entry]:
        """Latency of each (module, input shape), measured round-robin (see the class)."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            runners = [self._runner(module, shape) for module, shape in workloads]
            for run in runners:
                for _ in range(self.warmup):
                    run()
            times: list[list[float]] = [[] for _ in runners]
            started = time.perf_counter()
            bar = tqdm(total=self.repeats, desc=desc, unit="round", disable=not progress,
                       leave=False)
            rounds = 0
            while rounds < self.repeats or time.perf_counter() - started < self.min_time:
                for run, record in zip(runners, times, strict=True):
                    # One untimed run first: each visit then times the workload with its own
                    # weights in cache, as in repeated inference, whatever ran before it.
                    run()
                    for _ in range(2):
                        t0 = time.perf_counter()
                        run()
                        record.append((time.perf_counter() - t0) * 1e3)
                rounds += 1
                if rounds <= self.repeats:
                    bar.update(1)
            bar.close()
        finally:
            torch.set_num_threads(previous)
        return [_summarize(record) for record in times]

    def measure(self, module: nn.Module, shape: tuple[int, ...]) -> Entry:
        return self.measure_many([(module, shape)])[0]


def _summarize(times: list[float]) -> Entry:
    """The 10th percentile (the machine's undisturbed speed) and the interquartile range."""
    values = np.asarray(times)
    q10, q25, q75 = np.percentile(values, [10, 25, 75])
    return Entry(float(q10), float(q75 - q25), len(values))


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
                  progress: bool = True, log: Callable[[str], None] = print,
                  chunk: int = 24) -> LatencyTable:
    """Measure every distinct layer of `space`; resumes a partial table at `out`."""
    out = Path(out)
    meta = {**fingerprint(timer.backend, str(timer.device), timer.threads, batch),
            "space": space.to_dict(), "warmup": timer.warmup, "repeats": timer.repeats,
            "min_time": timer.min_time, "statistic": "p10"}
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
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    bar = tqdm(total=len(todo), desc="profile", unit="op", disable=not progress)
    for keys in chunks:  # saved after every chunk: an interruption loses at most one chunk
        entries, speed = measure_anchored(timer, [(workloads[k][0](), workloads[k][1])
                                                  for k in keys], table, batch)
        table.entries.update((k, Entry(e.ms / speed, e.spread / speed, e.count))
                             for k, e in zip(keys, entries, strict=True))
        table.meta["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        table.save(out)
        bar.update(len(keys))
    bar.close()
    if not todo:
        table.save(out)
    return table


def anchor_architecture(space: SearchSpace) -> Architecture:
    """The fixed mid-sized network measured alongside every group of workloads."""
    tokens = [t for t in space.candidates if t != ZERO]
    return Architecture.uniform(space, tokens[len(tokens) // 2])


def measure_anchored(timer: Timer, workloads: list[tuple[nn.Module, tuple[int, ...]]],
                     table: LatencyTable, batch: int, progress: bool = False,
                     desc: str = "measure") -> tuple[list[Entry], float]:
    """Measure workloads together with the table's anchor network.

    Returns the entries and the machine's speed relative to when the table was made
    (anchor now / anchor then; > 1 = slower now). The first call on a table sets the anchor.
    A shared machine's speed drifts by several percent from minute to minute; dividing by
    this factor puts every measurement on the table's time base.
    """
    space = table.space
    anchor = anchor_architecture(space)
    shape = (batch, space.in_channels, space.input_size, space.input_size)
    entries = timer.measure_many([*workloads, (build_network(anchor), shape)], progress, desc)
    anchor_ms = entries[-1].ms
    if "anchor_ms" not in table.meta:
        table.meta["anchor_arch"] = anchor.encode()
        table.meta["anchor_ms"] = anchor_ms
    return entries[:-1], anchor_ms / float(table.meta["anchor_ms"])


def measure_networks(archs: list[Architecture], timer: Timer, batch: int = 1,
                     progress: bool = False, desc: str = "measure") -> list[Entry]:
    """End-to-end latency of the standalone networks of `archs` (measured together)."""
    workloads = [(build_network(a), (batch, a.space.in_channels, a.space.input_size,
                                     a.space.input_size)) for a in archs]
    return timer.measure_many(workloads, progress, desc)


def measure_network(arch: Architecture, timer: Timer, batch: int = 1) -> Entry:
    return measure_networks([arch], timer, batch)[0]


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
