"""The ``/v1/hosts`` routes of joining: join tokens (admin), the join itself (join token),
heartbeats and key rotation (the host's own token).

A host joins with ``Authorization: Bearer <join token>``, checked before the body is
read like every other token; the body carries its facts and its own public key. From
then on it signs its calls with that key (``host("<id>")`` tokens), and may call only
its own host endpoints. The answers give the agent what it needs to check the
controllers' calls: the cluster id and its accepted public keys.

(No ``from __future__ import annotations``: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from wattvisor.api.v1_routes import PREFIX, known_query
from wattvisor.api.v1_schemas import ERROR_RESPONSES
from wattvisor.auth import AuthError, InvalidTTL, Principal, format_ttl, parse_ttl
from wattvisor.auth.fastapi import (
    AuthenticationFailed,
    Authenticator,
    bearer_token,
    make_host_dependency,
    make_join_dependency,
)
from wattvisor.auth.service_tokens import VerifiedServiceToken
from wattvisor.compute.errors import InvalidRequest
from wattvisor.compute.host_geolocation import MAX_IP_ADDRESSES
from wattvisor.compute.host_trust import MAX_INVENTORY, HostTrust, JoinRequest, TrustAnswer
from wattvisor.compute.names import PrintableText
from wattvisor.host.driver import Inventory

Dependency = Callable[..., Awaitable[Principal]]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class JoinTokenCreate(_Request):
    ttl: str = Field(
        default="1h", max_length=20, description="lifetime: 90s, 30m, 1h, 7d (at most "
        "auth.max_join_token_ttl_s)",
    )  # fmt: skip


class JoinToken(BaseModel):
    id: str
    token: str = Field(description="hand it to the host's agent: `wattvisor agent --join-token`")
    cluster_id: str
    expires_at: datetime
    ttl: str
    created_by: str


class HostInventory(_Request):
    VCPU: int = Field(ge=1, le=MAX_INVENTORY)
    MEMORY_MB: int = Field(ge=1, le=MAX_INVENTORY)
    DISK_GB: int = Field(ge=1, le=MAX_INVENTORY)


IpAddresses = Annotated[
    list[Annotated[str, Field(min_length=2, max_length=64)]],
    Field(max_length=MAX_IP_ADDRESSES),
]


class HostJoin(_Request):
    id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="the host's libvirt host UUID, lower case: its placement provider id",
    )
    name: PrintableText = Field(min_length=1, max_length=200)
    libvirt_uri: PrintableText = Field(
        min_length=1, max_length=2048, description="the URI the agent drives on its host"
    )
    traits: list[Annotated[str, Field(max_length=255)]] = Field(max_length=1000)
    inventory: HostInventory
    energy_source: Literal["rapl", "scaphandre", "estimate", "none"]
    addresses: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(
        min_length=1, max_length=8, description="where the agent answers, e.g. https://h:8775"
    )
    public_key: str = Field(max_length=200, description="the host's own key: 'ed25519/<hex>'")
    ip_addresses: IpAddresses | None = Field(
        default=None,
        description="every IP address of the host (its agent reads them over netlink); the "
        "controller looks the public ones up in its geolocation database",
    )


class HostHeartbeat(_Request):
    ip_addresses: IpAddresses | None = Field(
        default=None,
        description="the host's IP addresses now; a change refreshes its geolocation",
    )
    domain_states: dict[str, str] | None = Field(
        default=None,
        max_length=10_000,
        description="the host's domains now (uuid -> libvirt state), sent when they changed; "
        "the power sync reads them instead of asking the host",
    )


class HostKeyRotate(_Request):
    public_key: str = Field(max_length=200, description="the host's new key: 'ed25519/<hex>'")
    revoke_old: bool = Field(
        default=False,
        description="refuse the old key at once (it may be stolen); otherwise it stays "
        "accepted for auth.host_key_grace_s",
    )


class ClusterKey(BaseModel):
    public_key: str
    valid_until: datetime | None = Field(
        description="null for the current key; else when this previous key stops being accepted"
    )


class HostTrustAnswer(BaseModel):
    """What the agent keeps: which cluster calls it, with which keys."""

    host_id: str
    cluster_id: str
    cluster_keys: list[ClusterKey]
    server_time: datetime
    host_name: str | None = Field(default=None, description="the host's name in the cluster")
    geolocation: list[str] | None = Field(
        default=None,
        description="the host's 'latitude,longitude' pairs as the controller holds them "
        "(the agent exports them as wattvisor_host_info); null: not part of this answer",
    )

    @classmethod
    def of(cls, answer: TrustAnswer) -> "HostTrustAnswer":
        return cls(
            host_id=answer.host_id,
            cluster_id=answer.cluster_id,
            cluster_keys=[
                ClusterKey(public_key=k.public_key, valid_until=k.valid_until)
                for k in answer.cluster_keys
            ],
            server_time=answer.server_time,
            host_name=answer.host_name,
            geolocation=list(answer.geolocation) if answer.geolocation is not None else None,
        )


def build_host_trust_router(
    trust: HostTrust,
    authenticator: Authenticator,
    authenticated: Dependency,
    admin: Dependency,
) -> APIRouter:
    """Join tokens, joining, heartbeats and host key rotation over ``trust``."""
    router = APIRouter(
        prefix=PREFIX, responses=ERROR_RESPONSES, dependencies=[Depends(known_query)]
    )
    Admin = Annotated[Principal, Depends(admin)]
    HostCaller = Annotated[Principal, Depends(make_host_dependency(authenticated))]
    Joining = Annotated[VerifiedServiceToken, Depends(make_join_dependency(authenticator))]

    @router.post("/hosts/join-tokens", response_model=JoinToken, status_code=201, tags=["hosts"])
    def create_join_token(principal: Admin, body: JoinTokenCreate | None = None) -> JoinToken:
        """A single-use token a new host joins the cluster with (admin)."""
        text = body.ttl if body is not None else "1h"
        try:
            ttl = parse_ttl(text)
        except InvalidTTL as exc:
            raise InvalidRequest(str(exc), ttl=text) from exc
        issued = trust.create_join_token(principal, ttl)
        return JoinToken(
            id=issued.id, token=issued.token, cluster_id=issued.cluster_id,
            expires_at=issued.expires_at, ttl=format_ttl(ttl), created_by=issued.created_by,
        )  # fmt: skip

    @router.post("/hosts/join", response_model=HostTrustAnswer, status_code=201, tags=["hosts"])
    def join(body: HostJoin, token: Joining) -> HostTrustAnswer:
        """Register the calling host with a join token (``Authorization: Bearer <join
        token>``); each token registers one host, and a refused join registers nothing."""
        request = JoinRequest(
            host_id=body.id, name=body.name, libvirt_uri=body.libvirt_uri,
            traits=frozenset(body.traits),
            inventory=Inventory(
                vcpu=body.inventory.VCPU, memory_mb=body.inventory.MEMORY_MB,
                disk_gb=body.inventory.DISK_GB,
            ),
            energy_source=body.energy_source, addresses=tuple(body.addresses),
            public_key=body.public_key,
            ip_addresses=tuple(body.ip_addresses) if body.ip_addresses is not None else None,
        )  # fmt: skip
        try:
            return HostTrustAnswer.of(trust.join(token, request))
        except AuthError as exc:
            raise AuthenticationFailed(exc) from exc

    @router.post("/hosts/{host_id}/heartbeat", response_model=HostTrustAnswer, tags=["hosts"])
    def heartbeat(
        host_id: str, principal: HostCaller, body: HostHeartbeat | None = None
    ) -> HostTrustAnswer:
        """The host is alive; the answer names the cluster keys its agent must accept.
        Addresses in the body refresh the host's geolocation when they changed."""
        addresses = body.ip_addresses if body is not None else None
        states = body.domain_states if body is not None else None
        return HostTrustAnswer.of(trust.heartbeat(principal.user, addresses, states))

    @router.post("/hosts/{host_id}/credentials", response_model=HostTrustAnswer, tags=["hosts"])
    def rotate_credentials(
        host_id: str, body: HostKeyRotate, principal: HostCaller, request: Request
    ) -> HostTrustAnswer:
        """Replace the host's key, signed with its current key."""
        verifier = authenticator.host_verifier
        assert verifier is not None
        try:
            signed = verifier.verify(bearer_token(request.headers.get("authorization")))
        except AuthError as exc:
            raise AuthenticationFailed(exc) from exc
        answer = trust.rotate_host_key(
            principal.user, signed.public_key, body.public_key, revoke_old=body.revoke_old
        )
        return HostTrustAnswer.of(answer)

    return router
