"""The `search` job as a library function: what `proxyless search` runs once its options are
parsed, callable from Python without the command line.

    >>> summary = search_job(space, data, SearchConfig(target=0.2), "runs/s")
    >>> summary.arch, summary.predicted_ms
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from proxyless.data import DataSplits
from proxyless.engine import distributed
from proxyless.latency.cache import cached_table
from proxyless.latency.profile import ProfileSetting
from proxyless.latency.table import LatencyTable
from proxyless.model.space import SearchSpace
from proxyless.search.config import SearchConfig
from proxyless.search.costs import search_costs
from proxyless.search.loop import search
from proxyless.search.outputs import SearchSummary, write_search_outputs


def search_job(space: SearchSpace, data: DataSplits, config: SearchConfig, out: str | Path,
               table: LatencyTable | None = None, profile: ProfileSetting | None = None,
               resume: bool = False, progress: bool = True,
               log: Callable[[str], None] = print) -> SearchSummary | None:
    """Search `space` on `data` into the run folder `out`: priced by `table`, or where none is
    given and the target is a latency, by this device's table profiled as `profile` says
    (default: `ProfileSetting` on the search's device; cached per device); then arch.json,
    summary.json and the plots. The summary on rank 0, None on the other ranks under
    torchrun."""
    if table is None and config.metric == "latency" and config.target is not None:
        table, _ = cached_table(space, profile or ProfileSetting(device=config.device),
                                progress, log)
    costs = search_costs(space, config, table, log=log)
    result = search(space, data, costs.constrained, config, out, resume=resume,
                    progress=progress, latency_fn=costs.measured, also_log=costs.also_log)
    if not distributed.is_main():
        return None
    return write_search_outputs(result, out, config, costs.latency, table)
