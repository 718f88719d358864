"""STYLE.md rule 5: every config field is documented where it is declared (comment or docstring)."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

CONFIG_DIR = Path(__file__).resolve().parents[2] / "miles_hydra" / "config"
SOURCES = sorted(CONFIG_DIR.glob("*.py"))


def _is_dataclass(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "dataclass":
            return True
    return False


def undocumented_fields(path: Path) -> list[str]:
    """``Class.field`` for each annotated dataclass field with neither a comment on its lines
    nor a string literal as the next statement (an attribute docstring)."""
    source = path.read_text()
    comment_lines = {
        tok.start[0]
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    }
    missing = []
    for cls in ast.walk(ast.parse(source)):
        if not (isinstance(cls, ast.ClassDef) and _is_dataclass(cls)):
            continue
        body = cls.body
        for i, stmt in enumerate(body):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            # a comment on any line of the statement (ruff format may wrap long defaults)
            has_comment = any(n in comment_lines for n in range(stmt.lineno, stmt.end_lineno + 1))
            nxt = body[i + 1] if i + 1 < len(body) else None
            has_docstring = (
                isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            )
            if not (has_comment or has_docstring):
                missing.append(f"{path.name}:{stmt.lineno} {cls.name}.{stmt.target.id}")
    return missing


def test_checker_sees_fields() -> None:
    """Guard against a checker that passes because it finds nothing."""
    fields = 0
    for path in SOURCES:
        for cls in ast.walk(ast.parse(path.read_text())):
            if isinstance(cls, ast.ClassDef) and _is_dataclass(cls):
                fields += sum(isinstance(s, ast.AnnAssign) for s in cls.body)
    assert fields > 100


def test_checker_flags_an_undocumented_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dataclasses import dataclass\n\n@dataclass\nclass C:\n"
        "    a: int = 1  # documented\n    b: int = 2\n    c: int = 3\n    '''documented'''\n"
    )
    assert undocumented_fields(bad) == ["bad.py:6 C.b"]


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_every_field_documented(path: Path) -> None:
    assert undocumented_fields(path) == []
