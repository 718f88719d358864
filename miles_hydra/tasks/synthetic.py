"""Synthetic verifiable tasks: arithmetic, countdown and sorting, generated on the fly.

Every task has ``generate(rng) -> (prompt_text, label)``, ``verify(response, label) -> float``
in [0, 1] and ``solution(label) -> str`` (the reference response for the supervised warm-start).

Response rule (all three verifiers): the response is the decoded text up to the first eos; after
stripping surrounding whitespace it must be exactly one well-formed answer. Trailing text (a
response that did not stop) scores 0, so the model has to learn to emit eos. Use reward=math
for a lenient "last number in the response" check instead.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

from miles_hydra.errors import ConfigError

_INT = re.compile(r"-?\d+")
_DIGITS = re.compile(r"\d+")


class Task(Protocol):
    name: str

    def generate(self, rng: random.Random) -> tuple[str, Any]: ...

    def verify(self, response: str, label: Any) -> float: ...

    def solution(self, label: Any) -> str: ...


def _kwarg_error(key: str, value: object, why: str, fix: str = "") -> ConfigError:
    return ConfigError(f"data.task_kwargs.{key}", value, why, fix)


@dataclass
class ArithmeticTask:
    """``a<op>b=`` -> the result, operands with up to `max_digits` digits (prompt ``12+34=``).

    Subtraction is generated with a >= b, so every answer is a non-negative integer.
    """

    max_digits: int = 2  # operands are uniform in [0, 10**max_digits)
    ops: str = "+"  # operators to draw from, any of "+-*"
    name: str = "arithmetic"

    def __post_init__(self) -> None:
        if not 1 <= self.max_digits <= 9:
            raise _kwarg_error("max_digits", self.max_digits, "must be between 1 and 9")
        if not self.ops or set(self.ops) - set("+-*"):
            raise _kwarg_error("ops", self.ops, "must be a non-empty string of + - *", 'e.g. "+-"')

    def generate(self, rng: random.Random) -> tuple[str, str]:
        top = 10**self.max_digits - 1
        a, b, op = rng.randint(0, top), rng.randint(0, top), rng.choice(self.ops)
        if op == "-" and a < b:
            a, b = b, a
        value = {"+": a + b, "-": a - b, "*": a * b}[op]
        return f"{a}{op}{b}=", str(value)

    def verify(self, response: str, label: Any) -> float:
        text = response.strip()
        return float(bool(_INT.fullmatch(text)) and text == str(label).strip())

    def solution(self, label: Any) -> str:
        return str(label)


@dataclass
class SortingTask:
    """``sort 3142:`` -> ``1234``: the given digits in ascending order."""

    min_len: int = 3  # fewest digits to sort
    max_len: int = 6  # most digits to sort
    name: str = "sorting"

    def __post_init__(self) -> None:
        if not 1 <= self.min_len <= self.max_len <= 40:
            raise _kwarg_error(
                "min_len",
                self.min_len,
                f"and max_len={self.max_len} must satisfy 1 <= min_len <= max_len <= 40",
            )

    def generate(self, rng: random.Random) -> tuple[str, str]:
        n = rng.randint(self.min_len, self.max_len)
        digits = "".join(rng.choice("0123456789") for _ in range(n))
        return f"sort {digits}:", "".join(sorted(digits))

    def verify(self, response: str, label: Any) -> float:
        text = response.strip()
        return float(bool(_DIGITS.fullmatch(text)) and text == str(label))

    def solution(self, label: Any) -> str:
        return str(label)


@dataclass
class CountdownTask:
    """``make 22 from 3,5,17:`` -> an expression using each number exactly once, e.g. ``3+17+5``.

    Label: ``{"numbers": [...], "target": int, "solution": str}``. Targets are generated from a
    random expression over the shuffled numbers, so every problem has a solution.
    """

    num_numbers: int = 3  # numbers given per problem
    max_number: int = 20  # numbers are uniform in [1, max_number]
    ops: str = "+-*"  # operators the generator uses (the verifier accepts + - * / and parens)
    max_target: int = 999  # targets are in [1, max_target]
    name: str = "countdown"

    def __post_init__(self) -> None:
        if not 2 <= self.num_numbers <= 6:
            raise _kwarg_error("num_numbers", self.num_numbers, "must be between 2 and 6")
        if not 1 <= self.max_number <= 999:
            raise _kwarg_error("max_number", self.max_number, "must be between 1 and 999")
        if not self.ops or set(self.ops) - set("+-*/"):
            raise _kwarg_error("ops", self.ops, "must be a non-empty string of + - * /")
        if self.max_target < 1:
            raise _kwarg_error("max_target", self.max_target, "must be >= 1")

    def generate(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        for _ in range(1000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            order = rng.sample(numbers, len(numbers))
            expr = str(order[0])
            for n in order[1:]:
                expr += rng.choice(self.ops) + str(n)
            value = evaluate_expression(expr)
            if value is not None and value.denominator == 1 and 1 <= value <= self.max_target:
                target = int(value)
                label = {"numbers": numbers, "target": target, "solution": expr}
                return f"make {target} from {','.join(map(str, numbers))}:", label
        raise _kwarg_error(
            "max_target",
            self.max_target,
            "leaves almost no reachable targets",
            "raise data.task_kwargs.max_target or add + to data.task_kwargs.ops",
        )

    def verify(self, response: str, label: Any) -> float:
        text = response.strip()
        used = _DIGITS.findall(text)
        if sorted(int(n) for n in used) != sorted(int(n) for n in label["numbers"]):
            return 0.0
        value = evaluate_expression(text)
        return float(value is not None and value == int(label["target"]))

    def solution(self, label: Any) -> str:
        return str(label["solution"])


TASKS: dict[str, type] = {
    "arithmetic": ArithmeticTask,
    "countdown": CountdownTask,
    "sorting": SortingTask,
}


def build_task(name: str, task_kwargs: dict[str, Any] | None = None) -> Task:
    """The synthetic task `name` with knobs from data.task_kwargs (ConfigError on unknown ones)."""
    if name not in TASKS:
        raise ConfigError(
            "data.task", name, "is not a synthetic task", f"use one of {sorted(TASKS)}"
        )
    kwargs = dict(task_kwargs or {})
    cls = TASKS[name]
    known = set(cls.__dataclass_fields__) - {"name"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ConfigError(
            "data.task_kwargs",
            kwargs,
            f"has keys {unknown} that task {name} does not know",
            f"valid keys: {sorted(known)}",
        )
    return cls(**kwargs)


# --- a tiny safe expression evaluator (no eval): digits, + - * /, parentheses, spaces ---

_TOKEN = re.compile(r"\s*(\d+|[-+*/()])")
_MAX_EXPR_CHARS = 256


def evaluate_expression(text: str) -> Fraction | None:
    """Exact value of an arithmetic expression, or None if malformed or dividing by zero.

    Grammar: expr := term (('+'|'-') term)*; term := atom (('*'|'/') atom)*;
    atom := digits | '(' expr ')'. No unary minus, no exponent, no other characters.
    """
    if len(text) > _MAX_EXPR_CHARS:
        return None
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            return None
        tokens.append(match.group(1))
        pos = match.end()
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except (_ParseError, ZeroDivisionError):
        return None
    return value if parser.pos == len(tokens) else None


class _ParseError(Exception):
    pass


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos = tokens, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> Fraction:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.atom()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.atom()
            value = value * rhs if op == "*" else value / rhs
        return value

    def atom(self) -> Fraction:
        token = self._peek()
        if token is None:
            raise _ParseError("unexpected end")
        self.pos += 1
        if token.isdigit():
            return Fraction(int(token))
        if token == "(":
            value = self.expr()
            if self._peek() != ")":
                raise _ParseError("missing )")
            self.pos += 1
            return value
        raise _ParseError(f"unexpected {token!r}")
