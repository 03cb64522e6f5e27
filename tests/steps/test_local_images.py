"""On one machine a model's image is stood in for by its package's environment, with a
tracking server that outlives the runner thread that first needed it."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from geomlops.cli.demo import default_package
from geomlops.errors import GeomlopsError
from geomlops.settings import get_settings
from steps._tracking_server import healthy
from steps.local_images import WORKFLOW_ENV, LocalImages, record_image, recorded_package, stand_in_hash
from steps.package_env import ensure_environment

IMAGE = "registry.example/cloud-mask:0.1.0"


def test_an_image_runs_in_its_packages_environment_with_a_server_that_outlives_the_thread(
    home: Path,
) -> None:
    package = default_package()
    record_image(IMAGE, package, home)
    assert recorded_package(IMAGE, home) == package.resolve()
    images = LocalImages(get_settings())
    got: dict[str, dict[str, str] | None] = {}
    # the runner calls it from a worker thread that ends when its task ends
    worker = threading.Thread(target=lambda: got.update(env=images(IMAGE, dict(os.environ))))
    worker.start()
    worker.join()
    env = got["env"]
    assert env is not None
    environment = ensure_environment(package)  # cached: built by the call above
    assert env["PATH"].split(os.pathsep)[0] == str(environment.bin_dir)
    assert env["VIRTUAL_ENV"] == str(environment.root)
    url = env["MLFLOW_TRACKING_URI"]
    assert url.startswith("http://127.0.0.1:")
    assert healthy(url)  # still serving after the thread that started it ended
    assert stand_in_hash(IMAGE, home) == environment.hash
    assert images(IMAGE, {})["MLFLOW_TRACKING_URI"] == url  # type: ignore[index]  # one server per run
    images.close()
    assert not healthy(url)


def test_an_unknown_image_has_no_stand_in_and_a_gone_package_is_named(home: Path, tmp_path: Path) -> None:
    images = LocalImages(get_settings())
    assert images("registry.example/other:1", {}) is None
    gone = tmp_path / "gone-package"
    shutil.copytree(default_package(), gone, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    record_image(IMAGE, gone, home)
    shutil.rmtree(gone)
    with pytest.raises(GeomlopsError, match="gone-package recorded for this image is gone"):
        images(IMAGE, {})
    images.close()


def test_each_run_finds_the_package_it_planned_though_another_run_planned_since(
    home: Path, tmp_path: Path
) -> None:
    """Versions of a model share an image name: run a planned version 1's package, run b then
    planned version 2's; a's pods still get version 1's package."""
    first, second = tmp_path / "v1-package", tmp_path / "v2-package"
    for folder in (first, second):
        shutil.copytree(default_package(), folder, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    record_image(IMAGE, first, home, workflow="uid-a")
    record_image(IMAGE, second, home, workflow="uid-b")
    assert recorded_package(IMAGE, home, "uid-a") == first.resolve()
    assert recorded_package(IMAGE, home, "uid-b") == second.resolve()
    assert recorded_package(IMAGE, home) is None  # nothing recorded outside a run
    record_image(IMAGE, first, home)  # as a run planned before records were kept per run
    assert recorded_package(IMAGE, home) == first.resolve()
    assert recorded_package(IMAGE, home, "uid-c") is None  # a run that recorded nothing takes no other's
    assert recorded_package(IMAGE, home, "uid-b") == second.resolve()

    images = LocalImages(get_settings())
    shutil.rmtree(second)  # the environment is looked up by the run's own record
    with pytest.raises(GeomlopsError, match="v2-package recorded for this image is gone"):
        images(IMAGE, {WORKFLOW_ENV: "uid-b"})
    shutil.rmtree(first)
    with pytest.raises(GeomlopsError, match="v1-package recorded for this image is gone"):
        images(IMAGE, {WORKFLOW_ENV: "uid-a"})
    images.close()


def test_warming_starts_the_tracking_server_before_an_image_needs_it(home: Path) -> None:
    images = LocalImages(get_settings())
    images.warm()
    images.warm()  # once: a second call starts nothing more
    warming = images._warming
    assert warming is not None
    warming.join(timeout=180)
    url = images._tracking_url  # started with no image asked for yet
    assert url.startswith("http://127.0.0.1:") and healthy(url)
    assert images.tracking_url() == url  # the image that needs it gets the same server
    images.close()
    assert not healthy(url)


def test_a_tracking_server_configured_elsewhere_is_not_warmed(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
    images = LocalImages(get_settings())
    images.warm()
    assert images._warming is None  # nothing to start: the configured server is used
    assert images.tracking_url() == "http://127.0.0.1:9/"
    images.close()


def test_a_new_store_is_made_before_the_run_and_a_start_under_way_is_given_up(home: Path) -> None:
    store = home / "mlflow.db"
    assert not store.exists()
    images = LocalImages(get_settings())
    images.warm()
    # made before warm() returns: the server and the run's first task never both create it
    assert store.is_file()
    images.close()  # at once, while the server is starting: the start is given up
    assert images._warming is not None and not images._warming.is_alive()
    assert images._tracking_url == ""


def test_a_store_that_cannot_be_made_is_not_warmed(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    missing = tmp_path / "a-file" / "mlflow.db"  # no store can be made there
    monkeypatch.setenv("GEOMLOPS_MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    images = LocalImages(get_settings())
    images.warm()  # no error here: the run's task that opens the store says why
    assert images._warming is None and not missing.exists()
    images.close()
