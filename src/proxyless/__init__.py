"""proxyless: hardware-aware neural architecture search the ProxylessNAS way.

Search directly on the target task and the target hardware, at the memory cost of training
one network (Cai, Zhu, Han, "ProxylessNAS: Direct Neural Architecture Search on Target Task and
Hardware", ICLR 2019).

    >>> from proxyless import Architecture, load_space, build_network
    >>> space = load_space("fashion")
    >>> arch = Architecture.uniform(space, "k3e6")
    >>> net = build_network(arch)
    >>> model = load_model("runs/x")        # a trained network, from a run folder or model.pt
"""

from proxyless.arch import Architecture, decode, encode, load_architecture
from proxyless.deploy import TrainedModel, load_model
from proxyless.errors import ProxylessError
from proxyless.net import ProxylessNet, build_network
from proxyless.space import PRESETS, SearchSpace, load_space

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
