"""The STAC API over PgSTAC: stac-fastapi-pgstac under uvicorn, and searching it with pystac-client.

stac-fastapi-pgstac reads its database from ``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``
and ``PGDATABASE`` (:func:`api_environment` derives them from a DSN). Its 7.x releases offer
free-text search (``q``) only on collection search; :func:`create_app` adds the advanced
free-text extension to item search, which PgSTAC answers from each item's ``description``,
``title`` and ``keywords``. Mind ``ENABLED_EXTENSIONS``: when set, it must list ``free_text``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from catalog_sync._pgstac_db import close_db, describe, dsn_params, open_db
from geomlops.errors import CatalogError, CatalogUnavailableError, ItemNotFoundError, ParameterError
from geomlops.ports import free_port

if TYPE_CHECKING:
    from fastapi import FastAPI

#: the app factory uvicorn imports (``--factory``)
APP = "catalog_sync.api:create_app"
_FREE_TEXT = ("item-search#free-text", "item-search#advanced-free-text")


def parse_bbox(value: str | None, field: str = "bbox") -> list[float] | None:
    """``W,S,E,N`` to four floats (WGS 84); None or empty gives None.

    Args:
        value: the box as given.
        field: how the caller names it, for the message (``--bbox``, ``bbox``).

    Raises:
        ParameterError: not four numbers, west/south above east/north, or out of range.
    """
    if value is None or value == "":
        return None
    try:
        box = [float(v) for v in value.split(",")]
    except ValueError as err:
        raise ParameterError(f"{field} {value!r}: expected four numbers W,S,E,N") from err
    if len(box) != 4:
        raise ParameterError(f"{field} {value!r}: expected four numbers W,S,E,N, got {len(box)}")
    west, south, east, north = box
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise ParameterError(f"{field} {value!r}: expected longitudes in [-180, 180], latitudes in [-90, 90]")
    if south > north:
        raise ParameterError(
            f"{field} {value!r}: south ({south:g}) is above north ({north:g}); expected W,S,E,N with S <= N"
        )
    return box


def bbox_parts(bbox: Sequence[float]) -> list[tuple[float, float, float, float]]:
    """``[west, south, east, north]`` as boxes with west <= east: itself, or, across the
    antimeridian (west > east, as RFC 7946 and STAC write it), the two either side of 180°."""
    west, south, east, north = bbox
    if west <= east:
        return [(west, south, east, north)]
    return [(west, south, 180.0, north), (-180.0, south, east, north)]


def create_app() -> FastAPI:
    """The stac-fastapi-pgstac application, with free-text search on ``/search``.

    Configured from the environment (``PG*`` for the database, stac-fastapi's own settings
    for the rest), as uvicorn's ``--factory`` expects.
    """
    from stac_fastapi.extensions.free_text import FreeTextAdvancedExtension
    from stac_fastapi.extensions.free_text.free_text import FreeTextConformanceClasses
    from stac_fastapi.pgstac.app import instantiate_api
    from stac_fastapi.pgstac.models.extensions import Extensions

    # advanced: `q` is one string ("building OR road", "\"building footprints\""),
    # which is what pystac-client sends and what PgSTAC's q_to_tsquery parses
    free_text = FreeTextAdvancedExtension(conformance_classes=[FreeTextConformanceClasses.SEARCH_ADVANCED])
    app: FastAPI = instantiate_api(extensions=Extensions(search_map={"free_text": free_text})).app
    return app


def api_environment(dsn: str) -> dict[str, str]:
    """The environment for stac-fastapi-pgstac to serve the database of ``dsn``."""
    params = dsn_params(dsn)
    return {
        "PGHOST": params.get("host") or "localhost",
        "PGPORT": params.get("port") or "5432",
        "PGUSER": params.get("user") or os.environ.get("PGUSER") or getpass.getuser(),
        "PGPASSWORD": params.get("password") or os.environ.get("PGPASSWORD", ""),
        "PGDATABASE": params.get("dbname") or params.get("user") or getpass.getuser(),
        # PgSTAC's SQL hydration drops every null ("datetime": null, which STAC requires);
        # hydrating in the API keeps items as they were written
        "USE_API_HYDRATE": "true",
    }


def serve(dsn: str, *, host: str = "127.0.0.1", port: int = 8081, log_level: str = "info") -> None:
    """Run the STAC API in this process until interrupted (``geomlops catalog serve``)."""
    import uvicorn

    os.environ.update(api_environment(dsn))
    uvicorn.run(APP, factory=True, host=host, port=port, log_level=log_level)


class StacApiServer:
    """stac-fastapi-pgstac as a uvicorn child process on this machine.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with StacApiServer(dsn) as server:
            search(server.url, q="building")

    Args:
        dsn: the PgSTAC database to serve.
        host: interface to listen on.
        port: port to listen on; default: a free one.
        startup_timeout: seconds to wait for the API to answer.
    """

    def __init__(
        self, dsn: str, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout: float = 30.0
    ) -> None:
        self.dsn = dsn
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        """Root URL of the running API."""
        if self.port is None:
            raise CatalogError("the STAC API is not started")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> StacApiServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> str:
        """Check the database, start the server and wait until it answers.

        Returns:
            The API's root URL.

        Raises:
            CatalogUnavailableError: the database cannot be reached or has no PgSTAC schema,
                or the server exited or did not answer in time (saying why, from its log).
        """
        close_db(open_db(self.dsn))  # one clear line now rather than a traceback in a log
        fixed = self.port is not None
        for _ in range(1 if fixed else 3):  # a free port can be taken between choosing and binding
            if not fixed:
                self.port = free_port(self.host)
            self._spawn()
            try:
                self._wait_until_ready()
                return self.url
            except CatalogUnavailableError as err:
                log = self._log_tail()
                self.stop()
                if fixed or "address already in use" not in log.lower():
                    raise CatalogUnavailableError(f"{err}: {_why(log)}") from err
        raise CatalogUnavailableError(f"stac-fastapi-pgstac found no free port on {self.host}")

    def _spawn(self) -> None:
        env = {**os.environ, **api_environment(self.dsn)}
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - outlives this call; stop() closes it
        command = [sys.executable, "-m", "uvicorn", APP, "--factory"]
        command += ["--host", self.host, "--port", str(self.port), "--log-level", "warning"]
        self._proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def _wait_until_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise CatalogUnavailableError(
                    f"stac-fastapi-pgstac for {describe(self.dsn)} exited with status {self._proc.returncode}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/_mgmt/ping", timeout=1).ok:
                    return
            time.sleep(0.1)
        raise CatalogUnavailableError(
            f"stac-fastapi-pgstac for {describe(self.dsn)} did not answer on {self.url} "
            f"within {self.startup_timeout:.0f} s"
        )

    def _log_tail(self, lines: int = 40) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text: str = self._log.read().decode(errors="replace")
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


def _why(log: str) -> str:
    """The line of a server log that says why it stopped: its last exception, else its end."""
    for line in reversed(log.splitlines()):
        match = re.match(r"^[\w.]*(?:Error|Exception)\w*: (.+)$", line.strip())
        if match:
            return match.group(1)
    return " | ".join(log.splitlines()[-5:]) or "no output"


def mlm_filter(
    *, tasks: Sequence[str] = (), framework: str | None = None, accelerator: str | None = None
) -> dict[str, Any] | None:
    """A CQL2-JSON filter on MLM fields; None when nothing is asked.

    Args:
        tasks: items whose ``mlm:tasks`` hold any of these.
        framework: ``mlm:framework``, compared without case ("pytorch" finds "PyTorch").
        accelerator: ``mlm:accelerator``, exactly (``amd64``, ``cuda`` …).
    """
    parts: list[dict[str, Any]] = []
    if tasks:
        parts.append({"op": "a_overlaps", "args": [{"property": "mlm:tasks"}, list(tasks)]})
    if framework:
        parts.append(
            {
                "op": "=",
                "args": [
                    {"op": "casei", "args": [{"property": "mlm:framework"}]},
                    {"op": "casei", "args": [framework]},
                ],
            }
        )
    if accelerator:
        parts.append({"op": "=", "args": [{"property": "mlm:accelerator"}, accelerator]})
    return all_of(parts)


def all_of(filters: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """Combine CQL2-JSON filters with ``and``; None when there are none."""
    parts = [dict(f) for f in filters if f]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"op": "and", "args": parts}


def _across_180(bbox: Sequence[float]) -> dict[str, Any]:
    """A bbox across the antimeridian (west > east) as the two boxes either side of it: PgSTAC
    takes a bbox's corners as given, so west > east would search the rest of the world."""
    return {
        "type": "MultiPolygon",
        "coordinates": [[[[w, s], [e, s], [e, n], [w, n], [w, s]]] for w, s, e, n in bbox_parts(bbox)],
    }


def search(
    api_url: str,
    *,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    q: str | None = None,
    filter: Mapping[str, Any] | None = None,
    collections: Sequence[str] | None = None,
    max_items: int | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Search a STAC API for items, with pystac-client.

    Args:
        api_url: root URL of the STAC API.
        bbox: ``[west, south, east, north]`` in WGS 84; west > east: across the antimeridian.
        datetime: an RFC 3339 instant or interval (``2024-01-01/..``).
        q: free text (``building OR road``, ``"building footprints"``), matched against
            each item's description, title and keywords.
        filter: a CQL2-JSON filter, e.g. from :func:`mlm_filter`.
        collections: only these collections.
        max_items: stop after this many items; None: every match.
        limit: items per page.

    Returns:
        The matching items as dicts, in the API's order.

    Raises:
        CatalogUnavailableError: the API cannot be reached.
        CatalogError: the API refused the search or does not offer what it needs.
    """
    from pystac_client import Client
    from pystac_client.exceptions import APIError
    from pystac_client.warnings import DoesNotConformTo

    from catalog_sync._free_text_search import FreeTextItemSearch

    try:
        client = Client.open(api_url)
        link = client.get_search_link()
        if link is None:
            raise CatalogError(f"the STAC API at {api_url} offers no item search")
        conforms = client.get_conforms_to()
        if q and not any(c.endswith(_FREE_TEXT) for c in conforms):
            raise CatalogError(f"the STAC API at {api_url} offers no free-text search (q)")
        # the basic extension takes a list of terms, the advanced one a query string
        advanced = any(c.endswith(_FREE_TEXT[1]) for c in conforms)
        if collections:
            known = {c.id for c in client.get_collections()}
            unknown = [c for c in collections if c not in known]
            if unknown:
                raise ItemNotFoundError(
                    f"no collection {', '.join(map(repr, unknown))} in the STAC API at {api_url} "
                    f"(collections: {', '.join(sorted(known))})"
                )
        found = FreeTextItemSearch(
            link.href,
            q=(q if advanced else q.split()) if q else None,
            client=client,
            method="POST",
            bbox=list(bbox) if bbox is not None and bbox[0] <= bbox[2] else None,
            intersects=_across_180(bbox) if bbox is not None and bbox[0] > bbox[2] else None,
            datetime=datetime,
            filter=dict(filter) if filter else None,
            collections=list(collections) if collections else None,
            max_items=max_items,
            limit=limit,
        )
        return list(found.items_as_dicts())
    except APIError as err:
        # pystac-client wraps transport failures in APIError too: tell them apart
        if isinstance(err.__context__, requests.ConnectionError):
            errno = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(err.__context__))
            why = errno.group(1).strip() if errno else "no connection"
            raise CatalogUnavailableError(
                f"STAC API unreachable at {api_url} (setting GEOMLOPS_STAC_API_URL or --api-url): {why}"
            ) from err
        detail = (str(err).strip().splitlines() or ["(no detail)"])[0][:300]
        raise CatalogError(f"the STAC API at {api_url} refused the search: {detail}") from err
    except DoesNotConformTo as err:
        raise CatalogError(f"the STAC API at {api_url}: {err}") from err
