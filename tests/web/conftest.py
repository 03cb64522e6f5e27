"""The web app in a real browser: Debian's chromium driven by Playwright (no browser download).

``web_gateway`` is ``geomlops gateway serve`` in its own process on the work folder where the
``work`` session fixture ran the demo once (cloud-mask version 1 trained, its environment
built): nothing is trained again. The web tests run after every other user of that folder
(tests/web sorts last) and only add runs to it; the promotion they approve gives version 1 the
``production`` alias there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from geomlops.ports import free_port

REPO = Path(__file__).resolve().parents[2]
GEOMLOPS = str(Path(sys.executable).parent / "geomlops")
CHROMIUM = os.environ.get("GEOMLOPS_TEST_CHROMIUM", "/usr/bin/chromium")
#: a headless browser that reaches no other host of its own accord
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APPROVER = "ada@example.org"
ROLES = {"viewer": "val-viewer", "operator": "ops-bot", "approver": APPROVER, "admin": "root-admin"}


@dataclass
class WebGateway:
    """The gateway serving the app, its work folder and one API key per role."""

    url: str
    home: Path
    env: dict[str, str]
    keys: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)

    def client(self, role: str) -> httpx.Client:
        """An API client with the key of ``role``."""
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.keys[role]}, timeout=120)


@pytest.fixture(scope="session")
def web_gateway(request: pytest.FixtureRequest, schema_dir: Path) -> Iterator[WebGateway]:
    """``geomlops gateway serve`` on the demo's work folder, with a key per role.

    GEOMLOPS_TEST_WEB_HOME names another work folder where ``geomlops demo`` ran (to work on
    the web tests without running the demo each time); by default, the ``work`` fixture's.
    """
    given = os.environ.get("GEOMLOPS_TEST_WEB_HOME")
    if given:
        home = Path(given)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GEOMLOPS_", "MLFLOW_"))}
        env["GEOMLOPS_HOME"] = str(home)
    else:
        work = request.getfixturevalue("work")
        assert work["first"].returncode == 0, work["first"].stdout + work["first"].stderr
        home, env = work["home"], dict(work["env"])
    env["GEOMLOPS_SCHEMA_DIR"] = str(schema_dir)
    keys = {}
    for role, name in ROLES.items():
        made = subprocess.run(
            [GEOMLOPS, "gateway", "keys", "create", name, "--role", role],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            check=True,
        )
        keys[role] = made.stdout.strip()
    port = free_port()
    log_path = home / "web-gateway.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [GEOMLOPS, "gateway", "serve", "--port", str(port)],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log_path.read_text())
        time.sleep(0.3)
    yield WebGateway(url, home, env, keys)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright's sync API."""
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield found
        found.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the tests write a screenshot of each page (tests/web/screenshots, git-ignored)."""
    folder = REPO / "tests" / "web" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def app(web_gateway: WebGateway, browser: Any) -> Any:
    """A fresh browser context per module (sessionStorage starts empty)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # CI runs two suites at once on two cores: a map's tiles may take longer than the default 30 s
    context.set_default_timeout(90_000)
    yield context
    context.close()
