"""Icons for the server and its tools (MCP 2025-11-25 `icons`), served from the app's /assets.

Each comes as PNG (which every client that shows icons must support) and SVG, once for light and
once for dark backgrounds, so a host picks the one that reads on its theme.
"""

from typing import Literal

from mcp_types import Icon

__all__ = ["IconKind", "icons"]

IconKind = Literal["memory", "read", "write", "erase"]
_THEMES: tuple[Literal["light", "dark"], ...] = ("light", "dark")


def icons(base_url: str, kind: IconKind) -> list[Icon]:
    """The icon set of `kind`: the server's own ("memory"), or a tool's by what it does."""
    return [
        icon
        for theme in _THEMES
        for icon in (
            Icon(src=f"{base_url}/assets/icon-{kind}-{theme}.png", mime_type="image/png", sizes=["64x64"],
                 theme=theme),
            Icon(src=f"{base_url}/assets/icon-{kind}-{theme}.svg", mime_type="image/svg+xml", sizes=["any"],
                 theme=theme),
        )
    ]
