"""What a search refuses before it starts: inputs that do not fit together, and a resume with
other settings than the run's."""

from __future__ import annotations

from pathlib import Path

from proxyless.config_io import current_names, to_dict
from proxyless.data import DataSplits, check_channels, check_class_count
from proxyless.engine import epochs as skeleton
from proxyless.errors import ProxylessError
from proxyless.latency.cost import CostModel
from proxyless.search.config import SearchConfig
from proxyless.search.costs import require_cost
from proxyless.search.reinforce import Objective


def check_inputs(space, data: DataSplits, cost_model: CostModel | None,
                  config: SearchConfig, latency_fn: Objective | None) -> None:
    require_cost(config, cost_model, latency_fn)
    if cost_model is not None and cost_model.space.slots() != space.slots():
        raise ProxylessError(f"the {cost_model.name} model was built for space "
                             f"{cost_model.space.name!r}, not the searched space "
                             f"{space.name!r}; profile this space or pass its own table")
    if data.val is None:
        raise ProxylessError("the search needs a validation split held out of the training set")
    check_channels(data.train, space.in_channels, f"data {data.name!r}",
                   f"space {space.name!r}")
    check_class_count(data.train, space.num_classes, f"data {data.name!r}",
                      f"space {space.name!r}")


def check_resume(checkpoint: dict, space, config: SearchConfig, out: Path,
                  transform: dict) -> None:
    skeleton.check_same_transform(checkpoint, transform, out)
    # searches from before the two-sided target bound from above only
    changed = skeleton.changed_settings(checkpoint, config, SearchConfig.RESUMABLE,
                                        legacy={"target_floor": 0.0})
    if checkpoint.get("space") != space.to_dict():
        raise ProxylessError(f"cannot resume {out} with a different space; use the original "
                             "one or a new --out")
    if changed:
        before = {**to_dict(SearchConfig()), "target_floor": 0.0,
                  **current_names(SearchConfig, checkpoint.get("config", {}))}
        diffs = ", ".join(f"{k}: {before.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        hint = (" (--target-floor 0 continues a search begun before the two-sided target)"
                if "target_floor" in changed else "")
        raise ProxylessError(f"cannot resume {out} with different settings ({diffs}); give "
                             f"the original ones{hint} or a new --out")
