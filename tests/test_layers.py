"""Imports run one way: storage <- viewer <- consult, and inside consult from the catalog up
to the edges (the README's "Where things live" draws the same picture)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Inside consult/: a package may import its own layer and the layers below, never above.
LAYERS: list[set[str]] = [
    {"errors"},
    {"dicom", "catalog"},
    {"settings"},
    {"jobs", "access", "services"},
    {"ingest", "studies", "previews", "consultations"},
    {"receiver", "web"},
    {"cli"},
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}
TOP = {"storage": 0, "viewer": 1, "consult": 2}


def _imports(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "consult":
                yield from (f"consult.{alias.name}" for alias in node.names)
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _sources(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("top", sorted(TOP))
def test_top_level_packages_import_downwards(top: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in _sources(top)
        for name in _imports(path)
        if name.split(".")[0] in TOP and TOP[name.split(".")[0]] > TOP[top]
    ]
    assert not wrong, "\n".join(wrong)


def test_every_consult_package_has_a_layer() -> None:
    children = {
        p.stem if p.is_file() else p.name
        for p in (ROOT / "consult").iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").is_file()) and not p.name.startswith("__")
    }
    assert children == set(LAYER_OF), "add new packages to LAYERS (and to the README map)"


def test_consult_packages_import_their_layer_or_below() -> None:
    wrong = []
    for path in _sources("consult"):
        parts = path.relative_to(ROOT / "consult").with_suffix("").parts
        if parts[0] in {"__init__", "__main__"}:
            continue
        mine = LAYER_OF[parts[0]]
        for name in _imports(path):
            words = name.split(".")
            if words[0] != "consult" or len(words) < 2 or words[1] == parts[0]:
                continue
            if LAYER_OF.get(words[1], -1) > mine:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)
