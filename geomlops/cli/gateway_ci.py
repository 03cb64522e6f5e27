"""``geomlops gateway ci-workflow`` and ``geomlops gateway events``: what CI/CD needs to retrain.

``ci-workflow`` prints the GitHub Actions workflow a model repository copies (it checks the
package, then calls the gateway's signed webhook); ``events`` prints, for a cluster, the Argo
Events EventSource and Sensor (with the Sensor's ServiceAccount and Role) that submit the retrain
WorkflowTemplate on a push, from the webhook's repository mapping.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import yaml

from geomlops.cli._tools import fail_cleanly
from geomlops.errors import ParameterError


@click.command("ci-workflow")
@click.option("--branch", default="main", show_default=True, help="Pushes to this branch retrain.")
@click.option(
    "--package-dir", default="", help="The model package's folder in the repository (default: root)."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@fail_cleanly
def ci_workflow(branch: str, package_dir: str, output: Path | None) -> None:
    """Print the GitHub Actions workflow a model repository copies to .github/workflows/.

    It validates the model package, then calls the gateway's webhook (POST
    /api/v1/webhooks/github) signed with the secret GEOMLOPS_WEBHOOK_SECRET; the repository
    also needs the variable GEOMLOPS_GATEWAY_URL.
    """
    from geomlops.gateway.ci_workflow import ci_workflow_yaml

    text = ci_workflow_yaml(branch, package_dir)
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=False)


@click.command("events")
@click.option("-n", "--namespace", required=True, help="Namespace with Argo Workflows and Argo Events.")
@click.option("--url", required=True, help="Public base URL GitHub reaches the EventSource at (an ingress).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The webhook's YAML configuration (its repositories are used; its secret is not).",
)
@click.option(
    "-r",
    "--repository",
    "pairs",
    multiple=True,
    metavar="OWNER/NAME=MODEL",
    help="A repository and the model it holds (repeatable; package at its root, branch main).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to a file.")
@fail_cleanly
def events(
    namespace: str, url: str, config_path: Path | None, pairs: tuple[str, ...], output: Path | None
) -> None:
    """Print the Argo Events manifests that retrain a model on a push to its repository.

    GitHub's webhook secret and an API token that may manage the repositories' hooks are read
    from the Kubernetes secret geomlops-github (keys webhook-secret and api-token).
    """
    from geomlops.gateway.events import render_event_manifests
    from geomlops.gateway.webhooks import WebhookRepository, load_webhook_config

    repositories = dict(load_webhook_config(config_path).repositories) if config_path else {}
    for pair in pairs:
        name, sep, model = pair.partition("=")
        if not sep or not name or not model:
            raise ParameterError(f"--repository {pair!r}: expected OWNER/NAME=MODEL")
        repositories[name] = WebhookRepository(model=model)
    if not repositories:
        raise ParameterError("no repository: give --config FILE or --repository OWNER/NAME=MODEL")
    try:
        manifests = render_event_manifests(repositories, namespace=namespace, url=url)
    except ValueError as err:
        raise ParameterError(str(err)) from err
    text = yaml.safe_dump_all(manifests, sort_keys=False, width=120)
    if output:
        output.write_text(text)
        click.echo(f"wrote {output} ({len(manifests)} object(s))", err=True)
    else:
        sys.stdout.write(text)


def add_ci_commands(group: click.Group) -> None:
    """Add ``ci-workflow`` and ``events`` to the ``gateway`` command group."""
    group.add_command(ci_workflow)
    group.add_command(events)
