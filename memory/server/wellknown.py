"""The public documents a client reads before it has a token: where to get one (RFC 9728
protected-resource metadata) and the keys that verify this server's tokens and events (JWKS)."""

from litestar import Controller, Request, get
from litestar.di import NamedDependency

from memory.server.auth import ALL_SCOPES
from memory.server.settings import ServerSettings
from memory.service import MemoryService

__all__ = ["WellKnownController", "protected_resource_metadata", "RESOURCE_METADATA_PATH"]

RESOURCE_METADATA_PATH = "/.well-known/oauth-protected-resource"


def protected_resource_metadata(settings: ServerSettings, base_url: str | None = None) -> dict:
    """`base_url`: the spelling of this server the client used (one of `settings.base_urls`), which
    the client checks `resource` against; the tokens it gets are for the same server either way."""
    return {
        "resource": f"{base_url or settings.base_url}/mcp",
        "authorization_servers": [settings.authorization_server],
        "scopes_supported": list(ALL_SCOPES),
        "bearer_methods_supported": ["header"],
        "resource_name": "Memory",
    }


class WellKnownController(Controller):
    path = "/.well-known"
    include_in_schema = False

    @get(["/oauth-protected-resource", "/oauth-protected-resource/mcp"], operation_id="protectedResourceMetadata")
    async def protected_resource(self, request: Request, settings: NamedDependency[ServerSettings]) -> dict:
        return protected_resource_metadata(settings, settings.base_url_for(request.headers.get("host")))

    @get("/jwks.json", operation_id="jwks")
    async def jwks(self, service: NamedDependency[MemoryService]) -> dict:
        return service.keys.jwks()
