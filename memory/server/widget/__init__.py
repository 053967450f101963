"""Memory cards inside the chat: one MCP Apps view (SEP-1865, `io.modelcontextprotocol/ui`).

Hosts that render MCP Apps (ChatGPT among them) read `ui://memory/cards.html` and show a tool's
`structuredContent` in it: memory cards, a "stored" note with an undo, a memory's history as a
timeline. Text-only hosts keep getting the same text content: the view adds, never replaces.

The view is one self-contained document (its stylesheet and script inlined, nothing fetched), so
its `_meta.ui.csp` names no origin at all and hosts keep their most restrictive policy.
"""

from functools import cache
from importlib.resources import files

from mcp.server.apps import Apps, ResourceCsp

__all__ = ["WIDGET_URI", "WIDGET_TOOLS", "widget_html", "widget_extension", "widget_tool_meta"]

WIDGET_URI = "ui://memory/cards.html"
#: The tools whose results the view knows how to show.
WIDGET_TOOLS = frozenset({"retrieve_context", "search", "memory_history", "store_memory"})
_STYLE_SLOT = "/* cards.css */"
_SCRIPT_SLOT = "/* cards.js */"


@cache
def widget_html() -> str:
    """The view's HTML with its stylesheet and script inlined."""
    folder = files(__package__)
    page = (folder / "cards.html").read_text(encoding="utf-8")
    style = (folder / "cards.css").read_text(encoding="utf-8")
    script = (folder / "cards.js").read_text(encoding="utf-8")
    # Either would end its element early and turn the rest into markup.
    if "</style" in style.lower() or "</script" in script.lower():
        raise ValueError("the widget's stylesheet or script closes its own element")
    return page.replace(_STYLE_SLOT, style).replace(_SCRIPT_SLOT, script)


def widget_extension() -> Apps:
    """The MCP Apps extension serving the view: advertises `io.modelcontextprotocol/ui` and the resource."""
    apps = Apps()
    apps.add_html_resource(
        WIDGET_URI, widget_html(), name="memory-cards", title="Memory cards",
        description="Shows memories, a stored memory (with undo) and a memory's history.",
        csp=ResourceCsp(), prefers_border=True,
    )
    return apps


def widget_tool_meta(tool: str) -> dict[str, object] | None:
    """The `_meta` binding `tool` to the view, or None for a tool the view does not show."""
    return {"ui": {"resourceUri": WIDGET_URI}} if tool in WIDGET_TOOLS else None
