"""``GET /v1/images/{id}/file?part=``: an image's disk, kernel or initrd, for hosts to cache.

Streamed from the controller's file in bounded chunks (never read whole into memory),
with the registered sha256 and size in the headers, so the host can check what it got
before using it:

- ``Content-Length``, ``X-Image-Sha256``, ``X-Image-Size``, ``Repr-Digest``
  (RFC 9530, ``sha-256=:<base64>:``, the digest of the whole file whatever range is
  sent) and ``ETag: "sha256:<hex>"``;
- ``Range: bytes=<first>-[<last>]`` (one range, RFC 9110) answers 206 with
  ``Content-Range``, so an interrupted download resumes where it stopped; with
  ``If-Range: <etag>`` the range is honoured only while the file is still that
  content (else the whole file, 200), so a resumed download never mixes two contents.

Hosts (their own token) and admins may read image files; members may not: an image's
files are the operator's (a licensed disk, a kernel build), and members boot images,
they never need their bytes. A file that changed after registration is refused (409
``image_file_changed``), never served in place of the registered content.
"""

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from wattvisor.api.v1_routes import known_query
from wattvisor.api.v1_schemas import ERROR_RESPONSES
from wattvisor.auth import Principal
from wattvisor.auth.errors import AccessDenied
from wattvisor.auth.fastapi import PermissionDenied
from wattvisor.compute import Compute
from wattvisor.compute.image_files import IMAGE_PARTS, FileDigest, check_part

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_Dependency = Callable[..., Awaitable[Principal]]


def _etag(digest: FileDigest) -> str:
    return f'"sha256:{digest.sha256}"'


def digest_headers(digest: FileDigest) -> dict[str, str]:
    """The headers naming the whole file's content, on every answer about it."""
    b64 = base64.b64encode(bytes.fromhex(digest.sha256)).decode()
    return {
        "Accept-Ranges": "bytes",
        "ETag": _etag(digest),
        "X-Image-Sha256": digest.sha256,
        "X-Image-Size": str(digest.size),
        "Repr-Digest": f"sha-256=:{b64}:",
    }


def byte_range(
    header: str | None, if_range: str | None, digest: FileDigest
) -> tuple[int, int] | None:
    """The ``(start, end)`` (end exclusive) a ``Range`` header asks of the file; None for
    the whole file (no header, several ranges, or an ``If-Range`` of other content).
    Raises ``ValueError`` when the range cannot be satisfied."""
    if header is None or (if_range is not None and if_range.strip() != _etag(digest)):
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges or another unit: RFC 9110 lets us send it all
    first, last = match.groups()
    size = digest.size
    if first == "" and last == "":
        return None
    if first == "":  # the last N bytes
        count = int(last)
        if count == 0:
            raise ValueError(header)
        return max(0, size - count), size
    start = int(first)
    end = size if last == "" else min(size, int(last) + 1)
    if start >= size or end <= start:
        raise ValueError(header)
    return start, end


def build_image_file_router(compute: Compute, authenticated: _Dependency) -> APIRouter:
    """The image file route; ``authenticated`` gives the principal (host tokens admitted
    by :func:`wattvisor.auth.policy.check_route` for this path)."""
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES, dependencies=[Depends(known_query)])
    Caller = Annotated[Principal, Depends(authenticated)]

    @router.get(
        "/images/{image_id}/file",
        tags=["images"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
    )
    def image_file(
        image_id: str,
        request: Request,
        principal: Caller,
        part: Annotated[str, Query(description=f"which file: {', '.join(IMAGE_PARTS)}")] = "disk",
    ) -> Response:
        """The image's file, for a host to cache (hosts and admins only; Range resumes)."""
        if not (principal.is_host or principal.is_admin):
            raise PermissionDenied(
                AccessDenied(
                    f"image files are read by hosts and admins; user {principal.user!r} "
                    f"(role {principal.role}) boots images by id instead",
                    user=principal.user,
                )
            )
        opened = compute.catalog.open_image_file(image_id, check_part(part))
        digest = opened.digest
        headers = digest_headers(digest)
        try:
            wanted = byte_range(
                request.headers.get("range"), request.headers.get("if-range"), digest
            )
        except ValueError:
            opened.close()
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{digest.size}"}
            )
        start, end = wanted if wanted is not None else (0, digest.size)
        headers["Content-Length"] = str(end - start)
        status = 200
        if wanted is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{digest.size}"
        return StreamingResponse(
            opened.chunks(start, end),
            status_code=status,
            headers=headers,
            media_type="application/octet-stream",
        )

    return router
