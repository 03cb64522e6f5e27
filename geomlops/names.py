"""Names that become folder names, file names or catalogue ids, checked before any work.

A workflow parameter such as ``area`` ends up in a path (``predictions/<model>/v<version>/<area>``) and in
a STAC item id. Both break on the same characters: a path separator or ``..`` escapes the work
folder, shell and URL characters make ids no catalogue or shell handles. One grammar serves
both: a letter or digit first, then letters, digits, ``.``, ``_`` or ``-``; at most 128
characters; no ``..``.
"""

from __future__ import annotations

import re
from pathlib import Path

from geomlops.errors import ParameterError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
GRAMMAR = "a letter or digit, then letters, digits, '.', '_' or '-' (at most 128 characters, no '..')"


def check_name(value: str, field: str) -> str:
    """Return ``value`` if it is safe as a folder name and an id.

    Args:
        value: the name to check.
        field: what it is, for the message (``"parameter 'area'"``).

    Raises:
        ParameterError: naming the field, the value and the grammar.
    """
    if not _SAFE.fullmatch(value) or ".." in value:
        raise ParameterError(f"{field} {value!r}: expected {GRAMMAR}")
    return value


def inside(root: Path, *names: str, field: str) -> Path:
    """``root / name / ...`` after checking each name, guaranteed to lie inside ``root``.

    Raises:
        ParameterError: a name breaks the grammar (see :func:`check_name`).
    """
    path = root.resolve()
    for name in names:
        path = path / check_name(name, field)
    if not path.resolve().is_relative_to(root.resolve()):  # a link inside root pointing out
        raise ParameterError(f"{field} {'/'.join(names)!r}: resolves outside {root}")
    return path


def check_absolute_location(value: str, field: str) -> str:
    """A file given by the user that tasks read: an absolute path (``file://`` ones and GDAL's
    ``/vsi…`` ones included) or a URL (``s3://``, ``https://``...); tasks run in folders of
    their own.

    Raises:
        ParameterError: a relative path, naming the field, the value and what it would be here.
    """
    scheme, found, rest = value.partition("://")
    if found and scheme != "file":
        return value
    path = Path(rest if found else value)
    if path.is_absolute():
        return value
    raise ParameterError(
        f"{field} {value!r}: expected an absolute path or a URL (each task runs in a folder of its "
        f"own, where a relative path does not resolve; here it is {path.expanduser().resolve()})"
    )


def check_output_folder(value: str, field: str) -> Path:
    """An output folder given by the user: absolute (tasks run in folders of their own).

    Raises:
        ParameterError: a relative path, naming the field and the value.
    """
    path = Path(value)
    if not path.is_absolute():
        raise ParameterError(
            f"{field} {value!r}: expected an absolute path (each task runs in a folder of its own, "
            "so a relative path would land there)"
        )
    return path
