"""Serve wattvisor's API (``/placement`` included) on a loopback port, for the Placement bench.

``python -m bench.placement_serve DATA_DIR PORT``: a fresh SQLite store under DATA_DIR,
served by uvicorn in this process until it is terminated.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from wattvisor.api import create_app
from wattvisor.config.settings import Settings


def main(argv: list[str]) -> int:
    data_dir, port = Path(argv[0]), int(argv[1])
    app = create_app(Settings(data_dir=data_dir))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
