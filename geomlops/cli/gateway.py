"""``geomlops gateway``: the authenticated REST API, and its API keys."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from geomlops.cli._tools import fail_cleanly

if TYPE_CHECKING:  # SQLAlchemy is imported only by the commands that need it
    from geomlops.gateway.db import Database

ROLES = ("viewer", "operator", "approver", "admin")


@click.group("gateway")
def gateway() -> None:
    """The REST API over the catalogue, the workflows and their outputs (/api/v1).

    \b
    Start it:      geomlops gateway serve
    Create a key:  geomlops gateway keys create NAME --role operator
    Settings: GEOMLOPS_GATEWAY_* (backend, database URL, CORS origins, OIDC issuer...).
    """


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535), help="HTTP port.")
@click.option("--log-level", default="info", show_default=True, help="uvicorn's log level.")
@fail_cleanly
def serve(host: str, port: int, log_level: str) -> None:
    """Serve the gateway (its database is migrated first); the OpenAPI document is at
    /api/v1/openapi.json."""
    import uvicorn

    from geomlops.gateway.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)


def _database() -> Database:
    from geomlops.gateway.db import Database
    from geomlops.gateway.settings import GatewaySettings
    from geomlops.settings import get_settings

    return Database(GatewaySettings().database(get_settings().home_dir))


@gateway.group("keys")
def keys() -> None:
    """API keys: create (the token is shown once), list, revoke."""


@keys.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the key may do.")
@fail_cleanly
def keys_create(name: str, role: str) -> None:
    """Create a key NAME with ROLE; prints its token once (it is stored hashed)."""
    from geomlops.gateway.auth import GRANTS, Permission, create_key

    created = create_key(_database(), name, role, created_by="cli")
    click.echo(created.token)
    click.echo(
        f"key {created.key_id} ({created.name}, {created.role.value}): keep the token above, "
        "it is not shown again",
        err=True,
    )
    if Permission.DECIDE in GRANTS[created.role]:
        from geomlops.errors import PromotionError
        from steps.promotion import validate_approver

        try:
            validate_approver(created.name)
        except PromotionError as err:
            click.secho(
                f"! this key cannot approve or refuse: a decision records the key's name as the "
                f"approver, and {err} (create the key under the person's name or email address)",
                fg="yellow",
                err=True,
            )


@keys.command("list")
@fail_cleanly
def keys_list() -> None:
    """List keys: id, name, role, created, revoked."""
    from geomlops.gateway.auth import list_keys

    for key in list_keys(_database()):
        revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(f"{key.key_id}\t{key.name}\t{key.role}\t{key.created_at:%Y-%m-%d %H:%M}\t{revoked}")


@keys.command("revoke")
@click.argument("key_id")
@fail_cleanly
def keys_revoke(key_id: str) -> None:
    """Revoke key KEY_ID: it authenticates nothing from now on."""
    from geomlops.gateway.auth import revoke_key

    key = revoke_key(_database(), key_id)
    click.echo(f"revoked key {key.key_id} ({key.name})")


from geomlops.cli.gateway_ci import add_ci_commands  # noqa: E402 - CI/CD subcommands, in their own module

add_ci_commands(gateway)
