"""The GitHub Actions workflow a model repository copies: check the package, then retrain.

On a push to the model's branch, the ``check`` job validates the model package with geomlops'
own validator (MLproject entry points, Dockerfile, MLM item); only when it passes does the
``retrain`` job call the gateway's signed webhook, exactly as a GitHub repository webhook
would: a ``push`` delivery with the repository, the ref and the commit, signed with
``X-Hub-Signature-256`` (HMAC-SHA256 with the shared secret, computed by ``openssl``), and a
delivery id unique to the workflow run's attempt. The gateway then starts the retrain run,
which stops at the approval gate.

The repository needs the variable ``GEOMLOPS_GATEWAY_URL`` and the secret
``GEOMLOPS_WEBHOOK_SECRET`` (the webhook configuration's ``secret``).
"""

from __future__ import annotations

from typing import Any

import yaml

from geomlops import __version__
from geomlops.gateway.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, WEBHOOK_PATH

#: the gateway's API prefix, under which the webhook route is mounted
API_PREFIX = "/api/v1"

#: the retrain job's script: only environment variables, so it runs the same in a test
NOTIFY_SCRIPT = f"""\
set -euo pipefail
body=$(printf '{{"ref":"%s","after":"%s","repository":{{"full_name":"%s","clone_url":"%s/%s.git"}}}}' \\
  "$REF" "$COMMIT" "$REPOSITORY" "$SERVER_URL" "$REPOSITORY")
hmac=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$GEOMLOPS_WEBHOOK_SECRET" -r | cut -d' ' -f1)
signature="sha256=$hmac"
curl --silent --show-error --fail-with-body --max-time 60 \\
  -X POST "${{GEOMLOPS_GATEWAY_URL%/}}{API_PREFIX}{WEBHOOK_PATH}" \\
  -H "Content-Type: application/json" \\
  -H "{EVENT_HEADER}: push" \\
  -H "{DELIVERY_HEADER}: $DELIVERY" \\
  -H "{SIGNATURE_HEADER}: $signature" \\
  --data-binary "$body"
"""

#: what the retrain job's environment is made of (GitHub's expressions)
NOTIFY_ENV = {
    "GEOMLOPS_GATEWAY_URL": "${{ vars.GEOMLOPS_GATEWAY_URL }}",
    "GEOMLOPS_WEBHOOK_SECRET": "${{ secrets.GEOMLOPS_WEBHOOK_SECRET }}",
    "REPOSITORY": "${{ github.repository }}",
    "REF": "${{ github.ref }}",
    "COMMIT": "${{ github.sha }}",
    "SERVER_URL": "${{ github.server_url }}",
    "DELIVERY": "${{ github.repository_id }}-${{ github.run_id }}-${{ github.run_attempt }}",
}

_CHECK = (
    'uv run --no-project --with "geomlops=={version}" python -c '
    '"import sys; from steps.package_check import validate_package; '
    'print(validate_package(sys.argv[1]).model_dump_json(indent=2))" "{package}"'
)


def render_ci_workflow(branch: str = "main", package_dir: str = "") -> dict[str, Any]:
    """The workflow as a mapping (``yaml.safe_dump`` it to ``.github/workflows/geomlops.yml``).

    Args:
        branch: pushes to this branch retrain (the webhook mapping's ``branch``).
        package_dir: the model package's folder in the repository; empty: its root.
    """
    package = package_dir.strip("/") or "."
    return {
        "name": "geomlops retrain",
        "on": {"push": {"branches": [branch]}},
        "permissions": {"contents": "read"},
        "concurrency": {"group": "geomlops-retrain-${{ github.ref }}", "cancel-in-progress": False},
        "jobs": {
            "check": {
                "name": "Check the model package",
                "runs-on": "ubuntu-latest",
                "timeout-minutes": 15,
                "steps": [
                    {"uses": "actions/checkout@v4"},
                    {"uses": "astral-sh/setup-uv@v6"},
                    {
                        "name": "Validate MLproject, Dockerfile and MLM item",
                        "run": _CHECK.format(version=__version__, package=package),
                    },
                ],
            },
            "retrain": {
                "name": "Retrain up to the approval gate",
                "needs": "check",
                "runs-on": "ubuntu-latest",
                "timeout-minutes": 5,
                "steps": [
                    {
                        "name": "Call the geomlops gateway's signed webhook",
                        "env": NOTIFY_ENV,
                        "run": NOTIFY_SCRIPT,
                    }
                ],
            },
        },
    }


def ci_workflow_yaml(branch: str = "main", package_dir: str = "") -> str:
    """The workflow file's text."""
    header = "# Rendered by `geomlops gateway ci-workflow`; copy to .github/workflows/geomlops.yml\n"
    return header + yaml.safe_dump(render_ci_workflow(branch, package_dir), sort_keys=False, width=120)
