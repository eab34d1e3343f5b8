"""Why a request was not authenticated, one class (and one stable code) per reason.

Clients and operators need to tell "your token expired" from "your token was
signed by the wrong key" without reading server logs, so every refusal names
its cause; the HTTP layer maps all of them to 401 (``AuthError``) or 403
(``AccessDenied``). Messages never contain the token or any key material, and
never say whether a user name is registered: a token naming an unknown user gets
exactly the answer of a known user's token signed with the wrong key.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AuthError(Exception):
    """A request that does not prove who sent it; always answered with HTTP 401."""

    code: ClassVar[str] = "unauthenticated"
    status: ClassVar[int] = 401

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The body of the error response: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class MissingCredentials(AuthError):
    """No ``Authorization: Bearer <token>`` header (or another scheme)."""

    code = "missing_credentials"


class TokenMalformed(AuthError):
    """Not a biscuit at all, or one whose authority block cannot be read as ours."""

    code = "token_malformed"


class TokenNoUser(AuthError):
    """The authority block names no user; a user fact elsewhere is never trusted."""

    code = "token_no_user"


class TokenSignatureInvalid(AuthError):
    """The signature does not verify with the key registered for the named user, or no
    such user is registered: both get this same answer, so that tokens cannot be used to
    find out which user names exist."""

    code = "token_signature_invalid"


class TokenUserMismatch(AuthError):
    """The verified authority block does not name exactly the key's owner."""

    code = "token_user_mismatch"


class TokenNoExpiry(AuthError):
    """The authority block carries no ``expires(<date>)`` fact; such tokens never die."""

    code = "token_no_expiry"


class TokenExpired(AuthError):
    """The token's expiry has passed (beyond the allowed clock skew)."""

    code = "token_expired"


class TokenLifetimeTooLong(AuthError):
    """The token expires further ahead than the server's maximum token lifetime."""

    code = "token_lifetime_too_long"


class TokenWrongKind(AuthError):
    """A valid-looking token of another kind than the endpoint takes: a user token sent to
    an agent, a controller token sent to the controller API, a host token where a join
    token belongs. Each side accepts only the kind its endpoints are for."""

    code = "token_wrong_kind"


class TokenForeignCluster(AuthError):
    """A cluster-signed token (join or controller) naming another cluster than this one."""

    code = "token_foreign_cluster"


class JoinTokenUnknown(AuthError):
    """A join token whose signature verifies but whose id this cluster never issued (or
    whose record is gone): it registers nothing."""

    code = "join_token_unknown"


class JoinTokenUsed(AuthError):
    """A join token that registered a host already; each one registers exactly one."""

    code = "join_token_used"


class AccessDenied(Exception):
    """An authenticated principal asking for something its role does not allow (HTTP 403)."""

    code: ClassVar[str] = "forbidden"
    status: ClassVar[int] = 403

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class AdminRequired(AccessDenied):
    """A member calling a route reserved to admins."""

    code = "admin_required"


class TokenCheckFailed(AccessDenied):
    """A valid token whose own checks (an attenuation such as read-only) refuse this request.

    The sender is authenticated; the token just does not reach this far, so the answer
    is 403 with RFC 6750's ``insufficient_scope``, never a 401 that would make a client
    think its token was bad.
    """

    code = "insufficient_scope"


class KeyFileError(ValueError):
    """A key file that cannot be created or used; the message names the file and the fix."""


class InvalidPublicKey(ValueError):
    """A public key text that is not an Ed25519 key in an accepted form."""


class InvalidUserName(ValueError):
    """A user name outside the accepted characters."""


class InvalidTTL(ValueError):
    """A token lifetime that cannot be parsed or is out of range."""
