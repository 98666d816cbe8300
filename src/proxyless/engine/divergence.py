"""A run that diverges: a loss or parameter that became NaN/inf is `Diverged`, an error that
names what diverged, in which batch and what to change; `StepLosses` reads a loop's step
losses in batches (one wait for the GPU per `every` steps) and still names the first bad
batch, the same on every rank."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

from proxyless.engine import distributed
from proxyless.errors import ProxylessError

LOWER_LR = "lower --lr (the weights diverged) and start again in a new --out"
LOWER_ARCH_LR = "lower --arch-lr (α diverged) and start again in a new --out"


class Diverged(ProxylessError):
    """A loss or parameter became NaN/inf. `what` names it, `advice` says what to change;
    `batch` ("7/42") is filled in by `at_batch`, the epoch and the checkpoint by `Epochs.run`.
    """

    def __init__(self, what: str, value: float, advice: str) -> None:
        self.what, self.value, self.advice = what, value, advice
        self.batch: str | None = None
        super().__init__(self.describe())

    def describe(self, epoch: str | None = None) -> str:
        where = ", ".join(filter(None, (epoch and f"epoch {epoch}",
                                        self.batch and f"batch {self.batch}")))
        return f"{self.what} became {self.value}" + (f" in {where}" if where else "") + \
            f"; {self.advice}"

    def __str__(self) -> str:  # the batch is known only after construction
        return self.describe()


def require_finite(value: float, what: str, advice: str = LOWER_LR) -> float:
    """`value`, or `Diverged` where it is NaN or infinite."""
    if not math.isfinite(value):
        raise Diverged(what, value, advice)
    return value


@contextlib.contextmanager
def at_batch(index: int, total: int) -> Iterator[None]:
    """Tag a `Diverged` raised inside with the batch (`index` from 0) it happened in."""
    try:
        yield
    except Diverged as err:
        if err.batch is None:
            err.batch = f"{index + 1}/{total}"
        raise


def first_nonfinite(module: nn.Module) -> tuple[str, float] | None:
    """The first parameter or buffer of `module` holding NaN/inf, and one such value."""
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = tensor[~torch.isfinite(tensor)].flatten()[0].item()
            return name, bad
    return None



class StepLosses:
    """An epoch's step losses, kept on the device and read `every` steps at once (one wait
    for the GPU instead of one per step), for the progress bar and the NaN/inf check: a
    `Diverged` still names the exact batch where the loss first went bad."""

    def __init__(self, what: str, total: int, every: int, advice: str = LOWER_LR) -> None:
        self.what, self.total, self.every, self.advice = what, total, every, advice
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.last: float | None = None

    def add(self, index: int, loss: torch.Tensor) -> float | None:
        """Batch `index`'s loss; returns the latest value read (None until the first)."""
        self.pending.append((index, loss.detach()))
        if len(self.pending) >= self.every:
            self.flush()
        return self.last

    def flush(self) -> float | None:
        """Read the pending losses; `Diverged` at the first batch where any rank's loss is
        not finite (every rank stops at the same batch: see `distributed.any_rank`)."""
        if self.pending:
            stacked = torch.stack([loss.float() for _, loss in self.pending])
            bad = distributed.any_rank(~torch.isfinite(stacked)).tolist()
            values = stacked.tolist()
            for (index, _), value, elsewhere in zip(self.pending, values, bad, strict=True):
                if elsewhere:
                    value = value if not math.isfinite(value) else math.nan  # another rank's
                    self.pending.clear()
                    err = Diverged(self.what, value, self.advice)
                    err.batch = f"{index + 1}/{self.total}"
                    raise err
            self.last = values[-1]
            self.pending.clear()
        return self.last
