"""What every geomlops command shares."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click

from geomlops.errors import GeomlopsError

F = TypeVar("F", bound=Callable[..., Any])

#: set by ``geomlops --debug``: errors show their traceback too
DEBUG_ENV = "GEOMLOPS_DEBUG"

#: exit status of a command refused for bad input or an unavailable service
EXIT_ERROR = 2


def _unavailable(err: Exception) -> GeomlopsError | None:
    """The clear error for a service that did not answer, deep in a library, else None."""
    from geomlops.objectstore import unavailable

    store = unavailable(err, "running this command")
    if store is not None:
        return store
    if type(err).__name__ == "MlflowException":  # mlflow itself is imported only when needed
        import mlflow

        from geomlops.tracking import unreachable_error

        return unreachable_error(err, mlflow.get_tracking_uri())
    return None


def fail_cleanly(func: F) -> F:
    """Turn geomlops errors, and a service that does not answer, into one clear line and exit
    status 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except GeomlopsError as err:
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            # what the command adds (BaseException.add_note) stays on the one line
            notes = "".join(f" ({note})" for note in getattr(err, "__notes__", ()))
            click.secho(f"error: {err}{notes}", fg="red", err=True)
            sys.exit(EXIT_ERROR)
        except Exception as err:
            clear = _unavailable(err)
            if clear is None:
                raise
            if os.environ.get(DEBUG_ENV):
                traceback.print_exc()
            click.secho(f"error: {clear}", fg="red", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


#: the run id that names the newest run, as Argo's CLI has it (``argo get @latest``)
LATEST = "@latest"


def resolve_run_id(run_id: str) -> str:
    """``run_id``, or for ``@latest`` the id of the newest local run.

    Raises:
        RunError: ``@latest`` with no run in the work folder (the folder is named).
    """
    if run_id != LATEST:
        return run_id
    from geomlops.argo.runner import LocalRunner
    from geomlops.errors import RunError
    from geomlops.settings import get_settings

    runs_dir = get_settings().runs_dir
    runs = LocalRunner(runs_dir, progress=False).list_runs()
    if not runs:
        raise RunError(f"{LATEST}: no run in {runs_dir} (GEOMLOPS_HOME picks another work folder)")
    return runs[0].run_id
