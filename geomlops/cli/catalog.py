"""``geomlops catalog``: validate STAC items offline, search the STAC API, serve PgSTAC."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ParameterError
from geomlops.settings import get_settings, use_tracking

#: exit statuses of ``catalog validate``
EXIT_VALID, EXIT_INVALID, EXIT_INCOMPLETE = 0, 1, 3


@click.group()
def catalog() -> None:
    """The STAC catalogue: validate items, search the STAC API, serve PgSTAC."""


@catalog.command()
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@fail_cleanly
def validate(files: tuple[Path, ...]) -> None:
    """Validate STAC item FILES offline: the core schema and every declared extension.

    Extension schemas are read from $GEOMLOPS_SCHEMA_DIR (schemas stored by URL); nothing
    is fetched from the network. Each file is reported as valid, invalid (with the JSON
    path of each fault) or incomplete (naming each schema not available offline: such a
    file is never reported valid).

    \b
    Exit status:
      0  every file is valid
      1  at least one file is invalid
      3  none is invalid, but at least one is incomplete
      2  the command could not run
    """
    from catalog_sync.validation import validate_stac

    schema_dir = get_settings().schema_dir
    if schema_dir is None:
        click.secho(
            "! GEOMLOPS_SCHEMA_DIR is not set: only the core STAC schema is available "
            "(`geomlops schemas fetch --into FOLDER` fetches the others while online)",
            fg="yellow",
            err=True,
        )
    statuses = set()
    for path in files:
        try:
            document = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            statuses.add("invalid")
            click.secho(f"✗ {path}: invalid", fg="red")
            click.echo(f"    $: not valid JSON ({err})")
            continue
        if not isinstance(document, dict) or document.get("type") != "Feature":
            kind = document.get("type") if isinstance(document, dict) else type(document).__name__
            statuses.add("incomplete")
            click.secho(f"? {path}: incomplete", fg="yellow")
            click.echo(f"    $.type: only STAC items (type 'Feature') are validated, not {kind!r}")
            continue
        result = validate_stac(document, schema_dir)
        statuses.add(result.status)
        if result.status == "valid":
            click.secho(f"✓ {path}: valid", fg="green")
            continue
        colour = "red" if result.status == "invalid" else "yellow"
        click.secho(f"{'✗' if colour == 'red' else '?'} {path}: {result.status}", fg=colour)
        for issue in result.issues:
            click.echo(f"    {issue.path}: {issue.message} ({issue.schema_uri})")
        for uri in result.unavailable:
            click.echo(f"    schema not available offline: {uri}")
    if "invalid" in statuses:
        sys.exit(EXIT_INVALID)
    sys.exit(EXIT_INCOMPLETE if "incomplete" in statuses else EXIT_VALID)


def _cql2(value: str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        text = Path(value[1:]).read_text() if value.startswith("@") else value
    except OSError as err:
        raise ParameterError(f"--filter {value}: cannot read the file ({err.strerror})") from err
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as err:
        raise ParameterError(f"--filter: not CQL2-JSON ({err})") from err
    if not isinstance(parsed, dict):
        raise ParameterError("--filter: expected a CQL2-JSON object")
    return parsed


_PARTIAL_DATE = re.compile(r"\d{4}(-\d{2})?")


def _datetime(value: str | None) -> str | None:
    """``--datetime`` checked: an RFC 3339 instant, a date (or year, year-month), or an interval
    of two with ``..`` or nothing for an open end.

    Raises:
        ParameterError: naming the part that is not a date or time.
    """
    if value is None:
        return None
    parts = value.split("/")
    if len(parts) > 2 or all(p in ("", "..") for p in parts):
        raise ParameterError(f"--datetime {value!r}: expected RFC3339 or RFC3339/RFC3339 ('..' open)")
    for part in parts:
        if part in ("", "..") or _PARTIAL_DATE.fullmatch(part):
            continue
        try:
            datetime.fromisoformat(part)
        except ValueError:
            raise ParameterError(
                f"--datetime {value!r}: {part!r} is not an RFC 3339 date or time "
                "(e.g. 2024-05-01, 2024-05-01T10:00:00Z, 2024-01-01/..)"
            ) from None
    return value


@catalog.command()
@click.option("--bbox", metavar="W,S,E,N", help="Items intersecting this box (WGS 84).")
@click.option("--datetime", "datetime_", metavar="RFC3339[/RFC3339]", help="Instant or interval ('..' open).")
@click.option("--task", "tasks", multiple=True, help="An mlm:tasks value (repeatable: any of them).")
@click.option("--framework", help="mlm:framework, any case (pytorch finds PyTorch).")
@click.option("--accelerator", help="mlm:accelerator (amd64, cuda …).")
@click.option("--text", help="Free text in description, title, keywords ('a OR b', '\"a phrase\"').")
@click.option("--filter", "filter_", metavar="CQL2-JSON", help="A CQL2-JSON filter, or @FILE holding one.")
@click.option("--collection", "collections", multiple=True, help="Only this collection (repeatable).")
@click.option("--max-items", default=100, show_default=True, help="Stop after this many items.")
@click.option("--api-url", help="STAC API root (default: $GEOMLOPS_STAC_API_URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON, one per line.")
@fail_cleanly
def search(
    bbox: str | None,
    datetime_: str | None,
    tasks: tuple[str, ...],
    framework: str | None,
    accelerator: str | None,
    text: str | None,
    filter_: str | None,
    collections: tuple[str, ...],
    max_items: int,
    api_url: str | None,
    as_json: bool,
) -> None:
    """Search the STAC API for models: prints each item's id, title and tasks.

    Filters combine with AND; --task, --framework and --accelerator become a CQL2 filter
    on the MLM fields, added to --filter.
    """
    from catalog_sync.api import all_of, mlm_filter, parse_bbox
    from catalog_sync.api import search as search_api

    when, box = _datetime(datetime_), parse_bbox(bbox, "--bbox")
    url = api_url or get_settings().stac_api_url
    if not url:
        raise ParameterError("no STAC API: set GEOMLOPS_STAC_API_URL or pass --api-url")
    items = search_api(
        url,
        bbox=box,
        datetime=when,
        q=text,
        filter=all_of(
            [_cql2(filter_), mlm_filter(tasks=tasks, framework=framework, accelerator=accelerator)]
        ),
        collections=collections or None,
        max_items=max_items,
    )
    for item in items:
        if as_json:
            click.echo(json.dumps(item))
            continue
        props = item.get("properties", {})
        title = props.get("title") or props.get("mlm:name") or "-"
        click.echo(f"{item['id']}\t{title}\t{', '.join(props.get('mlm:tasks') or []) or '-'}")
    more = " (--max-items reached: there may be more)" if len(items) == max_items else ""
    click.echo(f"{len(items)} item{'s' if len(items) != 1 else ''}{more}", err=True)


@catalog.command()
@click.option("--dsn", help="PostgreSQL DSN of the catalogue (default: $GEOMLOPS_PGSTAC_DSN).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8081, show_default=True, help="Port to listen on.")
@fail_cleanly
def serve(dsn: str | None, host: str, port: int) -> None:
    """Serve the PgSTAC catalogue with stac-fastapi-pgstac, in the foreground (Ctrl-C stops).

    The database is migrated first (pypgstac migrate: PgSTAC and PostGIS must be
    installable) and the standard collections are created if missing.
    """
    from catalog_sync.api import serve as serve_api
    from catalog_sync.pgstac import PgStacStore, migrate

    dsn = dsn or get_settings().pgstac_dsn
    if not dsn:
        raise ParameterError("no database: set GEOMLOPS_PGSTAC_DSN or pass --dsn")
    version = migrate(dsn)
    with PgStacStore(dsn) as store:
        store.ensure_collections()
        location = store.location
    click.echo(f"PgSTAC {version} at {location}: serving on http://{host}:{port}", err=True)
    serve_api(dsn, host=host, port=port)


@catalog.command()
@click.option("--dry-run", is_flag=True, help="Report what would change without writing.")
@fail_cleanly
def sync(dry_run: bool) -> None:
    """Bring the catalogue's model-version items in line with the MLflow registry.

    Creates the items of versions that have none, rewrites those whose aliases or tags moved,
    and reports versions and items that exist on one side only. A second run has nothing to do.
    """
    from catalog_sync import open_store
    from steps.registry_sync import sync_registry

    settings = use_tracking()
    report = sync_registry(open_store(settings.catalog_href), dry_run=dry_run)
    for line in report.lines():
        click.echo(line)
