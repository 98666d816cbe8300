"""`proxyless run`: the whole job in one command.

1. profile this device for the space (a cached table is reused for the same fingerprint),
2. search under a latency target (default: chosen from the table's range),
3. retrain the derived network from scratch and evaluate it,
4. measure its real latency end to end,
5. write `report.md` with plots and a results table.

Each step writes into the run folder and is skipped when its output is already there, so
`--resume` (or simply running again) continues after an interruption.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from proxyless.config_io import setting, to_dict
from proxyless.data import DataSplits
from proxyless.deploy.export import runtime_latencies
from proxyless.deploy.model_file import MODEL_FILE, ModelInfo, save_model
from proxyless.engine import distributed
from proxyless.engine.run_lock import LOCK_FILE, hold_run_folder
from proxyless.engine.runtime import prepare_out_dir
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping, write_json_atomic
from proxyless.latency.cache import cached_table
from proxyless.latency.cost import CostModel, latency_model
from proxyless.latency.profile import ProfileSetting
from proxyless.latency.settings import priced, table_setting
from proxyless.latency.table import LatencyTable
from proxyless.latency.timer import DEFAULT_THREADS, cpu_model
from proxyless.model.architecture import Architecture, decode
from proxyless.model.space import SearchSpace
from proxyless.pipeline.budgets import BUDGETS
from proxyless.pipeline.plots import training_curves
from proxyless.pipeline.report import write_report
from proxyless.pipeline.results import RESULTS_FILE, RunResult
from proxyless.search.config import SearchConfig
from proxyless.search.costs import SearchCosts, search_costs
from proxyless.search.loop import search
from proxyless.search.outputs import SearchSummary, trained_supernet, write_search_outputs
from proxyless.search.retarget import (
    FinishedSearch,
    finished_search,
    retarget,
    retarget_config,
)
from proxyless.training.trainer import TrainConfig, TrainResult, train_network

RETRAIN_INITS = ("scratch", "supernet")


@dataclass
class RunConfig:
    search: SearchConfig
    train: TrainConfig
    target_fraction: float = setting(0.35, "without --target-ms, the target this far from "
                                           "the fastest network to the slowest", option=None)
    # how this device is profiled where no table is given (its runtime and batch: what the
    # latency is of; batch 1: latency, larger: throughput)
    profile: ProfileSetting = field(default_factory=ProfileSetting)
    table: str | None = setting(None, "a latency table to search with instead of profiling "
                                      "this device")
    budget: str = setting("custom", "how long it searches and retrains (the --budget it was "
                                    "made from)")
    retrain_init: str = setting("scratch", "the retraining starts from scratch (the paper) "
                                           "or from the supernet's trained paths "
                                           "(fine-tuning; see bench/retrain_start.py)",
                                choices=RETRAIN_INITS)
    from_search: str | None = setting(None, "a finished search folder whose trained supernet "
                                            "is re-targeted (architecture steps only) instead "
                                            "of a new search")

    def validate(self) -> None:
        self.search.validate()
        self.train.validate()
        if self.search.metric != "latency":
            raise ProxylessError("run searches for a latency target; use --target-ms")
        if not 0 <= self.target_fraction <= 1:  # also refuses nan
            raise ProxylessError(f"run config: target_fraction must be in [0, 1], got "
                                 f"{self.target_fraction}")
        self.profile.validate()
        if self.profile.min_time <= 0:  # a table cached for every later run: timed, not once
            raise ProxylessError(f"--profile-min-time must be a number of seconds above 0, "
                                 f"got {self.profile.min_time}")
        if self.profile.calibration_networks < 2:  # a cached table is a calibrated one
            raise ProxylessError(f"run config: profile.calibration_networks must be >= 2, got "
                                 f"{self.profile.calibration_networks}")
        if self.profile.device != self.search.device:
            raise ProxylessError(f"run config: the profile's device {self.profile.device!r} "
                                 f"is not the search's {self.search.device!r}")
        if self.budget != "custom" and self.budget not in BUDGETS:
            raise ProxylessError(f"--budget {self.budget!r}: expected one of "
                                 f"{', '.join(BUDGETS)}")


def _run_table(out: Path, space: SearchSpace, config: RunConfig, resume: bool, progress: bool,
               log) -> tuple[LatencyTable, Path]:
    """Rank 0: this run's table (a resumed run keeps the very table it started with)."""
    table_copy = out / "latency_table.json"
    prepare_out_dir(out)
    if resume and table_copy.exists():
        log(f"latency table: reusing this run's {table_copy}")
        return LatencyTable.load(table_copy), table_copy
    if config.table is not None:
        table, path = LatencyTable.load(config.table), Path(config.table)
        latency_model(table, space)  # a table of another space: refused before the search
        log(f"latency table: {path} (given)")
    else:
        table, path = cached_table(space, config.profile, progress, log)
    table.save(table_copy)
    return table, path


def _saved(path: Path, keys: tuple[str, ...]) -> dict:
    """A step's saved result from an earlier (resumed) run, or a clear error when the file
    was damaged: removing it redoes that step alone."""
    data = read_mapping(path, "saved result")
    missing = [key for key in keys if key not in data]
    if missing:
        raise ProxylessError(f"saved result {path} lacks {', '.join(missing)} (damaged or from "
                             "another version); remove it to redo that step with --resume")
    return data


def _epoch_records(path: Path, say) -> list[dict]:
    """metrics.jsonl's records for the plot; a damaged file costs the plot, not the run."""
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if all(isinstance(r, dict) and "train_top1" in r and "test_top1" in r
               for r in records):
            return records
    except (OSError, ValueError):
        pass
    say(f"warning: {path} is damaged; the report has no training curves")
    return []


def _run_target(config: RunConfig, model: CostModel, saved_search: Path, resume: bool,
                say) -> float:
    """The given target; else a resumed run's own; else one chosen from the table's range."""
    if config.search.target is not None:
        return config.search.target
    if resume and saved_search.exists():
        saved = _saved(saved_search, ("search",))["search"]
        target = saved.get("target") if isinstance(saved, dict) else None
        if not isinstance(target, (int, float)) or not 0 < target < math.inf:
            raise ProxylessError(f"saved result {saved_search}: search.target is not a "
                                 "positive number; remove it to redo the search")
        say(f"latency target: {target} ms (this run's)")
        return target
    fastest, slowest = model.bounds()
    target = default_target(model, config.target_fraction)
    say(f"latency target: {target} ms (networks of this space: {fastest:.2f} - "
        f"{slowest:.2f} ms by the table)")
    return target


def default_target(model: CostModel, fraction: float) -> float:
    """The target `fraction` of the way from the space's fastest network to its slowest."""
    fastest, slowest = model.bounds()
    return round(fastest + fraction * (slowest - fastest), 3)


def _run_search(space: SearchSpace, data: DataSplits, scfg: SearchConfig, costs: SearchCosts,
                table: LatencyTable, search_dir: Path, main: bool, progress: bool, say,
                log, searched: FinishedSearch | None = None) -> SearchSummary:
    """The search step (or the re-targeting of `searched`'s supernet under `scfg`), or its
    summary when it finished before."""
    summary_path = search_dir / "summary.json"
    if summary_path.exists():
        summary = SearchSummary.read(summary_path, ("arch", "measured_ms", "speed_factor",
                                                    "val_top1", "search_time_s"))
        say(f"search: done before ({summary.arch})")
        return summary
    resume = (search_dir / "checkpoint.pt").exists()
    retargeted = None
    if searched is not None:  # one process (see cmd_run): its supernet, α steps alone
        say(f"search: re-targeting the supernet of {searched.folder}")
        result = retarget(searched, data, costs.constrained, scfg, search_dir, resume=resume,
                          progress=progress, log=log, latency_fn=costs.measured)
        retargeted = {"search": str(searched.folder), "from": "final"}
    else:
        result = search(space, data, costs.constrained, scfg, search_dir, resume=resume,
                        progress=progress, log=log, latency_fn=costs.measured)
    # the retrained network is measured in every runtime instead (`_runtimes`)
    summary = (write_search_outputs(result, search_dir, scfg, costs.latency, table, log,
                                    runtimes=False, retargeted=retargeted) if main else None)
    del result  # the supernet's memory is the retraining's
    return distributed.broadcast_object(summary)


def run_pipeline(space: SearchSpace, data: DataSplits, config: RunConfig, out_dir: str | Path,
                 resume: bool = False, progress: bool = True, log=print) -> RunResult:
    """The whole job; under torchrun every rank searches and retrains, rank 0 alone profiles,
    measures and writes (the others receive its table, target and results)."""
    config.validate()
    out = Path(out_dir)
    rank = distributed.setup(config.search.device)
    prepare_out_dir(out, create=False)  # a file there would fail the listing below
    # the command line's config.yaml (its options) comes first: not a run
    busy = rank.is_main and out.exists() and not resume and any(
        p.name not in ("config.yaml", LOCK_FILE) for p in out.iterdir())
    if distributed.broadcast_object(busy):
        raise ProxylessError(f"{out} already holds a run; pass --resume to continue it or "
                             "choose another --out")
    with hold_run_folder(out, rank.is_main):  # one writer at a time
        return _run_pipeline(space, data, config, out, rank.is_main, resume, progress, log)


def _run_pipeline(space: SearchSpace, data: DataSplits, config: RunConfig, out: Path,
                  main: bool, resume: bool, progress: bool, log) -> RunResult:
    say = log if main else (lambda message: None)
    search_dir = out / "search"

    # 1. profile, and the target
    table, table_path = _run_table(out, space, config, resume, progress, log) if main \
        else (None, None)
    table_path = Path(distributed.broadcast_object(str(table_path) if main else None))
    table = table if main else LatencyTable.load(table_path)
    model = latency_model(table, space)
    target = _run_target(config, model, search_dir / "config.json", resume, say)
    scfg = replace(config.search, target=target)
    searched = None
    if config.from_search is not None and not (search_dir / "summary.json").exists():
        # the search's own settings, this run's target and runtime: what the α steps use
        searched = finished_search(config.from_search)
        scfg = retarget_config(searched.config, searched.retargeted, target=target,
                               metric=scfg.metric,
                               **{k: getattr(scfg, k) for k in SearchConfig.RESUMABLE})
    costs = search_costs(space, scfg, table, say)
    if main:
        write_json_atomic(out / "run_config.json", to_dict(replace(config, search=scfg)))

    # 2. search, 3. retrain from scratch
    summary = _run_search(space, data, scfg, costs, table, search_dir, main, progress, say, log,
                          searched)
    arch = decode(space, summary.arch)
    train_dir = out / "retrain"
    final_path = train_dir / "final.json"
    retrain_data = data.for_retraining()  # the validation hold-out trains the network too
    if final_path.exists():
        final = TrainResult.read(final_path, ("test_top1", "params", "macs", "train_time_s"))
    else:
        tcfg = config.train
        if config.retrain_init == "supernet":
            tcfg = replace(tcfg, init_from=str(_supernet_start(arch, data, search_dir, main,
                                                               say)))
        final = train_network(arch, retrain_data, tcfg, train_dir,
                              resume=(train_dir / "checkpoint.pt").exists(), progress=progress,
                              log=log)

    # 4. real latency: measured end to end when the search finished (search/summary.json)
    results = RunResult(
        arch=arch.encode(), test_top1=final.test_top1, target_ms=target,
        predicted_ms=model.predict(arch), measured_ms=summary.measured_ms,
        speed_factor=summary.speed_factor, params=final.params, macs=final.macs,
        search_val_top1=summary.val_top1, search_time_s=summary.search_time_s,
        retrain_time_s=final.train_time_s, data=data.name,
        train_images=len(retrain_data.train), search_train_images=len(data.train),
        search_val_images=len(data.val) if data.val is not None else 0,
        retrain_init=config.retrain_init, retrain_dropout=config.train.dropout,
        retargeted_from=summary.retargeted_from,
        test_images=len(data.test), device=table.meta.get("cpu") or table.meta.get("device"),
        threads=table.meta.get("threads"), backend=table.meta.get("backend"),
        batch=table.meta.get("batch", 1), table=str(table_path), budget=config.budget,
        priced=priced(table.meta), latency_model=latency_model_quality(table))
    if main:  # what the network costs in each runtime, and 5. the report
        results.runtimes_ms, results.runtimes_setting = _runtimes(train_dir / MODEL_FILE, data,
                                                                  table, say)
        metrics = _epoch_records(train_dir / "metrics.jsonl", say)
        if metrics:
            training_curves(metrics, out / "retrain.png", ("train_top1", "test_top1"),
                            "retraining the derived network")
        write_json_atomic(out / RESULTS_FILE, results.to_dict())
        write_report(out, results, scfg, config.train, space)
    return results


def _supernet_start(arch: Architecture, data: DataSplits, search_dir: Path, main: bool,
                    say) -> Path:
    """The derived network holding the trained supernet's weights of its paths, written as a
    model file (`search/derived.pt`) for the retraining to start from: the reference code's
    retraining likewise loads `<path>/init` where its search wrote one."""
    path = search_dir / "derived.pt"
    if main:
        supernet = trained_supernet(search_dir, "run again with --retrain-init scratch, or "
                                                "search again")
        info = ModelInfo(arch, data.mean, data.std, data.train.classes,
                         {"name": data.name, "source": data.source,
                          "transform": data.transform}, {})
        save_model(path, supernet.derived_network(arch), info)
        say(f"retraining starts from the supernet's weights ({path})")
    distributed.broadcast_object(None)  # the others wait for the file
    return path


def _runtimes(model_file: Path, data: DataSplits, table: LatencyTable,
              say) -> tuple[dict, dict]:
    """The retrained network measured now in every runtime (PyTorch, ONNX Runtime fp32 and
    int8) at the table's batch and threads, on this machine: what the user would pay where;
    and that setting."""
    setting = table_setting(table.meta)  # a table that records no threads (a phone's): one
    batch, threads = setting["batch"], setting.get("threads", DEFAULT_THREADS)
    measured = runtime_latencies(model_file, data, batch, threads, log=say)
    return measured, {"machine": cpu_model(), "batch": batch, "threads": threads}


def latency_model_quality(table: LatencyTable) -> dict | None:
    """How well the table predicts networks it was not fitted on: its calibration's
    leave-one-out figures, and a kit's check on networks timed on the device."""
    fit = (table.calibration or {}).get("fit", {})
    quality = {}
    if fit.get("cross_validated"):
        quality["left_out"] = dict(fit["cross_validated"],
                                   used=not (table.calibration or {}).get("refused"))
    kit = table.meta.get("kit_check")
    if isinstance(kit, dict) and isinstance(kit.get("calibrated"), dict):
        quality["kit_check"] = {"networks": kit.get("samples"), **kit["calibrated"]}
    return quality or None
