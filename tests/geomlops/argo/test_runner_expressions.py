"""The runner's small parsers: ``when``, durations and ``{{...}}`` substitution."""

from __future__ import annotations

import pytest

from geomlops.argo.runner.expressions import evaluate_when
from geomlops.argo.runner.retry import RetryPolicy, parse_duration
from geomlops.argo.runner.substitute import UnresolvedVariableError, substitute


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("heads == heads", True),
        ("heads == tails", False),
        ("'heads' != \"tails\"", True),
        ("5 > 3", True),
        ("5 >= 5 && 2 < 1", False),
        ("5 <= 4 || 2 < 3", True),
        ("!(1 == 1)", False),
        ("true", True),
        ("!false && (a == a || b == c)", True),
        ("10 == 10.0", True),
        ("-1 < 0", True),
        ("'1' == 1", False),  # govaluate compares types: a string is not a number
        ("abc < abd", True),
        ("prod-v2 =~ '^prod'", None),  # a bare '-' is subtraction in govaluate: refused
        ("'prod-v2' =~ '^prod'", True),
        ("'dev' !~ '^prod'", True),
        ("", True),
    ],
)
def test_when_expressions(expression: str, expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            evaluate_when(expression)
    else:
        assert evaluate_when(expression) is expected


@pytest.mark.parametrize(
    "expression", ["heads", "1 +", "(a == b", "a == b)", "a && ", "s3://x == y", "1 < a"]
)
def test_malformed_or_non_boolean_when_is_an_error(expression: str) -> None:
    with pytest.raises(ValueError, match="when expression"):
        evaluate_when(expression)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(30, 30.0), ("30", 30.0), ("1s", 1.0), ("0.1s", 0.1), ("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("soon")


def test_backoff_delays_limit_and_max_duration() -> None:
    policy = RetryPolicy.from_template(
        {"retryStrategy": {"limit": "3", "backoff": {"duration": "1s", "factor": "2", "maxDuration": "5s"}}}
    )
    assert policy.attempts == 4
    assert policy.next_delay(1, elapsed=0) == 1.0
    assert policy.next_delay(2, elapsed=1) == 2.0
    assert policy.next_delay(3, elapsed=3) is None  # 3 + 4 s would pass maxDuration
    assert policy.next_delay(4, elapsed=0) is None  # limit reached
    transient = RetryPolicy.from_template({"retryStrategy": {"limit": 3, "retryPolicy": "OnTransientError"}})
    assert transient.next_delay(1, elapsed=0) is None


def test_substitution_trims_tags_and_leaves_foreign_ones() -> None:
    scope = {"inputs.parameters.x": "1", "item": "a"}
    assert substitute("{{ inputs.parameters.x }}-{{item}}-{{ mine }}", scope) == "1-a-{{ mine }}"
    with pytest.raises(UnresolvedVariableError, match=r"\{\{tasks.t.outputs.result\}\}"):
        substitute("{{tasks.t.outputs.result}}", scope)
