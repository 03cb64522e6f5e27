"""Talking to the MLflow tracking server: bounded retries, and "unreachable" said as such.

MLflow's REST client retries a failed request 7 times with a backoff factor of 2 by default:
about four minutes of silence before an error that looks like any other (and code catching
"not found" then answers wrongly). :func:`bounded_retries` caps that, and
:func:`raise_if_unreachable` turns a connection failure into one
:class:`~geomlops.errors.TrackingUnavailableError` naming the setting and the address, with
credentials hidden. Call it first in every ``except MlflowException`` that means "not found".
"""

from __future__ import annotations

import logging
import os
import re
import sys
from urllib.parse import urlsplit, urlunsplit

from geomlops.errors import TrackingUnavailableError

#: MLflow's HTTP client settings unless the environment sets them: 3 retries (1 s, 2 s, 4 s),
#: and 30 s for a request to answer — an unreachable server is reported in seconds
RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

#: what MLflow's REST client says when the server did not answer at all
_NO_ANSWER = re.compile(
    r"Max retries exceeded|Connection refused|Failed to establish a new connection|"
    r"Name or service not known|Read timed out|timed out|RemoteDisconnected"
)


class _RetryProgress(logging.Filter):
    """urllib3's retry warnings (a raw ``Retrying (Retry(total=2, …)) after connection broken by
    …`` line, or nothing where logging is not set up) become one progress line on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Retrying"):
            return True
        left = re.search(r"Retry\(total=(\d+)", message)
        where = re.search(r"host='([^']+)', port=(\d+)", message)
        address = f"{where.group(1)}:{where.group(2)}" if where else "a server"
        print(
            f"! no answer from {address}; retrying ({left.group(1) if left else '?'} left)",
            file=sys.stderr,
            flush=True,
        )
        return False


_PROGRESS = _RetryProgress()


def bounded_retries() -> None:
    """Cap MLflow's HTTP retries (a variable already set in the environment wins) and say on
    stderr when a request is retried."""
    for name, value in RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)
    pool = logging.getLogger("urllib3.connectionpool")
    if _PROGRESS not in pool.filters:
        pool.addFilter(_PROGRESS)


def without_credentials(uri: str) -> str:
    """``uri`` with any ``user:password@`` removed (the host stays: it is what to check)."""
    parts = urlsplit(uri)
    if not parts.netloc or "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def unreachable_error(err: BaseException, tracking_uri: str) -> TrackingUnavailableError | None:
    """The clear error for ``err`` when it says the tracking server did not answer, else None."""
    text = str(err)
    if getattr(err, "error_code", None) not in (None, "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE"):
        return None
    if not _NO_ANSWER.search(text) and "API request to" not in text:
        return None
    if "API request to" in text and "failed with exception" not in text:
        return None
    return TrackingUnavailableError(
        f"MLflow tracking server unreachable at {without_credentials(tracking_uri)} "
        "(setting GEOMLOPS_MLFLOW_TRACKING_URI): check that it runs and that this machine reaches it"
    )


def raise_if_unreachable(err: BaseException) -> None:
    """Raise :class:`TrackingUnavailableError` from ``err`` when the server did not answer."""
    import mlflow

    clear = unreachable_error(err, mlflow.get_tracking_uri())
    if clear is not None:
        raise clear from err
