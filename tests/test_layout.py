"""The layout the design card promises: the science in ``common`` knows nothing of Flower, the
command line, the site, the coordinator or the simulation; the site and the coordinator never
import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"common": {"flwr", "fedsynth", "client", "server", "simulation"},
             "client": {"fedsynth", "server", "simulation"},
             "server": {"fedsynth", "client", "simulation"}}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_the_layout_allows(package: str) -> None:
    wrong = {str(path.relative_to(ROOT)): sorted(_imports(path) & FORBIDDEN[package])
             for path in (ROOT / package).rglob("*.py")}
    assert not {path: names for path, names in wrong.items() if names}
