"""The training workflow in the services profile, on real servers.

The demo dataset is pushed with DVC to the S3 remote (moto's server) and read back from a
fresh clone of the data repository with no cache; the rendered training WorkflowTemplate runs
under the local runner, exactly as on the embedded defaults: only the settings differ. The
model lands in S3 through the MLflow server on PostgreSQL, its version is registered and its
STAC item, written to PgSTAC and read back through the stack's STAC API, points at the ``s3://``
model. Then the object store, and later the MLflow server,
go away just before ``register``: the task retries per its retryStrategy and fails clearly;
once the service is back, ``geomlops run --resume`` finishes with one model version, no more.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from geomlops.argo.runner.progress import Reporter
from geomlops.cli.demo import DATASET, MODEL, default_package
from geomlops.devstack import stack as devstack  # `stack` is the fixture's name here

pytestmark = [pytest.mark.services, pytest.mark.slow]
Stack = Any  # conftest.py's Stack: a running dev stack and the environment pointing at it
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")


class _StopBefore(Reporter):
    """Progress reporter that runs ``action`` once, just before ``node`` first starts."""

    def __init__(self, node: str, action: Callable[[], object]) -> None:
        super().__init__(True)
        self.node, self.action, self.done = node, action, False

    def started(self, node: str, attempt: int, attempts: int) -> None:
        if node == self.node and not self.done:
            self.done = True
            self.action()
        super().started(node, attempt, attempts)


def _runner() -> Any:
    from geomlops.argo.runner import LocalRunner
    from geomlops.settings import get_settings
    from pipelines import template_resolver
    from steps.local_images import LocalImages

    # the model's image stood in for by its package's environment, as `geomlops run` does (the
    # services profile's tracking server is MLflow's own: no local one is started)
    images = LocalImages(get_settings())
    return LocalRunner(
        get_settings().runs_dir, max_workers=2, template_resolver=template_resolver, image_environment=images
    )


def _training(runner: Any) -> Any:
    from pipelines import render

    return runner.run(render("training"), {"model": MODEL, "dataset_path": DATASET})


@pytest.fixture(scope="module")
def trained(services_stack: Stack) -> dict[str, Any]:
    """Dataset on the S3 remote, read back from a fresh clone; one training run."""
    from geomlops.cli.demo import ensure_data_repo, prepare_dataset
    from geomlops.settings import get_settings
    from steps.catalog import publish_base_item

    stack = services_stack
    settings = get_settings()
    assert settings.profile == "services" and settings.dvc_remote_url.startswith("s3://dvc-data/")
    assert settings.catalog_href == stack.config.pgstac_dsn  # the catalogue is PgSTAC
    origin = Path(settings.data_repo_url)
    ensure_data_repo(origin, settings.dvc_remote_url)
    prepare_dataset(origin, default_package(), settings)  # dvc push to the S3 remote
    clone = stack.home / "data-clone"
    subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
    shutil.rmtree(origin / ".dvc" / "cache")  # the clone can only read the data from S3
    assert not (clone / ".dvc" / "cache").exists()
    stack.env.setenv("GEOMLOPS_DATA_REPO", str(clone))
    # from here on, tasks learn the S3 endpoint the way the manifests pass it on a cluster:
    # MLFLOW_S3_ENDPOINT_URL only (templates/common.py's SECRET_ENV), which DVC must follow too
    stack.env.delenv("AWS_ENDPOINT_URL")
    stack.env.delenv("GEOMLOPS_S3_ENDPOINT_URL")
    publish_base_item(default_package(), settings.catalog_href)
    summary = _training(_runner())
    return {"summary": summary, "clone": clone}


def _model_location(stack: Stack, version: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(stack.config.mlflow_url)
    mv = client.get_model_version(MODEL, version)
    if str(mv.source).startswith("models:/"):
        return str(client.get_logged_model(str(mv.source).removeprefix("models:/")).artifact_location)
    return str(mv.source)


def _keys(stack: Stack, bucket: str, prefix: str) -> list[str]:
    pages = stack.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _versions_of_run(stack: Stack, run_id: str) -> list[str]:
    from mlflow import MlflowClient

    found = MlflowClient(stack.config.mlflow_url).search_model_versions(f"name='{MODEL}'")
    return [str(mv.version) for mv in found if mv.run_id == run_id]


def test_training_on_mlflow_postgres_s3_and_dvc_s3(services_stack: Stack, trained: dict[str, Any]) -> None:
    stack, summary = services_stack, trained["summary"]
    assert summary.status == "Succeeded", summary.message
    run_id, version = summary.outputs["collect-run"]["run_id"], summary.outputs["register"]["version"]

    # the model is in the S3 store, under a real s3:// root
    location = _model_location(stack, version)
    assert location.startswith("s3://mlflow-artifacts/"), location
    prefix = location.removeprefix("s3://mlflow-artifacts/")
    assert f"{prefix}/MLmodel" in _keys(stack, "mlflow-artifacts", prefix)

    # MLflow's records are in PostgreSQL
    assert stack.sql("SELECT status FROM runs WHERE run_uuid = %s", run_id) == [("FINISHED",)]
    query = "SELECT run_id FROM model_versions WHERE name = %s AND version = %s"
    rows = stack.sql(query, MODEL, int(version))
    assert rows == [(run_id,)]

    # the version's item is in PgSTAC, served by the stack's STAC API where the step said
    item_id = f"{MODEL}-v{version}"
    api = stack.config.stac_url
    assert summary.outputs["publish"]["item"] == f"{api}/collections/model-versions/items/{item_id}"
    item = stack.stac_item("model-versions", item_id)
    [base] = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert base == f"{api}/collections/models/items/{MODEL}"
    assert stack.stac_item("models", MODEL)["properties"]["mlm:name"]
    assert not (stack.home / "catalog").exists()  # no static catalogue on the side

    # the dataset came from the DVC remote in S3, through the fresh clone
    dataset = item["properties"]["geomlops:dataset"]
    assert dataset["repo"] == str(trained["clone"])
    md5 = dataset["md5"]
    assert md5.endswith(".dir") and dataset["url"].startswith("s3://dvc-data/geomlops/")
    stack.s3().head_object(Bucket="dvc-data", Key=f"geomlops/files/md5/{md5[:2]}/{md5[2:]}")

    # the version's STAC item points at the s3:// model
    assert item["assets"]["model"]["href"] == location
    assert item["properties"]["mlflow:model_uri"] == f"models:/{MODEL}/{version}"
    assert item["properties"]["mlflow:run_id"] == run_id


def test_dev_up_twice_starts_nothing_twice(services_stack: Stack) -> None:
    before = {s.name: s.pid for s in devstack.status(services_stack.config.dev_dir)}
    out = subprocess.run([GEOMLOPS, "dev", "up"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("already running") == 4  # s3, mlflow, stac, gateway
    assert f"export GEOMLOPS_STAC_API_URL={services_stack.config.stac_url}" in out.stdout
    assert f"export MLFLOW_TRACKING_URI={services_stack.config.mlflow_url}" in out.stdout
    after = devstack.status(services_stack.config.dev_dir)
    assert {s.name: s.pid for s in after} == before and {s.state for s in after} == {"running"}
    changed = subprocess.run([GEOMLOPS, "dev", "up", "--s3-port", "1"], capture_output=True, text=True)
    assert changed.returncode == 2 and "dev down" in changed.stderr


def _fault_then_resume(
    stack: Stack, service: str, trained: dict[str, Any], symptoms: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stop ``service`` just before ``register``; check the failure; restart; resume."""
    runner = _runner()
    runner.reporter = _StopBefore("register", lambda: devstack.down(stack.config.dev_dir, [service]))
    failed = _training(runner)
    assert failed.status == "Failed"
    assert "task 'register'" in failed.message and "after 3 attempts" in failed.message
    for symptom in symptoms:  # the end of the last attempt's log says what went away
        assert symptom in failed.message, failed.message
    if service == "s3":
        assert failed.message.endswith(symptoms[-1]), failed.message
    state_file = failed.run_dir / "state.json"
    before = json.loads(state_file.read_text())
    assert len(before["nodes"]["register"]["attempts"]) == 3  # limit 2: three tries
    assert before["nodes"]["train"]["status"] == "Succeeded"

    devstack.up(stack.config, [service])
    resumed = subprocess.run(
        [GEOMLOPS, "run", "--resume", failed.run_id], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    return before, json.loads(state_file.read_text())


@pytest.mark.parametrize("service", ["s3", "mlflow"])
def test_service_gone_before_register_then_resume(
    services_stack: Stack, trained: dict[str, Any], service: str
) -> None:
    stack = services_stack
    symptoms = {
        # the endpoint comes from a secret (MLFLOW_S3_ENDPOINT_URL): logs show it as ***
        # the last line is one clear sentence, not a botocore traceback's tail
        "s3": [
            "\ngeomlops.errors.ObjectStoreUnavailableError: the object store at *** is unreachable "
            "(Connection refused) while registering run ",
            f" as '{MODEL}'. Check that it runs and that GEOMLOPS_S3_ENDPOINT_URL or MLFLOW_S3_ENDPOINT_URL "
            "names it (the local stack: `geomlops dev status`, `geomlops dev up`); once it answers, "
            "`geomlops run --resume RUN_ID` finishes a failed local run, or resubmit on Argo",
        ],
        "mlflow": [
            "cannot read MLflow run",
            f"port={stack.config.mlflow_port}",
            "Connection refused",
            "(also failed: onExit.retract-unpublished)",  # it cannot tell what to retract
        ],
    }[service]
    before, after = _fault_then_resume(stack, service, trained, symptoms)
    assert after["status"] == "Succeeded"
    for task in ("fetch-model", "resolve-dataset", "train", "evaluate"):  # nothing ran again
        assert after["nodes"][task]["attempts"] == before["nodes"][task]["attempts"], task
    run_id = after["nodes"]["collect-run"]["outputs"]["run_id"]
    version = after["nodes"]["register"]["outputs"]["version"]
    assert _versions_of_run(stack, run_id) == [version]  # exactly one version, nothing lost
    location = _model_location(stack, version)
    assert location.startswith("s3://mlflow-artifacts/")
    assert _keys(stack, "mlflow-artifacts", location.removeprefix("s3://mlflow-artifacts/"))
    item = stack.stac_item("model-versions", f"{MODEL}-v{version}")
    assert item["assets"]["model"]["href"] == location
    assert item["properties"]["mlflow:run_id"] == run_id
    assert {s.state for s in devstack.status(stack.config.dev_dir)} == {"running"}


def test_batch_inference_with_the_model_from_s3(services_stack: Stack, trained: dict[str, Any]) -> None:
    import geopandas

    from geomlops.settings import get_settings
    from pipelines import render

    summary = trained["summary"]
    assert summary.status == "Succeeded", summary.message
    version = summary.outputs["register"]["version"]
    [image] = (get_settings().home_dir / "datasets").glob("*/image.tif")
    output = services_stack.home / "predictions-services"
    params = {
        "model": MODEL,
        "model_version": version,
        "imagery": str(image),
        # not "services": the runner masks secret values in logs, GEOMLOPS_PROFILE's among them
        "area": "integration",
        "block_size": "320",
        "output": str(output),
    }
    result = _runner().run(render("batch-inference"), params)
    assert result.status == "Succeeded", result.message
    frame = geopandas.read_parquet(output / "predictions.parquet")
    assert len(frame) > 0
    assert set(frame["mlflow_run_id"]) == {summary.outputs["collect-run"]["run_id"]}
    assert set(frame["model_version"]) == {version}

    # the predictions item is in PgSTAC, derived from the version's item there
    api = services_stack.config.stac_url
    item_id = f"{MODEL}-v{version}-integration"
    assert result.outputs["publish-predictions"]["item"] == f"{api}/collections/predictions/items/{item_id}"
    item = services_stack.stac_item("predictions", item_id)
    [model_item] = [link["href"] for link in item["links"] if link["rel"] == "derived_from"]
    assert model_item == f"{api}/collections/model-versions/items/{MODEL}-v{version}"
    assert item["properties"]["mlflow:run_id"] == summary.outputs["collect-run"]["run_id"]


def test_promotion_on_the_services_stack(services_stack: Stack, trained: dict[str, Any]) -> None:
    """The promotion workflow on MLflow (PostgreSQL + S3) and PgSTAC: stops at the gate, an
    approval moves ``production``, the decision is in the MLflow server and in PgSTAC, and the
    serving manifest points straight at the model in the object store."""
    import yaml
    from mlflow import MlflowClient

    from geomlops.argo.runner import Approval
    from pipelines import render

    summary = trained["summary"]
    assert summary.status == "Succeeded", summary.message
    version = summary.outputs["register"]["version"]
    params = {"model": MODEL, "candidate": version}
    waiting = _runner().run(render("promotion"), params)
    assert waiting.status == "Suspended", waiting.message
    client = MlflowClient(services_stack.config.mlflow_url)
    assert "production" not in client.get_registered_model(MODEL).aliases  # nothing moved yet

    from geomlops.argo.runner import LocalRunner
    from geomlops.settings import get_settings
    from pipelines import template_resolver

    approval = Approval("Ada Lovelace", "held-out IoU checked on the services stack")
    runner = LocalRunner(
        get_settings().runs_dir, max_workers=2, approval=approval, template_resolver=template_resolver
    )
    done = runner.resume(waiting.run_id)
    assert done.status == "Succeeded", done.message

    assert client.get_model_version_by_alias(MODEL, "production").version == version
    decision = json.loads(client.get_model_version(MODEL, version).tags["geomlops.promotion"])
    assert decision["approver"] == "Ada Lovelace" and decision["action"] == "promote"
    run_tags = client.get_run(summary.outputs["collect-run"]["run_id"]).data.tags
    assert json.loads(run_tags["geomlops.promotion"]) == decision
    # the report sits next to the run's model, in the object store
    assert decision["report"].startswith("s3://mlflow-artifacts/"), decision["report"]

    item = services_stack.stac_item("model-versions", f"{MODEL}-v{version}")
    assert item["properties"]["geomlops:promotion"] == decision
    assert item["properties"]["mlflow:aliases"] == ["production"]

    manifests = [yaml.safe_load(Path(p).read_text()) for p in json.loads(done.outputs["serve"]["manifests"])]
    text = json.dumps(manifests)
    assert _model_location(services_stack, version) in text  # the s3:// model, no proxy between
    assert "s3://mlflow-artifacts/" in text
    assert services_stack.config.s3_url not in text  # endpoints and keys come from Secrets
