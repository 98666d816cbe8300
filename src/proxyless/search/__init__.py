"""Architecture search: the loop, its strategies, losses and outputs.

- `loop.py`       warm-up, then alternating weight and architecture steps; checkpoints
- `gradient.py`   ProxylessNAS-G: α by gradient through binarized paths
- `reinforce.py`  ProxylessNAS-R: α by REINFORCE over sampled architectures
- `losses.py`     the hardware-aware losses (mul-log, add-linear)
- `outputs.py`    arch.json, summary.json and the plots of a finished search
"""

from proxyless.search.config import SearchConfig
from proxyless.search.loop import SearchResult, search

__all__ = ["SearchConfig", "SearchResult", "search"]
