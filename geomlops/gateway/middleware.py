"""ASGI middleware of the gateway: request body limit and the audit trail of writes."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geomlops.gateway.db import AuditEntry, Database

_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_log = logging.getLogger("geomlops.gateway")


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses a request body over ``max_bytes`` with 413, by its Content-Length or as it arrives.

    ``larger`` maps a path whose body is not JSON (an uploaded chip) to its own limit and the
    name its refusal gives the body.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Mapping[str, tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, field = self.larger.get(scope["path"], (self.max_bytes, "request body"))
        too_large = f"{field}: larger than the gateway accepts ({limit} bytes)"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _answer(send, 413, too_large)
            return
        # read the body first (bodies here are small): a streamed body over the limit is
        # refused before the app sees any of it
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await _answer(send, 413, too_large)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``messages`` first, then what the client sends next."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


class Audit:
    """Records every write request (not GET/HEAD/OPTIONS): who, what, when, from where, outcome.

    The caller is the one authentication found (``anonymous`` when none did); the target is the
    request's path; nothing of the body or the headers is recorded, so no secret reaches it.
    """

    def __init__(self, app: ASGIApp, db: Database) -> None:
        self.app = app
        self.db = db

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        recorded = False

        async def watched(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                # written before the answer leaves: whoever reads the answer finds its audit line
                recorded = True
                self._record(scope, state, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if not recorded:  # no answer started (an error): recorded as a server error
                self._record(scope, state, 500)

    def _record(self, scope: Scope, state: dict[str, Any], status: int) -> None:
        principal = state.get("principal")
        route = scope.get("route")
        client = scope.get("client")
        entry = AuditEntry(
            actor=principal.name if principal is not None else "anonymous",
            role=principal.role.value if principal is not None else "",
            method=scope["method"],
            action=f"{scope['method']} {getattr(route, 'path', scope['path'])}",
            target=scope["path"][:500],
            client=f"{client[0]}" if client else "",
            status=status,
            detail=str(state.get("audit_detail", ""))[:2000],
        )
        try:
            with self.db.session() as session:
                session.add(entry)
        except Exception:  # the answer is sent; a lost audit line is logged, never hidden
            _log.exception("could not record the audit line of %s %s", scope["method"], scope["path"])
            raise
