"""A keep-alive HTTP/1.1 client of the standard library, for the benchmarks' timed loops.

The benchmarks measure the server. ``httpx.Client`` spent about 4 ms of CPU per request
in the benchmark's own interpreter (twenty threads sharing its GIL), on a machine of two
cores that the server shares: the client took a core's worth of CPU from the server it
was measuring. ``http.client`` on one held connection spends under 1 ms.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any


class Answer:
    """A response read to its end: status, body bytes, and the body as JSON on demand."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.content = body

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise RuntimeError(f"HTTP {self.status_code}: {self.text[:200]}")


class KeepAliveClient:
    """One connection to ``base_url`` (``http://host:port``), reused for every request."""

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"base URL {base_url!r} is not http://HOST:PORT")
        self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self._headers = dict(headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Answer:
        if params:
            path += "?" + urllib.parse.urlencode(params)
        headers = dict(self._headers)
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        return Answer(response.status, response.read())

    def post(self, path: str, json: Any = None) -> Answer:
        return self.request("POST", path, json_body=json)

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Answer:
        return self.request("GET", path, params=params)

    def close(self) -> None:
        self._connection.close()
