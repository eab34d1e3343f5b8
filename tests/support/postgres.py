"""A throwaway PostgreSQL server for tests, and the ``store_url`` fixture that runs a
test once on SQLite and once on PostgreSQL.

The server runs from the Debian PostgreSQL 15 binaries as the ``postgres`` user (the
server refuses root) on a data directory in a temporary folder, listening on 127.0.0.1
with a free port and a private unix socket directory. Only this server is ever stopped.
In CI (``CI=true``) a server that cannot start fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.availability import unavailable

PG_BIN = Path(os.environ.get("WATTVISOR_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"


@dataclass
class PostgresServer:
    """A running server of our own; ``url_for(db)`` is a SQLAlchemy URL."""

    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def stop(self) -> None:
        _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres(argv: list[str]) -> subprocess.CompletedProcess[str]:
    prefix = ["runuser", "-u", PG_USER, "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + argv, capture_output=True, text=True, check=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_postgres(attempts: int = 3) -> PostgresServer:
    """Initialise and start a private server; raises RuntimeError with the server's own
    output when it cannot. A free port can be taken by someone else before the server
    binds it, so a failed start is tried again on a new port."""
    error: RuntimeError | None = None
    for _attempt in range(attempts):
        try:
            return _start_once()
        except RuntimeError as exc:
            error = exc
            if "initdb" in str(exc) or "not found" in str(exc):
                break
    assert error is not None
    raise error


def _start_once() -> PostgresServer:
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL binaries not found in {PG_BIN} (initdb missing)")
    root = Path(tempfile.mkdtemp(prefix="wattvisor-pg-"))
    sockets = root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
        shutil.chown(sockets, PG_USER, PG_USER)
    server = PostgresServer(root=root, port=_free_port())
    init = _as_postgres(
        [
            str(PG_BIN / "initdb"),
            "-D",
            str(server.data_dir),
            "-U",
            PG_USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stdout}{init.stderr}")
    options = (
        f"-p {server.port} -h 127.0.0.1 -k {sockets} -c fsync=off -c synchronous_commit=off "
        "-c full_page_writes=off -c max_connections=200"
    )
    start = _as_postgres(
        [
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(server.data_dir),
            "-o",
            options,
            "-l",
            str(root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ]
    )
    if start.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"pg_ctl start failed: {start.stdout}{start.stderr}{log}")
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except RuntimeError as exc:
        unavailable(f"PostgreSQL could not start: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database URL, once per backend."""
    from wattvisor.store import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'wattvisor.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database()
    migrate(url)
    return url
