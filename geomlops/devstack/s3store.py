"""The dev stack's S3 store: buckets, and its objects kept across restarts.

moto's server (the MinIO stand-in) keeps objects in memory, where MinIO keeps them on disk.
MLflow's metadata lives on in PostgreSQL across ``geomlops dev down``/``up``, so the objects it
points to must too: stopping the store saves every object to a folder, starting it puts them
back. Only a graceful stop saves; a crashed store loses what it held since the last stop.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from geomlops.files import atomic_path

#: moto accepts any credentials: these are placeholders for the dev stack, never real ones
DEV_ACCESS_KEY_ID = "geomlops-dev"
DEV_SECRET_ACCESS_KEY = "geomlops-dev-secret"
DEV_REGION = "us-east-1"


def client(endpoint: str, *, attempts: int = 3) -> Any:
    """A boto3 S3 client for the dev store at ``endpoint``, with the dev credentials."""
    import boto3  # type: ignore[import-untyped, unused-ignore]
    from botocore.config import Config  # type: ignore[import-untyped, unused-ignore]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=DEV_ACCESS_KEY_ID,
        aws_secret_access_key=DEV_SECRET_ACCESS_KEY,
        region_name=DEV_REGION,
        config=Config(connect_timeout=2, read_timeout=30, retries={"max_attempts": attempts}),
    )


def answers(endpoint: str) -> bool:
    """Whether an S3 API answers at ``endpoint`` (a bucket listing succeeds)."""
    from botocore.exceptions import (  # type: ignore[import-untyped, unused-ignore]
        BotoCoreError,
        ClientError,
    )

    try:
        client(endpoint, attempts=1).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def ensure_buckets(endpoint: str, buckets: Iterable[str]) -> None:
    """Create every bucket that does not exist yet."""
    s3 = client(endpoint)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def save(endpoint: str, folder: Path) -> int:
    """Copy every object of every bucket into ``folder`` (replacing what it held).

    Returns:
        The number of objects saved.
    """
    s3 = client(endpoint)
    index: dict[str, Any] = {"buckets": [], "objects": []}
    with atomic_path(folder) as partial:
        (partial / "objects").mkdir(parents=True)
        for bucket in s3.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            index["buckets"].append(name)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
                for obj in page.get("Contents", []):
                    file = f"objects/{len(index['objects'])}"
                    s3.download_file(name, obj["Key"], str(partial / file))
                    index["objects"].append({"bucket": name, "key": obj["Key"], "file": file})
        (partial / "index.json").write_text(json.dumps(index, indent=1))
    return len(index["objects"])


def restore(endpoint: str, folder: Path) -> int:
    """Put back the buckets and objects saved in ``folder``; nothing when there is none.

    Returns:
        The number of objects restored.
    """
    try:
        index = json.loads((folder / "index.json").read_text())
    except FileNotFoundError:
        return 0
    ensure_buckets(endpoint, index["buckets"])
    s3 = client(endpoint)
    for obj in index["objects"]:
        s3.upload_file(str(folder / obj["file"]), obj["bucket"], obj["key"])
    return len(index["objects"])
