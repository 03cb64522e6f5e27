"""Serving manifests: structure of each kind, traceability, secrets by reference only; written from
a real MLflow registry and catalogue; applying with and without kubectl."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from catalog_sync.store import StaticCatalog
from geomlops.errors import ConfigurationError, RegistryError, ServingError
from geomlops.serving.deploy import apply_serving_manifests, parse_model_reference, write_serving_manifests
from geomlops.serving.manifests import ServedModel, kserve, predictor_source, seldon_v1, seldon_v2

REPO = Path(__file__).resolve().parents[3]
URI = "s3://mlflow-artifacts/3/models/m-0123/artifacts"
RUN = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
MODEL = ServedModel(
    name="Cloud_Mask",
    version="7",
    run_id=RUN,
    alias="production",
    model_uri=URI,
    tasks=("semantic-segmentation",),
    classes={0: "clear", 1: "cloud"},
    bands=10,
    model_input={"bands": ["B1"], "data_type": "float32"},
    model_output={"name": "mask", "tasks": ["semantic-segmentation"], "data_type": "uint8"},
    image="ghcr.io/example/cloud-mask:1.0",
)
#: values that must never appear in a manifest (what a secret would hold)
SECRET_VALUES = ("AKIAEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG")


def _walk(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [v for value in node.values() for v in _walk(value)] + list(node)
    if isinstance(node, list):
        return [v for value in node for v in _walk(value)]
    return [node]


def _traceable(manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    assert meta["namespace"] == "ns"
    assert meta["labels"]["geomlops.io/model"] == "cloud-mask"
    assert meta["labels"]["geomlops.io/model-version"] == "7"
    assert meta["annotations"]["geomlops.io/mlflow-run-id"] == RUN
    assert meta["annotations"]["geomlops.io/model-name"] == "Cloud_Mask"
    assert meta["annotations"]["geomlops.io/model-uri"] == URI
    assert meta["annotations"]["geomlops.io/alias"] == "production"


def _no_secret_values(manifests: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump_all(manifests)
    assert not any(v in text for v in SECRET_VALUES)
    assert all(m["kind"] != "Secret" for m in manifests)
    # a ConfigMap's data is the predictor's script, nothing else
    assert all(list(m["data"]) == ["predictor_server.py"] for m in manifests if m["kind"] == "ConfigMap")
    for key in _walk([m for m in manifests if m["kind"] != "ConfigMap"]):
        assert str(key) not in ("stringData", "data", "AWS_SECRET_ACCESS_KEY")


def _predictor_script(
    config_map: dict[str, Any], volumes: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    """The model's container runs the predictor script the ConfigMap holds, mounted where it looks."""
    assert (config_map["apiVersion"], config_map["kind"]) == ("v1", "ConfigMap")
    _traceable(config_map)
    assert config_map["data"] == {"predictor_server.py": predictor_source()}
    assert "import geomlops" not in predictor_source() and "from geomlops" not in predictor_source()
    [volume] = volumes
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    [mount] = container["volumeMounts"]
    assert mount["name"] == volume["name"] and mount["readOnly"]
    assert container["image"] == "ghcr.io/example/cloud-mask:1.0"  # the model's own image
    assert container["command"] == ["python", f"{mount['mountPath']}/predictor_server.py"]
    assert container["args"][:2] == ["--model-dir", "/mnt/models"]


def test_seldon_v1_graph_is_the_model_image_between_input_and_output_transformers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for value in SECRET_VALUES:
        monkeypatch.setenv(f"AWS_{len(value)}", value)
    config_map, deployment = seldon_v1(MODEL, namespace="ns", secret="serving-creds", image="img:1")
    assert deployment["apiVersion"] == "machinelearning.seldon.io/v1"
    assert deployment["kind"] == "SeldonDeployment"
    assert deployment["metadata"]["name"] == "cloud-mask"
    _traceable(deployment)
    [predictor] = deployment["spec"]["predictors"]
    graph = predictor["graph"]
    assert graph["type"] == "TRANSFORMER" and graph["name"] == "preprocess"
    [output] = graph["children"]
    assert output["type"] == "OUTPUT_TRANSFORMER" and output["name"] == "postprocess"
    [child] = output["children"]
    assert child["type"] == "MODEL" and "implementation" not in child
    assert child["modelUri"] == URI  # Seldon's storage initializer puts it in /mnt/models
    assert child["envSecretRefName"] == "serving-creds"
    for node in (graph, output):
        params = {p["name"]: p["value"] for p in node["parameters"]}
        assert (
            params["model_name"] == "Cloud_Mask"
            and params["run_id"] == RUN
            and params["model_version"] == "7"
        )
        assert json.loads(params["classes"]) == {"0": "clear", "1": "cloud"}
        # the MLM input and output: the chip prepared before the model, the answer read after it
        assert json.loads(params["input"]) == MODEL.model_input
        assert json.loads(params["output"]) == MODEL.model_output
        assert all(p["type"] == "STRING" for p in node["parameters"])
    pod = predictor["componentSpecs"][0]["spec"]
    before, after, model = pod["containers"]
    # Seldon joins graph nodes and containers by name
    assert (before["name"], after["name"], model["name"]) == (graph["name"], output["name"], child["name"])
    for container in (before, after):
        assert container["image"] == "img:1"  # geomlops' image
        assert container["command"][1] == "geomlops.serving.transformer.GeoJSONTransformer"
        assert container["command"][2:] == ["--service-type", "TRANSFORMER"]
    _predictor_script(config_map, pod["volumes"], model)
    assert "--port" not in model["args"]  # Seldon's PREDICTIVE_UNIT_HTTP_SERVICE_PORT
    _no_secret_values([config_map, deployment])


def test_seldon_v2_model_and_pipeline() -> None:
    manifests = seldon_v2(MODEL, namespace="ns", secret="serving-creds")
    assert [(m["apiVersion"], m["kind"]) for m in manifests] == [
        ("mlops.seldon.io/v1alpha1", "Model"),
        ("mlops.seldon.io/v1alpha1", "Model"),
        ("mlops.seldon.io/v1alpha1", "Pipeline"),
    ]
    model, transformer, pipeline = manifests
    for manifest in manifests:
        _traceable(manifest)
    assert model["spec"] == {"storageUri": URI, "requirements": ["mlflow"], "secretName": "serving-creds"}
    assert transformer["spec"]["requirements"] == ["geomlops-transformer"]
    assert transformer["spec"]["secretName"] == "serving-creds"
    params = {p["name"]: p["value"] for p in transformer["spec"]["parameters"]}
    assert params["run_id"] == RUN and params["tasks"] == "semantic-segmentation"
    assert json.loads(params["output"]) == MODEL.model_output  # the answer read by the MLM output
    steps = pipeline["spec"]["steps"]
    assert steps == [
        {"name": model["metadata"]["name"]},
        {"name": transformer["metadata"]["name"], "inputs": [model["metadata"]["name"]]},
    ]
    assert pipeline["spec"]["output"]["steps"] == [transformer["metadata"]["name"]]
    _no_secret_values(manifests)


def test_kserve_inference_service_with_transformer() -> None:
    account, config_map, service = kserve(MODEL, namespace="ns", secret="serving-creds", image="img:1")
    assert (account["apiVersion"], account["kind"]) == ("v1", "ServiceAccount")
    assert account["secrets"] == [{"name": "serving-creds"}]
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    _traceable(service)
    _traceable(account)
    predictor = service["spec"]["predictor"]
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    [model] = predictor["containers"]
    assert model["name"] == "kserve-container"
    assert model["env"] == [{"name": "STORAGE_URI", "value": URI}]  # downloaded to /mnt/models
    _predictor_script(config_map, predictor["volumes"], model)
    # it answers to the name KServe gives the transformer (the InferenceService's), on its port
    args = dict(zip(model["args"][::2], model["args"][1::2], strict=True))
    assert args["--name"] == service["metadata"]["name"] and args["--version"] == "7"
    assert model["ports"] == [{"containerPort": int(args["--port"]), "protocol": "TCP"}]
    [container] = service["spec"]["transformer"]["containers"]
    assert container["image"] == "img:1"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["GEOMLOPS_TRANSFORMER_RUN_ID"] == RUN
    assert container["command"] == ["python", "-m", "geomlops.serving.kserve_transformer"]
    assert json.loads(env["GEOMLOPS_TRANSFORMER_INPUT"]) == {"bands": ["B1"], "data_type": "float32"}
    assert json.loads(env["GEOMLOPS_TRANSFORMER_OUTPUT"])["data_type"] == "uint8"
    _no_secret_values([account, config_map, service])


@pytest.mark.parametrize("render", [seldon_v1, kserve])
def test_a_model_without_an_image_is_refused_by_name(render: Any) -> None:
    with pytest.raises(ServingError, match=r"names no image to predict in .*'mlm:inference-runtime'"):
        render(MODEL.model_copy(update={"image": None}), namespace="ns", secret="s", image="img:1")


def test_model_reference_parsing() -> None:
    assert parse_model_reference("cloud-mask") == ("cloud-mask", "production")
    assert parse_model_reference("cloud-mask@3") == ("cloud-mask", "3")
    assert parse_model_reference("cloud-mask@candidate") == ("cloud-mask", "candidate")
    for bad in ("", "@production", "cloud-mask@"):
        with pytest.raises(ServingError, match="expected MODEL"):
            parse_model_reference(bad)


class _Echo(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[Any]:
        return model_input


@pytest.fixture
def registered(home: Path) -> dict[str, str]:
    """``cloud-mask`` v1 and v2 in a real registry (alias production -> v2), its MLM item catalogued."""
    item = json.loads((REPO / "examples" / "cloud-mask" / "stac-item.json").read_text())
    StaticCatalog(str(home / "catalog" / "catalog.json")).put_item("models", item)
    runs = []
    for _ in range(2):
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="model", python_model=_Echo(), registered_model_name="cloud-mask")
        runs.append(run.info.run_id)
    MlflowClient().set_registered_model_alias("cloud-mask", "production", "2")
    return {"1": runs[0], "2": runs[1]}


@pytest.mark.parametrize("kind", ["seldon-v1", "seldon-v2", "kserve"])
def test_write_resolves_the_alias_in_the_registry(
    registered: dict[str, str], home: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("GEOMLOPS_SERVING_KIND", kind)
    monkeypatch.setenv("GEOMLOPS_SERVING_NAMESPACE", "flood")
    paths = write_serving_manifests("cloud-mask")
    assert paths and all(p.parent == home / "serving" / "cloud-mask" / kind for p in paths)
    docs = [yaml.safe_load(p.read_text()) for p in paths]
    location = MlflowClient().get_model_version_download_uri("cloud-mask", "2")
    for doc in docs:
        assert doc["metadata"]["namespace"] == "flood"
        assert doc["metadata"]["annotations"]["geomlops.io/mlflow-run-id"] == registered["2"]
        assert doc["metadata"]["annotations"]["geomlops.io/model-uri"] == location
    assert not list(paths[0].parent.glob(".*partial"))


def test_write_a_version_number_to_a_folder(registered: dict[str, str], tmp_path: Path) -> None:
    paths = write_serving_manifests("cloud-mask", "1", tmp_path / "out")
    [_, config_map, service] = [yaml.safe_load(p.read_text()) for p in paths]
    assert config_map["kind"] == "ConfigMap"
    # the model's image: the MLM item's inference runtime
    [model] = service["spec"]["predictor"]["containers"]
    item = json.loads((REPO / "examples" / "cloud-mask" / "stac-item.json").read_text())
    runtime = next(a for a in item["assets"].values() if "mlm:inference-runtime" in a.get("roles", []))
    assert model["image"] == runtime["href"]
    assert service["metadata"]["labels"]["geomlops.io/model-version"] == "1"
    assert "geomlops.io/alias" not in service["metadata"]["annotations"]
    env = {e["name"]: e["value"] for e in service["spec"]["transformer"]["containers"][0]["env"]}
    assert env["GEOMLOPS_TRANSFORMER_RUN_ID"] == registered["1"]
    assert json.loads(env["GEOMLOPS_TRANSFORMER_CLASSES"]) == {"0": "clear", "1": "cloud"}
    assert len(json.loads(env["GEOMLOPS_TRANSFORMER_INPUT"])["bands"]) == 10


def test_unknown_alias_or_model_is_a_registry_error(registered: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="alias 'staging'") as staging:
        write_serving_manifests("cloud-mask", "staging", tmp_path / "a")
    assert "promote" not in str(staging.value)  # an alias mistyped or missing: only what there is
    with pytest.raises(RegistryError, match="no registered model 'nope' in MLflow") as nope:
        write_serving_manifests("nope", "1", tmp_path / "b")
    assert "promote" not in str(nope.value)
    # no version in production yet (the default alias): how to serve one anyway, or promote one
    MlflowClient().delete_registered_model_alias("cloud-mask", "production")
    with pytest.raises(RegistryError) as none_promoted:
        write_serving_manifests("cloud-mask", out_dir=tmp_path / "c")
    assert str(none_promoted.value) == (
        "model 'cloud-mask' has no alias 'production' in MLflow (versions: 1, 2; aliases: none); "
        "serve a version by its number (cloud-mask@VERSION) or promote one first "
        "(geomlops run promotion -p model=cloud-mask -p candidate=VERSION)"
    )
    assert not any((tmp_path / name).exists() for name in "abc")


def test_apply_does_nothing_unless_told(
    tmp_path: Path, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kind: ConfigMap\n")
    apply_serving_manifests([path])
    assert "not applied" in capsys.readouterr().out
    monkeypatch.setenv("GEOMLOPS_SERVING_APPLY", "true")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ConfigurationError, match="kubectl is not on PATH"):
        apply_serving_manifests([path])


def test_apply_runs_kubectl_for_each_file(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a kubectl that records its arguments and refuses a file named bad.yaml, as kubectl would
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\ncase "$3" in *bad.yaml) echo "error: invalid" >&2; exit 1;; esac\n'
        'echo "configured"\n'
    )
    kubectl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("GEOMLOPS_SERVING_APPLY", "1")
    first, second, bad = tmp_path / "a.yaml", tmp_path / "b.yaml", tmp_path / "bad.yaml"
    for p in (first, second, bad):
        p.write_text("kind: ConfigMap\n")
    apply_serving_manifests([first, second])
    assert log.read_text().splitlines() == [f"apply -f {first}", f"apply -f {second}"]
    with pytest.raises(ServingError, match=r"bad\.yaml failed: error: invalid"):
        apply_serving_manifests([bad])
    with pytest.raises(ServingError, match=r"missing\.yaml: manifest not found"):
        apply_serving_manifests([first, tmp_path / "missing.yaml"])


def test_the_transformer_gets_the_post_processor_options_of_the_mlm_output() -> None:
    from geomlops.serving.manifests import transformer_parameters

    options = {"geomlops:buildings": {"min_area_m2": 4.0, "square": True}}
    buildings = MODEL.model_copy(
        update={"model_output": {**MODEL.model_output, "postprocessor_options": options}}
    )
    assert json.loads(transformer_parameters(buildings)["options"]) == options
    assert json.loads(transformer_parameters(MODEL)["options"]) == {}
