"""The ``/v1`` API: flavors, images, servers, volumes, interfaces, power, hosts, users.

Routes only translate: HTTP in, a call to :class:`wattvisor.compute.Compute`, a
response model out. Who sees what is the service's business (another project's
server is "not found"); which fields a member sees is decided once, here, by
:func:`wattvisor.auth.redact_for` over fields marked admin-only in the schemas.

(No ``from __future__ import annotations``: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from wattvisor.api.request_threads import run_blocking
from wattvisor.api.v1_schemas import (
    ERROR_RESPONSES,
    ConsoleLog,
    Flavor,
    FlavorCreate,
    Host,
    HostDisable,
    HostUpdate,
    Image,
    ImageCreate,
    Interface,
    InterfaceCreate,
    Me,
    Migration,
    Power,
    Project,
    Server,
    ServerCreate,
    ServerMigrate,
    ServerPower,
    ServerResize,
    ServerUpdate,
    User,
    UserCreate,
    UserUpdate,
    Volume,
    VolumeAttach,
    VolumeCreate,
)
from wattvisor.auth import Principal, redact_for
from wattvisor.compute import Compute, InvalidRequest, ServerRecord, VolumeRecord
from wattvisor.compute.console import MAX_BYTES, MAX_LINES
from wattvisor.compute.names import quoted

PREFIX = "/v1"
WAIT_POLL_S = 0.1
"""How often ``wait_s`` asks the store whether the server's task has finished."""
MAX_WAIT_S = 60.0
"""The longest ``GET /v1/servers/{id}?wait_s=`` holds a request open."""

Dependency = Callable[..., Awaitable[Principal]]


def respond(principal: Principal, value: Any, status: int = 200) -> JSONResponse:
    """``value`` (models or lists of them) as ``principal`` may see it."""
    return JSONResponse(redact_for(principal, value), status_code=status)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route and its dependencies take."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not take: a mistyped ``wait_s`` would
    otherwise be ignored without a word and the answer come at once.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in
    its thread pool, and that hop to a thread and back cost every ``/v1`` request more
    than the check itself (it reads only the request)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    known = sorted(_query_names(route.dependant))
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in known]
    if unknown:
        shown = ", ".join(quoted(k) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidRequest(
            f"query parameter {shown}{more} is not accepted here; accepted: "
            f"{', '.join(known) or '(none)'}",
            accepted=known,
        )


def build_v1_router(compute: Compute, authenticated: Dependency, admin: Dependency) -> APIRouter:
    """The ``/v1`` routes over ``compute``; every route needs a token, some an admin's."""
    router = APIRouter(
        prefix=PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(known_query)]
    )
    servers = compute.servers
    devices = compute.devices
    power = compute.power
    Member = Annotated[Principal, Depends(authenticated)]
    Admin = Annotated[Principal, Depends(admin)]

    def server_view(
        principal: Principal,
        record: ServerRecord,
        names: dict[str, str] | None = None,
        down: Collection[str] | None = None,
    ) -> Server:
        if names is None:
            # Host names are for admins: a member's view needs no store read for them.
            wanted = principal.is_admin and record.host_uuid
            names = compute.hosts.names() if wanted else {}
        if down is None:
            behind_agent = record.host_uuid and not compute.hosts.driven_here(record.host_uuid)
            down = compute.hosts.down_hosts() if behind_agent else ()
        host = names.get(record.host_uuid or "")
        # Members read the fault as written for them; admins the host's own words.
        fault = (record.fault_detail or record.fault) if principal.is_admin else record.fault
        return Server.of(record, host, fault, host_down=record.host_uuid in down)

    # -- identity ----------------------------------------------------------------------

    @router.get("/me", response_model=Me, tags=["users"])
    def me(principal: Member) -> Me:
        """Who the token belongs to, as the server knows them."""
        return Me(user=principal.user, project=principal.project, role=principal.role)

    # -- flavors -----------------------------------------------------------------------

    @router.get("/flavors", response_model=list[Flavor], tags=["flavors"])
    def list_flavors(principal: Member) -> list[Flavor]:
        return [Flavor.of(f) for f in compute.catalog.flavors()]

    @router.post("/flavors", response_model=Flavor, status_code=201, tags=["flavors"])
    def create_flavor(body: FlavorCreate, principal: Admin) -> Flavor:
        """Extra specs are checked with the scheduler's schema (e.g. hw:power_metrics)."""
        return Flavor.of(
            compute.catalog.create_flavor(
                body.name, body.vcpus, body.ram_mb, body.disk_gb, swap_mb=body.swap_mb,
                ephemeral_gb=body.ephemeral_gb, extra_specs=body.extra_specs,
                flavor_id=body.id,
            )
        )  # fmt: skip

    @router.get("/flavors/{flavor_id}", response_model=Flavor, tags=["flavors"])
    def show_flavor(flavor_id: str, principal: Member) -> Flavor:
        return Flavor.of(compute.catalog.flavor(flavor_id))

    @router.delete("/flavors/{flavor_id}", status_code=204, tags=["flavors"])
    def delete_flavor(flavor_id: str, principal: Admin) -> Response:
        compute.catalog.delete_flavor(flavor_id)
        return Response(status_code=204)

    # -- images ------------------------------------------------------------------------

    @router.get("/images", response_model=list[Image], tags=["images"])
    def list_images(principal: Member) -> JSONResponse:
        return respond(principal, [Image.of(i) for i in compute.catalog.images()])

    @router.post("/images", response_model=Image, status_code=201, tags=["images"])
    def create_image(body: ImageCreate, principal: Admin) -> JSONResponse:
        """Boot by kernel + initrd + cmdline, or from a disk file; paths are host paths."""
        record = compute.catalog.create_image(
            body.name, properties=body.properties, kernel_path=body.kernel_path,
            initrd_path=body.initrd_path, cmdline=body.cmdline, disk_path=body.disk_path,
            disk_format=body.disk_format,
        )  # fmt: skip
        return respond(principal, Image.of(record), 201)

    @router.get("/images/{image_id}", response_model=Image, tags=["images"])
    def show_image(image_id: str, principal: Member) -> JSONResponse:
        return respond(principal, Image.of(compute.catalog.image(image_id)))

    @router.delete("/images/{image_id}", status_code=204, tags=["images"])
    def delete_image(image_id: str, principal: Admin) -> Response:
        compute.catalog.delete_image(image_id)
        return Response(status_code=204)

    # -- servers -----------------------------------------------------------------------

    @router.get("/servers", response_model=list[Server], tags=["servers"])
    def list_servers(principal: Member) -> JSONResponse:
        """Your project's servers (an admin's: every project's), deleted ones left out."""
        names = compute.hosts.names()
        listed = servers.list_all(principal)
        hosts = {s.host_uuid for s in listed if s.host_uuid}
        behind_agents = any(not compute.hosts.driven_here(h) for h in hosts)
        down = compute.hosts.down_hosts() if behind_agents else {}
        return respond(principal, [server_view(principal, s, names, down) for s in listed])

    @router.post("/servers", response_model=Server, status_code=202, tags=["servers"])
    async def create_server(body: ServerCreate, principal: Member) -> JSONResponse:
        """Accepted with status BUILD; it becomes ACTIVE, or ERROR with a fault saying why."""

        def create() -> JSONResponse:
            record = servers.create(
                principal, body.name, body.flavor, body.image, power_metrics=body.power_metrics,
                boot_volume=body.boot_volume, metadata=body.metadata,
            )  # fmt: skip
            return respond(principal, server_view(principal, record), 202)

        return await run_blocking(create)

    @router.get("/servers/{server_id}", response_model=Server, tags=["servers"])
    async def show_server(
        server_id: str,
        principal: Member,
        wait_s: Annotated[
            float,
            Query(
                ge=0,
                le=MAX_WAIT_S,
                description="when a task is in progress (build, stop, start, delete), answer "
                "once it has finished or after this many seconds, whichever comes first; "
                "saves polling",
            ),
        ] = 0,
    ) -> JSONResponse:
        def look() -> tuple[ServerRecord, Server]:
            record = servers.get(principal, server_id)
            return record, server_view(principal, record)

        record, view = await run_blocking(look)
        if wait_s > 0 and await run_blocking(servers.has_pending_task, record.uuid):
            # The task may run on any controller: the store says when it is done. Polled
            # without holding a thread in between.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while loop.time() < deadline:
                await asyncio.sleep(min(WAIT_POLL_S, max(0.0, deadline - loop.time())))
                if not await run_blocking(servers.has_pending_task, record.uuid):
                    break
            _, view = await run_blocking(look)
        return respond(principal, view)

    @router.delete("/servers/{server_id}", response_model=Server, status_code=202, tags=["servers"])
    def delete_server(server_id: str, principal: Member) -> JSONResponse:
        """Destroys the guest, frees its resources and forgets its energy; ends as DELETED."""
        record = servers.delete(principal, server_id)
        return respond(principal, server_view(principal, record), 202)

    @router.post(
        "/servers/{server_id}/stop", response_model=Server, status_code=202, tags=["servers"]
    )
    def stop_server(server_id: str, principal: Member) -> JSONResponse:
        """Graceful shutdown, then power off after ``compute.stop_timeout_s``; ends SHUTOFF."""
        record = servers.stop(principal, server_id)
        return respond(principal, server_view(principal, record), 202)

    @router.post(
        "/servers/{server_id}/start", response_model=Server, status_code=202, tags=["servers"]
    )
    def start_server(server_id: str, principal: Member) -> JSONResponse:
        record = servers.start(principal, server_id)
        return respond(principal, server_view(principal, record), 202)

    @router.patch("/servers/{server_id}", response_model=Server, tags=["servers"])
    def update_server(server_id: str, body: ServerUpdate, principal: Member) -> JSONResponse:
        """Rename: the display name in the record and, live and persistently, in the
        domain's metadata. The domain's own name on the host does not change."""
        record = compute.updates.rename(principal, server_id, body.name)
        return respond(principal, server_view(principal, record))

    @router.post(
        "/servers/{server_id}/resize", response_model=Server, status_code=202, tags=["servers"]
    )
    def resize_server(server_id: str, body: ServerResize, principal: Member) -> JSONResponse:
        """Another flavor on the same host: its claim moves at once (409 and nothing changed
        when the host cannot take it); the guest is stopped, redefined and started again
        in the background (task ``resizing``)."""
        record = compute.updates.resize(principal, server_id, body.flavor)
        return respond(principal, server_view(principal, record), 202)

    @router.post(
        "/servers/{server_id}/migrate", response_model=Migration, status_code=202,
        tags=["servers"],
    )  # fmt: skip
    def migrate_server(
        server_id: str, principal: Admin, body: ServerMigrate | None = None
    ) -> Migration:
        """Live migration to another host (admin): the target is claimed before anything
        moves; with ``tunnel`` the memory crosses a VXLAN link made for this migration
        only. Follow it at ``GET /v1/servers/{id}/migration``."""
        wanted = body if body is not None else ServerMigrate()
        return Migration.of(
            compute.migrations.request(principal, server_id, wanted.host, wanted.tunnel)
        )

    @router.get("/servers/{server_id}/migration", response_model=Migration, tags=["servers"])
    def show_migration(server_id: str, principal: Admin) -> Migration:
        """The server's latest migration: state, percent of memory sent, outcome."""
        return Migration.of(compute.migrations.latest(principal, server_id))

    @router.delete(
        "/servers/{server_id}/migration", response_model=Migration, status_code=202,
        tags=["servers"],
    )  # fmt: skip
    def cancel_migration(server_id: str, principal: Admin) -> Migration:
        """Cancel the running migration: libvirt's job is aborted, the guest stays put."""
        return Migration.of(compute.migrations.cancel(principal, server_id))

    @router.get("/servers/{server_id}/power", response_model=Power, tags=["power"])
    def server_power(server_id: str, principal: Member) -> Power:
        return Power.of(power.server_power(principal, server_id))

    @router.get("/servers/{server_id}/metadata", response_model=dict[str, Any], tags=["servers"])
    def server_metadata(server_id: str, principal: Member) -> dict[str, Any]:
        """The server's config drive document (``openstack/latest/meta_data.json``)."""
        return servers.metadata_document(principal, server_id)

    @router.get("/servers/{server_id}/console-log", response_model=ConsoleLog, tags=["servers"])
    def server_console_log(
        server_id: str,
        principal: Member,
        # Text, checked by the service: a bad value is a 400 naming it, as in Nova.
        lines: Annotated[
            str | None,
            Query(
                description=f"only the last N lines, N from 1 to {MAX_LINES} (default: "
                f"all); at most {MAX_BYTES} bytes either way"
            ),
        ] = None,
        cursor: Annotated[
            str | None,
            Query(
                description="the next_cursor of an earlier answer: only what came after it "
                "(its first bytes, see more; with lines, its last lines)",
            ),
        ] = None,
    ) -> ConsoleLog:
        """The guest's serial console, earlier boots first (rotated and capped per server).

        A server on no host yet (BUILD) or never placed (ERROR) has an empty log; a
        DELETED server's log is gone (404)."""
        view = compute.console.console_log(principal, server_id, lines=lines, cursor=cursor)
        return ConsoleLog.of(view)

    # -- volumes -----------------------------------------------------------------------

    def volume_view(record: VolumeRecord, names: dict[str, str] | None = None) -> Volume:
        names = compute.hosts.names() if names is None else names
        return Volume.of(record, names.get(record.host_uuid))

    @router.get("/volumes", response_model=list[Volume], tags=["volumes"])
    def list_volumes(principal: Member) -> JSONResponse:
        names = compute.hosts.names()
        return respond(principal, [volume_view(v, names) for v in devices.volumes(principal)])

    @router.post("/volumes", response_model=Volume, status_code=201, tags=["volumes"])
    def create_volume(body: VolumeCreate, principal: Member) -> JSONResponse:
        record = devices.create_volume(
            principal, body.name, body.size_gb, body.format, server_id=body.server_id
        )
        return respond(principal, volume_view(record), 201)

    @router.get("/volumes/{volume_id}", response_model=Volume, tags=["volumes"])
    def show_volume(volume_id: str, principal: Member) -> JSONResponse:
        return respond(principal, volume_view(devices.volume(principal, volume_id)))

    @router.delete("/volumes/{volume_id}", status_code=204, tags=["volumes"])
    def delete_volume(volume_id: str, principal: Member) -> Response:
        devices.delete_volume(principal, volume_id)
        return Response(status_code=204)

    @router.get("/servers/{server_id}/volumes", response_model=list[Volume], tags=["volumes"])
    def server_volumes(server_id: str, principal: Member) -> JSONResponse:
        return respond(
            principal, [volume_view(v) for v in devices.server_volumes(principal, server_id)]
        )

    @router.post(
        "/servers/{server_id}/volumes",
        response_model=Volume,
        tags=["volumes"],
        responses={202: {"model": Volume, "description": "still attaching (see below)"}},
    )
    def attach_volume(server_id: str, body: VolumeAttach, principal: Member) -> JSONResponse:
        """A virtio disk with serial = volume id and alias ``ua-<volume id>``.

        200 with the volume in-use once attached. An attach that takes longer than
        ``compute.device_wait_s`` answers 202 with the volume ``attaching``: it goes
        on in the background and the volume turns in-use (or available, with nothing
        attached, when the host refuses)."""
        record = devices.attach_volume(principal, server_id, body.volume_id)
        return respond(principal, volume_view(record), 202 if record.status == "attaching" else 200)

    @router.delete(
        "/servers/{server_id}/volumes/{alias}",
        status_code=204,
        tags=["volumes"],
        responses={202: {"description": "still detaching; the volume shows detaching until done"}},
    )
    def detach_volume(server_id: str, alias: str, principal: Member) -> Response:
        """Detach by device alias (``ua-<volume id>``): 204 once detached, 202 when the
        detach outlasts ``compute.device_wait_s`` and goes on in the background."""
        done = devices.detach(principal, server_id, alias)
        return Response(status_code=204 if done else 202)

    # -- interfaces --------------------------------------------------------------------

    @router.get(
        "/servers/{server_id}/interfaces", response_model=list[Interface], tags=["interfaces"]
    )
    def list_interfaces(server_id: str, principal: Member) -> JSONResponse:
        return respond(
            principal, [Interface.of(i) for i in devices.interfaces(principal, server_id)]
        )

    @router.post(
        "/servers/{server_id}/interfaces",
        response_model=Interface,
        status_code=201,
        tags=["interfaces"],
        responses={202: {"model": Interface, "description": "still attaching"}},
    )
    def attach_interface(
        server_id: str, principal: Member, body: InterfaceCreate | None = None
    ) -> JSONResponse:
        """A new NIC (generated MAC, alias ``ua-<port id>``) on the configured network."""
        model = body.model if body is not None else None
        record = devices.attach_interface(principal, server_id, model)
        done = devices.interface_attached(record)
        return respond(principal, Interface.of(record), 201 if done else 202)

    @router.delete(
        "/servers/{server_id}/interfaces/{alias}",
        status_code=204,
        tags=["interfaces"],
        responses={202: {"description": "still detaching; it goes on in the background"}},
    )
    def detach_interface(server_id: str, alias: str, principal: Member) -> Response:
        done = devices.detach(principal, server_id, alias)
        return Response(status_code=204 if done else 202)

    # -- power -------------------------------------------------------------------------

    @router.get("/projects/{project_id}/power", response_model=Power, tags=["power"])
    def project_power(project_id: str, principal: Member) -> Power:
        """The sum over the project's servers on every host."""
        return Power.of(power.project_power(principal, project_id))

    @router.get("/power/servers", response_model=list[ServerPower], tags=["power"])
    def servers_power(
        principal: Member,
        project: Annotated[
            str | None,
            Query(min_length=1, description="only this project's servers (members: their own)"),
        ] = None,
    ) -> list[ServerPower]:
        """Every server you may see with its latest watts and joules, highest first."""
        return [ServerPower.of(v) for v in power.servers_power(principal, project)]

    # -- hosts (admin) -----------------------------------------------------------------

    @router.get("/hosts", response_model=list[Host], tags=["hosts"])
    def list_hosts(principal: Admin) -> list[Host]:
        return [Host.of(h) for h in compute.hosts.list_all()]

    @router.get("/hosts/{host_id}", response_model=Host, tags=["hosts"])
    def show_host(host_id: str, principal: Admin) -> Host:
        return Host.of(compute.hosts.get(host_id))

    @router.patch("/hosts/{host_id}", response_model=Host, tags=["hosts"])
    def update_host(host_id: str, body: HostUpdate, principal: Admin) -> Host:
        """Set the host's geolocation (kept until cleared, never replaced by a lookup), or
        clear it with ``null`` to return to the one looked up from its addresses. A bad
        pair is refused naming it, and nothing changes."""
        if "geolocation" not in body.model_fields_set:
            raise InvalidRequest(
                'nothing to change; accepted: {"geolocation": ["latitude,longitude", ...]} '
                'or {"geolocation": null}'
            )
        compute.hosts.get(host_id)
        compute.hosts.geolocation.set_by_admin(host_id, body.geolocation)
        return Host.of(compute.hosts.get(host_id))

    @router.get("/hosts/{host_id}/power", response_model=Power, tags=["hosts", "power"])
    def host_power(host_id: str, principal: Admin) -> Power:
        return Power.of(power.host_power(host_id))

    @router.post("/hosts/{host_id}/disable", response_model=Host, tags=["hosts"])
    def disable_host(host_id: str, principal: Admin, body: HostDisable | None = None) -> Host:
        """No new servers go to the host (COMPUTE_STATUS_DISABLED); running ones stay."""
        reason = body.reason if body is not None else None
        return Host.of(compute.hosts.set_enabled(host_id, False, reason))

    @router.post("/hosts/{host_id}/enable", response_model=Host, tags=["hosts"])
    def enable_host(host_id: str, principal: Admin) -> Host:
        return Host.of(compute.hosts.set_enabled(host_id, True))

    # -- projects (admin) --------------------------------------------------------------

    @router.get("/projects", response_model=list[Project], tags=["users"])
    def list_projects(principal: Admin) -> list[Project]:
        """Every project used so far, with its stable uuid."""
        return [Project.of(p) for p in compute.identities.projects()]

    # -- users (admin) -----------------------------------------------------------------

    @router.get("/users", response_model=list[User], tags=["users"])
    def list_users(principal: Admin) -> list[User]:
        return [User.of(u) for u in compute.users.list_all()]

    @router.post("/users", response_model=User, status_code=201, tags=["users"])
    def register_user(body: UserCreate, principal: Admin) -> User:
        """Register a user by the public key of the key pair they made themselves."""
        return User.of(compute.users.register(body.name, body.project, body.role, body.public_key))

    @router.get("/users/{name}", response_model=User, tags=["users"])
    def show_user(name: str, principal: Admin) -> User:
        return User.of(compute.users.get(name))

    @router.put("/users/{name}", response_model=User, tags=["users"])
    def update_user(name: str, body: UserUpdate, principal: Admin) -> User:
        """Change a user's key (rotation), role or project."""
        compute.users.get(name)
        return User.of(
            compute.users.register(name, body.project, body.role, body.public_key, replace=True)
        )

    @router.delete("/users/{name}", status_code=204, tags=["users"])
    def delete_user(name: str, principal: Admin) -> Response:
        compute.users.delete(name)
        return Response(status_code=204)

    return router
