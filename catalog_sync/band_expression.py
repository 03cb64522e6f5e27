"""Derived input bands of an MLM item: ``{"name": "NDVI", "format": "rio-calc", "expression":
"(B08 - B04) / (B08 + B04)"}``.

An expression is infix arithmetic over the item's band names, as rio-tiler, numexpr and Python
write it: ``+ - * / **``, parentheses, numbers, comparisons, and the functions ``sqrt``,
``abs``, ``log``, ``log10``, ``exp``, ``minimum``, ``maximum`` and ``where(condition, a, b)``.
It is parsed into a tree of these operations only (never handed to ``eval``), so an item cannot
run code, and evaluated on float32 arrays, one per band it names.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: the ``format`` values whose expressions are this infix arithmetic
FORMATS = ("rio-calc", "rio-tiler", "numexpr", "python")

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {
    "sqrt": (np.sqrt, 1),
    "abs": (np.abs, 1),
    "log": (np.log, 1),
    "log10": (np.log10, 1),
    "exp": (np.exp, 1),
    "minimum": (np.minimum, 2),
    "maximum": (np.maximum, 2),
    "where": (np.where, 3),
}
_ALLOWED = "band names, numbers, + - * / **, parentheses, comparisons and " + ", ".join(_FUNCTIONS)


class BandExpressionError(ValueError):
    """An expression outside the arithmetic described above (the message says what)."""


@dataclass(frozen=True)
class BandExpression:
    """A parsed expression and the band names it reads, in order of first use."""

    text: str
    names: tuple[str, ...]
    _tree: ast.Expression

    def evaluate(self, bands: Mapping[str, NDArray[np.float32]]) -> NDArray[np.float32]:
        """The derived band from ``bands`` (each name the expression reads), as float32.

        Divisions by zero and the like give inf or nan (no warning): the caller decides what
        a value that is not finite means.
        """
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            value = _evaluate(self._tree.body, bands)
        shape = next(iter(bands.values())).shape if bands else ()
        return np.broadcast_to(np.asarray(value, dtype=np.float32), shape).astype(np.float32, copy=False)


def derived_bands(bands: list[Any]) -> dict[int, BandExpression | BandExpressionError]:
    """Each derived band of an ``mlm:input`` object's ``bands``, by index: its expression,
    parsed, or why geomlops does not compute it (:func:`derived_band`)."""
    parsed: dict[int, BandExpression | BandExpressionError] = {}
    for i, band in enumerate(bands):
        if isinstance(band, Mapping) and band.get("expression"):
            try:
                parsed[i] = derived_band(band, bands)
            except BandExpressionError as err:
                parsed[i] = err
    return parsed


def derived_band(band: Mapping[str, Any], bands: list[Any]) -> BandExpression:
    """The parsed expression of an MLM input band ``{"name", "format", "expression"}``; it may
    read any band but the input's derived ones (``bands``: the input's band names).

    Raises:
        BandExpressionError: a format other than :data:`FORMATS`, an expression :func:`parse`
            refuses, or one that reads a derived band.
    """
    form = band.get("format")
    if form is not None and form not in FORMATS:
        raise BandExpressionError(
            f"format {form!r}: geomlops computes derived bands written as infix arithmetic "
            f"(format {', '.join(FORMATS)}); compute this one inside the model"
        )
    parsed = parse(str(band.get("expression")))
    derived = {str(b.get("name")) for b in bands if isinstance(b, Mapping) and b.get("expression")} | {
        str(band.get("name"))
    }
    read = [name for name in parsed.names if name in derived]
    if read:
        raise BandExpressionError(
            f"expression {parsed.text!r} reads {', '.join(read)}, a derived band; an expression reads "
            "the imagery's bands"
        )
    return parsed


#: the longest expression read (an index is a line; this bounds the parser's depth and work)
MAX_LENGTH = 1000


def parse(text: str) -> BandExpression:
    """Parse ``text`` as a band expression.

    Raises:
        BandExpressionError: not infix arithmetic of the kinds above, naming what is not.
    """
    if len(text) > MAX_LENGTH:
        raise BandExpressionError(f"{text[:40]!r}…: {len(text)} characters; expected at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (RecursionError, MemoryError):
        raise BandExpressionError(f"{text[:40]!r}…: nested too deeply") from None
    except SyntaxError as err:
        raise BandExpressionError(
            f"{text!r} is not infix arithmetic ({err.msg}); expected {_ALLOWED}, "
            "e.g. '(B08 - B04) / (B08 + B04)'"
        ) from None
    names: list[str] = []
    try:
        _check(tree.body, names, text)
    except RecursionError:
        raise BandExpressionError(f"{text[:40]!r}…: nested too deeply") from None
    if not names:
        raise BandExpressionError(f"{text!r} names no band")
    return BandExpression(text, tuple(names), tree)


#: the deepest nesting of operations read (far beyond any index; it bounds the evaluator's recursion)
MAX_DEPTH = 100


def _check(node: ast.AST, names: list[str], text: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise BandExpressionError(f"{text[:40]!r}…: operations nested more than {MAX_DEPTH} deep")
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise BandExpressionError(f"{text!r}: {node.id} is a function; call it, e.g. {node.id}(B04)")
        if node.id not in names:
            names.append(node.id)
    elif (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        try:
            float(node.value)
        except OverflowError:
            raise BandExpressionError(f"{text!r}: the number {str(node.value)[:20]}… is too large") from None
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, names, text, depth + 1)
        _check(node.right, names, text, depth + 1)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, names, text, depth + 1)
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        _check(node.left, names, text, depth + 1)
        _check(node.comparators[0], names, text, depth + 1)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        arity = _FUNCTIONS[node.func.id][1]
        if node.keywords or len(node.args) != arity:
            raise BandExpressionError(f"{text!r}: {node.func.id} takes {arity} argument(s)")
        for arg in node.args:
            _check(arg, names, text, depth + 1)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        raise BandExpressionError(
            f"{text!r}: {node.func.id}() is not a function geomlops computes ({', '.join(_FUNCTIONS)})"
        )
    else:
        found = ast.get_source_segment(text.strip(), node) or type(node).__name__
        raise BandExpressionError(f"{text!r}: {found!r} is not allowed; expected {_ALLOWED}")


def _evaluate(node: ast.AST, bands: Mapping[str, NDArray[np.float32]]) -> Any:
    if isinstance(node, ast.Name):
        return bands[node.id]
    if isinstance(node, ast.Constant):
        return np.float32(float(node.value))  # type: ignore[arg-type]  # a number, as _check allowed
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, bands), _evaluate(node.right, bands))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_evaluate(node.operand, bands))
    if isinstance(node, ast.Compare):  # 1 or 0, as a number: it may be added, negated, multiplied
        compared = _COMPARE[type(node.ops[0])](
            _evaluate(node.left, bands), _evaluate(node.comparators[0], bands)
        )
        return np.asarray(compared, dtype=np.float32)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)  # as _check allowed
    return _FUNCTIONS[node.func.id][0](*(_evaluate(arg, bands) for arg in node.args))
