"""Argo durations, ``retryStrategy`` and template deadlines."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .model import ERROR, FAILED

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: Any) -> float:
    """Return seconds from an Argo duration: ``30`` / ``"30"`` (seconds) or Go's ``"1m30s"``.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    pos, total = 0, 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(f"invalid duration {value!r} (use e.g. 30, '10s', '1m30s', '0.5s')")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("empty duration")
    return total


@dataclass(frozen=True)
class RetryPolicy:
    """When and after how long a failed attempt is tried again."""

    limit: int | None = 0
    policy: str = "OnFailure"
    duration: float = 0.0
    factor: float = 1.0
    max_duration: float | None = None
    cap: float | None = None

    @classmethod
    def from_template(cls, template: Mapping[str, Any]) -> RetryPolicy:
        """Read a (substituted) template's ``retryStrategy``; none means no retries.

        Raises:
            ValueError: a malformed limit or duration.
        """
        spec = template.get("retryStrategy")
        if not isinstance(spec, Mapping):
            return cls()
        backoff = spec.get("backoff") or {}
        limit = int(str(spec["limit"])) if "limit" in spec else None
        return cls(
            limit=limit,
            policy=str(spec.get("retryPolicy", "OnFailure")),
            duration=parse_duration(backoff["duration"]) if "duration" in backoff else 0.0,
            factor=float(str(backoff.get("factor", 1))),
            max_duration=parse_duration(backoff["maxDuration"]) if "maxDuration" in backoff else None,
            cap=parse_duration(backoff["cap"]) if "cap" in backoff else None,
        )

    @property
    def attempts(self) -> int | None:
        """The most attempts there can be (``None`` when only maxDuration bounds them)."""
        return None if self.limit is None else self.limit + 1

    def retries(self, phase: str, message: str = "") -> bool:
        """Whether the policy retries an attempt that ended in ``phase`` with ``message``.

        As Argo's ``processNodeRetries`` decides: ``Always`` retries failures and errors,
        ``OnFailure`` only failures (a non-zero exit, a deadline), ``OnError`` only errors
        (the process could not start), and
        ``OnTransientError`` only a failure or error whose message is transient; a process's
        message is not, unless it matches the ``TRANSIENT_ERROR_PATTERN`` regular expression
        (Argo's ``util/errors``).
        """
        if self.policy == "Always":
            return phase in (FAILED, ERROR)
        if self.policy == "OnError":
            return phase == ERROR
        if self.policy == "OnTransientError":
            pattern = os.environ.get("TRANSIENT_ERROR_PATTERN")
            return phase in (FAILED, ERROR) and bool(pattern) and re.search(str(pattern), message) is not None
        return phase == FAILED

    def next_delay(
        self, attempt: int, elapsed: float, phase: str = FAILED, message: str = ""
    ) -> float | None:
        """Seconds to wait before retrying ``attempt`` (1-based) that ended in ``phase``; None: stop.

        ``message`` is what the attempt said (for ``OnTransientError``, see :meth:`retries`).
        """
        if not self.retries(phase, message):
            return None
        if self.limit is not None and attempt > self.limit:
            return None
        delay = self.duration * self.factor ** (attempt - 1)
        if self.cap is not None:
            delay = min(delay, self.cap)
        if self.max_duration is not None and elapsed + delay > self.max_duration:
            return None
        return delay


def deadline_of(template: Mapping[str, Any]) -> float | None:
    """Return the seconds a pod may run: ``activeDeadlineSeconds`` or ``timeout``.

    Raises:
        ValueError: a malformed value.
    """
    limits = []
    if template.get("activeDeadlineSeconds") not in (None, ""):
        limits.append(parse_duration(template["activeDeadlineSeconds"]))
    if template.get("timeout") not in (None, ""):
        limits.append(parse_duration(template["timeout"]))
    return min(limits) if limits else None
