"""Argo durations, ``retryStrategy`` (its ``expression`` too) and template deadlines.

A steps or DAG template with a retry strategy (its own, ``spec.templateDefaults``' merged
into it, or ``spec.retryStrategy``) runs as Argo's controller runs it (``executeTemplate`` in
``workflow/controller/operator.go``): a ``Retry`` node ``x`` whose attempts are whole new
runs of the template, named ``x(0)``, ``x(1)``... (their children ``x(1).task``); see
:func:`run_retried`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .expr import ExpressionError, build_env, evaluate_bool
from .model import (
    ERROR,
    FAILED,
    FAILED_PHASES,
    RUNNING,
    SUCCEEDED,
    SUSPENDED,
    Attempt,
    NodeState,
    now_iso,
    parse_time,
)
from .outcome import Outcome

if TYPE_CHECKING:
    from .context import RunContext

#: Argo's message when ``retryStrategy.expression`` stops the retries (``processNodeRetries``)
EXPRESSION_FALSE = "retryStrategy.expression evaluated to false"

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
    expression: str = ""

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
        expression = str(spec.get("expression") or "")
        # Argo's RetryPolicyActual: OnFailure, but Always when only an expression is given
        return cls(
            limit=limit,
            expression=expression,
            policy=str(spec.get("retryPolicy") or ("Always" if expression else "OnFailure")),
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
        return self.decide(attempt, elapsed, phase, message)[0]

    def decide(
        self,
        attempt: int,
        elapsed: float,
        phase: str = FAILED,
        message: str = "",
        last: Mapping[str, str] | None = None,
    ) -> tuple[float | None, str, str]:
        """Decide on retrying ``attempt`` (1-based) that ended in ``phase`` with ``message``.

        Returns the delay before the next attempt (None: stop) and the phase and message the
        node ends with if it stops. As Argo's ``processNodeRetries``: the policy, then the
        limit, then ``expression`` (given ``last``, the ``lastRetry.*`` variables of
        :func:`last_retry`); a false expression ends the node with the attempt's phase, its
        message and Argo's; an expression that fails to evaluate errors the node.
        """
        if not self.retries(phase, message):
            return None, phase, message
        if self.limit is not None and attempt > self.limit:
            return None, phase, message
        if self.expression:
            try:
                again = evaluate_bool(self.expression, build_env(dict(last or {})))
            except ExpressionError as err:
                return None, ERROR, f"retryStrategy.expression: {err}"
            if not again:  # Argo's message, after what the attempt said (which Argo drops)
                return None, phase, f"{message}; {EXPRESSION_FALSE}" if message else EXPRESSION_FALSE
        return self._delay(attempt, elapsed), phase, message

    def _delay(self, attempt: int, elapsed: float) -> float | None:
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


def retry_strategy(template: Mapping[str, Any], spec: Mapping[str, Any]) -> Any:
    """The retry strategy that applies to ``template``: its own, else ``spec.retryStrategy``.

    As Argo's ``woc.retryStrategy``, for every template type (``templateDefaults`` are already
    merged into the template when it is loaded).
    """
    own = template.get("retryStrategy")
    return own if own is not None else spec.get("retryStrategy")


def last_retry(
    exit_code: int | None, status: str, started: str | None, finished: str | None, message: str
) -> dict[str, str]:
    """Return the ``lastRetry.*`` variables of a finished attempt, as Argo builds them.

    ``exitCode`` is ``-1`` without one (a DAG or steps attempt); ``duration`` is in whole
    seconds, since Argo's node timestamps have a resolution of one second (so
    ``asInt(lastRetry.duration)`` works as in Argo's examples).
    """
    begin, end = parse_time(started), parse_time(finished)
    seconds = int(end.timestamp()) - int(begin.timestamp()) if begin and end else 0
    return {
        "lastRetry.exitCode": "-1" if exit_code is None else str(exit_code),
        "lastRetry.status": status,
        "lastRetry.duration": str(seconds),
        "lastRetry.message": message,
    }


def run_retried(
    engine: RunContext,
    name: str,
    template: Mapping[str, Any],
    strategy: Any,
    scope: Mapping[str, str],
    attempt: Callable[[str, Mapping[str, str]], Outcome],
) -> Outcome:
    """Run a steps or DAG template under a retry strategy as Retry node ``name``.

    ``attempt(child, variables)`` runs the template once as node ``child`` (``name(0)``,
    ``name(1)``...: ``(0)`` for the workflow's root, whose own name is left out of node names)
    with ``retries`` and ``lastRetry.*`` set as Argo sets them. The Retry node ends with its
    last attempt's phase and outputs. A resumed run goes on from the attempt it stopped in.
    """
    from .substitute import UnresolvedVariableError, substitute_all

    node = NodeState(name, str(template["name"]), "Retry", RUNNING, now_iso())
    previous = engine.previous.get(name)
    if previous is not None and previous.type == "Retry":
        # attempts that really failed count; one suspended or interrupted is run again
        node.attempts = [
            a
            for a in previous.attempts
            if a.status in FAILED_PHASES and not a.message.startswith("interrupted")
        ]
        node.started = previous.started or node.started
    engine.store.put(node)
    try:
        policy = RetryPolicy.from_template({"retryStrategy": substitute_all(strategy, dict(scope))})
    except (UnresolvedVariableError, ValueError) as err:
        return engine.close(node, ERROR, f"retryStrategy: {err}")
    last: dict[str, str] = {"lastRetry.exitCode": "0", "lastRetry.duration": "0"}
    last |= {"lastRetry.status": "", "lastRetry.message": ""}
    if node.attempts:
        done = node.attempts[-1]
        last = last_retry(None, done.status, done.started, done.finished, done.message)
    began = parse_time(node.started)
    while True:
        index = len(node.attempts)
        record = Attempt(index + 1, now_iso())
        node.attempts.append(record)
        engine.store.put(node)
        child = f"{name}({index})"
        outcome = attempt(child, {"retries": str(index), **last})
        record.finished, record.status, record.message = now_iso(), outcome.phase, outcome.message
        node.outputs = dict(outcome.outputs)
        if outcome.phase in (SUCCEEDED, SUSPENDED) or engine.aborted.is_set():
            return engine.close(node, outcome.phase, outcome.message)
        last = last_retry(None, outcome.phase, outcome.started, outcome.finished, outcome.message)
        elapsed = (parse_time(now_iso()) - began).total_seconds() if began else 0.0  # type: ignore[operator]
        delay, phase, message = policy.decide(index + 1, elapsed, outcome.phase, outcome.message, last)
        engine.reporter.failed(name, index + 1, policy.attempts or 0, message, delay)
        if delay is None:
            return engine.close(node, phase, message)
        engine.store.put(node)
        engine.aborted.wait(delay)  # returns at once when the run is stopped
