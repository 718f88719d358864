"""Synthetic tasks: pinned generation, strict verifiers, solutions that verify, safe evaluator."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from miles_hydra.errors import ConfigError
from miles_hydra.tasks import (
    ArithmeticTask,
    CharTokenizer,
    CountdownTask,
    SortingTask,
    build_task,
    evaluate_expression,
)

ALL_TASKS = [
    ArithmeticTask(),
    ArithmeticTask(max_digits=4, ops="+-*"),
    CountdownTask(),
    CountdownTask(num_numbers=4, max_number=50, ops="+-*/"),
    SortingTask(),
    SortingTask(min_len=8, max_len=10),
]


def test_arithmetic_prompt_and_label_are_pinned() -> None:
    prompt, label = ArithmeticTask().generate(random.Random(0))
    assert (prompt, label) == ("49+97=", "146")
    assert ArithmeticTask(max_digits=1).generate(random.Random(0)) == ("6+6=", "12")


@pytest.mark.parametrize("task", ALL_TASKS, ids=lambda t: f"{t.name}")
def test_solutions_verify_and_fit_the_char_tokenizer(task) -> None:
    tok = CharTokenizer()
    rng = random.Random(7)
    for _ in range(200):
        prompt, label = task.generate(rng)
        solution = task.solution(label)
        assert task.verify(solution, label) == 1.0, (prompt, solution)
        assert task.verify(f" {solution}\n", label) == 1.0  # surrounding whitespace is ignored
        assert task.verify(solution + "7", label) == 0.0  # trailing junk is not
        assert task.verify("", label) == 0.0
        assert tok.decode(tok.encode(prompt + solution)) == prompt + solution
        assert len(prompt) <= 64 and len(solution) + 1 <= 16


def test_subtraction_answers_are_never_negative() -> None:
    task = ArithmeticTask(max_digits=2, ops="-")
    rng = random.Random(1)
    assert all(not task.generate(rng)[1].startswith("-") for _ in range(200))


def test_arithmetic_and_sorting_verifiers_are_exact() -> None:
    assert ArithmeticTask().verify("46", "46") == 1.0
    assert ArithmeticTask().verify("046", "46") == 0.0
    assert ArithmeticTask().verify("46 46", "46") == 0.0
    assert ArithmeticTask().verify("4 6", "46") == 0.0
    assert SortingTask().verify("1234", "1234") == 1.0
    assert SortingTask().verify("1243", "1234") == 0.0


def test_countdown_verifier_checks_numbers_and_value() -> None:
    task = CountdownTask()
    label = {"numbers": [3, 5, 17], "target": 22, "solution": "5+17"}
    assert task.verify("3+17+5", {**label, "target": 25}) == 1.0
    assert task.verify("(17-3)*5", {**label, "target": 70}) == 1.0
    assert task.verify("17+5", {**label, "target": 22}) == 0.0  # 3 unused
    assert task.verify("17+5+3+3", {**label, "target": 28}) == 0.0  # 3 used twice
    assert task.verify("17+5+3", {**label, "target": 24}) == 0.0  # wrong value
    assert task.verify("17+5+3)", {**label, "target": 25}) == 0.0  # malformed
    assert task.verify("import os", label) == 0.0


def test_countdown_prompt_is_pinned_and_target_reachable() -> None:
    prompt, label = CountdownTask().generate(random.Random(0))
    assert prompt == "make 38 from 12,19,7:"
    assert label == {"numbers": [12, 19, 7], "target": 38, "solution": "7+12+19"}
    assert evaluate_expression(label["solution"]) == 38


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1+2*3", Fraction(7)),
        ("(1+2)*3", Fraction(9)),
        ("10-4-3", Fraction(3)),
        ("8/3", Fraction(8, 3)),
        (" 2 * ( 3 + 4 ) ", Fraction(14)),
        ("5/(2-2)", None),
        ("-3+5", None),
        ("2**3", None),
        ("(1+2", None),
        ("1+", None),
        ("", None),
        ("1 2", None),
        ("__import__('os')", None),
        ("(" * 300 + "1" + ")" * 300, None),
    ],
)
def test_evaluate_expression(text: str, value: Fraction | None) -> None:
    assert evaluate_expression(text) == value


def test_build_task_rejects_unknown_names_and_knobs() -> None:
    assert isinstance(build_task("sorting", {"max_len": 4}), SortingTask)
    with pytest.raises(ConfigError, match="data.task='chess'.*arithmetic"):
        build_task("chess")
    with pytest.raises(ConfigError, match=r"data.task_kwargs=.*\['digits'\].*max_digits"):
        build_task("arithmetic", {"digits": 3})
    with pytest.raises(ConfigError, match="data.task_kwargs.ops='/'"):
        build_task("arithmetic", {"ops": "/"})
    with pytest.raises(ConfigError, match="data.task_kwargs.min_len=5"):
        build_task("sorting", {"min_len": 5, "max_len": 4})
