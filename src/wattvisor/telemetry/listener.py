"""The ``/metrics`` listener: an address of its own, optionally behind a bearer token.

The exposition names every project, server uuid and domain on the host, so it is not
served by the API, whose members must not see them: it has its own address
(``metrics.listen``, loopback by default) that can stay on loopback or a management
network, and a scrape never waits behind API requests.

The token lives in a file (``metrics.bearer_token_file``), so it never shows in process
lists or settings dumps. The file is read at every scrape, so replacing it rotates the
token without a restart (Prometheus rereads its ``credentials_file`` the same way), and
the comparison takes the same time whatever the token sent.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import socket
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.registry import Collector

from wattvisor.telemetry.exporter import SnapshotProvider, make_metrics_registry

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
_REALM = 'Bearer realm="wattvisor metrics"'

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class MetricsListenerError(RuntimeError):
    """The listener cannot start; the message names the setting, the value and what to do."""


def read_bearer_token(path: Path) -> bytes:
    """The token in ``path`` without surrounding whitespace (as Prometheus sends it)."""
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise MetricsListenerError(
            f"metrics.bearer_token_file {str(path)!r} cannot be read ({exc.strerror}); "
            "write the token into that file or unset the setting"
        ) from exc
    if not token:
        raise MetricsListenerError(
            f"metrics.bearer_token_file {str(path)!r} is empty; write the token into it"
        )
    return token


def _digest(value: bytes) -> bytes:
    # Comparing digests keeps the comparison's time independent of the token's length too.
    return hashlib.sha256(value).digest()


def _bearer(header: str) -> bytes | None:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip().encode("utf-8", "surrogateescape")


def _reply(
    start_response: Callable[..., Any],
    status: str,
    text: str,
    headers: Iterable[tuple[str, str]] = (),
) -> list[bytes]:
    body = text.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
         *headers],
    )  # fmt: skip
    return [body]


def make_metrics_wsgi_app(
    provider: SnapshotProvider,
    *,
    compat_series: bool = False,
    process_pids: bool = False,
    bearer_token_file: Path | None = None,
    extra: Sequence[Collector] = (),
) -> WSGIApp:
    """WSGI app answering ``GET /metrics`` (and nothing else) with the exposition text.

    With ``bearer_token_file`` a request without ``Authorization: Bearer <that token>``
    gets 401; a token file that cannot be read any more gets 503 (never an open door).
    """
    exposition = make_wsgi_app(
        make_metrics_registry(
            provider, compat_series=compat_series, process_pids=process_pids, extra=extra
        )
    )

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != METRICS_PATH:
            return _reply(start_response, "404 Not Found", f"only {METRICS_PATH} is served here\n")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _reply(start_response, "405 Method Not Allowed", "use GET\n",
                          [("Allow", "GET, HEAD")])  # fmt: skip
        if bearer_token_file is not None:
            try:
                expected = read_bearer_token(bearer_token_file)
            except MetricsListenerError as exc:
                log.error("metrics scrape refused: %s", exc)
                return _reply(start_response, "503 Service Unavailable",
                              "the metrics token is not available on this host\n")  # fmt: skip
            given = _bearer(str(environ.get("HTTP_AUTHORIZATION", "")))
            if given is None or not hmac.compare_digest(_digest(given), _digest(expected)):
                return _reply(start_response, "401 Unauthorized",
                              "send Authorization: Bearer <the metrics token>\n",
                              [("WWW-Authenticate", _REALM)])  # fmt: skip
        result: Iterable[bytes] = exposition(environ, start_response)
        return result

    return app


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape (one every few seconds, forever)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow scraper does not hold up the others."""

    daemon_threads = True
    allow_reuse_address = True


def _server_class(host: str, port: int) -> type[_ThreadingWSGIServer]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise MetricsListenerError(
            f"metrics.listen host {host!r} does not resolve ({exc.strerror}); "
            "use an address of this machine, e.g. '127.0.0.1:9464' or '[::1]:9464'"
        ) from exc
    family = infos[0][0]
    return type("MetricsWSGIServer", (_ThreadingWSGIServer,), {"address_family": family})


def check_listen_address(host: str, port: int) -> None:
    """Refuse early (before start-up does anything else) an address that cannot be bound."""
    server_class = _server_class(host, port)
    with socket.socket(server_class.address_family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _bind_error(host, port, exc) from exc


def _bind_error(host: str, port: int, exc: OSError) -> MetricsListenerError:
    if exc.errno == errno.EADDRINUSE:
        return MetricsListenerError(
            f"metrics.listen {format_url(host, port)} is already in use; stop the other "
            "process or choose another address with metrics.listen / WATTVISOR_METRICS__LISTEN"
        )
    return MetricsListenerError(
        f"metrics.listen {host}:{port} cannot be bound ({exc.strerror}); use an address "
        "of this machine, e.g. '127.0.0.1:9464'"
    )


def format_url(host: str, port: int) -> str:
    """``http://host:port/metrics``, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{METRICS_PATH}"


@dataclass(frozen=True, slots=True)
class MetricsListener:
    """A running ``/metrics`` listener; ``port`` is the bound one (also for port 0)."""

    host: str
    port: int
    token_required: bool
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return format_url(self.host, self.port)

    def stop(self) -> None:
        """Stop accepting scrapes and close the socket (waits for the serving loop)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(
    provider: SnapshotProvider,
    *,
    host: str,
    port: int,
    compat_series: bool = False,
    process_pids: bool = False,
    bearer_token_file: Path | None = None,
    extra: Sequence[Collector] = (),
) -> MetricsListener:
    """Serve ``/metrics`` on ``host:port`` in a background thread; ``port=0`` picks a free port.

    A token file is checked before anything is bound, so a wrong path fails at start-up
    rather than at the first scrape.
    """
    if bearer_token_file is not None:
        read_bearer_token(bearer_token_file)
        mode = bearer_token_file.stat().st_mode
        if mode & stat.S_IROTH:
            log.warning(
                "metrics.bearer_token_file %s is readable by every user; "
                "chmod o-r it (Prometheus needs only its own user or group to read it)",
                bearer_token_file,
            )
    app = make_metrics_wsgi_app(
        provider,
        compat_series=compat_series,
        process_pids=process_pids,
        bearer_token_file=bearer_token_file,
        extra=extra,
    )
    try:
        server = make_server(
            host, port, app, server_class=_server_class(host, port), handler_class=_QuietHandler
        )
    except OSError as exc:
        raise _bind_error(host, port, exc) from exc
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="wattvisor-metrics",
        daemon=True,
    )  # fmt: skip
    thread.start()
    bound_port = int(server.server_address[1])
    return MetricsListener(host, bound_port, bearer_token_file is not None, server, thread)
