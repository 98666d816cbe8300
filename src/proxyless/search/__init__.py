"""Architecture search: the loop, its strategies, losses and outputs.

- `loop.py`       warm-up, then alternating weight and architecture steps; checkpoints
- `gradient.py`   ProxylessNAS-G: α by gradient through binarized paths
- `reinforce.py`  ProxylessNAS-R: α by REINFORCE over sampled architectures
- `losses.py`     the hardware-aware losses (mul-log, add-linear)
- `outputs.py`    arch.json, summary.json and the plots of a finished search
- `job.py`        `search_job`: table, costs, search and outputs (`proxyless search`)
- `config.py`     `SearchConfig`: the search's settings, saved with every checkpoint
- `costs.py`      what a search is priced by: the latency table's model, FLOPs, measuring
- `checks.py`     inputs refused before a search starts; what may change on resume
- `step_batches.py`  a search's batches on this rank: weight steps, α steps, evaluation
- `paths.py`      which paths a weight step trains: warm-up, FairNAS, sandwich
- `retarget.py`   a finished search's supernet, α steps alone, for other targets
"""

from proxyless.search.config import SearchConfig
from proxyless.search.loop import SearchResult, search

__all__ = ["SearchConfig", "SearchResult", "search"]
