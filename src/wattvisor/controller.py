"""A controller of a fleet: API, scheduler and task worker on a shared PostgreSQL store.

Any number of controllers run side by side on one store. None holds state of its own:
a request's work is a task in the store that whichever controller claims it runs, a
duty only one may do at a time (power sync) is a PostgreSQL advisory lock, and a
controller that dies leaves its tasks to the others once their leases run out. A
controller drives no host of its own: it calls the agents of the hosts that joined
(``wattvisor agent``), as the store lists them. ``wattvisor up`` stays the
all-in-one on SQLite (:mod:`wattvisor.allinone`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Depends, FastAPI
from sqlalchemy import Engine, text

from wattvisor.allinone import build_host_trust, run_history_duties
from wattvisor.api.app import create_app
from wattvisor.api.energy_routes import build_energy_router
from wattvisor.api.host_trust_routes import build_host_trust_router
from wattvisor.api.image_file_routes import build_image_file_router
from wattvisor.api.prometheus_routes import build_prometheus_router
from wattvisor.api.v1_routes import build_v1_router
from wattvisor.auth.errors import KeyFileError
from wattvisor.auth.fastapi import Authenticator, make_admin_dependency
from wattvisor.auth.keys import bootstrap_admin
from wattvisor.compute import Compute, HostClient
from wattvisor.compute.hostclient_http import HttpHostClient
from wattvisor.compute.prometheus_targets import FileSdWriter
from wattvisor.config import Settings
from wattvisor.placement import Placement
from wattvisor.store import make_engine, migrate
from wattvisor.store.duties import advisory_key

log = logging.getLogger(__name__)


@contextmanager
def _one_at_a_time(engine: Engine, name: str) -> Iterator[None]:
    """Wait for, then hold, a PostgreSQL advisory lock named ``name`` (SQLite: one
    process only, nothing to wait for)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    key = advisory_key(name)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


class ControllerStoreError(Exception):
    """The store URL cannot be shared by controllers; the message names it."""


def check_shared_store(url: str) -> None:
    """Refuse a store other controllers cannot share: only PostgreSQL gives the row locks
    (``SKIP LOCKED``) and advisory locks a fleet relies on."""
    scheme = url.split("://", 1)[0]
    if not scheme.startswith("postgresql"):
        raise ControllerStoreError(
            f"store.url scheme {scheme!r} cannot be shared by controllers; a controller needs "
            "PostgreSQL (store.url = 'postgresql+psycopg://user@host/db'). For one machine "
            "on SQLite use 'wattvisor up'"
        )


@dataclass
class Controller:
    """The running pieces of one controller; :meth:`build` wires them."""

    settings: Settings
    engine: Engine
    placement: Placement
    compute: Compute
    app: FastAPI
    admin_message: str
    notes: list[str] = field(default_factory=list)
    file_sd: FileSdWriter | None = None
    _duties_stop: threading.Event = field(default_factory=threading.Event)
    _duties: threading.Thread | None = None

    @classmethod
    def build(cls, settings: Settings, *, require_shared_store: bool = True) -> Controller:
        """Migrate the store (migrations serialise themselves) and wire API and compute;
        nothing runs until :meth:`start`."""
        url = settings.store_url
        if require_shared_store:
            check_shared_store(url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url)
        migrate(engine)
        placement = Placement(engine)

        with _one_at_a_time(engine, "controller-setup"):
            trust, notes = build_host_trust(settings, engine, placement)
        signer = trust.signer

        def open_agent(url: str) -> HostClient:
            # A host that joined through its agent; every call carries the controller token.
            if signer is None:
                raise KeyFileError("this controller holds no cluster key to call agents with")
            return HttpHostClient(
                url,
                signer.controller_token,
                timeout_s=settings.agent.call_timeout_s,
                ca_file=settings.agent.ca_file,
            )

        admin = bootstrap_admin(settings)
        compute = Compute.build(
            engine,
            placement,
            settings,
            client_factory=open_agent,
            protected_users=frozenset({admin.user.name}),
        )
        with _one_at_a_time(engine, "controller-setup"):
            # What every controller makes sure exists; done by one after another, so two
            # starting together do not both create the same flavor.
            user = admin.user
            compute.users.register(
                user.name, user.project, user.role, user.public_key, replace=True
            )
            if settings.compute.default_flavors:
                compute.ensure_default_flavors()
        authenticator = Authenticator(
            compute.users.lookup,
            settings.auth,
            host_keys=trust.host_keys,
            join_verifier=trust.join_verifier,
        )
        authenticated = authenticator.dependency
        admin_only = make_admin_dependency(authenticated)
        history = compute.power.history
        assert history is not None
        app = create_app(
            settings,
            placement=placement,
            placement_dependencies=[Depends(admin_only)],
            # The agents' routes first: every host heartbeats and pushes its energy every
            # few seconds, and a request is matched against the routes in order (each
            # route tried costs; no two of these routers answer the same path and method).
            # Image files serve the agents' builds; the pushes make the fleet's history.
            routers=[
                build_host_trust_router(trust, authenticator, authenticated, admin_only),
                build_prometheus_router(
                    engine,
                    authenticated,
                    admin_only,
                    compat_series=settings.energy.compat_series,
                    address_family=settings.history.prometheus_vm_address,
                ),
                build_energy_router(history, compute.power, authenticated, admin_only),
                build_image_file_router(compute, authenticated),
                build_v1_router(compute, authenticated, admin_only),
            ],
            authenticator=authenticator,
        )
        app.state.host_trust = trust
        trust.on_return = compute.reconcile_soon  # a host back from down: look at it now
        app.state.compute = compute
        return cls(settings, engine, placement, compute, app, admin.message, notes)

    def start(self) -> list[str]:
        """Run tasks (also those a dead controller left) and the power-sync duty; one line
        per server whose work had to be queued again."""
        # Not the volume clean-up of ``wattvisor up``: a volume another controller is
        # creating right now looks exactly like one a dead controller left.
        notes = self.compute.servers.recover()
        self.compute.start(self.settings.compute.power_sync_interval_s)
        if self.file_sd is None:
            sd = self.settings.history
            self.file_sd = FileSdWriter(
                self.engine, sd.prometheus_file_sd, sd.prometheus_vm_file_sd,
                sd.prometheus_file_sd_interval_s, family=sd.prometheus_vm_address,
            )  # fmt: skip
            self.file_sd.start()
        history = self.compute.power.history
        interval = self.settings.history.downsample_interval_s
        if history is not None and interval > 0 and self._duties is None:
            self._duties_stop.clear()
            self._duties = threading.Thread(
                target=run_history_duties,
                args=(history, interval, self._duties_stop),
                name="wattvisor-history", daemon=True,
            )  # fmt: skip
            self._duties.start()
        return notes

    def stop(self) -> None:
        """Finish the running tasks (those still running are left to their leases)."""
        if self.file_sd is not None:
            self.file_sd.stop()
            self.file_sd = None
        self._duties_stop.set()
        if self._duties is not None:
            self._duties.join(10)
            self._duties = None
        self.app.state.host_trust.close()
        self.compute.close()
        self.engine.dispose()
