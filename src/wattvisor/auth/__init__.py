"""Authentication and authorisation with biscuit tokens.

Users (name, project, role, Ed25519 public key) are registered by an admin; a
user signs tokens with their private key, which never reaches the server.
:class:`TokenVerifier` turns a bearer token into a :class:`Principal` whose role
and project come from the server's registry, never from the token;
:mod:`wattvisor.auth.policy` says what a principal may see;
:mod:`wattvisor.auth.keys` manages key files and the admin key;
:mod:`wattvisor.auth.fastapi` is the HTTP dependency. This package knows no routes.
"""

from wattvisor.auth.errors import (
    AccessDenied,
    AdminRequired,
    AuthError,
    InvalidPublicKey,
    InvalidTTL,
    InvalidUserName,
    KeyFileError,
    MissingCredentials,
    TokenCheckFailed,
    TokenExpired,
    TokenLifetimeTooLong,
    TokenMalformed,
    TokenNoExpiry,
    TokenNoUser,
    TokenSignatureInvalid,
    TokenUserMismatch,
)
from wattvisor.auth.keys import (
    AdminBootstrap,
    KeyFiles,
    admin_user,
    bootstrap_admin,
    create_key_pair,
    default_user_key_path,
    ensure_admin_key,
    load_private_key,
    mint_token_from_file,
    public_key_of,
    rotate_admin_key,
)
from wattvisor.auth.policy import (
    ADMIN_ONLY,
    ADMIN_ONLY_FIELDS,
    Principal,
    can_see_project,
    project_scope,
    redact_for,
)
from wattvisor.auth.tokens import (
    READ_ONLY_CHECK,
    Operation,
    TokenVerifier,
    VerifiedToken,
    attenuate,
    format_ttl,
    mint_token,
    operation_for_method,
    parse_ttl,
)
from wattvisor.auth.users import (
    RegisteredUser,
    Role,
    UserLookup,
    normalize_public_key,
    validate_user_name,
)

__all__ = [
    "ADMIN_ONLY",
    "ADMIN_ONLY_FIELDS",
    "READ_ONLY_CHECK",
    "AccessDenied",
    "AdminBootstrap",
    "AdminRequired",
    "AuthError",
    "InvalidPublicKey",
    "InvalidTTL",
    "InvalidUserName",
    "KeyFileError",
    "KeyFiles",
    "MissingCredentials",
    "Operation",
    "Principal",
    "RegisteredUser",
    "Role",
    "TokenCheckFailed",
    "TokenExpired",
    "TokenLifetimeTooLong",
    "TokenMalformed",
    "TokenNoExpiry",
    "TokenNoUser",
    "TokenSignatureInvalid",
    "TokenUserMismatch",
    "TokenVerifier",
    "UserLookup",
    "VerifiedToken",
    "admin_user",
    "attenuate",
    "bootstrap_admin",
    "can_see_project",
    "create_key_pair",
    "default_user_key_path",
    "ensure_admin_key",
    "format_ttl",
    "load_private_key",
    "mint_token",
    "mint_token_from_file",
    "normalize_public_key",
    "operation_for_method",
    "parse_ttl",
    "project_scope",
    "public_key_of",
    "redact_for",
    "rotate_admin_key",
    "validate_user_name",
]
