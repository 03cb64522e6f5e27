"""Promote a model version to production behind a human approval, roll it back, audit both.

The MLflow alias ``production`` names the version in production; ``previous`` the one it
replaced (registry stages are deprecated in MLflow 3, so only aliases are used). Nothing
moves an alias without an approval record: a valid approver (a name or an email address, see
:func:`validate_approver`), a reason and the time of approval. A candidate worse than
production on the primary metric beyond the tolerance is refused unless the approval
overrides the policy; refusals are recorded too.

Every decision is written, in this order, to: the candidate's version and run tags
(``geomlops.promotion``, JSON) and an audit tag of the registered model
(``geomlops.audit.<UTC time>``); the STAC items of the versions involved (validated,
through the catalogue store); and only then the aliases. If a write fails, the earlier ones
are undone, so a failed promotion leaves the aliases, tags and items as they were.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from catalog_sync import CatalogStore, open_store
from catalog_sync.collections import VERSIONS, version_item_id
from geomlops.errors import ItemNotFoundError, PromotionRefusedError, PromotionRequestError
from geomlops.tracking import raise_if_unreachable
from steps._promotion_writes import AUDIT_TAG_PREFIX, Decision, apply_decision
from steps.promotion_report import PRODUCTION, load_report, production_version, version_run
from steps.publish import DECISION_TAG, REFUSED_TAG, ROLLED_BACK_TAG

PREVIOUS = "previous"
#: the approval gate's ``decision``: the approver approves, or refuses the candidate
APPROVED, REFUSED = "approved", "refused"
#: an approver is a person's name (letters of any script, spaces, . ' -; 2 to 100 characters,
#: starting with a letter) or an email address
_NAME = re.compile(r"[^\W\d_][^\W\d_ .'-]*(?:[ .'-]{1,2}[^\W\d_]+)*\.?")
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
APPROVER_FORMAT = (
    "a person's name (letters, spaces, '.', ''' or '-', 2 to 100 characters, starting with a "
    "letter, e.g. 'Ada Lovelace') or an email address (e.g. 'ada@example.org')"
)


class PromotionStatus(BaseModel):
    """Who is production and previous, and every recorded decision, oldest first."""

    model: str
    production: str | None
    previous: str | None
    audit: list[Decision]


def validate_approver(approver: str) -> str:
    """Return the approver, stripped, if it looks like a name or an email address.

    Raises:
        PromotionRequestError: anything else (the message gives the expected format).
    """
    value = (approver or "").strip()
    if 2 <= len(value) <= 100 and (_NAME.fullmatch(value) or _EMAIL.fullmatch(value)):
        return value
    raise PromotionRequestError(f"approver {approver!r}: expected {APPROVER_FORMAT}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _approval(approver: str, reason: str, approved_at: str) -> tuple[str, str, str]:
    who = validate_approver(approver)
    approved_at = approved_at.strip() or _now()  # Argo's gate may leave it empty: the time of recording
    if not reason.strip():
        raise PromotionRequestError("reason: expected why the approver decides (it is recorded for audit)")
    try:
        datetime.fromisoformat(approved_at.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise PromotionRequestError(
            f"approved_at {approved_at!r}: expected an ISO 8601 time of approval"
        ) from err
    return who, reason.strip(), approved_at.strip()


def _recorded(tag: str | None) -> Decision | None:
    """A decision recorded in a version tag; None without one, or one no longer readable."""
    from pydantic import ValidationError

    try:
        return Decision.model_validate_json(tag) if tag else None
    except ValidationError:
        return None


def _same(done: Decision, action: str, who: str, why: str, when: str, approved_at: str) -> bool:
    """Whether ``done`` is this decision made again: the same action by the same approver for
    the same reason, at the same approval time (or one given by no time: the gate's)."""
    same_time = done.approved_at == when or not approved_at.strip()
    return done.action == action and done.approver == who and done.reason == why and same_time


def _require_item(store: CatalogStore, model: str, version: str, catalog: str) -> dict[str, Any]:
    try:
        return store.get_item(VERSIONS, version_item_id(model, version))
    except ItemNotFoundError as err:
        raise PromotionRequestError(
            f"version {version} of '{model}' has no STAC item ({VERSIONS}/{version_item_id(model, version)} "
            f"in {catalog}); publish it first: nothing was changed"
        ) from err


def promote(
    model: str,
    candidate: str,
    *,
    approver: str,
    reason: str,
    approved_at: str,
    override: bool,
    report_uri: str,
    catalog: str,
    decision: str = APPROVED,
) -> Decision:
    """Make ``candidate`` production after an approval; keep the one before as ``previous``.

    Idempotent: once the candidate is production by this very approval, calling again
    returns the recorded decision. With ``decision`` ``refused`` (a person's refusal at the
    gate) the refusal is recorded, once, and nothing moves.

    Args:
        model: registered model name (and base item id).
        candidate: the version to promote.
        approver, reason, approved_at: the approval record (who, why, when).
        override: the approver overrides a policy refusal (recorded).
        report_uri: the comparison's ``report.json`` (see :mod:`steps.promotion_report`).
        catalog: the catalogue holding the version items.
        decision: the gate's ``decision``: ``approved``, or ``refused`` by the approver.

    Returns:
        The recorded decision.

    Raises:
        PromotionRequestError: bad approval or decision; unknown version or missing STAC item;
            a report for another version or another production version.
        PromotionRefusedError: a worse candidate without override, or the approver's refusal
            (either is recorded).
        PromotionError: a write that failed (undone; retried by the step).
    """
    from mlflow import MlflowClient

    if decision not in (APPROVED, REFUSED):
        raise PromotionRequestError(f"decision {decision!r}: expected {APPROVED!r} or {REFUSED!r}")
    if decision == REFUSED:  # a refusal stands as given: whoever refused, with or without a reason
        who, why = approver.strip() or "(no name given)", reason.strip() or "(no reason given)"
        when = approved_at.strip() or _now()
    else:
        who, why, when = _approval(approver, reason, approved_at)
    version_run(model, candidate)
    client = MlflowClient()
    current = production_version(model)
    tags = client.get_model_version(model, candidate).tags or {}
    recorded = tags.get(DECISION_TAG)
    if current == candidate and recorded and decision != REFUSED:
        done = Decision.model_validate_json(recorded)
        if _same(done, "promote", who, why, when, approved_at):
            return done  # this approval was already carried out (a retried or resumed step)
        raise PromotionRequestError(f"version {candidate} of '{model}' already is the production version")
    store = open_store(catalog)
    _require_item(store, model, candidate, catalog)
    report = load_report(report_uri)
    compared = report.evaluation.production.version if report.evaluation.production else None
    if report.evaluation.model != model or report.evaluation.candidate.version != candidate:
        raise PromotionRequestError(
            f"report {report_uri} compares '{report.evaluation.model}' "
            f"v{report.evaluation.candidate.version}, not '{model}' v{candidate}"
        )
    if compared != current and decision != REFUSED:  # a refusal moves nothing: recorded all the same
        raise PromotionRequestError(
            f"report {report_uri} compared with production v{compared}, but production is now "
            f"{'v' + current if current else 'none'}: run the promotion again"
        )
    html = report_uri.rsplit("/", 1)[0] + "/report.html"
    overridden = bool(override and report.worse)  # an override counts only where the policy refuses
    approval = Decision(
        action="promote",
        model=model,
        version=candidate,
        previous_version=current,
        approver=who,
        approved_at=when,
        reason=why,
        override=overridden,
        report=html,
        summary=report.summary + (" (policy overridden by the approver)" if overridden else ""),
        recorded_at=_now(),
    )
    if decision == REFUSED or (report.worse and not override):
        by_person = decision == REFUSED
        refused = approval.model_copy(update={"action": "refused", "override": False})
        if by_person:
            refused = refused.model_copy(update={"summary": f"refused by the approver. {report.summary}"})
        earlier = _recorded(tags.get(REFUSED_TAG))
        # a resumed or retried step gives the same refusal (of the same comparison), recorded once
        again = (
            earlier is not None
            and _same(earlier, "refused", who, why, when, approved_at)
            and (earlier.report, earlier.previous_version) == (refused.report, refused.previous_version)
        )
        if not again:
            apply_decision(
                model,
                refused,
                {candidate: {REFUSED_TAG: refused.model_dump_json()}},
                {},
                catalog,
            )
        if by_person:
            raise PromotionRefusedError(
                f"refused by {who}: {why}. Nothing moved; the refusal is recorded "
                f"(geomlops promote status {model})"
            )
        raise PromotionRefusedError(
            f"refused: {report.summary}. Nothing moved; the refusal is recorded. To promote it anyway, "
            "the approver must override the policy: run the promotion again with --approve NAME "
            "--reason WHY --override (in Argo: resume with override=true)"
        )
    moves: dict[str, str | None] = {PRODUCTION: candidate}
    if current is not None:
        moves = {PREVIOUS: current, PRODUCTION: candidate}
    apply_decision(model, approval, {candidate: {DECISION_TAG: approval.model_dump_json()}}, moves, catalog)
    return approval


def rollback(model: str, *, approver: str, reason: str, catalog: str, approved_at: str = "") -> Decision:
    """Return ``production`` to the ``previous`` version, recorded like a promotion.

    The demoted version gets a ``geomlops.rolled_back`` record; ``previous`` then names the
    version that was production before the restored one, if it is known, else nothing.

    Raises:
        PromotionRequestError: bad approver or reason, no production or previous version, a
            missing STAC item.
        PromotionError: a write that failed (undone).
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    who, why, when = _approval(approver, reason, approved_at or _now())
    current, back = production_version(model), production_version(model, PREVIOUS)
    if current is None:
        raise PromotionRequestError(f"model '{model}' has no production version: nothing to roll back")
    if back is None:
        raise PromotionRequestError(
            f"model '{model}' has no previous version to roll back to (production is v{current})"
        )
    store = open_store(catalog)
    _require_item(store, model, back, catalog)
    client = MlflowClient()
    earlier = None
    recorded = (client.get_model_version(model, back).tags or {}).get(DECISION_TAG)
    if recorded:
        earlier = Decision.model_validate_json(recorded).previous_version
        try:
            if earlier is not None:
                client.get_model_version(model, earlier)
        except MlflowException as err:
            raise_if_unreachable(err)
            earlier = None
    if earlier in (current, back):
        earlier = None
    decision = Decision(
        action="rollback",
        model=model,
        version=back,
        previous_version=current,
        approver=who,
        approved_at=when,
        reason=why,
        override=False,
        report=None,
        summary=f"production rolled back from v{current} to v{back}",
        recorded_at=_now(),
    )
    tags = {
        back: {DECISION_TAG: decision.model_dump_json()},
        current: {ROLLED_BACK_TAG: decision.model_dump_json()},
    }
    apply_decision(model, decision, tags, {PRODUCTION: back, PREVIOUS: earlier}, catalog)
    return decision


def promotion_status(model: str) -> PromotionStatus:
    """The versions behind ``production`` and ``previous`` and the audit trail.

    Raises:
        PromotionRequestError: no such registered model.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        registered = MlflowClient().get_registered_model(model)
    except MlflowException as err:
        raise_if_unreachable(err)
        raise PromotionRequestError(f"no registered model '{model}' in MLflow") from err
    audit = [
        Decision.model_validate_json(value)
        for key, value in sorted((registered.tags or {}).items())
        if key.startswith(AUDIT_TAG_PREFIX)
    ]
    return PromotionStatus(
        model=model,
        production=production_version(model),
        previous=production_version(model, PREVIOUS),
        audit=audit,
    )


def decision_json(decision: Decision) -> str:
    """A decision as compact JSON (a workflow output)."""
    return json.dumps(decision.model_dump(), sort_keys=True, separators=(",", ":"))
