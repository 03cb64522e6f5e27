"""Small, safe parsers for Argo's ``when`` and ``depends`` expressions (no ``eval``).

``when`` follows govaluate as Argo uses it: after variable substitution, bare words are
strings (``heads == heads``), numbers are numbers, ``true``/``false`` are booleans, strings
may be quoted with ``'`` or ``"``; operators ``== != < > <= >= =~ !~ && || !`` and
parentheses. ``depends`` follows Argo's task-result logic: ``a && (b.Failed || !c)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from geomlops.errors import UnsupportedFeatureError

# --- tokens -----------------------------------------------------------------------------

_WHEN_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?![\w.]))
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|=~|!~|&&|\|\||[<>!()-])
      | (?P<word>[^\W\d][\w.]*)
    )""",
    re.VERBOSE,
)

_DEPENDS_TOKEN = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!()])|(?P<ref>[A-Za-z0-9_][A-Za-z0-9_-]*(?:\.[A-Za-z]+)?))"
)

Value = str | float | bool


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokenize(text: str, pattern: re.Pattern[str], what: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        match = pattern.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ValueError(
                f"invalid {what} expression {text!r}: unexpected {stripped[pos:]!r}"
                " (quote values holding characters other than letters, digits, _ and .)"
            )
        kind = match.lastgroup or ""
        tokens.append(_Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive-descent parser over a token list; subclasses define the primaries."""

    def __init__(self, tokens: list[_Token], text: str, what: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.text = text
        self.what = what

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == op:
            self.pos += 1
            return True
        return False

    def error(self, why: str) -> ValueError:
        return ValueError(f"invalid {self.what} expression {self.text!r}: {why}")

    def finish(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token.text!r}")


# --- when --------------------------------------------------------------------------------


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


class _WhenParser(_Parser):
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
    parser = _WhenParser(_tokenize(text, _WHEN_TOKEN, "when"), text, "when")
    value = parser.parse_or()
    parser.finish()
    if not isinstance(value, bool):
        raise ValueError(f"when expression {text!r} gives {value!r}, not a boolean")
    return value


# --- depends -----------------------------------------------------------------------------

TASK_RESULTS = frozenset(
    {"Succeeded", "Failed", "Errored", "Skipped", "Omitted", "AnySucceeded", "AllFailed"}
)

# ("ref", task, result | None) | ("not", node) | ("and"|"or", left, right)
DependsNode = tuple[object, ...]


@dataclass(frozen=True)
class Depends:
    """A parsed ``depends`` expression and the tasks it names."""

    text: str
    tree: DependsNode
    tasks: frozenset[str]


class _DependsParser(_Parser):
    def __init__(self, tokens: list[_Token], text: str) -> None:
        super().__init__(tokens, text, "depends")
        self.tasks: set[str] = set()

    def parse_or(self) -> DependsNode:
        left = self.parse_and()
        while self.accept("||"):
            left = ("or", left, self.parse_and())
        return left

    def parse_and(self) -> DependsNode:
        left = self.parse_not()
        while self.accept("&&"):
            left = ("and", left, self.parse_not())
        return left

    def parse_not(self) -> DependsNode:
        if self.accept("!"):
            return ("not", self.parse_not())
        if self.accept("("):
            node = self.parse_or()
            if not self.accept(")"):
                raise self.error("missing ')'")
            return node
        token = self.take()
        if token.kind != "ref":
            raise self.error(f"unexpected {token.text!r}")
        task, _, result = token.text.partition(".")
        if result == "Daemoned":
            raise UnsupportedFeatureError(
                f"depends result '.Daemoned' ({self.text!r}) is not supported by the local runner"
            )
        if result and result not in TASK_RESULTS:
            raise self.error(f"unknown task result '.{result}'")
        self.tasks.add(task)
        return ("ref", task, result or None)


def parse_depends(text: str) -> Depends:
    """Parse a ``depends`` expression.

    Raises:
        ValueError: the expression is malformed.
        UnsupportedFeatureError: it uses ``.Daemoned``.
    """
    parser = _DependsParser(_tokenize(text, _DEPENDS_TOKEN, "depends"), text)
    tree = parser.parse_or()
    parser.finish()
    return Depends(text, tree, frozenset(parser.tasks))


def depends_from_dependencies(names: list[str]) -> Depends:
    """Express Argo's legacy ``dependencies: [a, b]`` as the ``depends`` ``a && b``."""
    return parse_depends(" && ".join(names)) if names else Depends("", ("true",), frozenset())


def evaluate_depends(depends: Depends, result_of: Callable[[str, str | None], bool]) -> bool:
    """Evaluate ``depends``; ``result_of(task, result)`` answers one ``task.Result`` term.

    ``result`` is ``None`` for a bare task name; the caller expands it as Argo does
    (``Succeeded || Skipped``, plus ``Failed``/``Errored`` under ``continueOn``).
    """

    def walk(node: DependsNode) -> bool:
        kind = node[0]
        if kind == "true":
            return True
        if kind == "ref":
            return result_of(str(node[1]), node[2] if isinstance(node[2], str) else None)
        if kind == "not":
            return not walk(node[1])  # type: ignore[arg-type]
        left, right = node[1], node[2]
        if kind == "and":
            return walk(left) and walk(right)  # type: ignore[arg-type]
        return walk(left) or walk(right)  # type: ignore[arg-type]

    return walk(depends.tree)
