"""A promotion decision and its writes, in order, each undone if a later one fails.

Tags (the version's, its run's, the registered model's audit tag), then the catalogue items
(validated before any is written), then the aliases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from catalog_sync import CatalogStore, open_store
from catalog_sync.collections import VERSIONS, version_item_id
from geomlops.errors import GeomlopsError, ItemNotFoundError, PromotionError
from steps.promotion_report import production_version
from steps.publish import expected_version_item


class Decision(BaseModel):
    """One recorded decision: a promotion, a refusal or a rollback."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    action: Literal["promote", "refused", "rollback"]
    model: str
    version: str
    """The version that became production (for a refusal: the candidate refused)."""
    previous_version: str | None
    """The production version before the decision."""
    approver: str
    approved_at: str
    reason: str
    override: bool
    report: str | None
    summary: str
    recorded_at: str


#: registered-model tags holding the audit trail, one decision each: ``geomlops.audit.<UTC time>``
AUDIT_TAG_PREFIX = "geomlops.audit."


class _Changes:
    """Writes done so far, each with its undo, undone in reverse order on failure."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def do(self, action: Callable[[], None], undo: Callable[[], None]) -> None:
        action()
        self._undo.append(undo)

    def undo_all(self) -> None:
        for undo in reversed(self._undo):
            try:
                undo()
            except Exception:  # noqa: BLE001 - undo what can be undone, keep the first error
                continue


def _tag_ops(client: Any, model: str, version: str, key: str, value: str) -> tuple[Callable[[], None], ...]:
    """(set, restore) for a tag of a version and the same tag of the version's run."""
    mv = client.get_model_version(model, version)
    run_id = str(mv.run_id)
    old_version_tag = (mv.tags or {}).get(key)
    old_run_tag = client.get_run(run_id).data.tags.get(key)

    def put() -> None:
        client.set_model_version_tag(model, version, key, value)
        client.set_tag(run_id, key, value)

    def restore() -> None:
        if old_version_tag is None:
            client.delete_model_version_tag(model, version, key)
        else:
            client.set_model_version_tag(model, version, key, old_version_tag)
        if old_run_tag is None:
            client.delete_tag(run_id, key)
        else:
            client.set_tag(run_id, key, old_run_tag)

    return put, restore


def _record(
    client: Any, changes: _Changes, decision: Decision, tags: Mapping[str, Mapping[str, str]]
) -> None:
    """Write version/run tags (``{version: {key: value}}``) and the audit tag of the model."""
    for version, pairs in tags.items():
        for key, value in pairs.items():
            put, restore = _tag_ops(client, decision.model, version, key, value)
            changes.do(put, restore)
    key = AUDIT_TAG_PREFIX + decision.recorded_at.replace(":", "").replace("-", "")
    changes.do(
        lambda: client.set_registered_model_tag(decision.model, key, decision.model_dump_json()),
        lambda: client.delete_registered_model_tag(decision.model, key),
    )


def _publish(
    store: CatalogStore, changes: _Changes, model: str, aliases: Mapping[str, list[str]], schema_dir: Any
) -> None:
    """Rewrite the items of ``aliases``' versions with their aliases-to-be; validate all first."""
    from catalog_sync._item_checks import item_problems
    from geomlops.errors import InvalidItemError

    new, old = [], []
    for version, names in aliases.items():
        try:
            old.append(store.get_item(VERSIONS, version_item_id(model, version)))
        except ItemNotFoundError:
            continue  # a version without an item (published before items existed) stays so
        item = expected_version_item(store, model, version)
        item["properties"]["mlflow:aliases"] = sorted(names)
        problems = item_problems(item, schema_dir)
        if problems:
            raise InvalidItemError(f"item '{item['id']}' refused: " + "; ".join(problems))
        new.append(item)
    for item, before in zip(new, old, strict=True):

        def put(i: dict[str, Any] = item) -> None:
            store.put_item(VERSIONS, i)

        def restore(b: dict[str, Any] = before) -> None:
            store.put_item(VERSIONS, b)

        changes.do(put, restore)


def _aliases_after(client: Any, model: str, moves: Mapping[str, str | None]) -> dict[str, list[str]]:
    """Each affected version's aliases once ``moves`` (alias -> version or None) are applied."""
    current: dict[str, set[str]] = {}
    for alias in moves:
        version = production_version(model, alias)
        if version is not None:
            current.setdefault(version, set(client.get_model_version(model, version).aliases or []))
    for version in {v for v in moves.values() if v is not None}:
        current.setdefault(version, set(client.get_model_version(model, version).aliases or []))
    for alias, target in moves.items():
        for names in current.values():
            names.discard(alias)
        if target is not None:
            current[target].add(alias)
    return {v: sorted(n) for v, n in current.items()}


def _move(client: Any, changes: _Changes, model: str, moves: Mapping[str, str | None]) -> None:
    for alias, target in moves.items():
        before = production_version(model, alias)

        def put(a: str = alias, t: str | None = target) -> None:
            if t is None:
                client.delete_registered_model_alias(model, a)
            else:
                client.set_registered_model_alias(model, a, t)

        def restore(a: str = alias, b: str | None = before) -> None:
            if b is None:
                client.delete_registered_model_alias(model, a)
            else:
                client.set_registered_model_alias(model, a, b)

        changes.do(put, restore)


def apply_decision(
    model: str,
    decision: Decision,
    tags: Mapping[str, Mapping[str, str]],
    moves: Mapping[str, str | None],
    catalog: str,
) -> None:
    """Tags, then items, then aliases; undo everything written if one of them fails."""
    from mlflow import MlflowClient

    from geomlops.settings import get_settings

    client = MlflowClient()
    store = open_store(catalog)
    changes = _Changes()
    try:
        aliases = _aliases_after(client, model, moves)
        for version in tags:  # a version whose tags change gets its item rewritten too
            aliases.setdefault(version, sorted(client.get_model_version(model, version).aliases or []))
        _record(client, changes, decision, tags)
        _publish(store, changes, model, aliases, get_settings().schema_dir)
        _move(client, changes, model, moves)
    except Exception as err:
        changes.undo_all()
        if isinstance(err, GeomlopsError):
            raise PromotionError(
                f"{decision.action} of '{model}' not recorded, nothing moved: {err}"
            ) from err
        raise PromotionError(f"{decision.action} of '{model}' failed, nothing moved: {err!r}") from err
