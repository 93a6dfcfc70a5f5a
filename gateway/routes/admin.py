"""``/admin/*``: operator actions, behind the admin key (see gateway.auth.middleware)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from gateway.deps import ServicesDep
from gateway.errors import InvalidRequestError
from router import PolicyError

router = APIRouter(tags=["admin"])


@router.post("/admin/policy/reload")
async def reload_policy(services: ServicesDep) -> dict[str, Any]:
    """Re-read the routing policy file now, without waiting for the file watcher.

    A file that does not validate is refused with its problems (file, field,
    reason) and the policy in force stays.
    """
    store = services.policies
    try:
        policy = store.reload_or_raise()
    except PolicyError as exc:
        raise InvalidRequestError(str(exc), code="invalid_policy") from exc
    if policy is None:
        raise InvalidRequestError(
            "no policy file is configured (GATEWAY_POLICY__FILE): the built-in default policy "
            "is in force and there is nothing to reload",
            code="no_policy_file",
        )
    return {
        "reloaded": True,
        "file": str(store.path),
        "version": policy.version,
        "rules": [rule.name for rule in policy.rules],
        "default": policy.default,
        "reloads": store.reloads,
        "failed_reloads": store.failed_reloads,
    }
