"""Go's value rules for :mod:`.expr`: equality, conversions, ``%v`` and ``encoding/json`` output."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any


class ExpressionError(ValueError):
    """An expression is malformed, unsupported by the local runner, or fails when evaluated."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def equal(left: Any, right: Any) -> bool:
    """expr-lang's ``==``: numbers by value (``1 == 1.0``), other values of the same type deeply."""
    if _is_number(left) and _is_number(right):
        return bool(left == right)
    if type(left) is not type(right):
        return False
    if isinstance(left, list):
        return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(equal(left[k], right[k]) for k in left)
    return bool(left == right)


def to_int(value: Any) -> int:
    """expr-lang's ``int()`` (Argo's ``asInt``): numbers truncate; a string must be a whole number.

    Raises:
        ExpressionError: anything else (``int("1.5")`` fails in Go's ``strconv.Atoi`` too).
    """
    if isinstance(value, bool):
        raise ExpressionError(f"invalid operation: int({go_sprint(value)})")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ExpressionError(f"invalid operation: int({go_sprint(value)})")
        return int(value)
    if isinstance(value, str):
        text = value[1:] if value[:1] in "+-" else value
        if text.isascii() and text.isdigit():
            return int(value)
        raise ExpressionError(f"invalid operation: int({value})")
    raise ExpressionError(f"invalid operation: int({type_name(value)})")


def to_float(value: Any) -> float:
    """expr-lang's ``float()`` (Argo's ``asFloat``): numbers, or a string Go's ``ParseFloat`` reads.

    Raises:
        ExpressionError: anything else.
    """
    if _is_number(value):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip() if value.strip() == value else "x")
        except ValueError:
            pass
    raise ExpressionError(f"invalid operation: float({go_sprint(value)})")


def type_name(value: Any) -> str:
    """Name a value's type as Go would (for messages)."""
    names = {bool: "bool", int: "int", float: "float64", str: "string", list: "[]interface {}"}
    if value is None:
        return "nil"
    return names.get(type(value), "map[string]interface {}")


def _digits(value: float) -> tuple[str, int]:
    """Shortest decimal digits of ``value`` and its decimal exponent (``35.8`` → ("358", 1))."""
    _sign, digits, exponent = Decimal(repr(abs(value))).as_tuple()
    text = "".join(map(str, digits)).rstrip("0") or "0"
    return text, len(digits) + int(exponent) - 1


def _go_float(value: float, json_mode: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    digits, exp = _digits(value)
    sign = "-" if value < 0 else ""
    # %v is strconv's 'g' with the shortest digits: exponent form when exp < -4 or exp >= 6
    # (1e+06, 1.234567e+06); encoding/json writes 'f' within [1e-6, 1e21) and 'e-7', not 'e-07'
    scientific = (exp < -6 or exp >= 21) if json_mode else (exp < -4 or exp >= 6)
    if scientific:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        width = 1 if json_mode and exp < 0 else 2
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):0{width}d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return f"{sign}{digits}{'0' * (exp + 1 - len(digits))}"
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


def go_sprint(value: Any) -> str:
    """Return ``fmt.Sprint(value)`` (Go's ``%v``): ``[a b]``, ``map[k:v]``, ``<nil>``, ``1e+06``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value, json_mode=False)
    if isinstance(value, list):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_sprint(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def go_json(value: Any) -> str:
    """Return Go's ``json.Marshal(value)``: sorted keys, no spaces, ``<>&`` escaped, ``43`` not ``43.0``.

    Raises:
        ExpressionError: a NaN or infinite number (Go refuses them too).
    """
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ExpressionError(f"json: unsupported value: {go_sprint(value)}")
        return _go_float(value, json_mode=True)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return json.dumps(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(char, code)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value)) + "}"
    raise ExpressionError(f"json: unsupported type {type(value).__name__}")


def from_json(text: str) -> Any:
    """Parse JSON as Go's ``json.Unmarshal`` into ``any``: every number is a float64.

    Raises:
        ExpressionError: not JSON.
    """
    try:
        return json.loads(text, parse_int=float)
    except (TypeError, ValueError) as err:
        raise ExpressionError(f"not JSON: {err}") from err
