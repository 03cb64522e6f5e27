"""``geomlops dev`` without starting the services: config, environment, PID tracking, refusals."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from geomlops.cli.main import main
from geomlops.devstack import processes as procs
from geomlops.devstack import services, stack
from geomlops.errors import DevStackError
from geomlops.ports import free_port
from geomlops.settings import Settings

GRANDCHILD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)\n"
)


def test_exported_environment_is_the_services_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = stack.DevConfig(dev_dir=tmp_path / "dev", s3_port=9100, mlflow_port=5100, stac_port=8100)
    env = stack.environment(config)
    for key in list(os.environ):
        if key.startswith(("GEOMLOPS_", "MLFLOW_", "AWS_")):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.profile == "services" and settings.home_dir == tmp_path
    assert settings.tracking_uri == "http://127.0.0.1:5100" == env["MLFLOW_TRACKING_URI"]
    assert settings.artifact_root == "s3://mlflow-artifacts"
    assert settings.dvc_remote_url == "s3://dvc-data/geomlops"
    assert settings.s3_endpoint == "http://127.0.0.1:9100" == env["AWS_ENDPOINT_URL"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://127.0.0.1:9100"
    # the catalogue is the stack's PgSTAC, searched through its STAC API
    pgstac = "postgresql://postgres@127.0.0.1:5432/geomlops_pgstac"
    assert settings.pgstac_dsn == settings.catalog_href == pgstac == env["GEOMLOPS_PGSTAC_DSN"]
    assert settings.stac_api_url == "http://127.0.0.1:8100" == env["GEOMLOPS_STAC_API_URL"]
    lines = stack.export_lines({"A": "x y", "B": "plain"})
    assert lines == ["export A='x y'", "export B=plain"]


def test_database_url_forms(tmp_path: Path) -> None:
    config = stack.DevConfig(dev_dir=tmp_path, mlflow_db="postgres://u:secret@db:5433/ml")
    assert config.mlflow_store_uri == "postgresql+psycopg://u:secret@db:5433/ml"
    assert config.mlflow_libpq_dsn == "postgresql://u:secret@db:5433/ml"
    assert "secret" not in services.redact(config.mlflow_libpq_dsn)
    with pytest.raises(ValueError, match="postgresql://"):
        stack.DevConfig(dev_dir=tmp_path, mlflow_db="sqlite:///mlflow.db")
    with pytest.raises(ValueError, match="pgstac_db"):
        stack.DevConfig(dev_dir=tmp_path, pgstac_db="/tmp/catalog.json")
    assert stack.DevConfig(dev_dir=tmp_path, pgstac_db="postgres://u@db/cat").pgstac_dsn == (
        "postgresql://u@db/cat"
    )


def test_tracked_process_group_is_stopped_whole(tmp_path: Path) -> None:
    tracked = procs.spawn(tmp_path, "dummy", [sys.executable, "-c", GRANDCHILD], dict(os.environ))
    time.sleep(0.5)
    assert procs.read_tracked(tmp_path, "dummy") == tracked
    procs.stop(tmp_path, tracked, timeout=5)
    assert not procs.is_running(tracked)
    assert not procs.pid_file(tmp_path, "dummy").exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(tracked.pid, 0)  # the grandchild went with it


def test_a_reused_pid_is_never_taken_for_ours(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        procs.pid_file(tmp_path, "s3").write_text(f"{other.pid}\nnot-its-start-stamp\n")
        (tmp_path / "stack.json").write_text(stack.DevConfig(dev_dir=tmp_path).model_dump_json())
        assert procs.read_tracked(tmp_path, "s3") is None
        assert stack.down(tmp_path) == []
        assert other.poll() is None  # not signalled
        assert [s.state for s in stack.status(tmp_path)] == ["stopped"] * 4  # s3, mlflow, stac, gateway
    finally:
        other.kill()
        other.wait()


def test_port_taken_by_another_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((stack.HOST, 0))
        busy.listen()
        config = stack.DevConfig(dev_dir=tmp_path / "dev", s3_port=busy.getsockname()[1])
        with pytest.raises(DevStackError, match="taken by a program the dev stack did not start"):
            stack.up(config, ["s3"])
    assert not procs.pid_file(tmp_path / "dev", "s3").exists()


def test_running_stack_keeps_its_ports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path))
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    (dev_dir / "stack.json").write_text(stack.DevConfig(dev_dir=dev_dir, s3_port=9100).model_dump_json())
    tracked = procs.spawn(dev_dir, "s3", [sys.executable, "-c", "import time; time.sleep(30)"], os.environ)
    try:
        assert stack.configure(Settings()).s3_port == 9100
        assert stack.configure(Settings(), s3_port=0).s3_port == 9100  # 0: any port, so this one
        with pytest.raises(DevStackError, match="runs with other s3_port"):
            stack.configure(Settings(), s3_port=9200)
        with pytest.raises(DevStackError, match="unknown service nope"):
            stack.up(stack.configure(Settings()), ["nope"])
    finally:
        procs.stop(dev_dir, tracked, timeout=5)


def test_cli_without_a_stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path))
    runner = CliRunner()
    assert {"up", "down", "status", "env"} <= set(runner.invoke(main, ["dev", "--help"]).output.split())
    status = runner.invoke(main, ["dev", "status"])
    assert status.exit_code == 1 and status.output.count("stopped") == 4
    assert "stac" in status.output and "gateway" in status.output
    env = runner.invoke(main, ["dev", "env"])
    assert env.exit_code == 2 and "geomlops dev up" in env.output
    assert runner.invoke(main, ["dev", "down"]).output.strip() == "nothing to stop"
    bad = runner.invoke(main, ["dev", "up", "--mlflow-db", "sqlite:///x.db"])
    assert bad.exit_code == 2 and "postgresql://" in bad.output


def test_env_of_a_stopped_stack_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOMLOPS_HOME", str(tmp_path))
    dev_dir = tmp_path / "dev"
    dev_dir.mkdir()
    # what `dev down` leaves: the stack's settings, no process
    (dev_dir / "stack.json").write_text(stack.DevConfig(dev_dir=dev_dir, s3_port=9100).model_dump_json())
    env = CliRunner().invoke(main, ["dev", "env"])
    assert env.exit_code == 0
    assert "export AWS_ENDPOINT_URL=http://127.0.0.1:9100" in env.stdout
    assert "not running" not in env.stdout
    assert "! not running: s3, mlflow, stac, gateway; start with `geomlops dev up`" in env.stderr


def test_missing_moto_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # what importing an absent package finds
    config = stack.DevConfig(dev_dir=tmp_path / "dev", s3_port=0)
    with pytest.raises(DevStackError, match=r"moto is not installed: pip install 'geomlops\[dev-stack\]'"):
        stack.up(config, ["s3"])
    assert not procs.pid_file(tmp_path / "dev", "s3").exists()


def test_unreachable_postgres_for_the_catalogue_is_said_clearly(tmp_path: Path) -> None:
    closed = free_port(stack.HOST)
    config = stack.DevConfig(
        dev_dir=tmp_path / "dev", stac_port=0, pgstac_db=f"postgresql://postgres@127.0.0.1:{closed}/cat"
    )
    with pytest.raises(DevStackError) as caught:
        stack.up(config, ["stac"])
    assert str(caught.value) == (
        f"PgSTAC database: cannot connect to PostgreSQL at postgresql://postgres@127.0.0.1:{closed}/cat: "
        "Connection refused. Start PostgreSQL there, or name another server with --pgstac-db"
    )
    assert not procs.pid_file(tmp_path / "dev", "stac").exists()


def test_a_failed_start_stops_what_it_had_started(tmp_path: Path) -> None:
    closed = free_port(stack.HOST)
    config = stack.DevConfig(
        dev_dir=tmp_path / "dev",
        s3_port=0,
        stac_port=0,
        pgstac_db=f"postgresql://postgres@127.0.0.1:{closed}/cat",
    )
    with pytest.raises(DevStackError) as caught:
        stack.up(config, ["s3", "stac"])  # s3 starts, then the catalogue cannot
    assert "cannot connect to PostgreSQL" in str(caught.value)
    assert str(caught.value).endswith("stopped what this start had started: s3")
    assert not procs.pid_file(tmp_path / "dev", "s3").exists()
    assert {s.state for s in stack.status(tmp_path / "dev")} == {"stopped"}


def test_pgstac_that_cannot_be_installed_leaves_no_database(tmp_path: Path) -> None:
    """A role that may create databases but not extensions: PostGIS cannot go in."""
    import psycopg
    from psycopg import sql

    admin = os.environ.get("GEOMLOPS_TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    role = database = f"geomlops_test_nosuper_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB NOSUPERUSER").format(sql.Identifier(role)))
    try:
        host = psycopg.conninfo.conninfo_to_dict(admin)
        dsn = f"postgresql://{role}@{host.get('host', '127.0.0.1')}:{host.get('port', 5432)}/{database}"
        config = stack.DevConfig(dev_dir=tmp_path / "dev", stac_port=0, pgstac_db=dsn)
        with pytest.raises(DevStackError) as caught:
            stack.up(config, ["stac"])
        message = str(caught.value)
        assert message.startswith("cannot install PgSTAC for the dev stack's STAC API: migrating PgSTAC")
        assert 'permission denied to create extension "postgis"' in message
        assert "migrate as a superuser" in message
        with psycopg.connect(admin) as db:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            assert db.execute(query, (database,)).fetchone() is None  # created, then dropped
        assert not procs.pid_file(tmp_path / "dev", "stac").exists()
    finally:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
