"""Compare a candidate version with the production version on the same held-out data.

Two steps, as the promotion workflow runs them: :func:`evaluate_versions` scores both
versions on one dataset's test split (nothing is logged to the production version's run) and
keeps their decimated predictions as an artifact of the candidate's run;
:func:`write_comparison_report` applies the policy (primary metric, tolerance) and writes the
report (JSON, Markdown, HTML, a PNG of both predictions over the same area) into the
candidate's run, under ``promotion/v<candidate>-vs-<production>/``.
"""

from __future__ import annotations

import html
import json
import math
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from geomlops.errors import IncomparableVersionsError, PromotionRequestError
from geomlops.tracking import raise_if_unreachable

PRODUCTION = "production"
DEFAULT_PRIMARY_METRIC = "test_iou"
DEFAULT_TOLERANCE = 0.01
#: property of a model's base MLM item: ``{"primary_metric": "test_iou", "tolerance": 0.01}``
POLICY_PROPERTY = "geomlops:promotion_policy"
REPORT_FILES = ("report.json", "report.md", "report.html", "comparison.png")


class VersionScores(BaseModel):
    """One version's scores on the comparison data."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    version: str
    run_id: str
    metrics: dict[str, float]
    n_test_pixels: int
    confusion_matrix: list[list[int]]
    item: str = ""
    """The MLM item the version was scored as (its input scaling, answer and classes): its own
    version item, else the model's base item; empty where no catalogue was read."""


class Evaluation(BaseModel):
    """Both versions scored on one dataset (what ``evaluate_versions`` returns)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    model: str
    dataset_dir: str
    class_names: list[str]
    positive_class: str
    candidate: VersionScores
    production: VersionScores | None
    artifact_uri: str
    """Folder in the candidate's run holding ``predictions.npz`` (and, later, the report)."""
    artifact_path: str = ""
    """That folder relative to the run's artifact root (a new one for every comparison)."""


class ComparisonReport(BaseModel):
    """The comparison a person reads before approving, and the policy's verdict."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_inf_nan="constants")
    evaluation: Evaluation
    primary_metric: str
    tolerance: float
    policy_source: str
    delta: float | None
    """Candidate minus production on the primary metric; ``None`` without a production version."""
    worse: bool
    """True when the candidate is worse than production by more than the tolerance."""
    summary: str
    created: str
    files: dict[str, str]


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def version_run(model: str, version: str) -> str:
    """The MLflow run a registered version came from.

    Raises:
        PromotionRequestError: no such version.
    """
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version(model, version).run_id)
    except MlflowException as err:
        raise_if_unreachable(err)
        raise PromotionRequestError(f"model '{model}' has no version {version!r} in MLflow") from err


def version_dataset(model: str, version: str) -> Any:
    """The dataset (``DatasetRef``) a version was trained on, from its ``geomlops.dataset`` tag.

    Raises:
        PromotionRequestError: unknown version, or a version without a dataset record.
    """
    from mlflow.exceptions import MlflowException

    from steps.dataset import DatasetRef
    from steps.publish import DATASET_TAG

    try:
        tags = _client().get_model_version(model, version).tags or {}
    except MlflowException as err:
        raise_if_unreachable(err)
        raise PromotionRequestError(f"model '{model}' has no version {version!r} in MLflow") from err
    if DATASET_TAG not in tags:
        raise PromotionRequestError(
            f"version {version} of '{model}' has no '{DATASET_TAG}' tag: give dataset_path to compare on"
        )
    return DatasetRef.model_validate_json(tags[DATASET_TAG])


def production_version(model: str, alias: str = PRODUCTION) -> str | None:
    """The version behind ``alias`` (``production`` by default), or None when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(model, alias).version)
    except MlflowException as err:
        raise_if_unreachable(err)
        return None


def folder_name(candidate: str, production: str | None, made: datetime | None = None) -> str:
    """Where in the candidate's run a comparison goes: ``promotion/v2-vs-v1/<UTC time>`` (or
    ``…-vs-none/…``). Each comparison gets a folder of its own, so a report that a decision
    already links to is never overwritten by a later comparison."""
    stamp = (made or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"promotion/v{candidate}-vs-{'v' + production if production else 'none'}/{stamp}"


def evaluate_versions(
    model: str,
    candidate: str,
    dataset_dir: str,
    catalog: str | None = None,
) -> Evaluation:
    """Score the candidate and the current production version on one dataset's test split.

    Both are scored with the evaluation parameters the candidate was evaluated with at training
    (its run's tag), so the comparison reads the labels as training did. Each version's input
    is prepared, its answer read and its classes named as its own MLM item says (what it was
    trained with: a package registered again since may scale its input otherwise).

    Args:
        model: registered model name.
        candidate: the version proposed for production.
        dataset_dir: dataset folder (a layout of :mod:`steps.evaluation`).
        catalog: the catalogue's root href, where each version's item is read
            (:func:`steps.model_spec.fetch_model_spec`: the version's, else the base item);
            None: values as read, class values back, classes as the dataset names them.

    Returns:
        Both versions' scores (``production`` is None when no version has the alias) and
        where their predictions were logged.

    Raises:
        PromotionRequestError: unknown version, or the candidate already is production.
        IncomparableVersionsError: the two versions' items name other classes, or another
            positive class (their scores cannot be compared class by class; nothing is logged).
        ModelNotFoundError, InvalidModelItemError: a version's item (else the model's) cannot
            be read (:func:`steps.model_spec.fetch_model_spec`).
        DatasetNotFoundError, GeomlopsError: as :func:`steps.evaluation.score_segmentation`.
    """
    from steps.evaluation import mlm_classes, recorded_parameters, score_segmentation
    from steps.model_spec import fetch_model_spec

    client = _client()
    candidate_run = version_run(model, candidate)
    current = production_version(model)
    if current == candidate:
        raise PromotionRequestError(f"version {candidate} of '{model}' already is the production version")
    parameters = recorded_parameters(client.get_run(candidate_run))

    specs = {v: fetch_model_spec(model, catalog, v) if catalog else None for v in (candidate, current) if v}
    classes = {v: mlm_classes(spec) if spec is not None else () for v, spec in specs.items()}
    if current:  # before any scoring: the dataset's classes are checked against each version's
        _same_classes(model, {v: ([c.name for c in named], None) for v, named in classes.items()})

    def score(version: str, run_id: str) -> Any:
        return score_segmentation(
            run_id,
            dataset_dir,
            model_classes=classes[version],
            parameters=parameters,
            model_spec=specs[version],
        )

    scored_c = score(candidate, candidate_run)
    scored_p = score(current, version_run(model, current)) if current else None
    if scored_p is not None:  # and as each was scored: the same classes, the same positive one
        reports = {candidate: scored_c.report, str(current): scored_p.report}
        _same_classes(model, {v: (r.class_names, r.positive_class) for v, r in reports.items()})
    artifact_path = folder_name(candidate, current)
    with tempfile.TemporaryDirectory(prefix="geomlops-promotion-") as tmp:
        arrays: dict[str, Any] = {
            "labels": scored_c.labels,
            "test": scored_c.test,
            "candidate": scored_c.predicted,
        }
        if scored_p is not None:
            arrays["production"] = scored_p.predicted
        np.savez_compressed(Path(tmp) / "predictions.npz", **arrays)
        client.log_artifacts(candidate_run, tmp, artifact_path=artifact_path)
    run = client.get_run(candidate_run)

    def scores(version: str, scored: Any) -> VersionScores:
        r = scored.report
        return VersionScores(
            version=version,
            run_id=r.run_id,
            metrics=r.metrics,
            n_test_pixels=r.n_test_pixels,
            confusion_matrix=r.confusion_matrix,
            item=(spec.item_href or "") if (spec := specs.get(version)) is not None else "",
        )

    return Evaluation(
        model=model,
        dataset_dir=scored_c.report.dataset_dir,
        class_names=scored_c.report.class_names,
        positive_class=scored_c.report.positive_class,
        candidate=scores(candidate, scored_c),
        production=scores(str(current), scored_p) if scored_p is not None and current else None,
        artifact_uri=f"{run.info.artifact_uri}/{artifact_path}",
        artifact_path=artifact_path,
    )


def describe_evaluation(evaluation: Evaluation, metric: str = "test_iou") -> str:
    """What was scored, on which data, as which item, with ``metric``: a few lines for a log."""
    lines = [
        f"scored on the test split of {evaluation.dataset_dir} ({evaluation.candidate.n_test_pixels} pixels)"
    ]
    versions = [("candidate", evaluation.candidate), ("production", evaluation.production)]
    for role, v in versions:
        if v is None:
            lines.append("production: none (the candidate is compared with nothing)")
            continue
        value = v.metrics.get(metric)
        lines.append(
            f"{role} v{v.version} (run {v.run_id}): {metric} "
            f"{'—' if value is None or value != value else f'{value:.4f}'}"
            + (f", as its item {v.item} says" if v.item else "")
        )
    return "\n".join(lines)


def _same_classes(model: str, named: Mapping[str, tuple[list[str], str | None]]) -> None:
    """Refuse to compare versions whose items name other classes (each is scored with its own).

    Args:
        model: the registered model.
        named: the candidate's and production's classes and positive class (None: not known
            yet), by version, the candidate first.

    Raises:
        IncomparableVersionsError: naming both versions' classes (and positive classes).
    """
    if len({(tuple(names), positive) for names, positive in named.values()}) < 2:
        return
    (c, (names_c, positive_c)), (p, (names_p, positive_p)) = named.items()

    def said(version: str, names: list[str], positive: str | None) -> str:
        return f"version {version}: {names}" + (f", positive {positive!r}" if positive else "")

    raise IncomparableVersionsError(
        f"versions {c} and {p} of '{model}' name their classes differently "
        f"({said(c, names_c, positive_c)}; {said(p, names_p, positive_p)}), so their scores cannot be "
        "compared class by class; nothing was logged"
    )


def promotion_policy(
    base_properties: Mapping[str, Any], primary_metric: str = "", tolerance: str | float | None = None
) -> tuple[str, float, str]:
    """The primary metric and tolerance: workflow parameters win over the MLM item's
    ``geomlops:promotion_policy``, which wins over the defaults (``test_iou``, 0.01).

    Returns:
        ``(primary_metric, tolerance, source)``; ``source`` says where each came from.

    Raises:
        PromotionRequestError: a tolerance that is not a number >= 0, or a policy that is not an object.
    """
    declared = base_properties.get(POLICY_PROPERTY) or {}
    if not isinstance(declared, Mapping):
        raise PromotionRequestError(f"properties.{POLICY_PROPERTY}: expected an object, got {declared!r}")
    sources = []
    metric = primary_metric.strip() if primary_metric else ""
    if metric:
        sources.append("primary_metric: parameter")
    elif declared.get("primary_metric"):
        metric = str(declared["primary_metric"])
        sources.append(f"primary_metric: {POLICY_PROPERTY}")
    else:
        metric = DEFAULT_PRIMARY_METRIC
        sources.append("primary_metric: default")
    if tolerance not in (None, ""):
        raw, where = tolerance, "tolerance parameter"
        sources.append("tolerance: parameter")
    elif declared.get("tolerance") is not None:
        raw, where = declared["tolerance"], f"properties.{POLICY_PROPERTY}.tolerance"
        sources.append(f"tolerance: {POLICY_PROPERTY}")
    else:
        raw, where = DEFAULT_TOLERANCE, "default"
        sources.append("tolerance: default")
    try:
        value = float(raw)
    except (TypeError, ValueError) as err:
        raise PromotionRequestError(f"{where}: expected a number >= 0, got {raw!r}") from err
    if not math.isfinite(value) or value < 0:
        raise PromotionRequestError(f"{where}: expected a number >= 0, got {raw!r}")
    return metric, value, "; ".join(sources)


def judge(evaluation: Evaluation, primary_metric: str, tolerance: float) -> tuple[float | None, bool, str]:
    """Apply the policy (pure): ``(delta, worse, summary)``; higher is better for the metric.

    Raises:
        PromotionRequestError: the primary metric is not among the candidate's (or production's) metrics.
    """
    for side in (evaluation.candidate, evaluation.production):
        if side is not None and primary_metric not in side.metrics:
            known = ", ".join(sorted(side.metrics))
            raise PromotionRequestError(
                f"primary_metric {primary_metric!r} is not a metric of the evaluation ({known})"
            )
    cand = evaluation.candidate.metrics[primary_metric]
    if evaluation.production is None:
        return (
            None,
            False,
            (
                f"no production version yet: candidate v{evaluation.candidate.version} is compared with "
                f"nothing ({primary_metric} {cand:.4f})"
            ),
        )
    prod = evaluation.production.metrics[primary_metric]
    delta = cand - prod
    worse = not math.isfinite(delta) or delta < -tolerance
    verdict = "WORSE than production beyond the tolerance" if worse else "within the tolerance or better"
    return (
        delta,
        worse,
        (
            f"candidate v{evaluation.candidate.version} {primary_metric} {cand:.4f} vs production "
            f"v{evaluation.production.version} {prod:.4f} (delta {delta:+.4f}, "
            f"tolerance {tolerance:g}): {verdict}"
        ),
    )


def write_comparison_report(
    evaluation: Evaluation, *, primary_metric: str, tolerance: float, policy_source: str
) -> ComparisonReport:
    """Judge the evaluation and log the report files next to its predictions.

    Returns:
        The report; ``files`` maps each file name to its artifact URI.

    Raises:
        PromotionRequestError: the primary metric is unknown.
    """
    import mlflow.artifacts

    delta, worse, summary = judge(evaluation, primary_metric, tolerance)
    folder = evaluation.artifact_uri
    report = ComparisonReport(
        evaluation=evaluation,
        primary_metric=primary_metric,
        tolerance=tolerance,
        policy_source=policy_source,
        delta=delta,
        worse=worse,
        summary=summary,
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files={name: f"{folder}/{name}" for name in REPORT_FILES},
    )
    production = evaluation.production.version if evaluation.production else None
    artifact_path = evaluation.artifact_path or folder_name(evaluation.candidate.version, production)
    with tempfile.TemporaryDirectory(prefix="geomlops-promotion-") as tmp:
        out = Path(tmp)
        npz = mlflow.artifacts.download_artifacts(artifact_uri=f"{folder}/predictions.npz", dst_path=tmp)
        with np.load(npz) as arrays:
            _draw(out / "comparison.png", report, {k: arrays[k] for k in arrays.files})
        Path(npz).unlink()
        (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        (out / "report.md").write_text(to_markdown(report), encoding="utf-8")
        (out / "report.html").write_text(to_html(report), encoding="utf-8")
        _client().log_artifacts(evaluation.candidate.run_id, tmp, artifact_path=artifact_path)
    return report


def load_report(uri: str) -> ComparisonReport:
    """Read a ``report.json`` back from its artifact URI.

    Raises:
        PromotionRequestError: the report cannot be read or is not a comparison report.
    """
    import mlflow.artifacts

    try:
        text = mlflow.artifacts.load_text(uri)
        return ComparisonReport.model_validate_json(text)
    except Exception as err:  # missing file, unreachable store, or not a report
        raise PromotionRequestError(f"report {uri!r}: cannot read a comparison report ({err})") from err


def _rows(report: ComparisonReport) -> list[tuple[str, float, float | None]]:
    ev = report.evaluation
    prod = ev.production.metrics if ev.production else {}
    return [(name, value, prod.get(name)) for name, value in sorted(ev.candidate.metrics.items())]


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4f}"


def to_markdown(report: ComparisonReport) -> str:
    """The report as Markdown (pure): verdict, metrics side by side, per class."""
    ev = report.evaluation
    prod = f"v{ev.production.version}" if ev.production else "none"
    lines = [
        f"# Promotion of {ev.model} v{ev.candidate.version}",
        "",
        report.summary,
        "",
        f"- production version: {prod}",
        f"- primary metric: `{report.primary_metric}`, tolerance {report.tolerance:g} "
        f"({report.policy_source})",
        f"- data: test split of `{ev.dataset_dir}` ({ev.candidate.n_test_pixels} test pixels)",
        *(f"- {role} v{v.version} scored as its item `{v.item}` says" for role, v in _items(ev)),
        "",
        f"| metric | candidate v{ev.candidate.version} | production {prod} | delta |",
        "| --- | --- | --- | --- |",
    ]
    for name, cand, prodv in _rows(report):
        delta = None if prodv is None else cand - prodv
        lines.append(f"| {name} | {_fmt(cand)} | {_fmt(prodv)} | {_fmt(delta)} |")
    kinds = ("iou", "f1", "precision", "recall")
    header = " | ".join(f"{k} candidate | {k} production" for k in kinds)
    lines += ["", "## Per class", "", f"| class | {header} |", "| --- " * (1 + 2 * len(kinds)) + "|"]
    for cls in ev.class_names:
        cells = []
        for kind in kinds:
            key = f"test_{kind}_{cls}"
            prodv = ev.production.metrics.get(key) if ev.production else None
            cells += [_fmt(ev.candidate.metrics.get(key)), _fmt(prodv)]
        lines.append(f"| {cls} | {' | '.join(cells)} |")
    lines += ["", "![both predictions over the same area](comparison.png)", ""]
    return "\n".join(lines)


def _items(ev: Evaluation) -> list[tuple[str, VersionScores]]:
    """The versions scored, each with the item it was read with (where one was)."""
    versions = [("candidate", ev.candidate), ("production", ev.production)]
    return [(role, v) for role, v in versions if v is not None and v.item]


def to_html(report: ComparisonReport) -> str:
    """The report as a standalone HTML page (pure)."""
    ev = report.evaluation
    prod = f"v{ev.production.version}" if ev.production else "none"
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{_fmt(c)}</td><td>{_fmt(p)}</td>"
        f"<td>{_fmt(None if p is None else c - p)}</td></tr>"
        for n, c, p in _rows(report)
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Promotion of {html.escape(ev.model)} "
        f"v{ev.candidate.version}</title></head><body><h1>Promotion of {html.escape(ev.model)} "
        f"v{ev.candidate.version}</h1><p><strong>{html.escape(report.summary)}</strong></p>"
        f"<p>Primary metric <code>{html.escape(report.primary_metric)}</code>, tolerance "
        f"{report.tolerance:g} ({html.escape(report.policy_source)}).</p>"
        + "".join(
            f"<p>{role} v{v.version} scored as its item <code>{html.escape(v.item)}</code> says.</p>"
            for role, v in _items(ev)
        )
        + f"<table border='1'><tr><th>metric</th><th>candidate v{ev.candidate.version}</th>"
        f"<th>production {prod}</th><th>delta</th></tr>{rows}</table>"
        "<img src='comparison.png' alt='both predictions over the same area'></body></html>\n"
    )


def _draw(path: Path, report: ComparisonReport, arrays: Mapping[str, Any]) -> None:
    """Labels, the candidate's and the production version's predictions over the same area."""
    from steps._quicklook import NOT_EVALUATED, pyplot

    plt = pyplot()  # before any other import of matplotlib
    from matplotlib.colors import ListedColormap

    ev = report.evaluation
    n = len(ev.class_names)
    palette = ["#2e7d32", "#f5f5f5", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f"]
    cmap = ListedColormap([*(palette[i % len(palette)] for i in range(n)), "#9e9e9e"])

    def shown(values: Any) -> Any:
        out = np.asarray(values).astype(np.int64)
        out[(out >= n) | (out == NOT_EVALUATED)] = n
        return out

    test = np.asarray(arrays["test"])
    panels = [
        ("labels (test blocks outlined)", arrays["labels"]),
        (f"candidate v{ev.candidate.version}", arrays["candidate"]),
        (
            f"production v{ev.production.version}" if ev.production else "no production version",
            arrays.get("production"),
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 5), dpi=80, constrained_layout=True)
    for ax, (title, values) in zip(axes, panels, strict=True):
        if values is None:
            ax.text(0.5, 0.5, "no production version:\ncompared with nothing", ha="center", va="center")
        else:
            ax.imshow(shown(values), cmap=cmap, vmin=0, vmax=n, interpolation="nearest")
            if test.any() and not test.all():
                ax.contour(test.astype(np.uint8), levels=[0.5], colors="#d50000", linewidths=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.patches import Patch

    legend = [
        Patch(facecolor=cmap(i), edgecolor="#616161", label=name) for i, name in enumerate(ev.class_names)
    ]
    legend.append(Patch(facecolor=cmap(n), edgecolor="#616161", label="ignored / not predicted"))
    axes[1].legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=3, fontsize=8)
    fig.suptitle(report.summary, fontsize=10)
    fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def report_summary(report: ComparisonReport) -> dict[str, Any]:
    """What the workflow passes on: the report's URI, the verdict and the versions compared."""
    ev = report.evaluation
    return {
        "report": report.files["report.json"],
        "html": report.files["report.html"],
        "candidate": ev.candidate.version,
        "production": ev.production.version if ev.production else None,
        "worse": report.worse,
        "summary": report.summary,
    }


def dumps(data: Mapping[str, Any]) -> str:
    """Compact JSON for workflow parameters."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
