"""The web dashboard at ``/``: static files built from ``dashboard/`` (``npm run build``).

The page and its assets carry no data and need no token; the page signs in with a
token the user pastes or loads from a file, and reads everything through ``/v1``.
Nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("dashboard_static")
"""Where the build of ``dashboard/`` lands (shipped with the package)."""


def install(app: FastAPI, static_dir: Path = STATIC_DIR) -> None:
    """Serve the dashboard's page at ``/`` and its assets under ``/assets``.

    Without a build (no ``index.html``) nothing is mounted and ``/`` stays a 404."""
    index = static_dir / "index.html"
    if not index.is_file():
        return

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    app.mount("/assets", StaticFiles(directory=static_dir / "assets"), name="dashboard-assets")
