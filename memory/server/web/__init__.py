"""The person's own web pages: sign in with a local account, then see, search, edit and forget
memories, read the log as a timeline, and revoke connected apps. Server-rendered Jinja templates
(autoescaped), no scripts; Litestar's cookie session and CSRF middleware guard them and nothing else."""

from pathlib import Path

from litestar import Controller, Router
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from memory.server.oauth.storage import AuthStore
from memory.server.settings import ServerSettings
from memory.server.web.pages import WEB_CLIENT_ID, build_external_idp_page, build_pages
from memory.server.web.session import csrf_config, session_config, session_key
from memory.service import MemoryService
from memory.signing import keys_dir

__all__ = ["build_web_controllers", "web_template_config", "WEB_CLIENT_ID"]

_TEMPLATES = Path(__file__).parent / "templates"


def web_template_config() -> TemplateConfig:
    return TemplateConfig(directory=_TEMPLATES, engine=JinjaTemplateEngine)


def build_web_controllers(settings: ServerSettings, service: MemoryService, oauth_store: AuthStore,
                          login_rate_limit: DefineMiddleware) -> list[type[Controller] | Router]:
    # A file, not a <style> element: the pages' Content-Security-Policy allows no inline style.
    assets = create_static_files_router(path="/assets", directories=[Path(__file__).parent / "static"],
                                        include_in_schema=False)
    if settings.external_idp:
        return [build_external_idp_page(settings), assets]
    key = session_key(settings.keys_dir or keys_dir(settings.data_dir))
    # On the pages' controller only: /mcp, /api/v1 and the OAuth endpoints never see the session
    # cookie's middleware nor a CSRF check (they take bearer tokens or their own form checks).
    layers = [session_config(key, settings.base_url).middleware,
              DefineMiddleware(CSRFMiddleware, config=csrf_config(key, settings.base_url))]
    return [build_pages(settings, service, oauth_store, layers, login_rate_limit), assets]

