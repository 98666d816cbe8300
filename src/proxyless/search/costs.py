"""What a search is measured by: the cost its target binds, and the costs it only logs.

`proxyless search` and `proxyless run` both go through `search_costs`, so a latency table,
a FLOPs target and REINFORCE's measured latency are combined the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from proxyless.errors import ProxylessError
from proxyless.latency.cost import CostModel, flops_model, latency_model
from proxyless.latency.measure import MeasuredLatency
from proxyless.latency.table import LatencyTable
from proxyless.model.space import SearchSpace
from proxyless.search.config import SearchConfig


@dataclass
class SearchCosts:
    constrained: CostModel | None   # what the target binds: latency (from a table) or FLOPs
    latency: CostModel | None       # latency from the table, where there is one
    also_log: list[CostModel] = field(default_factory=list)  # logged beside `constrained`
    # REINFORCE --measure-latency with a table: measured as the table was, on its time base
    measured: MeasuredLatency | None = None


def require_cost(config: SearchConfig, cost_model: CostModel | None,
                 latency_fn: object | None = None) -> None:
    """A target needs something to measure it by."""
    measured = config.strategy == "reinforce" and config.metric == "latency" and (
        latency_fn is not None or config.measure_latency)
    if config.target is not None and cost_model is None and not measured:
        raise ProxylessError("a target needs a cost model: a latency table (--table, made by "
                             "`proxyless profile --space SPACE --out table.json`) or "
                             "--target-mflops; or --strategy reinforce --measure-latency")


def search_costs(space: SearchSpace, config: SearchConfig, table: LatencyTable | None,
                 log: Callable[[str], None] = print) -> SearchCosts:
    latency = latency_model(table, space) if table is not None else None
    constrained = flops_model(space) if config.metric == "flops" else latency
    require_cost(config, constrained)
    if latency is not None and config.target is not None and config.metric == "latency":
        fastest, _ = latency.bounds()
        if config.target < fastest:
            log(f"note: target {config.target} ms is below the fastest network of the space "
                f"({fastest:.3f} ms); the search will favour the fastest ops")
    also_log = [latency] if latency is not None and constrained is not latency else []
    measured = (MeasuredLatency.for_table(table)
                if config.measure_latency and table is not None else None)
    return SearchCosts(constrained, latency, also_log, measured)
