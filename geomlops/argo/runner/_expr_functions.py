"""The functions :mod:`.expr` offers: expr-lang builtins, Argo's own, a Sprig subset, JSONPath.

Argo's environment (``util/expr/env``): ``asInt``/``asFloat`` (expr's ``int``/``float``),
``toJson`` (Go's compact ``json.Marshal``), ``jsonpath(json, path)`` (evilmonkeyinc/jsonpath:
a definite path gives its value, a wildcard, slice or filter a list) and ``sprig.*`` (Sprig v3
without ``env``/``expandenv``). Only what is listed here is offered; another name is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from ._expr_values import ExpressionError, equal, from_json, go_json, go_sprint, to_float, to_int

# --- expr-lang builtins ---------------------------------------------------------------------


def _length(value: Any) -> int:
    if isinstance(value, str | list | dict):
        return len(value)
    raise ExpressionError(f"invalid argument for len (type {type(value).__name__})")


def _numbers(args: tuple[Any, ...]) -> list[Any]:
    values = list(args[0]) if len(args) == 1 and isinstance(args[0], list) else list(args)
    if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ExpressionError("needs numbers")
    return values


def _json_indent(value: Any) -> str:
    # expr-lang's toJSON is json.MarshalIndent(v, "", "  "); re-indent Go's compact form
    return json.dumps(json.loads(go_json(value)), indent=2, sort_keys=True, ensure_ascii=False)


def _round(value: Any) -> float:
    number = to_float(value)
    return float(math.floor(abs(number) + 0.5) * (1 if number >= 0 else -1))  # Go's math.Round


BUILTINS: dict[str, Callable[..., Any]] = {
    "len": _length,
    "abs": lambda x: abs(_numbers((x,))[0]),
    "int": to_int,
    "float": to_float,
    "string": go_sprint,
    "trim": lambda s, chars=None: str(s).strip(chars) if chars is not None else str(s).strip(),
    "trimPrefix": lambda s, p=" ": str(s).removeprefix(p),
    "trimSuffix": lambda s, p=" ": str(s).removesuffix(p),
    "upper": lambda s: str(s).upper(),
    "lower": lambda s: str(s).lower(),
    "split": lambda s, sep, n=-1: str(s).split(sep, n - 1) if n > 0 else str(s).split(sep),
    "replace": lambda s, old, new: str(s).replace(old, new),
    "repeat": lambda s, n: str(s) * to_int(n),
    "indexOf": lambda s, sub: str(s).find(sub),
    "lastIndexOf": lambda s, sub: str(s).rfind(sub),
    "hasPrefix": lambda s, p: str(s).startswith(p),
    "hasSuffix": lambda s, p: str(s).endswith(p),
    "join": lambda items, sep="": str(sep).join(str(i) for i in items),
    "keys": lambda m: sorted(m),
    "values": lambda m: [m[k] for k in sorted(m)],
    "toJSON": _json_indent,
    "fromJSON": from_json,
    "toBase64": lambda s: base64.b64encode(str(s).encode()).decode(),
    "fromBase64": lambda s: base64.b64decode(str(s)).decode(),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "min": lambda *args: min(_numbers(args)),
    "max": lambda *args: max(_numbers(args)),
    "sum": lambda items: sum(_numbers((items,))) if items else 0,
    "mean": lambda *args: float(sum(_numbers(args))) / len(_numbers(args)),
    "round": _round,
    "ceil": lambda x: float(math.ceil(to_float(x))),
    "floor": lambda x: float(math.floor(to_float(x))),
    "reverse": lambda items: list(reversed(items)),
    "concat": lambda *lists: [item for part in lists for item in part],
    "flatten": lambda items: [x for i in items for x in (i if isinstance(i, list) else [i])],
}

PREDICATES = frozenset({"all", "none", "any", "one", "filter", "map", "count"})
PREDICATES |= {"find", "findIndex", "findLast", "findLastIndex"}


def call_predicate(
    name: str,
    items: Any,
    predicate: Callable[[Any, int], Any],
    fail: Callable[[str], ExpressionError],
) -> Any:
    """Run a predicate builtin (``filter(list, {# > 1})``...) over ``items``.

    Raises:
        ExpressionError: ``items`` is not a list, or a predicate does not give a boolean.
    """
    if not isinstance(items, list):
        raise fail(f"{name} needs a list, not {go_sprint(items)}")
    if name == "map":
        return [predicate(item, i) for i, item in enumerate(items)]

    def test(item: Any, index: int) -> bool:
        value = predicate(item, index)
        if not isinstance(value, bool):
            raise fail(f"{name}: predicate gives {go_sprint(value)}, not a bool")
        return value

    indexed = list(enumerate(items))
    if name in ("findLast", "findLastIndex"):
        indexed.reverse()
    matches = (i for i, item in indexed if test(item, i))
    if name == "filter":
        return [item for i, item in indexed if test(item, i)]
    if name == "count":
        return sum(1 for _ in matches)
    if name in ("find", "findLast"):
        found = next(matches, None)
        return None if found is None else items[found]
    if name in ("findIndex", "findLastIndex"):
        return next(matches, -1)
    hits = [i for i, item in indexed if test(item, i)]
    return {
        "all": len(hits) == len(items),
        "none": not hits,
        "any": bool(hits),
        "one": len(hits) == 1,
    }[name]


# --- Argo's functions -------------------------------------------------------------------------

_JSONPATH_TOKEN = re.compile(
    r"""\.(?P<key>[A-Za-z_$][\w$-]*)|\.(?P<star>\*)|\[(?P<sel>(?:'[^']*'|"[^"]*"|[^\]])*)\]"""
)


#: evaluates a JSONPath filter's predicate as an expression; :mod:`.expr` sets it when imported
#: (it imports this module, so importing it back here would make a cycle)
filter_evaluator: Callable[[str, Mapping[str, Any]], Any] | None = None


def _select(nodes: list[Any], selector: str, path: str) -> list[Any]:
    selector = selector.strip()
    out: list[Any] = []
    if selector == "*":
        for node in nodes:
            out.extend(node.values() if isinstance(node, dict) else node if isinstance(node, list) else [])
        return out
    if selector.startswith("?(") and selector.endswith(")"):
        if filter_evaluator is None:  # pragma: no cover - set when runner.expr is imported
            raise ExpressionError(f"jsonpath {path!r}: filters need the expression evaluator")
        evaluate = filter_evaluator  # JSONPath filters read as expr predicates: @ becomes #
        for node in nodes:
            for item in node if isinstance(node, list) else []:
                try:
                    hit = evaluate(
                        f"filter([__item], {{{selector[2:-1].replace('@', '#')}}})", {"__item": item}
                    )
                except ExpressionError:
                    hit = []
                if hit:
                    out.append(item)
        return out
    if re.fullmatch(r"-?\d*:-?\d*", selector):
        low, high = selector.split(":")
        for node in nodes:
            if isinstance(node, list):
                out.extend(node[int(low) if low else None : int(high) if high else None])
        return out
    if re.fullmatch(r"-?\d+", selector):
        for node in nodes:
            if not isinstance(node, list) or not -len(node) <= int(selector) < len(node):
                raise ExpressionError(f"jsonpath {path!r}: index {selector} out of range")
            out.append(node[int(selector)])
        return out
    quoted = re.fullmatch(r"""'([^']*)'|"([^"]*)\"""", selector)
    if quoted:
        return _keys(nodes, quoted.group(1) or quoted.group(2) or "", path)
    raise ExpressionError(f"jsonpath {path!r}: selector [{selector}] is not supported by the local runner")


def _keys(nodes: list[Any], key: str, path: str) -> list[Any]:
    out = []
    for node in nodes:
        if not isinstance(node, dict) or key not in node:
            raise ExpressionError(f"jsonpath {path!r}: key {key!r} not found")
        out.append(node[key])
    return out


def jsonpath(document: Any, path: Any) -> Any:
    """Argo's ``jsonpath(json, path)``: ``$.a.b``, ``[n]``, ``['k']``, ``[*]``, ``[a:b]``, ``[?(...)]``.

    Raises:
        ExpressionError: not JSON, a missing key, or an unsupported selector (``..``, unions).
    """
    data = from_json(str(document))
    text = str(path).strip()
    if not text.startswith("$"):
        raise ExpressionError(f"jsonpath {text!r} must start with '$'")
    if ".." in text.replace("'..'", ""):
        raise ExpressionError(
            f"jsonpath {text!r}: recursive descent '..' is not supported by the local runner"
        )
    nodes, definite, pos = [data], True, 1
    while pos < len(text):
        match = _JSONPATH_TOKEN.match(text, pos)
        if match is None:
            raise ExpressionError(f"jsonpath {text!r}: cannot read {text[pos:]!r}")
        if match.group("key") is not None:
            nodes = _keys(nodes, match.group("key"), text)
        elif match.group("star") is not None:
            nodes, definite = _select(nodes, "*", text), False
        else:
            selector = match.group("sel").strip()
            definite = definite and bool(re.fullmatch(r"-?\d+|'[^']*'|\"[^\"]*\"", selector))
            nodes = _select(nodes, selector, text)
        pos = match.end()
    return nodes[0] if definite else nodes


ARGO_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "asInt": to_int,
    "asFloat": to_float,
    "toJson": go_json,
    "jsonpath": jsonpath,
}

# --- Sprig (Masterminds/sprig v3) -------------------------------------------------------------


def _int64(value: Any) -> int:
    """Sprig's ``toInt64`` (spf13/cast): numbers truncate, strings parse, anything else is 0."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value, 0) if value.strip() else 0
        except ValueError:
            try:
                return int(float(value))
            except ValueError:
                return 0
    return 0


def _go_layout(layout: str) -> str:
    tokens = {
        "2006": "%Y", "06": "%y", "January": "%B", "Jan": "%b", "01": "%m", "02": "%d",
        "Monday": "%A", "Mon": "%a", "15": "%H", "03": "%I", "04": "%M", "05": "%S",
        "PM": "%p", "MST": "%Z", "-0700": "%z", "Z07:00": "%z",
    }  # fmt: skip
    pattern = re.compile("|".join(sorted(map(re.escape, tokens), key=len, reverse=True)))
    return pattern.sub(lambda m: tokens[m.group(0)], layout.replace("%", "%%"))


def _date(layout: Any, date: Any) -> str:
    # Sprig's date: a number is a Unix time; any other value (a string too) means now
    stamp = date if isinstance(date, int | float) and not isinstance(date, bool) else time.time()
    return time.strftime(_go_layout(str(layout)), time.localtime(stamp))


def _ternary(yes: Any, no: Any, condition: Any) -> Any:
    return yes if condition is True else no


def _empty(value: Any) -> bool:
    return value in (None, "", 0, 0.0, False) or (isinstance(value, list | dict) and not value)


SPRIG: dict[str, Callable[..., Any]] = {
    "trim": lambda s: str(s).strip(),
    "trimAll": lambda chars, s: str(s).strip(str(chars)),
    "trimPrefix": lambda p, s: str(s).removeprefix(str(p)),
    "trimSuffix": lambda p, s: str(s).removesuffix(str(p)),
    "upper": lambda s: str(s).upper(),
    "lower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
    "replace": lambda old, new, s: str(s).replace(str(old), str(new)),
    "contains": lambda sub, s: str(sub) in str(s),
    "hasPrefix": lambda p, s: str(s).startswith(str(p)),
    "hasSuffix": lambda p, s: str(s).endswith(str(p)),
    "repeat": lambda n, s: str(s) * _int64(n),
    "substr": lambda start, end, s: str(s)[_int64(start) : _int64(end) if _int64(end) >= 0 else None],
    "trunc": lambda n, s: str(s)[: _int64(n)] if _int64(n) >= 0 else str(s)[_int64(n) :],
    "splitList": lambda sep, s: str(s).split(str(sep)),
    "join": lambda sep, items: str(sep).join(go_sprint(i) for i in items),
    "quote": lambda *xs: " ".join(json.dumps(go_sprint(x)) for x in xs if x is not None),
    "squote": lambda *xs: " ".join(f"'{go_sprint(x)}'" for x in xs if x is not None),
    "cat": lambda *xs: " ".join(go_sprint(x) for x in xs if x is not None),
    "toString": go_sprint,
    "atoi": lambda s: _int64(s) if re.fullmatch(r"[+-]?\d+", str(s)) else 0,
    "int": _int64,
    "int64": _int64,
    "float64": lambda x: to_float(x) if not isinstance(x, str) or x.strip() else 0.0,
    "add": lambda *xs: sum(_int64(x) for x in xs),
    "add1": lambda x: _int64(x) + 1,
    "sub": lambda a, b: _int64(a) - _int64(b),
    "mul": lambda *xs: math.prod(_int64(x) for x in xs),
    "div": lambda a, b: int(_int64(a) / _int64(b)),
    "mod": lambda a, b: int(math.fmod(_int64(a), _int64(b))),
    "max": lambda a, *xs: max([_int64(a), *(_int64(x) for x in xs)]),
    "min": lambda a, *xs: min([_int64(a), *(_int64(x) for x in xs)]),
    "b64enc": lambda s: base64.b64encode(go_sprint(s).encode()).decode(),
    "b64dec": lambda s: base64.b64decode(str(s)).decode("utf-8", errors="replace"),
    "sha1sum": lambda s: hashlib.sha1(str(s).encode()).hexdigest(),
    "sha256sum": lambda s: hashlib.sha256(str(s).encode()).hexdigest(),
    "toJson": go_json,
    "fromJson": lambda s: from_json(str(s)),
    "default": lambda fallback, *given: fallback if not given or _empty(given[0]) else given[0],
    "empty": _empty,
    "coalesce": lambda *xs: next((x for x in xs if not _empty(x)), None),
    "ternary": _ternary,
    "list": lambda *xs: list(xs),
    "first": lambda items: items[0] if items else None,
    "last": lambda items: items[-1] if items else None,
    "has": lambda needle, items: any(equal(needle, i) for i in items),
    "regexMatch": lambda pattern, s: re.search(str(pattern), str(s)) is not None,
    "regexFind": lambda pattern, s: m.group(0) if (m := re.search(str(pattern), str(s))) else "",
    "regexReplaceAll": lambda pattern, s, repl: re.sub(
        str(pattern), re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", str(repl)), str(s)
    ),
    "date": _date,
}
