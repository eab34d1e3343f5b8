"""FastAPI glue: a dependency that turns ``Authorization: Bearer <biscuit>`` into a Principal.

Usage in the API::

    from wattvisor.auth.fastapi import install_auth_errors, make_auth_dependency

    current_principal = make_auth_dependency(store.lookup_user, settings.auth)
    install_auth_errors(app)

    @router.get("/v1/servers/{server_id}")
    def show(server_id: str,
             principal: Annotated[Principal, Depends(current_principal)]) -> ...: ...

A token that does not prove its sender is a 401 with ``WWW-Authenticate: Bearer``;
a valid token whose own checks refuse the request (a read-only token writing) is a
403 ``insufficient_scope`` with ``WWW-Authenticate: Bearer error="insufficient_scope"``
(RFC 6750). Bodies are ``{"error": {"code", "message", "details"}}``. The exceptions
raised are ``HTTPException`` subclasses, so even without :func:`install_auth_errors`
the status and header are right; the handler only gives the body its final shape.

:class:`Authenticator` does the work without FastAPI, so that an ASGI middleware can
refuse a request before anything reads its body; the dependency then finds the
principal that middleware left in ``request.state.principal``.

(No ``from __future__ import annotations`` here: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from wattvisor.auth.errors import (
    AccessDenied,
    AdminRequired,
    AuthError,
    MissingCredentials,
    TokenCheckFailed,
    TokenNoUser,
)
from wattvisor.auth.policy import Principal, check_route, host_endpoint, host_principal
from wattvisor.auth.service_tokens import (
    KeyLookup,
    ServiceTokenVerifier,
    TokenKind,
    VerifiedServiceToken,
    parse_token,
    token_kind,
    wrong_kind,
)
from wattvisor.auth.tokens import TokenVerifier, operation_for_method, utcnow
from wattvisor.auth.users import UserLookup
from wattvisor.config.settings import AuthSettings

# Declared for the OpenAPI document (the "Authorize" button); the header itself is
# parsed below so that each malformed form gets its own message.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="biscuit",
    description="A biscuit token: `wattvisor token create --ttl 1h`",
)


def challenge(error: AuthError | AccessDenied) -> dict[str, str]:
    """The ``WWW-Authenticate`` header (RFC 6750) answering ``error``, if it has one."""
    if isinstance(error, MissingCredentials):
        return {"WWW-Authenticate": 'Bearer realm="wattvisor"'}
    if isinstance(error, AuthError):
        kind = "invalid_token"
    elif isinstance(error, TokenCheckFailed):
        kind = "insufficient_scope"
    else:
        return {}
    description = _header_text(error.message)
    return {
        "WWW-Authenticate": f'Bearer realm="wattvisor", error="{kind}", '
        f'error_description="{description}"'
    }


class AuthenticationFailed(HTTPException):
    """HTTP 401 carrying the :class:`AuthError` that caused it."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(status_code=401, detail=error.to_dict(), headers=challenge(error))
        self.error = error


class PermissionDenied(HTTPException):
    """HTTP 403: the role, or the token's own checks, do not allow the request."""

    def __init__(self, error: AccessDenied) -> None:
        super().__init__(status_code=403, detail=error.to_dict(), headers=challenge(error) or None)
        self.error = error


def _header_text(message: str, limit: int = 200) -> str:
    """``message`` as RFC 6750 allows in ``error_description`` (printable ASCII, no quote)."""
    text = message.replace("n°", "#").replace('"', "'").replace("\\", "/")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def require_admin(principal: Principal) -> Principal:
    """``principal`` if it is an admin, else :class:`AdminRequired`."""
    if not principal.is_admin:
        raise AdminRequired(
            f"user {principal.user!r} has role {principal.role!r}; this needs role 'admin'",
            user=principal.user,
        )
    return principal


class Authenticator:
    """Turns a request's method, path and ``Authorization`` header into a :class:`Principal`.

    ``lookup_user(name)`` returns the registered user (role, project, public key) or
    None; it is called once per request with the name the token claims.
    ``host_keys(host_id)`` returns a joined host's keys, for host tokens (without it
    only user tokens are accepted); ``join_verifier`` checks join tokens.
    """

    def __init__(
        self,
        lookup_user: UserLookup,
        settings: AuthSettings | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        host_keys: KeyLookup | None = None,
        join_verifier: Callable[[], ServiceTokenVerifier] | None = None,
    ) -> None:
        auth = settings or AuthSettings()
        self.verifier = TokenVerifier(
            lookup_user,
            clock_skew=timedelta(seconds=auth.clock_skew_s),
            max_ttl=timedelta(seconds=auth.max_token_ttl_s),
            clock=clock,
        )
        self.host_verifier = (
            ServiceTokenVerifier(
                "host",
                host_keys,
                clock_skew=timedelta(seconds=auth.clock_skew_s),
                clock=clock,
                where="the controller API",
            )
            if host_keys is not None
            else None
        )
        self._join_verifier = join_verifier

    def authenticate(self, method: str, path: str, authorization: str | None) -> Principal:
        """The sender of the request; :class:`AuthError` (401) when the token does not prove
        who sent it, :class:`AccessDenied` (403) when its role may not call this route or
        its own checks refuse it (:class:`TokenCheckFailed`)."""
        token = bearer_token(authorization)
        try:
            verified = self.verifier.verify(
                token, operation=operation_for_method(method), method=method, path=path
            )
            principal = verified.principal
        except TokenNoUser as no_user:
            # No user in the authority block: a host, controller or join token, maybe.
            principal = self._service_principal(token, path, no_user)
        check_route(principal, method, path)
        return principal

    def _service_principal(self, token: str, path: str, no_user: TokenNoUser) -> Principal:
        unverified = parse_token(token)
        kind = token_kind(unverified)
        if kind is None:
            raise no_user
        if kind == "host" and self.host_verifier is not None:
            return host_principal(self.host_verifier.verify(unverified).subject)
        wanted: TokenKind = "host" if host_endpoint(path) is not None else "user"
        raise wrong_kind(kind, wanted, "the controller API")

    def authenticate_join(self, authorization: str | None) -> VerifiedServiceToken:
        """The verified join token of a ``POST /v1/hosts/join`` (its single use is the
        store's to enforce); :class:`AuthError` with the reason otherwise."""
        token = bearer_token(authorization)
        if self._join_verifier is None:
            raise MissingCredentials("this controller does not take join tokens")
        return self._join_verifier().verify(token)

    @property
    def dependency(self) -> Callable[..., Awaitable[Principal]]:
        """A FastAPI dependency returning the request's :class:`Principal` or raising 401/403.

        The principal is also left in ``request.state.principal`` for logging and for
        the error handlers, which answer members and admins differently.
        """

        async def current_principal(
            request: Request,
            _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        ) -> Principal:
            known = getattr(request.state, "principal", None)
            if isinstance(known, Principal):  # authenticated before the body was read
                return known
            try:
                principal = self.authenticate(
                    request.method, request.url.path, authorization_of(request.headers)
                )
            except AuthError as exc:
                raise AuthenticationFailed(exc) from exc
            except AccessDenied as exc:
                raise PermissionDenied(exc) from exc
            request.state.principal = principal
            return principal

        return current_principal


def make_host_dependency(
    current_principal: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting joined hosts only, each for its own host endpoints (403
    for users, admins included: :func:`wattvisor.auth.policy.check_route`)."""

    async def current_host(
        request: Request,
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        try:
            check_route(principal, request.method, request.url.path)
            if not principal.is_host:  # a route outside the host endpoint paths
                raise AccessDenied(
                    f"{request.method} {request.url.path[:200]} takes a host's own token",
                    user=principal.user,
                )
        except AccessDenied as exc:
            raise PermissionDenied(exc) from exc
        return principal

    return current_host


def make_join_dependency(
    authenticator: "Authenticator",
) -> Callable[..., Awaitable[VerifiedServiceToken]]:
    """A dependency giving the request's verified join token (``Authorization: Bearer``),
    as :class:`AuthenticateFirst` left it or verified now; 401 with the reason otherwise."""

    async def join_token(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> VerifiedServiceToken:
        known = getattr(request.state, "join_token", None)
        if isinstance(known, VerifiedServiceToken):
            return known
        try:
            verified = authenticator.authenticate_join(request.headers.get("authorization"))
        except AuthError as exc:
            raise AuthenticationFailed(exc) from exc
        request.state.join_token = verified
        return verified

    return join_token


def make_auth_dependency(
    lookup_user: UserLookup,
    settings: AuthSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency returning the request's :class:`Principal` or raising 401/403
    (:attr:`Authenticator.dependency` of a new :class:`Authenticator`)."""
    return Authenticator(lookup_user, settings, clock=clock).dependency


def make_admin_dependency(
    current_principal: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting admins only (403 ``admin_required`` for members)."""

    async def current_admin(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        try:
            return require_admin(principal)
        except AdminRequired as exc:
            raise PermissionDenied(exc) from exc

    return current_admin


def authorization_of(headers: Mapping[str, str]) -> str | None:
    """The ``Authorization`` header, or a bearer one made of ``X-Auth-Token``.

    OpenStack clients (Nova, osc-placement) send their token as ``X-Auth-Token``.
    """
    authorization = headers.get("authorization")
    if authorization is None and (token := headers.get("x-auth-token")) is not None:
        return f"Bearer {token}"
    return authorization


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization`` header value; :class:`MissingCredentials` otherwise."""
    if header is None or not header.strip():
        raise MissingCredentials(
            "no credentials: send the header 'Authorization: Bearer <token>' "
            "or 'X-Auth-Token: <token>' (create a token with `wattvisor token create --ttl 1h`)"
        )
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise MissingCredentials(
            f"authorization scheme {scheme[:20]!r} is not accepted; use 'Bearer <token>'",
            scheme=scheme[:20],
        )
    token = token.strip()
    if not token:
        raise MissingCredentials("the Bearer authorization header carries no token")
    return token


def install_auth_errors(app: FastAPI) -> None:
    """Answer auth failures with ``{"error": {"code", "message", "details"}}`` on ``app``."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        if not isinstance(exc, AuthenticationFailed | PermissionDenied):  # pragma: no cover
            raise exc
        body: Any = exc.error.to_dict()
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(AuthenticationFailed, handle)
    app.add_exception_handler(PermissionDenied, handle)
