"""Image files fetched from the controller, for a host that does not share its disk.

An agent's spawn names the image's files by the controller's paths, which mean
nothing on the host; :class:`ControllerImages` turns each into an
:class:`HttpImageSource` reading ``GET /v1/images/{id}/file?part=`` with the host's
own token. The host's :class:`~wattvisor.host.image_cache.ImageCache` does the rest:
a download goes to a ``.part`` file, is checked against the sha256 and size the
spawn request carries, and only then renamed into place.

Every request after the first byte asks ``Range: bytes=<offset>-`` with
``If-Range: "sha256:<expected>"``: an interrupted download resumes where it stopped,
and the controller answers a range only while it still serves that very content.
A lost connection or a 5xx answer is an interruption (resumed, a bounded number of
times); a 4xx answer or a digest the controller names differently is final.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from wattvisor.host.image_cache import (
    ContentMismatch,
    ExpectedContent,
    ImageCacheError,
    SourceInterrupted,
)

if TYPE_CHECKING:
    from wattvisor.agent.credentials import AgentCredentials

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class HttpImageSource:
    """One image file on the controller (see the module text)."""

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        image_id: str,
        part: str,
        expected: ExpectedContent,
        token: Callable[[], str],
    ) -> None:
        self.client = client
        self.url = f"{base_url.rstrip('/')}/v1/images/{quote(image_id, safe='')}/file?part={part}"
        self.image_id = image_id
        self.part = part
        self.expected = expected
        self.token = token

    def describe(self) -> str:
        return f"the controller ({self.url})"

    def identity(self) -> list[object] | None:
        return None  # only the expected digest says what content this is

    def read_from(self, offset: int) -> Iterator[bytes]:
        headers = {"Authorization": f"Bearer {self.token()}"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = f'"sha256:{self.expected.sha256}"'
        try:
            with self.client.stream("GET", self.url, headers=headers) as response:
                self._check(response, offset)
                # As the bytes arrive (at most a socket read each): what came before a
                # dropped connection is kept, and the resume starts after it.
                yield from response.iter_raw()
        except httpx.TransportError as exc:
            raise SourceInterrupted(f"{type(exc).__name__}: {exc}") from exc

    def _check(self, response: httpx.Response, offset: int) -> None:
        status = response.status_code
        if status >= 500:
            raise SourceInterrupted(f"the controller answered {status}")
        if status not in (200, 206):
            response.read()
            raise ImageCacheError(
                f"the controller refused the {self.part} of image {self.image_id}: {status} "
                f"{_error_message(response)}"
            )
        served = response.headers.get("x-image-sha256")
        if served is not None and served != self.expected.sha256:
            raise ContentMismatch(
                f"the controller serves the {self.part} of image {self.image_id} as sha256 "
                f"{served}, but the spawn expects sha256 {self.expected.sha256}; it is not "
                "fetched (the image changed after the server was scheduled)"
            )
        if offset > 0:
            wanted = f"bytes {offset}-"
            if status != 206 or not response.headers.get("content-range", "").startswith(wanted):
                raise ContentMismatch(
                    f"the controller did not resume the {self.part} of image {self.image_id} "
                    f"at byte {offset} (answered {status}, content-range "
                    f"{response.headers.get('content-range')!r}); the download is not used"
                )


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


class ControllerImages:
    """The image files of one controller, fetched with the host's own token.

    ``token`` is called for every request (a host token lives for minutes; a long
    download's resumes each get a fresh one).
    """

    def __init__(
        self,
        base_url: str,
        token: Callable[[], str],
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url
        self.token = token
        self.client = client or httpx.Client(timeout=DEFAULT_TIMEOUT)

    @classmethod
    def for_agent(cls, credentials: AgentCredentials) -> ControllerImages:
        """The image files of the controller the agent joined (its URL from the join),
        fetched with the agent's host tokens: what ``wattvisor agent`` gives its
        :class:`~wattvisor.compute.local_host.LocalHostClient` as ``image_sources``."""
        return cls(credentials.trust().controller_url, credentials.host_token)

    def source(
        self, image_id: str, part: str, path: str, expected: ExpectedContent | None
    ) -> HttpImageSource:
        """The ``part`` file of the image (``path`` is the controller's, unused here)."""
        if expected is None:
            raise ImageCacheError(
                f"the {part} of image {image_id} has no recorded sha256; a host fetches "
                "only what it can check (the controller records it when it can read the file)"
            )
        return HttpImageSource(self.client, self.base_url, image_id, part, expected, self.token)

    def close(self) -> None:
        self.client.close()
