"""Input and output artifacts, stored and loaded as Argo's executor does.

An output artifact is the file or folder at its ``path`` when the task ends. Argo's default
``archive`` is tar+gzip: the path is packed under its base name into ``<name>.tgz``;
``archive: {none: {}}`` stores the file as it is (a folder as a tree of files) under the
path's base name; ``archive: {tar: {compressionLevel: N}}`` sets gzip's level. The object's
key is ``<keyFormat>/<file>``, ``keyFormat`` defaulting to ``{{workflow.name}}/{{pod.name}}``
as in Argo. An input artifact is loaded at its ``path`` before the task starts: a tarball is
unpacked and, as Argo's ``unpack`` does, a single top-level entry is renamed to ``path``
(several entries make ``path`` a folder); anything else is copied as it is.

Two repositories hold them: :class:`LocalRepository`, a folder (``<run>/artifacts``, the
embedded default), and :class:`S3Repository`, a bucket (the services profile's, the one
``geomlops install`` renders for Argo), written with boto3.

A task's artifact reference is what Argo keeps in a node's status: ``name``, ``path``, the
repository's ``key`` (and ``bucket`` for S3) and ``archive`` (``tgz`` or ``none``). It travels
between tasks as JSON in ``{{tasks.T.outputs.artifacts.A}}``.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from .expr import ExpressionError, build_env, evaluate
from .substitute import substitute, to_argo_string

#: Argo's key when the repository names no ``keyFormat``
DEFAULT_KEY_FORMAT = "{{workflow.name}}/{{pod.name}}"
_REFERENCE = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_EXPRESSION = re.compile(
    r"(tasks|steps)(?:\.([A-Za-z0-9_-]+)|\[['\"]([^'\"]+)['\"]\])\.outputs\.artifacts"
    r"(?:\.([A-Za-z0-9_-]+)|\[['\"]([^'\"]+)['\"]\])"
)


class ArtifactError(Exception):
    """An artifact could not be saved or loaded; the message names it and says why."""


class Repository(Protocol):
    """Where artifacts are kept: objects by key, a folder being several keys below one."""

    key_format: str

    def put_file(self, key: str, source: Path) -> None:
        """Store the file ``source`` as ``key``."""

    def get(self, key: str, dest: Path) -> bool:
        """Copy ``key`` (a file, or every object under ``key/``) to ``dest``; False if absent."""

    def describe(self, key: str) -> dict[str, str]:
        """Return where ``key`` is, as a node's status records it (``key``, ``bucket``...)."""


@dataclass
class LocalRepository:
    """Artifacts in a folder on this machine (``<run folder>/artifacts`` by default)."""

    root: Path
    key_format: str = DEFAULT_KEY_FORMAT

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or any(p in ("..", "/") for p in parts):
            raise ArtifactError(f"artifact key {key!r} is not a relative path")
        return self.root.joinpath(*parts)

    def put_file(self, key: str, source: Path) -> None:
        """Store the file ``source`` as ``key``."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)

    def get(self, key: str, dest: Path) -> bool:
        """Copy ``key`` (a file or a folder) to ``dest``; False if absent."""
        source = self._path(key)
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
            return True
        if source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
            return True
        return False

    def describe(self, key: str) -> dict[str, str]:
        """Return ``{"key": key, "repository": <folder>}``."""
        return {"key": key, "repository": str(self.root)}


@dataclass
class S3Repository:
    """Artifacts in an S3 bucket (the services profile's artifact repository).

    Args:
        bucket: the bucket, as ``geomlops install`` renders it for Argo.
        endpoint_url: the S3 API endpoint (MinIO; moto in tests); None for AWS.
        key_format: the repository's ``keyFormat`` (``workflows/{{workflow.name}}/{{pod.name}}``).
    """

    bucket: str
    endpoint_url: str | None = None
    key_format: str = DEFAULT_KEY_FORMAT

    def _client(self) -> Any:
        import boto3  # type: ignore[import-untyped, unused-ignore]

        return boto3.client("s3", endpoint_url=self.endpoint_url)

    def put_file(self, key: str, source: Path) -> None:
        """Upload the file ``source`` as ``key``."""
        try:
            self._client().upload_file(str(source), self.bucket, key)
        except Exception as err:  # botocore's errors share no useful base
            raise ArtifactError(f"cannot upload to s3://{self.bucket}/{key}: {err}") from err

    def get(self, key: str, dest: Path) -> bool:
        """Download ``key``, or every object below ``key/`` into folder ``dest``; False if absent."""
        client = self._client()
        try:
            listing = client.list_objects_v2(Bucket=self.bucket, Prefix=key)
            keys = [o["Key"] for o in listing.get("Contents") or []]
            while listing.get("IsTruncated"):
                listing = client.list_objects_v2(
                    Bucket=self.bucket, Prefix=key, ContinuationToken=listing["NextContinuationToken"]
                )
                keys += [o["Key"] for o in listing.get("Contents") or []]
            if key in keys:
                dest.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(self.bucket, key, str(dest))
                return True
            below = [k for k in keys if k.startswith(key.rstrip("/") + "/")]
            for name in below:
                target = dest.joinpath(*PurePosixPath(name[len(key.rstrip("/")) + 1 :]).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(self.bucket, name, str(target))
            return bool(below)
        except Exception as err:
            raise ArtifactError(f"cannot download s3://{self.bucket}/{key}: {err}") from err

    def describe(self, key: str) -> dict[str, str]:
        """Return ``{"key": key, "bucket": bucket}`` as Argo's ``s3`` artifact location."""
        return {"key": key, "bucket": self.bucket}


#: where an artifact may come from in Argo, besides a task's output (``from``) and ``raw``
_SOURCES = ("s3", "git", "http", "artifactory", "hdfs", "oss", "gcs", "azure", "plugin")


def refused_feature(template: Mapping[str, Any]) -> str | None:
    """Name the artifact feature of ``template`` the local runner does not run, if any.

    Inputs come from another task (``from``/``fromExpression``) or ``raw``; an input read
    from a storage of its own (``s3``, ``http``, ``git``...) is refused, as are output
    archives other than ``none`` and ``tar``.
    """
    for art in (template.get("inputs") or {}).get("artifacts") or []:
        for source in _SOURCES:
            if isinstance(art, Mapping) and source in art:
                return f"input artifacts read from {source}"
    outputs = (template.get("outputs") or {}).get("artifacts") or []
    for art in outputs:
        archive = art.get("archive") if isinstance(art, Mapping) else None
        if isinstance(archive, Mapping) and not set(archive) <= {"none", "tar"}:
            return f"output artifact archive {', '.join(sorted(archive))}"
        for source in _SOURCES[1:]:
            if isinstance(art, Mapping) and source in art:
                return f"output artifacts written to {source}"
    return None


def _archive_kind(archive: Any, where: str) -> tuple[str, int]:
    """Return ("tgz", gzip level) or ("none", 0) for an ``archive`` strategy."""
    if archive in (None, {}):
        return "tgz", 6
    if not isinstance(archive, Mapping) or len(archive) != 1:
        raise ArtifactError(f"{where}: archive must be one of none, tar, got {archive!r}")
    ((kind, options),) = archive.items()
    if kind == "none":
        return "none", 0
    if kind == "tar":
        level = (options or {}).get("compressionLevel", 6)
        if not isinstance(level, int) or not -1 <= level <= 9:
            raise ArtifactError(f"{where}: archive.tar.compressionLevel must be -1..9, got {level!r}")
        return "tgz", 6 if level == -1 else level
    raise ArtifactError(f"{where}: archive {kind!r} is not supported for output artifacts (none or tar)")


def _tgz(source: Path, level: int) -> Path:
    """Pack ``source`` under its base name into a gzip tarball (a temporary file)."""
    handle = tempfile.NamedTemporaryFile(suffix=".tgz", delete=False)  # noqa: SIM115
    with handle, tarfile.open(fileobj=handle, mode="w:gz", compresslevel=level) as tar:
        tar.add(source, arcname=source.name)
    return Path(handle.name)


def save_outputs(
    declared: Sequence[Mapping[str, Any]],
    host_path: Callable[[str], Path],
    repository: Repository,
    scope: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """Store a finished task's output artifacts; return their references by name.

    Args:
        declared: the template's ``outputs.artifacts`` (variables already substituted).
        host_path: where a path of the task's filesystem is on this machine.
        repository: where to store them.
        scope: variables of the ``keyFormat`` (``workflow.name``, ``pod.name``...).

    Raises:
        ArtifactError: a non-optional artifact's path does not exist, or it cannot be stored.
    """
    saved: dict[str, dict[str, str]] = {}
    for art in declared:
        name = str(art["name"])
        where = f"output artifact {name!r}"
        if "path" not in art:
            raise ArtifactError(f"{where}: needs a path")
        path = str(art["path"])
        source = host_path(path)
        if not source.exists():
            if art.get("optional"):
                continue
            raise ArtifactError(f"{where}: {path} does not exist (optional: true allows that)")
        kind, level = _archive_kind(art.get("archive"), where)
        explicit = art["s3"].get("key") if isinstance(art.get("s3"), Mapping) else None
        prefix = substitute(repository.key_format, scope).strip("/")
        if kind == "tgz":
            key = str(explicit or f"{prefix}/{name}.tgz")
            packed = _tgz(source, level)
            try:
                repository.put_file(key, packed)
            finally:
                packed.unlink(missing_ok=True)
        else:
            key = str(explicit or f"{prefix}/{source.name}")
            if source.is_dir():
                for file in sorted(p for p in source.rglob("*") if p.is_file()):
                    repository.put_file(f"{key}/{file.relative_to(source).as_posix()}", file)
            else:
                repository.put_file(key, source)
        saved[name] = {"name": name, "path": path, "archive": kind, **repository.describe(key)}
    return saved


def reference_of(argument: Mapping[str, Any], scope: Mapping[str, str], where: str) -> dict[str, str] | None:
    """Resolve an argument's ``from`` / ``fromExpression`` to an artifact reference.

    ``from`` is ``{{tasks.T.outputs.artifacts.A}}`` (``steps.``, ``inputs.artifacts.A``,
    ``workflow.outputs.artifacts.G`` likewise); ``fromExpression`` may be such a reference
    written as an expression (``tasks.T.outputs.artifacts.A`` or ``tasks['T']...``). Returns
    None when the named task produced no such artifact (an optional one left missing).

    Raises:
        ArtifactError: the reference is not one the local runner resolves.
    """
    if "from" in argument:
        text = str(argument["from"]).strip()
        match = _REFERENCE.fullmatch(text)
        if not match:
            raise ArtifactError(
                f"{where}: from must be one '{{{{...artifacts.NAME}}}}' reference, got {text!r}"
            )
        variable = match.group(1)
    else:
        text = str(argument["fromExpression"]).strip()
        found = _EXPRESSION.fullmatch(text)
        if not found:
            return _evaluated_reference(text, scope, where)
        kind, dotted, quoted, art_dotted, art_quoted = found.groups()
        variable = f"{kind}.{dotted or quoted}.outputs.artifacts.{art_dotted or art_quoted}"
    if variable not in scope:
        return None
    return dict(json.loads(scope[variable]))


def _evaluated_reference(text: str, scope: Mapping[str, str], where: str) -> dict[str, str] | None:
    """Evaluate a ``fromExpression`` (a ternary choosing an artifact...) with :mod:`.expr`."""
    try:
        value = evaluate(text, build_env(scope))
    except ExpressionError as err:
        raise ArtifactError(f"{where}: {err}") from err
    if value is None:
        return None
    try:
        reference = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        reference = None
    if not isinstance(reference, dict) or ("key" not in reference and "raw" not in reference):
        raise ArtifactError(f"{where}: fromExpression {text!r} gives {value!r}, not an artifact")
    return {str(k): str(v) for k, v in reference.items()}


def container_artifacts(template: Mapping[str, Any], scope: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """A DAG or steps template's output artifacts: each names one of its tasks' (``from``,
    ``fromExpression``); one that names nothing is left out if ``optional``.

    Raises:
        ArtifactError: an artifact has no ``from``/``fromExpression``, or names nothing and is
            not optional.
    """
    found: dict[str, dict[str, str]] = {}
    for art in (template.get("outputs") or {}).get("artifacts") or []:
        name = str(art["name"])
        where = f"output artifact {name!r} of template {template.get('name')!r}"
        if "from" not in art and "fromExpression" not in art:
            raise ArtifactError(f"{where}: needs from or fromExpression")
        reference = reference_of(art, scope, where)
        if reference is None:
            if art.get("optional"):
                continue
            raise ArtifactError(f"{where}: {art.get('from') or art.get('fromExpression')} names no artifact")
        found[name] = {**reference, "name": name}
    return found


def call_artifacts(call: Mapping[str, Any], scope: Mapping[str, str], name: str) -> dict[str, dict[str, str]]:
    """Resolve a call's ``arguments.artifacts`` (``from``, ``fromExpression``, ``raw``) to references.

    An artifact whose ``from`` names nothing (an optional output left missing) is not passed.
    """
    passed: dict[str, dict[str, str]] = {}
    for argument in (call.get("arguments") or {}).get("artifacts") or []:
        where = f"{name}: argument artifact {argument.get('name')!r}"
        if "from" in argument or "fromExpression" in argument:
            reference = reference_of(argument, scope, where)
            if reference is not None:
                passed[str(argument["name"])] = reference
        elif isinstance(argument.get("raw"), Mapping):
            passed[str(argument["name"])] = {"raw": to_argo_string(argument["raw"].get("data", ""))}
        else:
            raise ArtifactError(f"{where}: needs from, fromExpression or raw (no other source is read)")
    return passed


def load_input(
    declared: Mapping[str, Any],
    reference: Mapping[str, str] | None,
    repository_for: Callable[[Mapping[str, str]], Repository],
    host_path: Callable[[str], Path],
) -> None:
    """Put one input artifact at its path before the task starts.

    Args:
        declared: the template's input artifact (``name``, ``path``, ``raw``, ``optional``...).
        reference: the artifact passed by the caller (or None).
        repository_for: the repository a reference lives in.
        host_path: where a path of the task's filesystem is on this machine.

    Raises:
        ArtifactError: the artifact is missing and not optional, or cannot be loaded.
    """
    name = str(declared["name"])
    where = f"input artifact {name!r}"
    if "path" not in declared:
        raise ArtifactError(f"{where}: needs a path")
    dest = host_path(str(declared["path"]))
    raw = declared.get("raw")
    if reference is not None and "raw" in reference:
        raw = {"data": reference["raw"]}
    elif reference is None and isinstance(raw, Mapping):
        pass
    else:
        raw = None
    if isinstance(raw, Mapping):
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(str(raw.get("data", "")), encoding="utf-8")
        return
    if reference is None:
        if declared.get("optional"):
            return
        raise ArtifactError(f"{where}: no artifact was passed (and it is not optional)")
    repository = repository_for(reference)
    with tempfile.TemporaryDirectory(prefix="artifact-") as scratch:
        fetched = Path(scratch) / "object"
        if not repository.get(reference["key"], fetched):
            if declared.get("optional"):
                return
            raise ArtifactError(f"{where}: {reference['key']} is not in the artifact repository")
        if fetched.is_file() and declared.get("archive") != {"none": {}} and _is_tarball(fetched):
            _unpack(fetched, dest, where)
        else:
            _move(fetched, dest)


def _is_tarball(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _move(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists():
        dest.unlink()
    shutil.move(str(source), str(dest))


def _unpack(tarball: Path, dest: Path, where: str) -> None:
    """Unpack as Argo does: one top-level entry becomes ``dest``; several, its content."""
    with tempfile.TemporaryDirectory(prefix="unpack-") as scratch, tarfile.open(tarball) as tar:
        try:
            tar.extractall(scratch, filter="data")
        except (tarfile.TarError, OSError) as err:
            raise ArtifactError(f"{where}: cannot unpack the tarball: {err}") from err
        entries = list(Path(scratch).iterdir())
        _move(entries[0] if len(entries) == 1 else Path(scratch), dest)
        Path(scratch).mkdir(exist_ok=True)  # the temporary folder itself may have moved


def reference_json(reference: Mapping[str, str]) -> str:
    """The text ``{{tasks.T.outputs.artifacts.A}}`` stands for."""
    return json.dumps(dict(reference), separators=(",", ":"), sort_keys=True)
