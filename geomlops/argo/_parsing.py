"""The tokenizer and recursive-descent base shared by the ``when`` and ``depends`` parsers."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Token:
    """One token: its kind (the name of the pattern group that matched) and its text."""

    kind: str
    text: str


def tokenize(text: str, pattern: re.Pattern[str], what: str) -> list[Token]:
    """Split ``text`` into tokens of ``pattern``'s named groups (leading blanks skipped).

    Raises:
        ValueError: some part of ``text`` matches no group (``what`` names the expression).
    """
    tokens: list[Token] = []
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
        tokens.append(Token(kind, match.group(kind)))
        pos = match.end()
    return tokens


class Parser:
    """Recursive-descent parser over a token list; subclasses define the grammar."""

    def __init__(self, tokens: list[Token], text: str, what: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.text = text
        self.what = what

    def peek(self) -> Token | None:
        """Return the next token without consuming it (``None`` at the end)."""
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        """Consume and return the next token.

        Raises:
            ValueError: there is none.
        """
        token = self.peek()
        if token is None:
            raise self.error("unexpected end")
        self.pos += 1
        return token

    def accept(self, op: str) -> bool:
        """Consume the next token if it is operator ``op``; say whether it was."""
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == op:
            self.pos += 1
            return True
        return False

    def error(self, why: str) -> ValueError:
        """Return the error to raise for ``why``, naming the expression."""
        return ValueError(f"invalid {self.what} expression {self.text!r}: {why}")

    def finish(self) -> None:
        """Check that every token was consumed.

        Raises:
            ValueError: one was not.
        """
        token = self.peek()
        if token is not None:
            raise self.error(f"unexpected {token.text!r}")
