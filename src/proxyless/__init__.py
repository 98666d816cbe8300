"""proxyless: hardware-aware neural architecture search the ProxylessNAS way.

Search directly on the target task and the target hardware, at the memory cost of training
one network (Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on Target Task and
Hardware", ICLR 2019).

    >>> from proxyless import Architecture, load_space, build_network
    >>> space = load_space("fashion")
    >>> arch = Architecture.uniform(space, "k3e6")
    >>> net = build_network(arch)
    >>> model = load_model("runs/x")        # a trained network, from a run folder or model.pt

Layout (each subpackage's docstring lists its modules):

- `model/`       search spaces, architectures, layer records, ops, networks, the supernet
- `search/`      the search loop, its strategies (gradient, REINFORCE), losses and outputs
- `latency/`     device profiling, lookup tables, the latency model and its calibration
- `training/`    training a derived network from scratch
- `engine/`      what every loop runs on: epochs and checkpoints, stopping, optimizer,
                 precision, distributed, memory, TensorBoard
- `data/`        image data sets in memory or streamed from disk, and their batches
- `deploy/`      model files, ONNX / TorchScript exports, int8, evaluation
- `pipeline/`    the whole job (`run`), budgets, run folders read back, plots, compare
- `cli/`         the `proxyless` command line: it parses and prints, the library decides
- `config_io.py`  typed dataclass configs to and from plain dicts; excerpts for messages
- `files.py`     files read safely and written atomically
- `errors.py`    `ProxylessError`, the one exception users see
"""

from proxyless.deploy import TrainedModel, load_model
from proxyless.errors import ProxylessError
from proxyless.model.architecture import Architecture, decode, encode, load_architecture
from proxyless.model.network import ProxylessNet, build_network
from proxyless.model.space import PRESETS, SearchSpace, load_space

__all__ = [
    "PRESETS",
    "Architecture",
    "ProxylessError",
    "ProxylessNet",
    "SearchSpace",
    "TrainedModel",
    "build_network",
    "decode",
    "encode",
    "load_architecture",
    "load_model",
    "load_space",
]
__version__ = "0.1.0"
