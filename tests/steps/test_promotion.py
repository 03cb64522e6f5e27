"""The promotion policy, the approver format and the report, as pure functions."""

from __future__ import annotations

import math

import pytest

from geomlops.errors import PromotionError
from steps.promotion import validate_approver
from steps.promotion_report import (
    DEFAULT_TOLERANCE,
    POLICY_PROPERTY,
    ComparisonReport,
    Evaluation,
    VersionScores,
    judge,
    promotion_policy,
    to_html,
    to_markdown,
)


@pytest.mark.parametrize(
    "approver",
    [
        "Ada Lovelace",
        "alice",
        "José Núñez-García",
        "Seán O'Brien",
        "Dr. Grace Hopper",
        "ada.l+ops@example.org",
        "李明",
    ],
)
def test_names_and_emails_are_approvers(approver: str) -> None:
    assert validate_approver(f"  {approver} ") == approver


@pytest.mark.parametrize(
    "approver",
    [
        "",
        " ",
        "x",
        "x1",
        "12345",
        "root; rm -rf /",
        "<script>",
        "ada@",
        "@example.org",
        "ada@example",
        "a" * 101,
        "_x",
    ],
)
def test_other_approvers_are_refused_with_the_expected_format(approver: str) -> None:
    with pytest.raises(PromotionError, match=r"approver .*expected a person's name .* or an email address"):
        validate_approver(approver)


def test_policy_parameters_win_over_the_mlm_item_which_wins_over_defaults() -> None:
    declared = {POLICY_PROPERTY: {"primary_metric": "test_f1", "tolerance": 0.05}}
    assert promotion_policy({}, "", "") == (
        "test_iou",
        DEFAULT_TOLERANCE,
        "primary_metric: default; tolerance: default",
    )
    metric, tolerance, source = promotion_policy(declared, "", None)
    assert (metric, tolerance) == ("test_f1", 0.05) and source.count(POLICY_PROPERTY) == 2
    metric, tolerance, source = promotion_policy(declared, "test_miou", "0")
    assert (metric, tolerance) == (
        "test_miou",
        0.0,
    ) and source == "primary_metric: parameter; tolerance: parameter"


@pytest.mark.parametrize("bad", ["-0.1", "abc", "nan", "inf"])
def test_bad_tolerance_parameter_is_named(bad: str) -> None:
    with pytest.raises(PromotionError, match=rf"tolerance parameter: expected a number >= 0, got '{bad}'"):
        promotion_policy({}, "", bad)


def test_bad_tolerance_in_the_mlm_item_is_named() -> None:
    with pytest.raises(PromotionError, match=rf"properties.{POLICY_PROPERTY}.tolerance: expected a number"):
        promotion_policy({POLICY_PROPERTY: {"tolerance": "lots"}}, "", "")
    with pytest.raises(PromotionError, match=rf"properties.{POLICY_PROPERTY}: expected an object"):
        promotion_policy({POLICY_PROPERTY: [1]}, "", "")


def _scores(version: str, iou: float) -> VersionScores:
    metrics = {
        "test_iou": iou,
        "test_iou_cloud": iou,
        "test_iou_clear": 0.9,
        "test_precision_cloud": math.nan,
    }
    return VersionScores(
        version=version, run_id=f"run{version}", metrics=metrics, n_test_pixels=10, confusion_matrix=[[1]]
    )


def _evaluation(candidate: float, production: float | None) -> Evaluation:
    return Evaluation(
        model="m",
        dataset_dir="/data",
        class_names=["clear", "cloud"],
        positive_class="cloud",
        candidate=_scores("2", candidate),
        production=None if production is None else _scores("1", production),
        artifact_uri="file:///a/promotion/v2-vs-v1",
    )


def test_worse_beyond_the_tolerance_is_worse_within_it_is_not() -> None:
    delta, worse, summary = judge(_evaluation(0.80, 0.90), "test_iou", 0.05)
    assert worse and delta == pytest.approx(-0.10) and "WORSE" in summary
    delta, worse, _ = judge(_evaluation(0.87, 0.90), "test_iou", 0.05)
    assert not worse and delta == pytest.approx(-0.03)
    assert judge(_evaluation(0.95, 0.90), "test_iou", 0.0)[1] is False


def test_without_production_the_candidate_is_compared_with_nothing() -> None:
    delta, worse, summary = judge(_evaluation(0.5, None), "test_iou", 0.0)
    assert delta is None and not worse and "compared with nothing" in summary


def test_unknown_primary_metric_is_named() -> None:
    with pytest.raises(PromotionError, match=r"primary_metric 'test_dice' is not a metric .*test_iou"):
        judge(_evaluation(0.5, 0.5), "test_dice", 0.0)


def test_report_shows_both_versions_side_by_side_and_per_class() -> None:
    evaluation = _evaluation(0.80, 0.90)
    delta, worse, summary = judge(evaluation, "test_iou", 0.05)
    report = ComparisonReport(
        evaluation=evaluation,
        primary_metric="test_iou",
        tolerance=0.05,
        policy_source="tolerance: parameter",
        delta=delta,
        worse=worse,
        summary=summary,
        created="2026-01-01T00:00:00Z",
        files={},
    )
    markdown = to_markdown(report)
    assert "| test_iou | 0.8000 | 0.9000 | -0.1000 |" in markdown
    assert "| cloud | 0.8000 | 0.9000 |" in markdown and "| clear | 0.9000 | 0.9000 |" in markdown
    assert "| test_precision_cloud | — | — | — |" in markdown  # undefined, shown as such
    assert "comparison.png" in markdown and "<td>test_iou</td><td>0.8000</td>" in to_html(report)
    assert "scored as its item" not in markdown  # no catalogue was read
    # each version with the item it was scored as
    items = evaluation.model_copy(
        update={
            "candidate": evaluation.candidate.model_copy(update={"item": "/c/m-v2/m-v2.json"}),
            "production": evaluation.production.model_copy(update={"item": "/c/m-v1/m-v1.json"}),
        }
    )
    read = report.model_copy(update={"evaluation": items})
    assert "- candidate v2 scored as its item `/c/m-v2/m-v2.json` says" in to_markdown(read)
    assert "- production v1 scored as its item `/c/m-v1/m-v1.json` says" in to_markdown(read)
    assert "production v1 scored as its item <code>/c/m-v1/m-v1.json</code> says" in to_html(read)
    assert (
        ComparisonReport.model_validate_json(report.model_dump_json()).evaluation.candidate.metrics[
            "test_iou"
        ]
        == 0.8
    )
