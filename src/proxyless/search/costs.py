"""What a search is measured by: the cost its target binds, and the costs it only logs.

`proxyless search` and `proxyless run` both go through `search_costs`, so a latency table,
a FLOPs target and REINFORCE's measured latency are combined the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from proxyless.errors import ProxylessError
from proxyless.latency.cost import CostModel, flops_model, latency_model
from proxyless.latency.table import LatencyTable
from proxyless.search.config import SearchConfig
from proxyless.space import SearchSpace


@dataclass
class SearchCosts:
    constrained: CostModel | None   # what the target binds: latency (from a table) or FLOPs
    latency: CostModel | None       # latency from the table, where there is one
    also_log: list[CostModel] = field(default_factory=list)  # logged beside `constrained`


def table_threads(table: LatencyTable | None) -> int:
    """The thread count latency is measured with: the table's own, else 1."""
    return int(table.meta.get("threads") or 1) if table is not None else 1


def search_costs(space: SearchSpace, config: SearchConfig, table: LatencyTable | None,
                 log: Callable[[str], None] = print) -> SearchCosts:
    latency = latency_model(table, space) if table is not None else None
    if config.metric == "latency" and config.target is not None and latency is None \
            and not config.reinforce_measure:
        raise ProxylessError("--target-ms needs --table (make one with `proxyless profile "
                             f"--space {space.name} --out table.json`), or --strategy "
                             "reinforce --measure-latency")
    if latency is not None and config.target is not None and config.metric == "latency":
        fastest, _ = latency.bounds()
        if config.target < fastest:
            log(f"note: target {config.target} ms is below the fastest network of the space "
                f"({fastest:.3f} ms); the search will favour the fastest ops")
    constrained = flops_model(space) if config.metric == "flops" else latency
    also_log = [latency] if latency is not None and constrained is not latency else []
    return SearchCosts(constrained, latency, also_log)
