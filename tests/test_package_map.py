"""The package map of docs/layout.md lists every module of the package, and nothing else."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_map_matches_the_tree():
    text = (ROOT / "docs" / "layout.md").read_text()
    block = text.split("# Package layout", 1)[1].split("```")[1]
    listed, folder = set(), ""
    for line in block.splitlines()[2:]:
        match = re.match(r"( +)(\S+)", line)
        if not match:
            continue
        name = match.group(2)
        if name.endswith("/"):
            folder = name
        else:
            listed.add((folder if len(match.group(1)) > 2 else "") + name)
    package = ROOT / "src" / "proxyless"
    modules = {str(p.relative_to(package)) for p in package.rglob("*.py")
               if p.name != "__init__.py"}
    assert listed == modules
