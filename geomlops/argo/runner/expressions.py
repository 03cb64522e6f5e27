"""A small, safe evaluator of Argo's ``when`` expressions (no ``eval``).

``when`` follows govaluate as Argo uses it: after variable substitution, bare words are
strings (``heads == heads``), numbers are numbers, ``true``/``false`` are booleans, strings
may be quoted with ``'`` or ``"``; operators ``== != < > <= >= =~ !~ && || !`` and
parentheses. (``depends`` expressions are DAG dependencies: :mod:`geomlops.argo.dag`.)
"""

from __future__ import annotations

import re

from geomlops.argo._parsing import Parser, tokenize

_WHEN_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!()-])
      | (?P<word>[^\W\d][\w.]*)
    )""",
    re.VERBOSE,
)

Value = str | float | bool


def _as_bool(value: Value, op: str, text: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"invalid when expression {text!r}: {op} needs booleans, got {value!r}")
    return value


def _compare(op: str, left: Value, right: Value, text: str) -> bool:
    if op == "==":
        return type(left) is type(right) and left == right
    if op == "!=":
        return not (type(left) is type(right) and left == right)
    if op in ("=~", "!~"):
        if not isinstance(left, str) or not isinstance(right, str):
            raise ValueError(f"invalid when expression {text!r}: {op} needs strings")
        found = re.search(right, left) is not None
        return found if op == "=~" else not found
    numbers = isinstance(left, float) and isinstance(right, float)
    strings = isinstance(left, str) and isinstance(right, str)
    if not (numbers or strings):
        raise ValueError(f"invalid when expression {text!r}: cannot compare {left!r} {op} {right!r}")
    pair: tuple[float, float] | tuple[str, str] = (left, right)  # type: ignore[assignment]
    a, b = pair
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


class _WhenParser(Parser):
    def parse_or(self) -> Value:
        left = self.parse_and()
        while self.accept("||"):
            right = self.parse_and()
            left = _as_bool(left, "||", self.text) | _as_bool(right, "||", self.text)
        return left

    def parse_and(self) -> Value:
        left = self.parse_comparison()
        while self.accept("&&"):
            right = self.parse_comparison()
            left = _as_bool(left, "&&", self.text) & _as_bool(right, "&&", self.text)
        return left

    def parse_comparison(self) -> Value:
        left = self.parse_unary()
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in _COMPARATORS:
            self.pos += 1
            return _compare(token.text, left, self.parse_unary(), self.text)
        return left

    def parse_unary(self) -> Value:
        if self.accept("!"):
            return not _as_bool(self.parse_unary(), "!", self.text)
        if self.accept("-"):
            value = self.parse_unary()
            if not isinstance(value, float):
                raise self.error("'-' applies to numbers only (quote strings holding '-')")
            return -value
        return self.parse_primary()

    def parse_primary(self) -> Value:
        if self.accept("("):
            value = self.parse_or()
            if not self.accept(")"):
                raise self.error("missing ')'")
            return value
        token = self.take()
        if token.kind == "num":
            return float(token.text)
        if token.kind == "str":
            return re.sub(r"\\(.)", r"\1", token.text[1:-1])
        if token.kind == "word":
            if token.text in ("true", "false"):
                return token.text == "true"
            return token.text
        raise self.error(f"unexpected {token.text!r}")


_COMPARATORS = frozenset({"==", "!=", "<", ">", "<=", ">=", "=~", "!~"})


def evaluate_when(text: str) -> bool:
    """Evaluate a substituted ``when`` expression.

    Raises:
        ValueError: the expression is malformed or does not give a boolean.
    """
    if not text.strip():
        return True
    parser = _WhenParser(tokenize(text, _WHEN_TOKEN, "when"), text, "when")
    value = parser.parse_or()
    parser.finish()
    if not isinstance(value, bool):
        raise ValueError(f"when expression {text!r} gives {value!r}, not a boolean")
    return value
