"""The detached process of a local run: starts, approves or refuses it with the local runner.

The gateway starts ``python -m geomlops.gateway.backends._local_worker ...`` in its own session,
so the run outlives the gateway; the runner keeps the run's state in its folder as ``geomlops
run`` does, with the same runner options, the same approver check and the same approval path
(:class:`~geomlops.argo.runner.Approval` handed to ``resume``), so an approval given through the
gateway reaches the gate's outputs, the MLflow tags and the STAC item exactly as the CLI's does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from geomlops.argo.runner import Approval, LocalRunner
from geomlops.errors import GeomlopsError
from geomlops.settings import get_settings


def _runner(approval: Approval | None = None, refusal: str | None = None) -> LocalRunner:
    from pipelines import template_resolver
    from steps.promotion import validate_approver

    answers = iter([refusal or "no"])
    return LocalRunner(
        get_settings().runs_dir,
        approval=approval,
        interactive=refusal is not None,  # a refusal is the gate's "no" at the prompt
        prompt=lambda _question: next(answers, ""),
        template_resolver=template_resolver,
        approver_check=validate_approver,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one action on a local run; the exit status is 0 when the runner finished it."""
    parser = argparse.ArgumentParser(prog="geomlops-gateway-worker")
    parser.add_argument("action", choices=["start", "approve", "refuse"])
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--pipeline")
    parser.add_argument("--launch", type=Path, help="JSON file: the run's pipeline and parameters")
    parser.add_argument("--approver", default="")
    parser.add_argument("--reason", default="")
    parser.add_argument("--override", action="store_true")
    parser.add_argument("--output", action="append", default=[], help="NAME=VALUE of a supplied output")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            from pipelines import render

            params = json.loads(args.launch.read_text(encoding="utf-8"))["parameters"]
            summary = _runner().run(render(args.pipeline), params, run_id=args.run_id)
        elif args.action == "approve":
            outputs = dict(pair.split("=", 1) for pair in args.output)
            approval = Approval(args.approver, args.reason, args.override, outputs)
            summary = _runner(approval=approval).resume(args.run_id)
        else:
            summary = _runner(refusal=f"refused by {args.approver}: {args.reason}").resume(args.run_id)
    except GeomlopsError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    print(f"{summary.status}: run {summary.run_id}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover - the gateway runs it as a process
    sys.exit(main())
