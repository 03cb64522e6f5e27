"""Real loading code: OpenAerialMap imagery tiles and OpenStreetMap building footprints.

- Imagery: an OpenAerialMap image's XYZ tiles (``{z}/{x}/{y}`` template, its ``tms`` link), found
  for a bounding box through the OAM catalogue API (``/meta?bbox=…``) or given directly; any
  template URL urllib opens works, ``file://`` included (a local tile folder).
- Footprints: OpenStreetMap ways and multipolygon relations tagged ``building`` from the
  Overpass API (``out geom``), or a local GeoJSON file or folder.

A network failure is a :class:`FetchError` naming the URL, the reason and the way around it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shapely.geometry import LineString, MultiPolygon, Polygon, mapping, shape
from shapely.ops import polygonize, unary_union

OAM_API = "https://api.openaerialmap.org"
OVERPASS_API = "https://overpass-api.de/api/interpreter"
USER_AGENT = "building-footprints-model-package/0.1 (geomlops example)"
TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A download failed: the message names the URL, the reason and what to do."""


class TileMissing(FetchError):
    """The server has no such tile (HTTP 404, or a local file that is not there)."""


def fetch(url: str, data: bytes | None = None, *, timeout: float = TIMEOUT_S) -> bytes:
    """The body of ``url`` (POST when ``data`` is given).

    Raises:
        TileMissing: HTTP 404, or a ``file://`` path that does not exist.
        FetchError: anything else (no network, refused, timed out, another HTTP status).
    """
    request = urllib.request.Request(url, data=data, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            body: bytes = answer.read()
            return body
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise TileMissing(f"{url}: not found (HTTP 404)") from err
        raise FetchError(f"cannot download {url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, FileNotFoundError):
            raise TileMissing(f"{url}: no such file") from err
        raise FetchError(
            f"cannot download {url}: {err.reason}. Check the network connection (or a proxy), "
            "or give local sources instead (--tiles file:///… or --imagery DIR, --footprints FILE)"
        ) from err
    except TimeoutError as err:
        raise FetchError(f"cannot download {url}: no answer within {timeout:g} s") from err


# --- OpenAerialMap ------------------------------------------------------------------------


@dataclass(frozen=True)
class OamImage:
    """An OpenAerialMap image: its id, title, tile template and licence/provider for the record."""

    id: str
    title: str
    tiles: str
    provider: str = ""
    acquired: str = ""
    gsd: float | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "tiles": self.tiles,
            "provider": self.provider,
            "acquired": self.acquired,
            "gsd": self.gsd,
        }


def _oam_image(entry: dict[str, Any]) -> OamImage | None:
    properties = entry.get("properties") or {}
    tms = properties.get("tms")
    if not tms:
        return None
    return OamImage(
        id=str(entry.get("_id") or entry.get("uuid") or ""),
        title=str(entry.get("title") or ""),
        tiles=str(tms),
        provider=str(entry.get("provider") or ""),
        acquired=str(entry.get("acquisition_end") or ""),
        gsd=entry.get("gsd"),
    )


def search_oam(bbox: tuple[float, float, float, float], *, api: str = OAM_API) -> OamImage:
    """The most recently acquired OpenAerialMap image with tiles that intersects ``bbox``.

    Raises:
        FetchError: the API cannot be reached, answers something else than its JSON, or has no
            image with tiles there.
    """
    query = urllib.parse.urlencode(
        {
            "bbox": ",".join(f"{v:.7f}" for v in bbox),
            "order_by": "acquisition_end",
            "sort": "desc",
            "limit": 20,
        }
    )
    url = f"{api.rstrip('/')}/meta?{query}"
    try:
        answer = json.loads(fetch(url))
    except json.JSONDecodeError as err:
        raise FetchError(f"{url}: the OpenAerialMap API answered something that is not JSON") from err
    for entry in answer.get("results") or []:
        image = _oam_image(entry)
        if image is not None:
            return image
    raise FetchError(f"OpenAerialMap has no image with tiles in bbox {bbox} ({url})")


def oam_image(image_id: str, *, api: str = OAM_API) -> OamImage:
    """The OpenAerialMap image with this id (``/meta/<id>``)."""
    url = f"{api.rstrip('/')}/meta/{urllib.parse.quote(image_id)}"
    try:
        answer = json.loads(fetch(url))
    except json.JSONDecodeError as err:
        raise FetchError(f"{url}: the OpenAerialMap API answered something that is not JSON") from err
    image = _oam_image(answer.get("results") or {})
    if image is None:
        raise FetchError(f"OpenAerialMap image {image_id!r} has no tiles ({url})")
    return image


def tile_url(template: str, x: int, y: int, zoom: int) -> str:
    """Fill an XYZ template (``{z}``, ``{x}``, ``{y}``; ``{-y}`` for TMS row order)."""
    return (
        template.replace("{z}", str(zoom))
        .replace("{x}", str(x))
        .replace("{-y}", str(2**zoom - 1 - y))
        .replace("{y}", str(y))
    )


# --- OpenStreetMap ------------------------------------------------------------------------


def overpass_query(bbox: tuple[float, float, float, float]) -> str:
    """Overpass QL for building ways and multipolygon relations in ``bbox``, with geometry."""
    west, south, east, north = bbox
    box = f"{south},{west},{north},{east}"
    return (
        f'[out:json][timeout:{TIMEOUT_S}];(way["building"]({box});'
        f'relation["building"]["type"="multipolygon"]({box}););out geom;'
    )


def _ring(points: Iterable[dict[str, float]]) -> list[tuple[float, float]]:
    return [(p["lon"], p["lat"]) for p in points]


def overpass_features(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """GeoJSON features of the building polygons in an Overpass ``out geom`` answer."""
    for element in answer.get("elements") or []:
        tags = element.get("tags") or {}
        if "building" not in tags:
            continue
        geometry: Polygon | MultiPolygon | None = None
        if element.get("type") == "way":
            ring = _ring(element.get("geometry") or [])
            if len(ring) >= 4 and ring[0] == ring[-1]:
                geometry = Polygon(ring)
        elif element.get("type") == "relation":
            lines = {"outer": [], "inner": []}  # type: dict[str, list[LineString]]
            for member in element.get("members") or []:
                points = _ring(member.get("geometry") or [])
                if member.get("role") in lines and len(points) >= 2:
                    lines[member["role"]].append(LineString(points))
            outer = unary_union(list(polygonize(lines["outer"])))
            inner = unary_union(list(polygonize(lines["inner"])))
            if not outer.is_empty:
                geometry = outer.difference(inner) if not inner.is_empty else outer
        if geometry is None or geometry.is_empty:
            continue
        if not geometry.is_valid:
            geometry = geometry.buffer(0)
        yield {
            "type": "Feature",
            "properties": {
                "osm_id": element.get("id"),
                "osm_type": element.get("type"),
                "building": tags.get("building"),
            },
            "geometry": mapping(geometry),
        }


def fetch_osm_buildings(
    bbox: tuple[float, float, float, float], *, api: str = OVERPASS_API
) -> list[dict[str, Any]]:
    """Building footprints in ``bbox`` from the Overpass API, as GeoJSON features (EPSG:4326)."""
    body = urllib.parse.urlencode({"data": overpass_query(bbox)}).encode()
    try:
        answer = json.loads(fetch(api, data=body, timeout=TIMEOUT_S + 30))
    except json.JSONDecodeError as err:
        raise FetchError(f"{api}: the Overpass API answered something that is not JSON") from err
    except TileMissing as err:
        raise FetchError(f"{api}: not an Overpass API endpoint (HTTP 404)") from err
    return list(overpass_features(answer))


def read_footprints(source: Path) -> list[dict[str, Any]]:
    """Building features from a GeoJSON file, or every ``*.geojson`` in a folder (EPSG:4326)."""
    files = sorted(source.glob("*.geojson")) if source.is_dir() else [source]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"footprints: {source} is neither a GeoJSON file nor a folder of *.geojson")
    features: list[dict[str, Any]] = []
    for path in files:
        try:
            collection = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"footprints: {path} is not GeoJSON ({err})") from err
        for feature in collection.get("features") or []:
            geometry = feature.get("geometry")
            if geometry and geometry.get("type") in ("Polygon", "MultiPolygon"):
                shape(geometry)  # fails early, naming nothing worse than shapely's message
                features.append(feature)
    return features
