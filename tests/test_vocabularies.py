"""Fixed vocabularies are enums with a docstring per member, and state is never spelled as a
bare string: each status lives in the one enum of the module that moves it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from consult.access import check
from consult.consultations.model import ConsultationStatus

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for p in (ROOT / "consult").rglob("*.py") if "migrations" not in p.parts)
TEMPLATES = sorted((ROOT / "consult" / "web" / "templates").glob("*.html"))

# Every enum of consult/ and where it lives: a state vocabulary in the module that changes
# the state, another vocabulary where it is used.
ENUMS = {
    "ConsultationStatus": "consult/consultations/model.py",
    "Urgency": "consult/consultations/model.py",
    "OpinionStatus": "consult/consultations/opinions.py",
    "DeliveryStatus": "consult/consultations/opinions.py",
    "PreviewStatus": "consult/previews/builds.py",
    "RenderStatus": "consult/previews/renders.py",
    "JobStatus": "consult/jobs/queue.py",
    "ProblemKind": "consult/studies/verify.py",
    "Role": "consult/access/directory.py",
    "Outcome": "consult/access/audit.py",
    "Operation": "consult/consultations/actions.py",
}


def _enum_classes() -> dict[str, tuple[str, ast.ClassDef]]:
    found = {}
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                ast.unparse(base) in {"enum.StrEnum", "StrEnum", "enum.Enum", "Enum"}
                for base in node.bases
            ):
                found[node.name] = (str(path.relative_to(ROOT)), node)
    return found


def test_every_enum_is_where_the_table_says() -> None:
    homes = {name: home for name, (home, _node) in _enum_classes().items()}
    assert homes == ENUMS


@pytest.mark.parametrize("name", sorted(ENUMS))
def test_enums_document_each_member(name: str) -> None:
    _home, node = _enum_classes()[name]
    first, *body = node.body
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant), "class doc"
    # Each member is followed by its docstring in the source.
    pairs = list(zip(body[::2], body[1::2], strict=True))
    assert pairs
    for assign, doc in pairs:
        assert isinstance(assign, ast.Assign), ast.unparse(assign)
        assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), (
            f"{name}.{ast.unparse(assign.targets[0])} has no docstring"
        )
        assert isinstance(doc.value.value, str) and doc.value.value.strip()


def _is_status(node: ast.expr) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return name in {"status", "outcome", "kind", "urgency", "role"}


def _is_word(node: ast.expr | None) -> bool:
    """A string literal that reads like a state (``"ready"``; not ``"201"``)."""
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"[a-z_]+", node.value) is not None
    )


def _bare_literals(tree: ast.AST) -> list[str]:
    """Status-like names compared with, or set to, a string literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_status(s) for s in sides) and any(_is_word(s) for s in sides):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.keyword) and node.arg in {"status", "outcome", "kind"}:
            if _is_word(node.value):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _is_word(key) and key.value == "status" and _is_word(value):  # type: ignore[union-attr]
                    found.append(ast.unparse(node))
    return found


def test_no_state_is_spelled_as_a_bare_string() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {literal}"
        for path in SOURCES
        for literal in _bare_literals(ast.parse(path.read_text(encoding="utf-8")))
    ]
    found += [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in TEMPLATES
        for match in re.finditer(r"status[^%}]*?(==|!=|equalto\",) *\"\w+\"", path.read_text())
    ]
    assert not found, "\n".join(found)


def test_the_access_check_spells_declined_as_the_lifecycle_does() -> None:
    # consult.access sits below consult.consultations, so it cannot import the enum.
    assert check._DECLINED == ConsultationStatus.DECLINED.value
