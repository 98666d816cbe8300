"""Mixed precision: `--precision auto|fp32|bf16|fp16` for the search and the training.

    >>> precision = resolve_precision("auto", torch.device("cuda"))   # bf16 on an A100/H100
    >>> with precision.autocast():
    ...     loss = criterion(model(x), y)
    >>> scaler = precision.scaler()      # fp16 only; a pass-through otherwise
    >>> scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()

`auto` is bf16 where the GPU supports it, fp16 with a gradient scaler on older GPUs, and fp32
on the CPU (where bf16 autocast runs but is faster only on some CPUs, for some networks: the
training times both there, `proxyless.engine.training_speed`). Only the network's
forward and backward run in the lower precision: the weights, their optimizer, α, the
architecture step's gate gradients (`supernet._GateGradient`) and the latency loss stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from proxyless.errors import ProxylessError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision (`fp32`, `bf16` or `fp16`) on one kind of device."""
    name: str
    device_type: str  # cpu or cuda

    def autocast(self) -> torch.autocast:
        """The forward's context: autocast to the precision's dtype (off for fp32)."""
        return torch.autocast(self.device_type, dtype=_DTYPES.get(self.name, torch.bfloat16),
                              enabled=self.name in _DTYPES)

    def scaler(self) -> GradScaler:
        """A gradient scaler for fp16 (whose gradients underflow without one); disabled, a
        pass-through, for the others."""
        return GradScaler(self.device_type, enabled=self.name == "fp16")


class GradScaler(torch.amp.GradScaler):
    """torch's scaler, whose state a checkpoint of any precision can restore: a run resumed
    in another precision (a resumable change) starts with a fresh scale."""

    def load_state_dict(self, state: dict) -> None:
        if state and self.is_enabled():
            super().load_state_dict(state)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """`name` (one of PRECISIONS) on `device`, `auto` made concrete; a precision the device
    cannot run is a clear error."""
    if name not in PRECISIONS:
        raise ProxylessError(f"--precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    cuda = device.type == "cuda"
    if name == "auto":
        if not cuda:
            return Precision("fp32", device.type)
        name = "bf16" if has_bf16(device) else "fp16"
    elif name == "bf16" and cuda and not has_bf16(device):
        raise ProxylessError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                             "bfloat16 arithmetic (it would be emulated, slowly); use "
                             "--precision fp16 (or auto)")
    return Precision(name, device.type)


def has_bf16(device: torch.device) -> bool:
    """Native bfloat16 on this GPU: Ampere (compute capability 8) and later. torch's own
    `is_bf16_supported` also says yes where bf16 is only emulated (V100, T4)."""
    return torch.cuda.get_device_properties(device).major >= 8
