"""Training speed chosen by measurement: `--precision auto` on a CPU, and `--compile auto`.

    >>> choice = choose_cpu_precision(net, x, y, criterion)   # a few timed steps each
    >>> choice.precision.name, choice.ratio                   # ('bf16', 1.68): bf16 wins
    >>> compile_pays_back(step_s=0.17, steps_left=4000)       # False: ~11 min of steps

bf16 autocast on a CPU is fast only where the CPU computes in bf16 (AMX tiles, AVX512-BF16),
and even there not for every network: small inputs are dispatch-bound and convert more than
they compute (measured on the 2-core Sapphire Rapids: x1.43-1.68 for imagenet b32 at 224 px,
x0.65 for fashion b128 at 28 px; bench/training_speed.py). So `auto` times a few forward and
backward passes of this very network and batch in both precisions, on a copy (its weights
and BatchNorm statistics left as they were), and keeps bf16 only where it is faster by a
clear margin.

`torch.compile` costs its compile time first (58 s for the fashion network on that machine,
67-133 s for imagenet's) and gains a share of every later step in fp32 (x1.08 at 28 px,
x1.18-1.26 at 224 px; in bf16 nothing). Its gain is not known before compiling, so `auto`
compiles where even a modest gain (`ASSUMED_GAIN`) over the steps left repays a compile time
of `COMPILE_ESTIMATE_S` with room to spare (an estimate: the compiled steps are not timed
against it afterwards).

A run whose work is small (`short_run`: under `SHORT_RUN_S` even at a fast CPU's rate) is
neither timed nor compiled: fp32 eager, at no cost, and the same from one run to the next.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from proxyless.engine.precision import Precision, resolve_precision
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping

MARGIN = 1.05             # bf16 must be this much faster to be chosen: timing noise aside
TIMED_STEPS = 2           # per precision, after one untimed step each
SHORT_RUN_S = 120.0       # runs shorter than this on a fast CPU are neither timed nor compiled
FAST_MACS_PER_S = 1e11    # forward multiply-adds a second of a fast CPU's training (this 2-core
                          # VM: 3-6e9 fp32, bench/training_speed.py), so short is short anywhere
COMPILE_ESTIMATE_S = 90.0  # a compile of our networks on a small CPU (measured 58-133 s) ...
ASSUMED_GAIN = 0.15       # ... repaid by this share of each step (fp32 on the CPU: 8% at 28
                          # px, 18-26% at 224 px, bench/training_speed.py)
PAYBACK = 2.0             # ... twice over before `auto` compiles


@dataclass(frozen=True)
class PrecisionChoice:
    precision: Precision
    fp32_ms: float | None = None
    bf16_ms: float | None = None
    reason: str = ""

    @property
    def ratio(self) -> float | None:
        """fp32 time over bf16 time: above 1, bf16 is faster."""
        if not self.fp32_ms or not self.bf16_ms:
            return None
        return self.fp32_ms / self.bf16_ms

    def to_dict(self) -> dict:
        return {"precision": self.precision.name, "fp32_step_ms": self.fp32_ms,
                "bf16_step_ms": self.bf16_ms, "reason": self.reason}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 itself (AMX tiles or AVX512-BF16); elsewhere
    bf16 autocast is emulated, and slower than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def step_ms(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion: nn.Module,
            precision: Precision, steps: int = TIMED_STEPS, warm: bool = False) -> float:
    """The median milliseconds of `steps` forward and backward passes of `model` on (x, y)
    under `precision`, after one untimed pass (kernel selection, caches) unless `warm`."""
    times = []
    for i in range(steps + (0 if warm else 1)):
        started = time.perf_counter()
        with precision.autocast():
            logits = model(x)
        criterion(logits.float(), y).backward()
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        if warm or i:
            times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times) if times else 0.0


def short_run(work_macs: float) -> bool:
    """Whether a run of `work_macs` forward multiply-adds (images x the network's MACs) is
    too short to repay timing or compiling: under `SHORT_RUN_S` even on a fast CPU."""
    return work_macs / FAST_MACS_PER_S < SHORT_RUN_S


def choose_cpu_precision(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                         criterion: nn.Module) -> PrecisionChoice:
    """`--precision auto` on the CPU: bf16 where the CPU has native bf16 and timed steps of
    this network and batch run faster in it than in fp32, else fp32."""
    fp32 = Precision("fp32", "cpu")
    trial = copy.deepcopy(model).train()  # the real network's weights and statistics stay
    if not cpu_has_native_bf16():
        return PrecisionChoice(fp32, step_ms(trial, x, y, criterion, fp32, 1),
                               reason="no native bf16 on this CPU")
    bf16 = Precision("bf16", "cpu")
    for precision in (fp32, bf16):  # untimed: kernel selection, caches
        step_ms(trial, x, y, criterion, precision, steps=0)
    times = {fp32.name: [], bf16.name: []}
    for _ in range(TIMED_STEPS):  # interleaved: a machine slowing down favours neither
        for precision in (fp32, bf16):
            times[precision.name].append(step_ms(trial, x, y, criterion, precision, 1,
                                                 warm=True))
    fp32_ms, bf16_ms = (min(times[name]) for name in ("fp32", "bf16"))
    faster = fp32_ms > MARGIN * bf16_ms
    return PrecisionChoice(bf16 if faster else fp32, fp32_ms, bf16_ms,
                           "bf16 is faster here" if faster else
                           "bf16 is not faster for this network and batch")


def compile_pays_back(step_s: float, steps_left: int, precision: Precision | None = None,
                      compile_s: float = COMPILE_ESTIMATE_S) -> bool:
    """`--compile auto`: whether compiling is repaid, twice over, by `ASSUMED_GAIN` of each
    of the `steps_left` steps that take `step_s` seconds eager. Never for bf16 on a CPU:
    there the compiled step measured no faster than the eager one (x0.96, imagenet b32 224
    px, bench/training_speed.py), whose bf16 kernels are oneDNN's already."""
    if precision is not None and (precision.device_type, precision.name) == ("cpu", "bf16"):
        return False
    return step_s * steps_left * ASSUMED_GAIN > PAYBACK * compile_s


def chosen_precision(name: str, device: torch.device, work_macs: float,
                     timed: Callable[[], PrecisionChoice],
                     earlier: dict | None = None) -> tuple[Precision, dict]:
    """`--precision NAME` on `device` for a run of `work_macs` forward multiply-adds: `auto`
    on a CPU by `timed()` (`choose_cpu_precision` on the run's network and batch), fp32 for
    a short run, or as the run being resumed decided (`earlier`, its config.json's `speed`)
    so that it goes on as it began; and the record of what was decided and measured."""
    if name != "auto" or device.type != "cpu":
        precision = resolve_precision(name, device)
        return precision, {"precision": precision.name}
    if earlier and earlier.get("precision") in ("fp32", "bf16"):
        return Precision(earlier["precision"], "cpu"), earlier
    if short_run(work_macs):
        return Precision("fp32", "cpu"), {"precision": "fp32", "reason": SHORT}
    choice = timed()
    return choice.precision, choice.to_dict()


SHORT = "a short run: timing bf16 or compiling would cost more than it could save"


def earlier_speed(out: Path) -> dict | None:
    """What a run folder's config.json says its start decided (`speed`), if anything."""
    try:
        speed = read_mapping(out / "config.json", "run config").get("speed")
    except ProxylessError:
        return None
    return speed if isinstance(speed, dict) else None


def describe(speed: dict) -> str:
    """The decisions of `speed` in words, for the run's log."""
    ms = (f" (fp32 {speed['fp32_step_ms']:.0f} ms, bf16 {speed['bf16_step_ms']:.0f} ms per "
          "step)" if speed.get("bf16_step_ms") else "")
    text = f"{speed['precision']}{ms}"
    if "compile" in speed:
        text += ", compiled" if speed["compile"] else ", not compiled"
        if speed.get("compile_setting") == "auto" and not speed["compile"]:
            text += " (the steps left would not repay a compile)"
    return text
