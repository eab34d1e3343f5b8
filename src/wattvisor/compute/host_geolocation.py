"""Each host's geolocation in the store: looked up from the addresses its agent reports,
or set by an admin.

The controller looks addresses up, not the agent: the database (``geo.database``) is a
setting of the controllers, one file to keep current instead of one per host, and an
agent needs nothing but netlink to report what it has. The lookup runs when a host
joins and whenever a heartbeat reports addresses that differ from the stored ones (or
the database placed them differently since), so a changed address or a database update
is seen within one heartbeat.

Precedence: a geolocation an admin set (``source = admin``) is never replaced by a
lookup; the admin clears it (``null``) to return to the looked-up one. A lookup that
fails is stored as its reason and never refuses a join or a heartbeat.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select, update

from wattvisor.compute.errors import InvalidRequest, NotFound
from wattvisor.compute.names import quoted
from wattvisor.geo import GeoDatabase, InvalidPair, Located, parse_pairs
from wattvisor.geo.database import LOOKUP_FAILED
from wattvisor.host.ip_addresses import host_ip_addresses
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import HostRow
from wattvisor.store.trust_tables import HostAgentRow

log = logging.getLogger(__name__)

_hosts = cast(Table, HostRow.__table__)
_agents = cast(Table, HostAgentRow.__table__)

LOOKUP = "lookup"
ADMIN = "admin"
MAX_IP_ADDRESSES = 256
NO_ADDRESSES_REPORTED = "no public address (the host has not reported its addresses yet)"


@dataclass(frozen=True, slots=True)
class HostLocation:
    """What the host view shows: the pairs, where they came from, why they are empty."""

    pairs: tuple[str, ...]
    source: str | None
    reason: str | None


def locate(database: GeoDatabase, ip_addresses: Sequence[str]) -> Located:
    """``database.locate`` that cannot raise (a failure becomes the reason)."""
    try:
        return database.locate(ip_addresses)
    except Exception as exc:  # GeoDatabase answers failures itself; this is the last guard
        log.exception("geolocation lookup failed")
        return Located((), f"{LOOKUP_FAILED}: {str(exc)[:300] or type(exc).__name__}")


def looked_up_columns(located: Located) -> dict[str, Any]:
    """The ``compute_hosts`` columns of a looked-up geolocation."""
    return {
        "geolocation": list(located.pairs),
        "geolocation_source": LOOKUP,
        "geolocation_reason": located.reason,
    }


def check_ip_addresses(ip_addresses: Sequence[str]) -> list[str]:
    """The reported addresses in canonical form; a list too long or a text that is no IP
    address is refused naming it (the agent sends only what netlink gave it)."""
    if len(ip_addresses) > MAX_IP_ADDRESSES:
        raise InvalidRequest(
            f"{len(ip_addresses)} IP addresses are not accepted; a host reports at most "
            f"{MAX_IP_ADDRESSES}"
        )
    canonical = []
    for text in ip_addresses:
        try:
            canonical.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise InvalidRequest(
                f"IP address {quoted(text[:64])} is not accepted; a host reports IPv4 or "
                "IPv6 addresses such as '192.0.2.7' or '2001:db8::7'",
                ip_address=text[:64],
            ) from None
    return canonical


def refresh_in(
    conn: Connection, database: GeoDatabase, host_uuid: str, ip_addresses: Sequence[str]
) -> tuple[str, tuple[str, ...]] | None:
    """Store the agent's reported addresses and, unless an admin set the host's
    geolocation, the lookup of them; the host's name and pairs afterwards (None: no
    such joined host).

    Runs in the caller's write transaction, writing only what differs."""
    row = conn.execute(
        select(
            _hosts.c.name,
            _agents.c.ip_addresses,
            _hosts.c.geolocation,
            _hosts.c.geolocation_source,
            _hosts.c.geolocation_reason,
        )
        .join(_hosts, _hosts.c.provider_uuid == _agents.c.host_uuid)
        .where(_agents.c.host_uuid == host_uuid)
    ).first()
    if row is None:
        return None
    current = (str(row.name), tuple(row.geolocation or ()))
    reported = list(ip_addresses)
    if row.ip_addresses != reported:
        conn.execute(
            update(_agents).where(_agents.c.host_uuid == host_uuid).values(ip_addresses=reported)
        )
    if row.geolocation_source == ADMIN:
        return current
    wanted = looked_up_columns(locate(database, reported))
    stored = {
        "geolocation": row.geolocation if row.geolocation is not None else None,
        "geolocation_source": row.geolocation_source,
        "geolocation_reason": row.geolocation_reason,
    }
    if stored == wanted:
        return current
    conn.execute(
        update(_hosts)
        .where(
            _hosts.c.provider_uuid == host_uuid, _hosts.c.geolocation_source.is_distinct_from(ADMIN)
        )
        .values(**wanted)
    )
    log.info(
        "host %s geolocation now %s%s", host_uuid, ", ".join(wanted["geolocation"]) or "empty",
        f" ({wanted['geolocation_reason']})" if wanted["geolocation_reason"] else "",
    )  # fmt: skip
    return current[0], tuple(wanted["geolocation"])


class HostGeolocation:
    """Admin changes and views of hosts' geolocation."""

    def __init__(
        self,
        engine: Engine,
        database: GeoDatabase,
        local_addresses: Callable[[], list[str]] = host_ip_addresses,
    ) -> None:
        self.engine = engine
        self.database = database
        self.local_addresses = local_addresses
        """This machine's addresses: those of a host driven here (``local``), which no
        agent reports."""

    def refresh(
        self, host_uuid: str, ip_addresses: Sequence[str]
    ) -> tuple[str, tuple[str, ...]] | None:
        """:func:`refresh_in` in a transaction of its own."""
        with write_transaction(self.engine) as conn:
            return refresh_in(conn, self.database, host_uuid, ip_addresses)

    def refresh_local(self, host_uuid: str, ip_addresses: Sequence[str]) -> None:
        """A host this controller drives itself (no agent reports for it): look its
        addresses up unless an admin set its geolocation."""
        wanted = looked_up_columns(locate(self.database, ip_addresses))
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(_hosts)
                .where(
                    _hosts.c.provider_uuid == host_uuid,
                    _hosts.c.geolocation_source.is_distinct_from(ADMIN),
                )
                .values(**wanted)
            )

    def set_by_admin(self, host_uuid: str, pairs: Sequence[object] | None) -> None:
        """Pin the host's geolocation to ``pairs`` (kept until cleared); ``None`` clears it
        and looks the host's last reported addresses up again at once.

        A bad pair is refused naming it, and nothing changes."""
        if pairs is not None:
            try:
                canonical = parse_pairs(pairs)
            except InvalidPair as exc:
                raise InvalidRequest(str(exc), geolocation=_shown(exc.value)) from exc
        with write_transaction(self.engine) as conn:
            found = conn.execute(
                select(_hosts.c.provider_uuid, _hosts.c.local, _agents.c.ip_addresses)
                .outerjoin(_agents, _agents.c.host_uuid == _hosts.c.provider_uuid)
                .where(_hosts.c.provider_uuid == host_uuid)
            ).first()
            if found is None:
                raise NotFound(f"host {quoted(host_uuid)} does not exist", host_id=host_uuid)
            if pairs is not None:
                values: dict[str, Any] = {
                    "geolocation": canonical,
                    "geolocation_source": ADMIN,
                    "geolocation_reason": None,
                }
            elif found.ip_addresses is not None:
                values = looked_up_columns(locate(self.database, found.ip_addresses))
            elif found.local:
                values = looked_up_columns(locate(self.database, self._local_addresses()))
            else:
                values = {
                    "geolocation": [],
                    "geolocation_source": LOOKUP,
                    "geolocation_reason": NO_ADDRESSES_REPORTED,
                }
            conn.execute(update(_hosts).where(_hosts.c.provider_uuid == host_uuid).values(**values))

    def _local_addresses(self) -> list[str]:
        try:
            return self.local_addresses()
        except Exception:
            log.exception("reading this machine's addresses failed")
            return []

    def place(self, host_uuid: str) -> tuple[str, tuple[str, ...]] | None:
        """The host's name and pairs (for ``wattvisor_host_info``); None: no such host."""
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_hosts.c.name, _hosts.c.geolocation).where(
                    _hosts.c.provider_uuid == host_uuid
                )
            ).first()
        return None if row is None else (str(row.name), tuple(row.geolocation or ()))

    def of(self, host_uuid: str) -> HostLocation:
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(
                    _hosts.c.geolocation, _hosts.c.geolocation_source, _hosts.c.geolocation_reason
                ).where(_hosts.c.provider_uuid == host_uuid)
            ).first()
        if row is None:
            raise NotFound(f"host {quoted(host_uuid)} does not exist", host_id=host_uuid)
        return location_of(row)


def location_of(row: Any) -> HostLocation:
    """The location columns of a ``compute_hosts`` row as the host view shows them."""
    source = row.geolocation_source
    reason = row.geolocation_reason
    if source is None:
        reason = NO_ADDRESSES_REPORTED
    return HostLocation(tuple(row.geolocation or ()), source, reason)


def _shown(value: object) -> object:
    return value if isinstance(value, int | float | str) else repr(value)[:100]
