"""A safe evaluator of the expr-lang subset Argo uses: ``{{= }}`` tags, ``retryStrategy.expression``
and ``valueFrom.expression`` (no ``eval``).

Why our own: Argo evaluates these with the Go library expr-lang (v1.17) plus Sprig and a
JSONPath library. No maintained Python implementation of expr-lang exists: the two PyPI
packages with that name (``expr-lang``, ``enchanter-golem``, both 0.1.0, 2026) are new,
unproven bindings of the Go core, and general evaluators (``simpleeval``, CEL, JMESPath) have
another grammar (``#`` closures, ``matches``, ``??``, Go's number and JSON rules), so they
would give silently different answers. This module parses expr-lang's grammar with its
precedences (``parser/operator`` of expr-lang) and implements what Argo's examples and
documentation use; anything else (the pipe ``|``, ``let``, unknown functions) is refused by
name with :class:`ExpressionError`, never guessed.

Values follow Go: ``int``/``float`` (``/`` always gives a float, JSON numbers are floats),
``str``, ``bool``, ``None`` (nil), lists and string-keyed dicts. A missing map key is nil,
as in expr-lang; an unknown top-level name is an error. :func:`render` writes a result the
way Argo inserts it into a template (a string as it is, anything else as Go's JSON).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from . import _expr_functions
from ._expr_functions import ARGO_FUNCTIONS, BUILTINS, PREDICATES, SPRIG, call_predicate
from ._expr_parser import Node, Parser
from ._expr_values import ExpressionError, equal, go_json, go_sprint, to_float, to_int

__all__ = ["ExpressionError", "build_env", "check", "evaluate", "evaluate_bool", "render"]


class _Evaluator:
    def __init__(self, env: Mapping[str, Any], text: str) -> None:
        self.env = env
        self.text = text
        self.pointers: list[Any] = []

    def fail(self, why: str) -> ExpressionError:
        return ExpressionError(f"expression {self.text!r}: {why}")

    def run(self, node: Node) -> Any:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "name":
            if node[1] not in self.env:
                raise self.fail(f"unknown name {node[1]}")
            return self.env[node[1]]
        if kind == "ptr":
            if not self.pointers:
                raise self.fail("'#' outside a predicate")
            if node[1] in ("", "index"):
                item, index = self.pointers[-1]
                return item if node[1] == "" else index
            raise self.fail(f"'#{node[1]}' is not supported by the local runner")
        if kind == "member":
            return self.member(self.run(node[1]), self.run(node[2]), node[3])
        if kind == "slice":
            value = self.run(node[1])
            if not isinstance(value, list | str):
                raise self.fail(f"cannot slice {go_sprint(value)}")
            low = 0 if node[2] is None else to_int(self.run(node[2]))
            high = len(value) if node[3] is None else to_int(self.run(node[3]))
            return value[low:high]
        if kind == "list":
            return [self.run(item) for item in node[1]]
        if kind == "map":
            return {go_sprint(self.run(k)): self.run(v) for k, v in node[1]}
        if kind == "unary":
            value = self.run(node[2])
            if node[1] in ("not", "!"):
                if not isinstance(value, bool):
                    raise self.fail(f"invalid operation: ! {go_sprint(value)}")
                return not value
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise self.fail(f"invalid operation: {node[1]} {go_sprint(value)}")
            return -value if node[1] == "-" else value
        if kind == "cond":
            test = self.run(node[1])
            if not isinstance(test, bool):
                raise self.fail(f"non-bool {go_sprint(test)} used as condition")
            return self.run(node[2] if test else node[3])
        if kind == "binary":
            return self.binary(node[1], node[2], node[3])
        if kind == "call":
            return self.call(node[1], node[2])
        raise self.fail(f"unknown node {kind}")

    def member(self, value: Any, key: Any, optional: bool) -> Any:
        if value is None:
            if optional:
                return None
            raise self.fail(f"cannot fetch {go_sprint(key)} from nil")
        if isinstance(value, dict):
            return value.get(key if isinstance(key, str) else go_sprint(key))
        if isinstance(value, list | str) and isinstance(key, int) and not isinstance(key, bool):
            index = key + len(value) if key < 0 else key
            if not 0 <= index < len(value):
                raise self.fail(f"index out of range: {key} (array length is {len(value)})")
            return value[index]
        raise self.fail(f"cannot fetch {go_sprint(key)} from {go_sprint(value)}")

    def binary(self, op: str, left_node: Node, right_node: Node) -> Any:
        left = self.run(left_node)
        if op in ("&&", "and", "||", "or"):
            if not isinstance(left, bool):
                raise self.fail(f"invalid operation: {op} needs bools, got {go_sprint(left)}")
            if (op in ("&&", "and")) != left:
                return left
            right = self.run(right_node)
            if not isinstance(right, bool):
                raise self.fail(f"invalid operation: {op} needs bools, got {go_sprint(right)}")
            return right
        if op == "??":
            return self.run(right_node) if left is None else left
        right = self.run(right_node)
        if op == "==":
            return equal(left, right)
        if op == "!=":
            return not equal(left, right)
        if op == "in":
            if isinstance(right, dict):
                return go_sprint(left) in right if left is not None else False
            if isinstance(right, list):
                return any(equal(left, item) for item in right)
            raise self.fail(f"invalid operation: in {go_sprint(right)}")
        if op in ("matches", "contains", "startsWith", "endsWith"):
            if not isinstance(left, str) or not isinstance(right, str):
                raise self.fail(f"invalid operation: {op} needs strings")
            if op == "matches":
                try:
                    return re.search(right, left) is not None
                except re.error as err:
                    raise self.fail(f"invalid regular expression {right!r}: {err}") from err
            if op == "contains":
                return right in left
            return left.startswith(right) if op == "startsWith" else left.endswith(right)
        if op == "..":
            return list(range(to_int(left), to_int(right) + 1))
        strings = isinstance(left, str) and isinstance(right, str)
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (left, right))
        if op in ("<", ">", "<=", ">="):
            if not (strings or numbers):
                raise self.fail(f"invalid operation: {go_sprint(left)} {op} {go_sprint(right)}")
            pairs: dict[str, Callable[[Any, Any], bool]] = {
                "<": lambda a, b: a < b,
                ">": lambda a, b: a > b,
                "<=": lambda a, b: a <= b,
                ">=": lambda a, b: a >= b,
            }
            return pairs[op](left, right)
        if op == "+" and strings:
            return left + right
        if not numbers:
            raise self.fail(f"invalid operation: {go_sprint(left)} {op} {go_sprint(right)}")
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        if op == "/":
            if right == 0:
                return float("inf") if left > 0 else float("-inf") if left < 0 else float("nan")
            return to_float(left) / to_float(right)
        if op == "%":
            if not (isinstance(left, int) and isinstance(right, int)):
                raise self.fail("invalid operation: % needs integers")
            if right == 0:
                raise self.fail("integer divide by zero")
            return int(left - right * int(left / right))  # Go truncates toward zero
        return to_float(left) ** to_float(right)

    def call(self, callee: Node, arg_nodes: list[Node]) -> Any:
        if callee[0] == "name" and callee[1] in PREDICATES:
            if len(arg_nodes) != 2:
                raise self.fail(f"{callee[1]} takes a list and a predicate")
            items = self.run(arg_nodes[0])

            def predicate(item: Any, index: int) -> Any:
                self.pointers.append((item, index))
                try:
                    return self.run(arg_nodes[1][1])
                finally:
                    self.pointers.pop()

            return call_predicate(callee[1], items, predicate, self.fail)
        args = [self.run(a) for a in arg_nodes]
        if callee[0] == "name":
            function = ARGO_FUNCTIONS.get(callee[1]) or BUILTINS.get(callee[1])
            name = callee[1]
        elif callee[0] == "member" and callee[1] == ("name", "sprig") and callee[2][0] == "lit":
            name = f"sprig.{callee[2][1]}"
            function = SPRIG.get(str(callee[2][1]))
        else:
            raise self.fail("only named functions can be called")
        if function is None:
            raise self.fail(f"function {name} is not supported by the local runner")
        try:
            return function(*args)
        except ExpressionError as err:
            raise self.fail(f"{name}: {err}") from err
        except (TypeError, ValueError, KeyError, IndexError) as err:
            raise self.fail(f"{name}: {err}") from err


def parse(text: str) -> Node:
    """Parse an expression (to check it early); returns its syntax tree.

    Raises:
        ExpressionError: malformed, or a construct the local runner does not evaluate.
    """
    return Parser(text).parse()


def build_env(scope: Mapping[str, str]) -> dict[str, Any]:
    """Return the expression environment of flat variables, as Argo's ``expand.Expand``.

    ``{"steps.a.outputs.result": "x"}`` becomes ``{"steps": {"a": {"outputs": {"result": "x"}}}}``;
    a key that is also the parent of others (``inputs.parameters``, the JSON list, beside
    ``inputs.parameters.x``) is dropped, as Argo's ``removeConflicts`` drops it.
    """
    keys = set(scope)
    env: dict[str, Any] = {}
    for key in sorted(scope):
        if any(other.startswith(key + ".") for other in keys):
            continue
        parts = key.split(".")
        node = env
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[parts[-1]] = scope[key]
    return env


def evaluate(text: str, env: Mapping[str, Any]) -> Any:
    """Evaluate expression ``text`` in ``env`` (see :func:`build_env`).

    Raises:
        ExpressionError: malformed, unsupported, or failing at run time (names the cause).
    """
    return _Evaluator(env, text).run(parse(text))


_expr_functions.filter_evaluator = evaluate


def evaluate_bool(text: str, env: Mapping[str, Any]) -> bool:
    """Evaluate an expression that must give a boolean (Argo's ``argoexpr.EvalBool``).

    Raises:
        ExpressionError: as :func:`evaluate`, or the result is not a boolean.
    """
    value = evaluate(text, env)
    if not isinstance(value, bool):
        raise ExpressionError(f"unable to cast expression result '{go_sprint(value)}' to bool ({text!r})")
    return value


def render(text: str, scope: Mapping[str, str]) -> str:
    """Return what Argo writes for ``{{=text}}``: a string as it is, else its Go JSON.

    Raises:
        ExpressionError: the expression fails or gives nil.
    """
    value = evaluate(text, build_env(scope))
    if value is None:
        raise ExpressionError(f"failed to evaluate expression {text!r} (it gives nil)")
    return value if isinstance(value, str) else go_json(value)


def check(text: str) -> None:
    """Refuse, before a run, an expression the local runner cannot evaluate (naming what).

    Raises:
        ExpressionError: malformed, or it calls a function or uses a ``#`` name not offered.
    """
    pending = [parse(text)]
    while pending:
        node = pending.pop()
        if node[0] == "call":
            callee = node[1]
            if callee[0] == "name":
                known = callee[1] in ARGO_FUNCTIONS or callee[1] in BUILTINS or callee[1] in PREDICATES
                name = callee[1]
            elif callee[0] == "member" and callee[1] == ("name", "sprig") and callee[2][0] == "lit":
                name = f"sprig.{callee[2][1]}"
                known = callee[2][1] in SPRIG
            else:
                raise ExpressionError(f"expression {text!r}: only named functions can be called")
            if not known:
                raise ExpressionError(
                    f"expression {text!r}: function {name} is not supported by the local runner"
                )
        elif node[0] == "ptr" and node[1] not in ("", "index"):
            raise ExpressionError(f"expression {text!r}: '#{node[1]}' is not supported by the local runner")
        for part in node[1:]:
            if isinstance(part, tuple) and part and isinstance(part[0], str):
                pending.append(part)
            elif isinstance(part, list):
                for item in part:
                    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], tuple):
                        pending.extend(item)  # a map literal's (key, value)
                    elif isinstance(item, tuple):
                        pending.append(item)
