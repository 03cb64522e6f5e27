"""The parser of :mod:`.expr`: expr-lang's grammar and operator precedences (``parser/operator``)."""

from __future__ import annotations

import re
from typing import Any

from ._expr_functions import PREDICATES
from ._expr_values import ExpressionError

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<num>0[xX][0-9a-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)
      | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
      | (?P<ptr>\#[A-Za-z_]*)
      | (?P<op>\?\?|\?\.|\.\.|==|!=|<=|>=|&&|\|\||\*\*|[-+*/%<>!?:()\[\]{},.|^])
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
    )""",
    re.VERBOSE,
)
_BINARY = {
    "|": 0, "or": 10, "||": 10, "and": 15, "&&": 15,
    "==": 20, "!=": 20, "<": 20, ">": 20, ">=": 20, "<=": 20,
    "in": 20, "matches": 20, "contains": 20, "startsWith": 20, "endsWith": 20,
    "..": 25, "+": 30, "-": 30, "*": 60, "/": 60, "%": 60, "**": 100, "^": 100, "??": 500,
}  # fmt: skip
_RIGHT = {"**", "^"}
_NEGATABLE = {"in", "matches", "contains", "startsWith", "endsWith"}
_UNARY = {"not": 50, "!": 50, "-": 90, "+": 90}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "a": "\a"}
_ESCAPES |= {"b": "\b", "f": "\f", "v": "\v"}

Node = tuple[Any, ...]


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]

    def escape(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] in "uU":
            return chr(int(code[1:], 16))
        if code[0] == "x":
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, code)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|.)", escape, text[1:-1])


class Parser:
    """Parses one expression into a tree of tuples (``("binary", op, left, right)``...)."""

    def __init__(self, text: str) -> None:
        self.text = text
        if re.match(r"\s*let\b", text):
            raise self.error("'let' is not supported by the local runner")
        self.tokens: list[tuple[str, str]] = []
        pos, stripped = 0, text.rstrip()
        while pos < len(stripped):
            match = _TOKEN.match(stripped, pos)
            if match is None or match.end() == pos:
                raise ExpressionError(f"cannot parse expression {text!r} at {stripped[pos:]!r}")
            kind = match.lastgroup or ""
            value = match.group(kind)
            if kind == "name" and value in ("and", "or", "not", "in", "matches", "contains"):
                kind = "op"
            if kind == "name" and value in ("startsWith", "endsWith") and self._binary_position():
                kind = "op"
            self.tokens.append((kind, value))
            pos = match.end()
        self.pos = 0

    def _binary_position(self) -> bool:
        # startsWith/endsWith are operators after an operand, functions elsewhere
        return bool(self.tokens) and (self.tokens[-1][0] != "op" or self.tokens[-1][1] in (")", "]", "}"))

    # --- token helpers ---
    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def is_op(self, text: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token[0] == "op" and token[1] == text

    def expect(self, text: str) -> None:
        if not self.is_op(text):
            found = self.peek()
            raise self.error(f"expected {text!r}, found {found[1] if found else 'the end'!r}")
        self.pos += 1

    def error(self, why: str) -> ExpressionError:
        return ExpressionError(f"invalid expression {self.text!r}: {why}")

    # --- grammar ---
    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expression(self, min_prec: int) -> Node:
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in _UNARY:
            self.pos += 1
            left: Node = ("unary", token[1], self.expression(_UNARY[token[1]]))
        else:
            left = self.postfix(self.primary())
        while True:
            token = self.peek()
            if token is None or token[0] != "op":
                break
            op, negate, width = token[1], False, 1
            if op in ("not", "!") and self.peek(1) is not None and self.peek(1)[1] in _NEGATABLE:  # type: ignore[index]
                op, negate, width = self.peek(1)[1], True, 2  # type: ignore[index]
            if op not in _BINARY or _BINARY[op] < min_prec:
                break
            if op == "|":
                raise self.error("the pipe operator '|' is not supported by the local runner")
            self.pos += width
            prec = _BINARY[op]
            right = self.expression(prec if op in _RIGHT else prec + 1)
            left = ("binary", op, left, right)
            if negate:
                left = ("unary", "not", left)
        if min_prec == 0:
            while self.is_op("?"):
                self.pos += 1
                if self.is_op(":"):
                    raise self.error("the short ternary '?:' is not supported by the local runner")
                yes = self.expression(0)
                self.expect(":")
                left = ("cond", left, yes, self.expression(0))
        return left

    def primary(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        kind, text = token
        self.pos += 1
        if kind == "num":
            clean = text.replace("_", "")
            if clean[:2] in ("0x", "0X"):
                return ("lit", int(clean, 16))
            return ("lit", float(clean) if any(c in clean for c in ".eE") else int(clean))
        if kind == "str":
            return ("lit", _unquote(text))
        if kind == "ptr":
            return ("ptr", text[1:])
        if kind == "name":
            if text in ("true", "false"):
                return ("lit", text == "true")
            if text == "nil":
                return ("lit", None)
            if text == "let":
                raise self.error("'let' is not supported by the local runner")
            return ("name", text)
        if text == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if text == "[":
            items = self.sequence("]")
            return ("list", items)
        if text == "{":
            pairs: list[tuple[Node, Node]] = []
            while not self.is_op("}"):
                key = self.take_key()
                self.expect(":")
                pairs.append((key, self.expression(0)))
                if not self.is_op("}"):
                    self.expect(",")
            self.pos += 1
            return ("map", pairs)
        raise self.error(f"unexpected {text!r}")

    def take_key(self) -> Node:
        token = self.peek()
        if token is None:
            raise self.error("unexpected end in a map")
        self.pos += 1
        if token[0] in ("name", "num"):
            return ("lit", token[1])
        if token[0] == "str":
            return ("lit", _unquote(token[1]))
        if token[1] == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        raise self.error(f"unexpected {token[1]!r} as a map key")

    def sequence(self, close: str, closures_from: int | None = None) -> list[Node]:
        items: list[Node] = []
        while not self.is_op(close):
            if closures_from is not None and len(items) >= closures_from:
                items.append(("closure", self.closure()))
            else:
                items.append(self.expression(0))
            if not self.is_op(close):
                self.expect(",")
        self.pos += 1
        return items

    def closure(self) -> Node:
        if self.is_op("{"):
            self.pos += 1
            body = self.expression(0)
            self.expect("}")
            return body
        return self.expression(0)

    def postfix(self, node: Node) -> Node:
        while True:
            if self.is_op(".") or self.is_op("?."):
                optional = self.is_op("?.")
                self.pos += 1
                token = self.peek()
                if token is None or token[0] not in ("name", "op") or not re.fullmatch(r"\w+", token[1]):
                    raise self.error("expected a name after '.'")
                self.pos += 1
                node = ("member", node, ("lit", token[1]), optional)
            elif self.is_op("["):
                self.pos += 1
                if self.is_op(":"):
                    self.pos += 1
                    upper = None if self.is_op("]") else self.expression(0)
                    self.expect("]")
                    node = ("slice", node, None, upper)
                    continue
                index = self.expression(0)
                if self.is_op(":"):
                    self.pos += 1
                    upper = None if self.is_op("]") else self.expression(0)
                    self.expect("]")
                    node = ("slice", node, index, upper)
                    continue
                self.expect("]")
                node = ("member", node, index, False)
            elif self.is_op("("):
                self.pos += 1
                predicate = node[0] == "name" and node[1] in PREDICATES
                node = ("call", node, self.sequence(")", 1 if predicate else None))
            else:
                return node
