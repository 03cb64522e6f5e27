"""The web app: its built files (``web_dist/``, packaged with the gateway) served at ``/``.

``/`` answers the app's ``index.html`` and ``/app/…`` its assets (Vite builds with base
``/app/``). Without a build, ``/`` answers a short page saying how to build it.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.staticfiles import StaticFiles

#: where ``make web`` puts the built app
WEB_DIST = Path(__file__).resolve().parent / "web_dist"

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>geomlops</title></head>
<body><main>
<h1>geomlops gateway</h1>
<p>The web app is not built. Build it from the sources in <code>web/</code> with
<code>make web</code> (needs Node.js), then reload this page.</p>
<p>The API answers under <a href="/api/v1/openapi.json">/api/v1</a>.</p>
</main></body></html>
"""


class _AppFiles(StaticFiles):
    """The built app's files; 404 for each of them (not an error) while it is not built."""

    async def check_config(self) -> None:
        if self.directory is not None and Path(self.directory).is_dir():
            await super().check_config()


def mount_web_app(app: FastAPI, folder: Path = WEB_DIST) -> None:
    """Serve the built app in ``folder``: ``/`` its index page, ``/app/`` its files."""

    async def index(request: Request) -> Response:
        page = folder / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html", headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NOT_BUILT)

    app.add_route("/", index, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/app", _AppFiles(directory=folder, html=True, check_dir=False), name="app")
