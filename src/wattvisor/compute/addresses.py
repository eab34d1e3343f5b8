"""Static addresses of servers: one slot per server on the network, held in the store.

Slot ``n`` is the ``n``-th address of the IPv4 subnet and, at the same offset, of
the IPv6 subnet, so one number says both. The lowest free slot is taken (the
gateway's is never handed out), so a server's addresses depend only on what is
held already; the table's primary key ``(network, slot)`` makes a second holder
impossible, also with several controllers: a lost race just tries the next slot.
The MAC is derived from the server's uuid under OpenStack's ``fa:16:3e`` prefix
(another one when that is taken on the network), and stored with the addresses.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, delete, exists, insert, select
from sqlalchemy.exc import IntegrityError

from wattvisor.compute.errors import ComputeError
from wattvisor.compute.records import ServerAddress
from wattvisor.host.networks import GuestAddress, GuestNetwork, NetworkSpec
from wattvisor.store import read_transaction, write_transaction
from wattvisor.store.compute_tables import ServerAddressRow

_addresses = cast(Table, ServerAddressRow.__table__)
_next = _addresses.alias("next_held")
MAC_PREFIX = "fa:16:3e"
_MAX_RACES = 50
_MAC_CHOICES = 16


class AddressesExhausted(ComputeError):
    """Every address of the network's subnet is held; the message names network and subnet."""

    status = 409
    code = "addresses_exhausted"


def derived_mac(server_uuid: str, attempt: int = 0) -> str:
    """A stable, locally unique-looking MAC for the server (``fa:16:3e:xx:xx:xx``)."""
    digest = hashlib.sha256(f"{server_uuid.lower()}/{attempt}".encode()).digest()
    return MAC_PREFIX + "".join(f":{b:02x}" for b in digest[:3])


class AddressBook:
    """Allocates, lists and releases the servers' addresses on one network."""

    def __init__(self, engine: Engine, spec: NetworkSpec) -> None:
        self.engine = engine
        self.spec = spec
        self._v4 = ipaddress.IPv4Network(spec.ipv4_subnet)
        self._v6 = ipaddress.IPv6Network(spec.ipv6_subnet) if spec.ipv6_subnet else None
        self._reserved = {1, int(ipaddress.IPv4Address(spec.ipv4_gateway)) - int(self._v4[0])}
        self._slots = [s for s in range(1, self._v4.num_addresses - 1) if s not in self._reserved]
        self._allowed = frozenset(self._slots)

    @property
    def capacity(self) -> int:
        """How many servers the subnet has room for."""
        return len(self._slots)

    def allocate(self, server_uuid: str) -> GuestNetwork:
        """The server's interface and addresses: those it holds already, else new ones.

        Raises :class:`AddressesExhausted` when the subnet is full; nothing is held then.
        """
        for _ in range(_MAX_RACES):
            held = self._held(server_uuid)
            if held is not None:
                return held
            macs = [derived_mac(server_uuid, attempt) for attempt in range(_MAC_CHOICES)]
            with read_transaction(self.engine) as conn:
                slot = self._lowest_free_slot(conn)
                used_macs = set(
                    conn.execute(
                        select(_addresses.c.mac).where(
                            (_addresses.c.network == self.spec.name) & _addresses.c.mac.in_(macs)
                        )
                    ).scalars()
                )
            if slot is None:
                raise AddressesExhausted(
                    f"network {self.spec.name!r} has no free address left: all "
                    f"{self.capacity} addresses of subnet {self.spec.ipv4_subnet} are held "
                    "by servers; delete a server or configure a larger [host.network] "
                    "ipv4_subnet",
                    network=self.spec.name, subnet=self.spec.ipv4_subnet,
                    capacity=self.capacity,
                )  # fmt: skip
            mac = next((m for m in macs if m not in used_macs), None)
            if mac is None:  # pragma: no cover - 16 derived MACs all taken: practically never
                raise AddressesExhausted(
                    f"network {self.spec.name!r}: every MAC derived for server {server_uuid} "
                    "is taken",
                    network=self.spec.name,
                )
            ipv4, ipv6 = self._addresses_of(slot)
            try:
                with write_transaction(self.engine) as conn:
                    conn.execute(
                        insert(_addresses).values(
                            network=self.spec.name, slot=slot, server_uuid=server_uuid,
                            mac=mac, ipv4=ipv4, ipv6=ipv6,
                            created_at=datetime.now(UTC),
                        )
                    )  # fmt: skip
            except IntegrityError:
                continue  # another server took the slot or the MAC meanwhile: look again
        raise AddressesExhausted(
            f"network {self.spec.name!r}: no address could be held for server "
            f"{server_uuid} after {_MAX_RACES} tries against concurrent allocations",
            network=self.spec.name,
        )

    def _lowest_free_slot(self, conn: Connection) -> int | None:
        """The lowest slot no server holds, found without reading every held slot.

        It is the first slot of the subnet, or follows a held slot (a gap, found in
        SQL), or follows a reserved one (the gateway's). The few lowest gaps are
        enough: only reserved slots and the one past the end are not slots to give.
        """
        network = _addresses.c.network == self.spec.name
        after = _addresses.c.slot + 1
        held_next = _next.c.slot == after
        gaps = conn.execute(
            select(after)
            .where(network & ~exists().where((_next.c.network == self.spec.name) & held_next))
            .order_by(after)
            .limit(len(self._reserved) + 2)
        ).scalars()
        starts = {self._slots[0]} | {r + 1 for r in self._reserved} if self._slots else set()
        taken = set(
            conn.execute(
                select(_addresses.c.slot).where(network & _addresses.c.slot.in_(starts))
            ).scalars()
        )
        candidates = {*gaps, *(starts - taken)} & self._allowed
        return min(candidates, default=None)

    def _addresses_of(self, slot: int) -> tuple[str, str | None]:
        ipv6 = str(self._v6[slot]) if self._v6 is not None else None
        return str(self._v4[slot]), ipv6

    def _held(self, server_uuid: str) -> GuestNetwork | None:
        with read_transaction(self.engine) as conn:
            row = conn.execute(
                select(_addresses).where(
                    (_addresses.c.network == self.spec.name)
                    & (_addresses.c.server_uuid == server_uuid)
                )
            ).first()
        return None if row is None else self._guest_network(row)

    def _guest_network(self, row: Any) -> GuestNetwork:
        addresses = [
            GuestAddress(
                version=4, address=row.ipv4, prefix=self._v4.prefixlen,
                gateway=self.spec.ipv4_gateway,
            )
        ]  # fmt: skip
        if row.ipv6 is not None and self._v6 is not None:
            addresses.append(
                GuestAddress(
                    version=6, address=row.ipv6, prefix=self._v6.prefixlen,
                    gateway=self.spec.ipv6_gateway,
                )
            )  # fmt: skip
        return GuestNetwork(spec=self.spec, mac=row.mac, addresses=tuple(addresses))

    def release(self, server_uuid: str) -> None:
        """Free every address the server holds (on any network); nothing held is fine."""
        with write_transaction(self.engine) as conn:
            conn.execute(delete(_addresses).where(_addresses.c.server_uuid == server_uuid))

    def of(self, server_uuids: Iterable[str]) -> dict[str, tuple[ServerAddress, ...]]:
        """The addresses of each server that holds any, IPv4 first."""
        wanted = list(server_uuids)
        if not wanted:
            return {}
        found: dict[str, list[ServerAddress]] = {}
        with read_transaction(self.engine) as conn:
            for start in range(0, len(wanted), 500):
                rows = conn.execute(
                    select(_addresses)
                    .where(_addresses.c.server_uuid.in_(wanted[start : start + 500]))
                    .order_by(_addresses.c.network, _addresses.c.slot)
                ).all()
                for row in rows:
                    listed = found.setdefault(row.server_uuid, [])
                    listed.append(ServerAddress(row.network, 4, row.ipv4, row.mac))
                    if row.ipv6 is not None:
                        listed.append(ServerAddress(row.network, 6, row.ipv6, row.mac))
        return {uuid: tuple(listed) for uuid, listed in found.items()}
