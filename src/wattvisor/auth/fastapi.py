"""FastAPI glue: a dependency that turns ``Authorization: Bearer <biscuit>`` into a Principal.

Usage in the API::

    from wattvisor.auth.fastapi import install_auth_errors, make_auth_dependency

    current_principal = make_auth_dependency(store.lookup_user, settings.auth)
    install_auth_errors(app)

    @router.get("/v1/servers/{server_id}")
    def show(server_id: str,
             principal: Annotated[Principal, Depends(current_principal)]) -> ...: ...

Every refusal is a 401 with ``WWW-Authenticate: Bearer`` and the error body
``{"error": {"code", "message", "details"}}``. The exceptions raised are
``HTTPException`` subclasses, so even without :func:`install_auth_errors` the
status and header are right; the handler only gives the body its final shape.

(No ``from __future__ import annotations`` here: FastAPI resolves the dependency
annotations at runtime, and they name closure variables.)
"""


from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from wattvisor.auth.errors import AccessDenied, AdminRequired, AuthError, MissingCredentials
from wattvisor.auth.policy import Principal
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


class AuthenticationFailed(HTTPException):
    """HTTP 401 carrying the :class:`AuthError` that caused it."""

    def __init__(self, error: AuthError) -> None:
        description = _header_text(error.message)
        scheme = (
            'Bearer realm="wattvisor"'
            if isinstance(error, MissingCredentials)
            else f'Bearer realm="wattvisor", error="invalid_token", '
            f'error_description="{description}"'
        )
        super().__init__(status_code=401, detail=error.to_dict(), headers={
            "WWW-Authenticate": scheme
        })
        self.error = error


class PermissionDenied(HTTPException):
    """HTTP 403 for an authenticated principal whose role does not allow the route."""

    def __init__(self, error: AccessDenied) -> None:
        super().__init__(status_code=403, detail=error.to_dict())
        self.error = error


def _header_text(message: str, limit: int = 200) -> str:
    """``message`` as RFC 6750 allows in ``error_description`` (printable ASCII, no quote)."""
    text = message.replace("n°", "#").replace('"', "'").replace("\\", "/")
    text = "".join(c if " " <= c <= "~" else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def make_auth_dependency(
    lookup_user: UserLookup,
    settings: AuthSettings | None = None,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency returning the request's :class:`Principal` or raising 401.

    ``lookup_user(name)`` returns the registered user (role, project, public key)
    or None; it is called once per request with the name the token claims.
    The principal is also left in ``request.state.principal`` for logging.
    """
    auth = settings or AuthSettings()
    verifier = TokenVerifier(
        lookup_user,
        clock_skew=timedelta(seconds=auth.clock_skew_s),
        max_ttl=timedelta(seconds=auth.max_token_ttl_s),
        clock=clock,
    )

    async def current_principal(
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> Principal:
        try:
            token = bearer_token(request.headers.get("authorization"))
            verified = verifier.verify(
                token,
                operation=operation_for_method(request.method),
                method=request.method,
                path=request.url.path,
            )
        except AuthError as exc:
            raise AuthenticationFailed(exc) from exc
        request.state.principal = verified.principal
        return verified.principal

    return current_principal


def make_admin_dependency(
    current_principal: Callable[..., Awaitable[Principal]],
) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting admins only (403 ``admin_required`` for members)."""

    async def current_admin(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if not principal.is_admin:
            raise PermissionDenied(AdminRequired(
                f"user {principal.user!r} has role {principal.role!r}; this needs role 'admin'",
                user=principal.user,
            ))
        return principal

    return current_admin


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization`` header value; :class:`MissingCredentials` otherwise."""
    if header is None or not header.strip():
        raise MissingCredentials(
            "no credentials: send the header 'Authorization: Bearer <token>' "
            "(create a token with `wattvisor token create --ttl 1h`)"
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
