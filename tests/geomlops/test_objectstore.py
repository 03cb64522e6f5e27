"""The object store going away gives one clear error, from a real S3 client on a closed port."""

from __future__ import annotations

import pytest

from geomlops.errors import ObjectStoreUnavailableError, RegistryError
from geomlops.objectstore import object_store_errors
from geomlops.ports import free_port


def _list_bucket(endpoint: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
    )
    client.list_objects_v2(Bucket="mlflow-artifacts")


def test_unreachable_store_names_the_endpoint_and_what_to_do() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ObjectStoreUnavailableError) as caught:
        with object_store_errors("registering run abc as 'cloud-mask'"):
            _list_bucket(endpoint)
    message = str(caught.value)
    assert message.startswith(f"the object store at {endpoint} is unreachable (Connection refused)")
    assert "while registering run abc as 'cloud-mask'" in message
    assert "MLFLOW_S3_ENDPOINT_URL" in message and "geomlops run --resume" in message
    assert "mlflow-artifacts?" not in message  # the endpoint, not one request's URL
    assert type(caught.value.__cause__).__name__ == "EndpointConnectionError"


def test_a_wrapped_connection_failure_is_found_in_the_chain() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ObjectStoreUnavailableError, match=f"object store at {endpoint} "):
        with object_store_errors("registering"):
            try:
                _list_bucket(endpoint)
            except Exception as err:  # as MLflow and the registry step wrap it
                raise RegistryError(f"cannot register: {err}") from err


def test_other_errors_pass_unchanged() -> None:
    with pytest.raises(RegistryError, match="no such MLflow run"):
        with object_store_errors("registering"):
            raise RegistryError("run_id 'x': no such MLflow run")


def test_a_command_reports_the_store_in_one_line_not_a_traceback() -> None:
    import click
    from click.testing import CliRunner

    from geomlops.cli._tools import fail_cleanly

    endpoint = f"http://127.0.0.1:{free_port()}"

    @click.command()
    @fail_cleanly
    def fetch() -> None:
        _list_bucket(endpoint)

    result = CliRunner().invoke(fetch, [])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()
    assert line.startswith(f"error: the object store at {endpoint} is unreachable (Connection refused)")
    assert "Traceback" not in result.output
