"""What a finished folder or file says about its network.

`proxyless compare` and `proxyless cross-latency` take networks from the places the other
commands leave them: a `proxyless run` folder (results.json), a `train` folder (final.json),
a `search` folder (summary.json), a model file, an architecture file (ours or the authors'
net.config). Each becomes a `Network`: the architecture with its space, and whatever the
folder recorded (test top-1, the data set, latencies, the latency table it was searched
with). The few text helpers both commands print with live here too, below both of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from proxyless.config_io import clip, excerpt
from proxyless.deploy.model_file import read_model_file
from proxyless.errors import ProxylessError
from proxyless.files import read_mapping
from proxyless.latency.table import LatencyTable
from proxyless.model.architecture import Architecture, load_architecture

RUN, TRAIN, SEARCH = "run folder", "train folder", "search folder"
MODEL_FILE, ARCH_FILE = "model file", "architecture file"
MODEL_SUFFIXES = (".pt", ".pth")
RUN_PARTS = ("search", "retrain")  # a run folder's inner folders
_TABLE_FIELDS = ("backend", "threads", "batch")


@dataclass(frozen=True)
class Network:
    """One network to compare, with what its folder or file recorded about it."""

    name: str
    source: Path
    kind: str                           # RUN, TRAIN, SEARCH, MODEL_FILE or ARCH_FILE
    arch: Architecture
    test_top1: float | None = None
    val_top1: float | None = None       # a search's supernet (argmax) validation top-1
    data: str | None = None             # the data set it was trained or searched on
    recorded_ms: float | None = None    # end to end, on its latency table's time base
    predicted_ms: float | None = None
    table_meta: dict[str, Any] | None = None  # the latency table it was searched with


# -- reading folders and files ------------------------------------------------------------
def _number(data: dict, key: str, where: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise ProxylessError(f"{where}: {key} must be a number, got {excerpt(value)}; the "
                             "file is damaged (redo the step that wrote it)")
    return float(value)


def _on_time_base(data: dict, where: str) -> float | None:
    """measured_ms divided by the speed factor of the moment: the latency at the speed the
    table was measured at, so figures from different moments compare."""
    measured, speed = _number(data, "measured_ms", where), _number(data, "speed_factor", where)
    if measured is None:
        return None
    return measured / speed if speed and speed > 0 else measured


def _data_name(value: Any) -> str | None:
    if isinstance(value, dict):  # a search's config.json: {"name": ..., "source": ...}
        value = value.get("name")
    return value if isinstance(value, str) else None


def _recorded_arch(folder: Path, files: tuple[str, ...], encoding: Any,
                   where: str) -> Architecture:
    """The network with its space, from the first of `files` the folder holds; it must be
    the one the results name (`encoding`), or the folder mixes two runs."""
    for name in files:
        path = folder / name
        if path.is_file():
            arch = load_architecture(path)
            if encoding is not None and arch.encode() != encoding:
                raise ProxylessError(f"{where}: arch {excerpt(encoding)} is not the network of "
                                     f"{path} ({arch.encode()}); the folder mixes two runs")
            return arch
    raise ProxylessError(f"{clip(folder)} lacks {' and '.join(files)}, which hold its "
                         "network's space; give the whole folder its command wrote")


def _table_meta(path: Path) -> dict[str, Any] | None:
    return LatencyTable.load(path).meta if path.is_file() else None


def _read_run(folder: Path) -> Network:
    path = folder / "results.json"
    results, where = read_mapping(path, "run results"), f"run results {path}"
    arch = _recorded_arch(folder, ("search/arch.json", "retrain/config.json"),
                          results.get("arch"), where)
    meta = _table_meta(folder / "latency_table.json") or {
        **{key: results[key] for key in _TABLE_FIELDS if key in results},
        "device_name": results.get("device")}  # results name the CPU model, not cpu/cuda
    return Network(_default_name(folder), folder, RUN, arch,
                   test_top1=_number(results, "test_top1", where),
                   val_top1=_number(results, "search_val_top1", where),
                   data=_data_name(results.get("data")),
                   recorded_ms=_on_time_base(results, where),
                   predicted_ms=_number(results, "predicted_ms", where), table_meta=meta)


def _read_train(folder: Path) -> Network:
    path = folder / "final.json"
    final, where = read_mapping(path, "training results"), f"training results {path}"
    arch = _recorded_arch(folder, ("config.json",), final.get("arch"), where)
    return Network(_default_name(folder), folder, TRAIN, arch,
                   test_top1=_number(final, "test_top1", where),
                   data=_data_name(final.get("data")))


def _read_search(folder: Path) -> Network:
    path = folder / "summary.json"
    summary, where = read_mapping(path, "search summary"), f"search summary {path}"
    arch = _recorded_arch(folder, ("arch.json",), summary.get("arch"), where)
    config = folder / "config.json"
    data = read_mapping(config, "search config").get("data") if config.is_file() else None
    # inside a run folder the search's table is the run's; alone, only its device is known
    meta = _table_meta(folder.parent / "latency_table.json")
    if meta is None and isinstance(summary.get("table_device"), str):
        meta = {"device_name": summary["table_device"]}
    return Network(_default_name(folder), folder, SEARCH, arch,
                   val_top1=_number(summary, "val_top1", where), data=_data_name(data),
                   recorded_ms=_on_time_base(summary, where),
                   predicted_ms=_number(summary, "predicted_ms", where), table_meta=meta)


_FOLDER_KINDS = (("results.json", _read_run), ("final.json", _read_train),
                 ("summary.json", _read_search))


def read_folder(path: str | Path) -> Network:
    """A finished run, train or search folder, told apart by the files in it."""
    folder = Path(path)
    if folder.is_file():
        raise ProxylessError(f"{clip(folder)} is a file; give the run, train or search folder "
                             "that holds it (`proxyless cross-latency` also takes files)")
    if not folder.is_dir():
        raise ProxylessError(f"{clip(folder)}: no such folder")
    for marker, read in _FOLDER_KINDS:
        if (folder / marker).is_file():
            return read(folder)
    hint = ""
    if (folder / "search" / "summary.json").is_file():
        hint = f" (its search has finished: give {clip(folder / 'search')})"
    raise ProxylessError(f"{clip(folder)} holds none of results.json (a finished `proxyless "
                         "run`), final.json (`proxyless train`) or summary.json (`proxyless "
                         f"search`); give a finished run, train or search folder{hint}")


def _read_file(file: Path) -> Network:
    """A model file (its test top-1 and data set come along) or an architecture file."""
    if file.suffix in MODEL_SUFFIXES:
        info = read_model_file(file)[0]
        return Network(_default_name(file), file, MODEL_FILE, info.arch,
                       test_top1=_number(info.metrics, "test_top1", f"model file {file}"),
                       data=_data_name(info.data))
    return Network(_default_name(file), file, ARCH_FILE, load_architecture(file))


def load_network(path: str | Path) -> Network:
    """A network from a run, train or search folder, a model file or an architecture file
    (ours or a reference net.config)."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.exists():
        raise ProxylessError(f"{clip(path)}: no such folder or file; give a run, train or "
                             "search folder, a model file or an architecture file")
    return _read_file(path)


def _default_name(path: Path) -> str:
    """A folder's whole name (`lr0.1` has no suffix to drop) and a file's stem; a run's inner
    `search`/`retrain` folder is `run/search`, and a `model.*` file takes the name of the
    folder it was written into (the run's for a run's `retrain/model.pt`), which tells more
    than "model"."""
    path = path.resolve()
    if path.is_dir():
        return f"{path.parent.name}/{path.name}" if path.name in RUN_PARTS else path.name
    if path.stem != "model":
        return path.stem
    folder = path.parent
    return folder.parent.name if folder.name == "retrain" else folder.name


def name_networks(networks: list[Network], names: list[str] | None) -> list[Network]:
    """The networks under `--names` (one each, distinct), or under their default names made
    distinct (a repeated name gets #2, #3, ...)."""
    if names is not None:
        if len(names) != len(networks):
            raise ProxylessError(f"--names gives {len(names)} names for {len(networks)} "
                                 "networks; give one per network")
        if len(set(names)) != len(names) or not all(n.strip() for n in names):
            raise ProxylessError(f"--names {excerpt(names)}: names must be distinct and not "
                                 "empty")
        chosen = list(names)
    else:
        chosen, used = [], set()
        for network in networks:
            name, count = network.name, 1
            while name in used:
                count += 1
                name = f"{network.name}#{count}"
            used.add(name)
            chosen.append(name)
    return [replace(n, name=name) for n, name in zip(networks, chosen, strict=True)]


# -- text both commands print ------------------------------------------------------------
def format_ms(ms: float) -> str:
    """Milliseconds to the digits a timing can stand behind."""
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:.0f}"


def cell(text: str) -> str:
    """Text for a markdown table cell: a bare | would split it."""
    return text.replace("|", "\\|")


def top1_text(network: Network) -> str:
    """The test top-1; a search folder has only its supernet's validation top-1, which is
    shown as such rather than passed off as a test figure."""
    if network.test_top1 is not None:
        return f"{network.test_top1:.2f}%"
    if network.val_top1 is not None:
        return f"n/a (supernet val {network.val_top1:.2f}%)"
    return "n/a"
