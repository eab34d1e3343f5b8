"""A server's serial console log, as Nova's ``os-getConsoleOutput`` serves it, plus following.

Who may read it is decided as for every other part of a server: the owner's project
and admins; another project's server, and a deleted one, are "not found". The host
reads the file (:meth:`HostClient.console_log`): the controller never opens host
files, since hosts will be remote agents.

A server that is on no host (BUILD while scheduling, or ERROR because it never got
one) has an empty log rather than a 409: a follower started right after the create
then simply sees the boot appear. The text is the guest's, as written: the API
replaces invalid UTF-8 and leaves control characters to the client, whose terminal
they could otherwise drive (the CLI shows them escaped).
"""

from __future__ import annotations

from dataclasses import dataclass

from wattvisor.auth import Principal
from wattvisor.compute.errors import ComputeError, HostOperationFailed, InvalidRequest
from wattvisor.compute.hosts import HostRegistry
from wattvisor.compute.names import quoted
from wattvisor.compute.servers import ServerService
from wattvisor.host.console_log import START_CURSOR, CursorError, parse_cursor

MAX_LINES = 100_000
"""The most lines one answer may ask for."""
MAX_BYTES = 1024 * 1024
"""The most bytes of log one answer carries (Nova's libvirt driver stops at 100 KiB)."""


@dataclass(frozen=True, slots=True)
class ConsoleLogView:
    server_uuid: str
    text: str
    lines: int
    truncated: bool
    more: bool
    reset: bool
    next_cursor: str


def parse_lines(value: str | int | None) -> int | None:
    """``lines`` as given in a query (None: all); InvalidRequest naming it otherwise."""
    if value is None:
        return None
    text = str(value).strip()
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_LINES:
        return int(text)
    raise InvalidRequest(
        f"lines {quoted(str(value))} is not accepted; give a whole number from 1 to "
        f"{MAX_LINES}, or leave it out for the whole log (at most {MAX_BYTES} bytes)",
        lines=str(value), accepted=f"1 to {MAX_LINES}",
    )  # fmt: skip


class ConsoleService:
    """Reads servers' console logs from their hosts, for members of their project and admins."""

    def __init__(self, servers: ServerService, hosts: HostRegistry) -> None:
        self.servers = servers
        self.hosts = hosts

    def console_log(
        self,
        principal: Principal,
        server_id: str,
        *,
        lines: str | int | None = None,
        cursor: str | None = None,
    ) -> ConsoleLogView:
        """The end of the log (the last ``lines`` lines), or what follows ``cursor``."""
        record = self.servers.get_live(principal, server_id)
        wanted = parse_lines(lines)
        if cursor is not None:
            try:
                parse_cursor(cursor)
            except CursorError as exc:
                raise InvalidRequest(str(exc), cursor=cursor[:40]) from exc
        if record.host_uuid is None:
            return ConsoleLogView(record.uuid, "", 0, False, False, False, cursor or START_CURSOR)
        try:
            log = self.hosts.client(record.host_uuid).console_log(
                record.uuid, lines=wanted, cursor=cursor, max_bytes=MAX_BYTES
            )
        except ComputeError:
            raise
        except Exception as exc:
            raise HostOperationFailed(
                f"reading the console log of server {record.uuid} failed on its host: {exc}",
                public=f"reading the console log of server {quoted(server_id)} failed on its host",
            ) from exc
        return ConsoleLogView(
            server_uuid=record.uuid, text=log.text, lines=log.line_count,
            truncated=log.truncated, more=log.more, reset=log.reset,
            next_cursor=log.next_cursor,
        )  # fmt: skip
