"""Who is calling, and for which tenant: run before every request.

Public: /healthz, /readyz (load balancers) and /openapi.json. Everything else needs
`Authorization: Bearer <key>` (inferencedb/keys.py): missing or invalid -> 401. A tenant key acts for its
own tenant only; an operator key names the tenant it acts for with X-Tenant on tenant-scoped
routes, and alone may change what serves (403 for a tenant key). With API_AUTH=false (local
experiments only) every caller is the tenant "default" without operator rights.
"""

from __future__ import annotations

from flask import g, request

from api.errors import Forbidden, InvalidRequest, Unauthorized
from heads.errors import RegistryError
from heads.names import check_tenant_name
from inferencedb.errors import InvalidKey
from inferencedb.keys import Principal

PUBLIC = {"/healthz", "/readyz", "/openapi.json"}
ANONYMOUS = Principal(key_id="-", tenant="default", role="tenant")


def authenticate(runtime) -> None:
    """Set g.principal (or raise 401). Called from a before_request hook."""
    g.principal = None
    if request.path in PUBLIC:
        return
    if not runtime.settings.auth:
        g.principal = ANONYMOUS
        return
    g.principal = principal_of(runtime, request.headers.get("Authorization"))


def principal_of(runtime, authorization: str | None) -> Principal:
    """Who the Authorization header names; Unauthorized (401) for a missing or bad key."""
    try:
        return runtime.keys.authenticate(authorization)
    except InvalidKey as exc:
        raise Unauthorized(exc.message) from None


def request_tenant() -> str:
    """The tenant a tenant-scoped route acts for."""
    principal: Principal = g.principal
    named = request.headers.get("X-Tenant")
    if not principal.is_operator:
        if named is not None and named != principal.tenant:
            raise Forbidden("X-Tenant names another tenant; a tenant key acts only for its own tenant")
        return principal.tenant
    if named is None:
        raise InvalidRequest("an operator key must name the tenant it acts for with the X-Tenant header")
    try:
        return check_tenant_name(named)
    except RegistryError as exc:
        raise InvalidRequest(f"header X-Tenant: {exc}") from None


def require_operator() -> None:
    if not g.principal.is_operator:
        raise Forbidden("this action needs an operator key")
