"""What every geomlops command shares."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from geomlops.errors import GeomlopsError

F = TypeVar("F", bound=Callable[..., Any])

#: exit status of a command refused for bad input or an unavailable service
EXIT_ERROR = 2


def fail_cleanly(func: F) -> F:
    """Turn geomlops errors into one clear line and exit status 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeomlopsError as err:
            click.secho(f"error: {err}", fg="red", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]
