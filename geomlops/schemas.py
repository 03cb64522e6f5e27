"""JSON schemas kept offline, stored by the URL they are published at, and JSON paths of faults.

A schema folder holds each schema at ``<folder>/<host>/<path>`` of its URL (the folder
``GEOMLOPS_SCHEMA_DIR`` names; the tests use the shared one beside the checkout), so validation
never needs the network. :func:`schema_path` serves the catalogue's item validation;
:func:`json_path` names a fault's place for it and for Argo lint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def schema_path(schema_dir: Path, uri: str) -> Path:
    """The file that stores the schema published at ``uri`` in a by-URL schema folder."""
    parsed = urlparse(uri)
    return schema_dir / parsed.netloc / parsed.path.lstrip("/")


def json_path(parts: Iterable[Any]) -> str:
    """A JSONPath for a jsonschema error location: ``$.properties['mlm:input'][0]``."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).replace("_", "").isalnum():
            out += f".{part}"
        else:
            out += f"['{part}']"
    return out


def schema_refs(schema: Any, uri: str) -> set[str]:
    """The other documents ``schema`` (published at ``uri``) refers to with ``$ref``: absolute
    http(s) URLs without their fragment (a reference inside the document itself is left out)."""
    from urllib.parse import urldefrag, urljoin

    found: set[str] = set()
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target = urldefrag(urljoin(uri, ref)).url
                if target.startswith(("http://", "https://")) and target != urldefrag(uri).url:
                    found.add(target)
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return found


def fetch_schemas(
    sources: Mapping[str, str],
    into: Path,
    *,
    mirror: str | None = None,
    follow: Callable[[str], bool] = lambda uri: True,
    timeout: float = 60.0,
    fetched: Callable[[str, Path], None] | None = None,
) -> list[Path]:
    """Download schemas into a schema folder, for validation with no network later.

    Args:
        sources: URL → the file's path in the folder (by URL: ``<host>/<path>``, see
            :func:`schema_path`; Argo's schemas are kept as ``argo-workflows/<tag>/schema.json``).
        into: the schema folder (made if missing, once every schema is fetched).
        mirror: a base URL laid out as the folder is (``<mirror>/<path in the folder>``),
            fetched from instead of each schema's own URL: a schema folder served over HTTP.
        follow: whether to fetch a schema another one refers to (``$ref``) as well; those are
            kept by URL.
        timeout: seconds for each download.
        fetched: told each URL and the file it was written to.

    Returns:
        The files written, in the order fetched.

    Raises:
        SchemaUnavailableError: a schema could not be downloaded, is not JSON, or would be
            stored outside the folder (its URL and why); then no file of the folder has changed.
    """
    import json
    import os
    import urllib.error
    import urllib.request

    from geomlops.errors import SchemaUnavailableError

    def place(relative: str, uri: str) -> str:
        """``relative`` as a path inside the folder: never absolute, never climbing out of it."""
        parts = Path(relative).parts
        if not parts or Path(relative).is_absolute() or ".." in parts:
            raise SchemaUnavailableError(f"schema {uri}: {relative!r} is not a path inside the schema folder")
        return Path(*parts).as_posix()

    # held in memory until every one is here (a few MB): a failure leaves the folder untouched
    todo: list[tuple[str, str]] = []
    seen: set[str] = set()  # one download per file (two URLs may name one: a fragment, a query)
    for uri, relative in sources.items():
        path = place(relative, uri)
        if path not in seen:
            seen.add(path)
            todo.append((uri, path))
    fetched_bodies: list[tuple[str, str, bytes]] = []
    while todo:
        uri, relative = todo.pop(0)
        url = f"{mirror.rstrip('/')}/{relative}" if mirror else uri
        request = urllib.request.Request(url, headers={"User-Agent": "geomlops"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
            schema = json.loads(body)
        except (urllib.error.URLError, OSError, ValueError) as err:
            where = f"{url} (mirror of {uri})" if mirror else url
            raise SchemaUnavailableError(f"schema {where} could not be fetched: {err}") from err
        fetched_bodies.append((uri, relative, body))
        # relative references are resolved against the URL fetched (the published schemas
        # declare no other base with $id)
        for ref in sorted(schema_refs(schema, uri)):
            path = place(str(schema_path(Path(), ref)), ref)
            if path not in seen and follow(ref):
                seen.add(path)
                todo.append((ref, path))
    # every schema is here: only now does the folder change, each file replaced whole
    written = []
    for uri, relative, body in fetched_bodies:
        destination = into / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        part = destination.with_name(f".{destination.name}.part")  # readers see it whole or not
        part.write_bytes(body)
        os.replace(part, destination)
        written.append(destination)
        if fetched is not None:
            fetched(uri, destination)
    return written
