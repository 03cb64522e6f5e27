"""``geomlops promote``: who is in production, the audit trail, and rollback.

Promoting itself is the ``promotion`` workflow (``geomlops run promotion …``): a version
reaches production only through its approval gate.
"""

from __future__ import annotations

import json

import click

from geomlops.cli._tools import fail_cleanly
from geomlops.settings import get_settings, use_tracking


@click.group()
def promote() -> None:
    """Production versions: status and audit trail, rollback.

    \b
    Promote a version through the promotion workflow and its approval gate:
      geomlops run promotion -p model=MODEL -p candidate=VERSION
      geomlops run --resume RUN_ID --approve NAME --reason WHY [--override]
    """


@promote.command()
@click.argument("model")
@click.option("--approver", required=True, help="Who decides: a name or an email address.")
@click.option("--reason", required=True, help="Why production goes back (recorded for audit).")
@fail_cleanly
def rollback(model: str, approver: str, reason: str) -> None:
    """Return MODEL's 'production' alias to its 'previous' version.

    Recorded like a promotion: who, why and when go to the MLflow tags of both versions,
    the model's audit trail and the versions' STAC items; if recording fails, nothing moves.
    """
    from steps.promotion import rollback as roll_back

    use_tracking()
    decision = roll_back(model, approver=approver, reason=reason, catalog=get_settings().catalog_href)
    click.echo(f"{decision.summary} (by {decision.approver}: {decision.reason})")


@promote.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the status and audit trail as JSON.")
@fail_cleanly
def status(model: str, as_json: bool) -> None:
    """Show MODEL's production and previous versions and every recorded decision."""
    from geomlops.errors import ModelNotFoundError
    from steps.promotion import promotion_status

    store = get_settings().sqlite_store
    if store is not None and not store.exists():  # read only: MLflow would make the store here
        raise ModelNotFoundError(f"no registered model '{model}' in MLflow (no MLflow store at {store} yet)")
    use_tracking()
    state = promotion_status(model)
    if as_json:
        click.echo(json.dumps(state.model_dump(), indent=2))
        return
    click.echo(f"{model}: production {_v(state.production)}, previous {_v(state.previous)}")
    if not state.audit:
        click.echo("  no decision recorded")
    for d in state.audit:
        flag = " OVERRIDE" if d.override else ""
        click.echo(f"  {d.recorded_at}  {d.action:8} v{d.version}{flag}  by {d.approver}: {d.reason}")
        click.echo(f"      {d.summary}")
        if d.report:
            click.echo(f"      report: {d.report}")


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"
