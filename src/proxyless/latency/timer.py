"""Timing modules on the device at hand: a backend, a device and a thread count.

    >>> entries = Timer("torch", threads=1).time([(module, (1, 3, 224, 224))])

Workloads are warmed up, then timed round-robin (see `Timer`), keeping a low percentile and
the interquartile range. CPU timing fixes the thread count; CUDA timing reads CUDA events
(the GPU's own clock) around every run (`CudaRun`). The ONNX Runtime backend exports the
module to ONNX and times an `onnxruntime.InferenceSession` at the same thread count: what CPU
deployments run.
`fingerprint` records what a measurement depends on (device, CPU, library versions, settings).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
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

from proxyless.engine.runtime import resolve_device
from proxyless.errors import ProxylessError
from proxyless.latency.table import Entry

BACKENDS = ("torch", "onnxruntime")
# What a search prices unless told otherwise: the runtime people deploy an exported network
# with (ONNX Runtime, fp32), at batch 1 on one thread. PyTorch eager at batch 1 is mostly
# per-layer overhead, which would make large kernels look free. One thread: on the 2-core
# machine we build on, a second thread made every fashion network 9-10% slower and the
# imagenet ones erratic (x0.9 to x2.3, rounds spread 60%: bench/README), and one core is what
# a phone-class deployment gives a model.
DEFAULT_BACKEND, DEFAULT_THREADS = "onnxruntime", 1
# The paper's GPU latency setting: batch 8 (its GPU model: 5.1 ms on a V100 at batch 8); at
# batch 1 a GPU's time is mostly kernel launches.
GPU_PROFILE_BATCH = 8


def default_setting(device: str) -> tuple[str, int]:
    """(backend, batch) of a profile on `device` where none is given: on a GPU its own
    latency in PyTorch at the paper's GPU batch; on the CPU, ONNX Runtime at batch 1."""
    if device.startswith("cuda"):
        return "torch", GPU_PROFILE_BATCH
    return DEFAULT_BACKEND, 1
BACKEND_NAMES = {"torch": "PyTorch (eager)", "onnxruntime": "ONNX Runtime"}
# Seconds of round-robin timing per group of layers: beyond an hour a profile never ends.
MAX_MIN_TIME = 3600.0


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
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    if backend == "onnxruntime":
        import onnxruntime  # heavy: loaded only where ONNX Runtime is the backend

        info["onnxruntime"] = onnxruntime.__version__
    return info


@functools.cache
def keep_freed_memory() -> None:
    """Keep memory PyTorch frees in this process's heap instead of returning it to the
    system (glibc only; once per process; elsewhere nothing). By default glibc unmaps large
    freed blocks and trims the heap's top, so the next inference faults the pages in again, 4
    KiB at a time, a cost a layer timed alone does not pay in the same way. Imagenet networks
    at 224 px, batch 1: 139 k minor page faults with the default heap, 12 k with it kept
    (`bench/heap_faults.py`); a first round of PyTorch latency-check scored 72.5% within ±10%
    with the default heap and 100% in 3 rounds with it kept (bench/README.md, "Where the
    latency model's error lives"). ONNX Runtime keeps its own arena and is not affected."""
    if platform.system() != "Linux":
        return
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = getattr(libc, "mallopt", None)
    except OSError:
        mallopt = None
    if mallopt is None:  # not glibc (musl has no mallopt to set)
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, 1 << 30)  # blocks up to 1 GiB from the heap, not mmap
    mallopt(m_trim_threshold, (1 << 31) - 1)  # the heap's top kept, not trimmed


def export_onnx(module: nn.Module, example: torch.Tensor, input_name: str = "x",
                output_name: str = "y", dynamic_batch: bool = False) -> bytes:
    """The ONNX bytes of `module` at `example`'s shape (the batch axis free where
    `dynamic_batch`): the one export both the onnxruntime timer and `proxyless export` use, so
    what is timed is what is deployed."""
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript-based exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, input_names=[input_name],
                          output_names=[output_name], opset_version=17, dynamo=False,
                          dynamic_axes=axes)
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
        if threads < 1 or warmup < 0 or repeats < 1 or not 0 <= min_time <= MAX_MIN_TIME:
            raise ProxylessError("--threads and --repeats must be >= 1, warm-up >= 0 and "
                                 f"--min-time from 0 to {MAX_MIN_TIME} seconds")
        self.backend, self.threads = backend, threads
        self.device = resolve_device(device)
        if backend == "torch" and self.device.type == "cpu":
            keep_freed_memory()  # what a table of layers timed alone assumes
        self.warmup, self.repeats, self.min_time = warmup, repeats, min_time

    def runner(self, module: nn.Module, shape: tuple[int, ...]) -> Callable[[], object]:
        """One inference of `module` on random input of `shape`, ready to time."""
        module = module.eval()
        example = torch.randn(shape)
        if self.backend == "onnxruntime":
            import onnxruntime as ort  # heavy: loaded only where ONNX Runtime is the backend

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(export_onnx(module, example), options,
                                           providers=["CPUExecutionProvider"])
            feed = {"x": example.numpy()}
            return lambda: session.run(None, feed)
        module = module.to(self.device)
        x = example.to(self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as training runs: each shape's fastest
            return CudaRun(module, x, self.device)

        def run_cpu() -> object:
            with torch.inference_mode():
                return module(x)
        return run_cpu

    def time(self, workloads: list[tuple[nn.Module, tuple[int, ...]]],
             progress: bool = False, desc: str = "measure") -> list[Entry]:
        """Latency of each (module, input shape), measured round-robin (see the class)."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            runners = [self.runner(module, shape) for module, shape in workloads]
        finally:
            torch.set_num_threads(previous)
        return self.time_runs(runners, progress, desc)

    def time_runs(self, runners: list[Callable[[], object]], progress: bool = False,
                  desc: str = "measure") -> list[Entry]:
        """Latency of each ready-made run (e.g. an exported file's session), timed round-robin
        like `time`, with torch at this timer's thread count."""
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
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
                        record.append(_time_ms(run))
                rounds += 1
                if rounds <= self.repeats:
                    bar.update(1)
            bar.close()
        finally:
            torch.set_num_threads(previous)
        return [_summarize(record) for record in times]


class CudaRun:
    """One inference on a GPU. Called, it waits for the GPU to finish; `timed_ms` times it
    with CUDA events, on the GPU's own clock: the host's launch overhead and the wait are
    left out, as the GPU runs it inside a network."""

    def __init__(self, module: nn.Module, x: torch.Tensor, device: torch.device) -> None:
        self.module, self.x, self.device = module, x, device

    def __call__(self) -> object:
        with torch.cuda.device(self.device), torch.inference_mode():
            out = self.module(self.x)
        torch.cuda.synchronize(self.device)
        return out

    def timed_ms(self) -> float:
        # events record on the current device's stream: that of the timed GPU
        with torch.cuda.device(self.device), torch.inference_mode():
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            self.module(self.x)
            end.record()
        end.synchronize()
        return start.elapsed_time(end)


def _time_ms(run: Callable[[], object]) -> float:
    """One run's milliseconds: CUDA events where the run has them, else the host's clock."""
    if isinstance(run, CudaRun):
        return run.timed_ms()
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1e3


def _summarize(times: list[float]) -> Entry:
    """The 10th percentile (the machine's undisturbed speed) and the interquartile range."""
    values = np.asarray(times)
    q10, q25, q75 = np.percentile(values, [10, 25, 75])
    return Entry(float(q10), float(q75 - q25), len(values))
