"""The doc line of every config field, read from where the field is declared.

Each schema field carries its documentation as a comment on its line (or an attribute docstring
right below it; STYLE.md rule 5). ``field_docs(Schema)`` returns those lines with each field's
type and default, for ``python launch.py +describe=<group>``; nothing is duplicated in a table.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import io
import tokenize
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldDoc:
    name: str  # field name as written in overrides (group.<name>=...)
    type: str  # annotation, readable: "int", "Optional[float]", "one of: a, b"
    default: str  # default value as it would be written in YAML; "(group)" for nested configs
    doc: str  # the comment or attribute docstring of the declaration


def field_docs(schema: type) -> list[FieldDoc]:
    """One ``FieldDoc`` per dataclass field of ``schema``, in declaration order."""
    comments = _declaration_docs(schema)
    hints = typing.get_type_hints(schema)
    docs = []
    for f in dataclasses.fields(schema):
        docs.append(
            FieldDoc(
                name=f.name,
                type=_type_name(hints.get(f.name, f.type)),
                default=_default(f),
                doc=comments.get(f.name, ""),
            )
        )
    return docs


def _declaration_docs(schema: type) -> dict[str, str]:
    """``field -> doc`` from the class source: a comment on the field's lines, else the string
    literal that follows the field."""
    source = inspect.getsource(schema)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)
    docs = {}
    for i, stmt in enumerate(cls.body):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        lines = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
        nxt = cls.body[i + 1] if i + 1 < len(cls.body) else None
        if not lines and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            lines = [" ".join(str(nxt.value.value).split())]
        docs[stmt.target.id] = " ".join(lines)
    return docs


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of: " + ", ".join(member.name for member in tp)
    if isinstance(tp, type):
        return tp.__name__
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        inner = _type_name(rest[0]) if len(rest) == 1 else " | ".join(map(_type_name, rest))
        return f"{inner} or null"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    return str(tp).replace("typing.", "")


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return _yaml_value(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(group)"
        return _yaml_value(value)
    return "(required)"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, str):
        return value if value else "''"
    return repr(value)
