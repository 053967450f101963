"""The public documents a client reads before it has a token: where to get one (RFC 9728
protected-resource metadata) and the keys that verify this server's tokens and events (JWKS)."""

from litestar import Controller, get
from litestar.di import NamedDependency

from memory.server.auth import ALL_SCOPES
from memory.server.settings import ServerSettings
from memory.service import MemoryService

__all__ = ["WellKnownController", "protected_resource_metadata"]


def protected_resource_metadata(settings: ServerSettings) -> dict:
    return {
        "resource": settings.resource_url,
        "authorization_servers": [settings.authorization_server],
        "scopes_supported": list(ALL_SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "Memory",
    }


class WellKnownController(Controller):
    path = "/.well-known"
    include_in_schema = False

    @get(["/oauth-protected-resource", "/oauth-protected-resource/mcp"], operation_id="protectedResourceMetadata")
    async def protected_resource(self, settings: NamedDependency[ServerSettings]) -> dict:
        return protected_resource_metadata(settings)

    @get("/jwks.json", operation_id="jwks")
    async def jwks(self, service: NamedDependency[MemoryService]) -> dict:
        return service.keys.jwks()
