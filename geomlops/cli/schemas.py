"""``geomlops schemas``: fetch the JSON schemas validation needs, to validate offline later."""

from __future__ import annotations

from pathlib import Path

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ParameterError

#: where Argo publishes the JSON schema of a release's resources
ARGO_SCHEMA_URL = "https://raw.githubusercontent.com/argoproj/{project}/{tag}/api/jsonschema/schema.json"
#: STAC extensions model items commonly declare beside those geomlops writes (MLM, version)
COMMON_EXTENSIONS = (
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v2.0.0/schema.json",
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v2.0.0/schema.json",
)


def default_sources() -> dict[str, str]:
    """URL → path in the schema folder of every schema geomlops validates against: Argo
    Workflows' and Argo Events' (for lint and the gateway's event sources), MLM and version (its
    items), and the STAC extensions model items commonly declare."""
    from catalog_sync.mlm import MLM_SCHEMA, VERSION_SCHEMA
    from geomlops.argo.lint import ARGO_VERSION
    from geomlops.gateway.events import ARGO_EVENTS_VERSION
    from geomlops.schemas import schema_path

    sources = {
        ARGO_SCHEMA_URL.format(project=project, tag=tag): f"{project}/{tag}/schema.json"
        for project, tag in (("argo-workflows", ARGO_VERSION), ("argo-events", ARGO_EVENTS_VERSION))
    }
    for uri in (MLM_SCHEMA, VERSION_SCHEMA, *COMMON_EXTENSIONS):
        sources[uri] = str(schema_path(Path(), uri))
    return sources


@click.group()
def schemas() -> None:
    """JSON schemas for validation with no network: fetch them once, while online."""


@schemas.command("fetch")
@click.argument("urls", nargs=-1)
@click.option(
    "--into",
    "into",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The schema folder (default: $GEOMLOPS_SCHEMA_DIR).",
)
@click.option(
    "--mirror",
    default=None,
    metavar="URL",
    help="Fetch from this base URL, laid out as a schema folder is (a schema folder served over "
    "HTTP), instead of each schema's own URL.",
)
@fail_cleanly
def fetch(urls: tuple[str, ...], into: Path | None, mirror: str | None) -> None:
    """Download the schemas geomlops validates against into a schema folder, stored by URL
    (<folder>/<host>/<path>), so that lint, package checks and item validation need no network
    afterwards (a field deployment: fetch while online, then set GEOMLOPS_SCHEMA_DIR).

    Fetched: Argo Workflows' and Argo Events' schemas (kept as
    argo-workflows/<tag>/schema.json and argo-events/<tag>/schema.json), the STAC MLM
    and version extensions' and those model items commonly declare (classification, eo,
    file, raster), and every schema they refer to ($ref). URLS: more extension schemas
    to fetch (those your items declare in stac_extensions).

    Nothing in the folder changes unless every schema was fetched.
    """
    from urllib.parse import urldefrag

    from pystac.validation.local_validator import get_local_schema_cache

    from geomlops.schemas import fetch_schemas, schema_path
    from geomlops.settings import get_settings

    folder = into or get_settings().schema_dir
    if folder is None:
        raise ParameterError("no schema folder: give --into FOLDER or set GEOMLOPS_SCHEMA_DIR")
    for url in (*urls, *([mirror] if mirror else [])):
        if not url.startswith(("http://", "https://")):
            raise ParameterError(f"{url!r} is not an http(s) URL")
    sources = default_sources()
    for url in urls:  # as a reference names it: without its fragment
        sources.setdefault(urldefrag(url).url, str(schema_path(Path(), url)))
    core = get_local_schema_cache()  # STAC's core schemas come with pystac: not fetched

    def said(uri: str, path: Path) -> None:
        click.echo(f"✓ {uri} → {path}")

    written = fetch_schemas(sources, folder, mirror=mirror, follow=lambda uri: uri not in core, fetched=said)
    click.echo(f"{len(written)} schemas in {folder}")
    if into is not None and get_settings().schema_dir != into:
        click.echo(f"validate with them: export GEOMLOPS_SCHEMA_DIR={into.resolve()}")
