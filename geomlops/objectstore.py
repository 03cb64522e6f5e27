"""One clear error when the S3 object store cannot be reached.

boto3's connection errors end a step's log with a traceback and a URL of one request
(``Could not connect to the endpoint URL: "http://host:9000/bucket?list-type=2"``), often
wrapped in MLflow's own exceptions. :func:`object_store_errors` turns them, wherever they sit in
the exception chain, into :class:`~geomlops.errors.ObjectStoreUnavailableError`, which names the
endpoint, the setting it comes from and what to do. The task still retries per its strategy.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from geomlops.errors import ObjectStoreUnavailableError

#: the settings that name the object store's endpoint, as a person sets them
ENDPOINT_SETTINGS = "GEOMLOPS_S3_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL"


def _connection_error(err: BaseException) -> BaseException | None:
    """The botocore connection failure in ``err``'s chain (cause or context), if any."""
    from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        ConnectionClosedError,
        ConnectionError,
        ReadTimeoutError,
    )

    failures = (ConnectionError, ConnectionClosedError, ReadTimeoutError)
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, failures):
            found: BaseException = current
            return found
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _endpoint(err: BaseException) -> str:
    url = str(getattr(err, "kwargs", {}).get("endpoint_url") or "")
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.netloc else "(unknown endpoint)"


def _why(err: BaseException) -> str:
    errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(getattr(err, "kwargs", {}).get("error") or err))
    if errno:
        return errno.group(1).strip()
    name = type(err).__name__.removesuffix("Error")
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()  # ConnectionClosed -> connection closed


def unavailable(err: BaseException, action: str) -> ObjectStoreUnavailableError | None:
    """The error to raise for ``err`` when the object store could not be reached, else None.

    Args:
        err: what the S3 client (or a library using it) raised.
        action: what was being done, for the message (``registering run … as 'model'``).
    """
    found = _connection_error(err)
    if found is None:
        return None
    return ObjectStoreUnavailableError(
        f"the object store at {_endpoint(found)} is unreachable ({_why(found)}) while {action}. "
        f"Check that it runs and that {ENDPOINT_SETTINGS} names it (the local stack: "
        "`geomlops dev status`, `geomlops dev up`); once it answers, `geomlops run --resume RUN_ID` "
        "finishes a failed local run, or resubmit on Argo"
    )


@contextmanager
def object_store_errors(action: str) -> Iterator[None]:
    """Raise :class:`~geomlops.errors.ObjectStoreUnavailableError` (from the original) when the
    block fails because the object store cannot be reached; other errors pass unchanged."""
    try:
        yield
    except Exception as err:
        clear = unavailable(err, action)
        if clear is None:
            raise
        raise clear from err
