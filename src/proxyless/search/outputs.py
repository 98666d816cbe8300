"""What a finished search leaves behind: the architecture, a summary, and its plots."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxyless.config_io import result_from_dict, to_dict
from proxyless.engine.runtime import first_line, load_checkpoint
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, write_json_atomic
from proxyless.latency.cost import CostModel
from proxyless.latency.measure import Meter
from proxyless.latency.settings import Timing, measure_runtimes, priced, table_setting
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture
from proxyless.model.layers import count_macs, count_params
from proxyless.model.space import SearchSpace
from proxyless.model.supernet import SuperNet
from proxyless.pipeline.plots import arch_picture, probs_evolution
from proxyless.search.config import SearchConfig
from proxyless.search.loop import CHECKPOINT, SearchResult

RUNTIMES_TIMING = Timing(warmup=5, repeats=20, min_time=2.0)  # a few seconds, at the end
SUMMARY_FILE = "summary.json"


@dataclass
class SearchSummary:
    """What a finished search found (`summary.json`): the network, its predicted and measured
    latency, its size and accuracy, and how it was searched. Read back with `read`."""

    arch: str
    blocks: list[str] = field(default_factory=list)
    space: str = ""
    predicted_ms: float | None = None       # by the latency model searched with
    measured_ms: float | None = None        # end to end, where the table is this machine's
    speed_factor: float | None = None       # the machine's speed then, against the table's
    priced: dict[str, Any] | None = None    # the setting its latency is of (`priced`)
    runtimes_ms: dict[str, Any] | None = None  # measured in every runtime (`search` only)
    target_ms: float | None = None
    target_mflops: float | None = None
    params: int = 0
    macs: int = 0
    val_top1: float = 0.0                   # the argmax network on the held-out split
    entropy: float = 0.0                    # of p, averaged over blocks, at the end
    strategy: str = "gradient"
    estimator: str | None = None
    loss: str = ""
    weight_sharing: str = "separate"
    decide: float = 0.0
    fair_paths: bool = False
    sandwich: bool = False
    epochs: int = 0
    warmup_epochs: int = 0
    search_time_s: float = 0.0
    peak_rss_mib: float = 0.0               # the process's peak resident memory so far
    table_device: str | None = None         # where the table was measured
    retargeted_from: str | None = None      # a re-targeting's: the search folder
    alpha_start: str | None = None          # ... and where its α started (final, uniform)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def read(cls, path: str | Path, required: tuple[str, ...] = ("arch",)) -> SearchSummary:
        """summary.json (`config_io.result_from_dict`)."""
        return result_from_dict(cls, read_mapping(path, "search summary"), path, required)


def measure_on_table_device(arch: Architecture, table: LatencyTable | None,
                            log=print) -> tuple[float | None, float | None]:
    """End-to-end latency (ms) of `arch` on the table's device and backend, and the machine's
    speed factor at the time; (None, None) where the table's device is not this machine."""
    if table is None:
        return None, None
    try:
        measured, speed = Meter.for_table(table).measure([arch])
    except ProxylessError as err:
        log(f"measured latency: skipped; {err}")
        return None, None
    return measured[0], speed


def write_search_outputs(result: SearchResult, out_dir: str | Path, config: SearchConfig,
                         latency: CostModel | None, table: LatencyTable | None,
                         log=print, runtimes: bool = True,
                         retargeted: dict | None = None) -> SearchSummary:
    """arch.json, summary.json, probs.png and arch.png of a finished search (or
    re-targeting: `retargeted`, its search folder and α start). Where the table
    was measured on this machine's CPU, the derived network is measured end to end as the
    table was (`measured_ms`) and, with `runtimes`, in every runtime at the table's batch and
    threads (`runtimes_ms`: what it would cost in PyTorch and in ONNX Runtime)."""
    out = Path(out_dir)
    arch = result.arch
    arch.save(out / "arch.json")
    measured, speed = measure_on_table_device(arch, table, log)
    other_runtimes = None
    if runtimes and measured is not None and table.meta.get("device", "cpu") == "cpu":
        setting = table_setting(table.meta)
        other_runtimes = measure_runtimes(arch, setting["batch"], setting.get("threads", 1),
                                          RUNTIMES_TIMING)
    last = result.metrics[-1]
    summary = SearchSummary(
        arch=arch.encode(), blocks=list(arch.blocks), space=arch.space.name,
        predicted_ms=latency.predict(arch) if latency is not None else None,
        measured_ms=measured, speed_factor=speed,
        priced=priced(table.meta) if table is not None else None, runtimes_ms=other_runtimes,
        target_ms=config.target if config.metric == "latency" else None,
        target_mflops=config.target if config.metric == "flops" else None,
        params=count_params(arch), macs=count_macs(arch), val_top1=last["val_top1"],
        entropy=last["entropy"], strategy=config.strategy,
        estimator=config.estimator if config.strategy == "gradient" else None,
        loss=config.loss, weight_sharing=config.weight_sharing, decide=config.decide,
        fair_paths=config.fair_paths, sandwich=config.sandwich, epochs=config.epochs,
        warmup_epochs=config.warmup_epochs,
        search_time_s=sum(m["epoch_time_s"] for m in result.metrics),
        # the process's peak resident memory so far (Linux reports KiB): the search's own
        # where a process runs one search, as `proxyless search` does
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        table_device=(table.meta.get("cpu") or table.meta.get("device")) if table else None,
        retargeted_from=retargeted["search"] if retargeted else None,
        alpha_start=retargeted["from"] if retargeted else None)
    tokens = [slot.candidates for slot in arch.space.slots()]
    how = f"re-targeted from {retargeted['from']} α" if retargeted else config.strategy
    probs_evolution(result.probs_history, tokens, out / "probs.png",
                    f"p per block over epochs ({how})")
    label = f"{arch.space.name}: {summary.params / 1e6:.2f}M params, " \
            f"{summary.macs / 1e6:.1f}M MACs"
    if summary.predicted_ms is not None:
        label += f", predicted {summary.predicted_ms:.2f} ms"
    arch_picture(arch, out / "arch.png", label)
    # last: `proxyless run` takes summary.json for a finished search, plots included
    write_json_atomic(out / SUMMARY_FILE, summary.to_dict())
    return summary


def trained_supernet(search_dir: str | Path, advice: str = "search again") -> SuperNet:
    """The supernet a search left in its folder's checkpoint (its last finished epoch), built
    for the space and weight sharing the checkpoint records. `advice` ends every error."""
    path = Path(search_dir) / CHECKPOINT
    return supernet_from_state(load_checkpoint(path, "search checkpoint", advice), path, advice)


def supernet_from_state(state: dict, path: Path, advice: str) -> SuperNet:
    """The supernet of a loaded search checkpoint (`path`'s), or a one-line error."""
    try:
        sharing = state["config"].get("weight_sharing", "separate")
        net = SuperNet(SearchSpace.from_dict(state["space"]), weight_sharing=sharing)
        net.load_state_dict(state["supernet"])
    except (KeyError, AttributeError, RuntimeError, ProxylessError) as err:
        raise ProxylessError(f"{path} holds no supernet of this space ({first_line(err)}); "
                             f"{advice}") from None
    return net
