"""How a tool function becomes an MCP tool: `@tool(...)` on the function, its argument and result
structs (msgspec) as its inputSchema and outputSchema.

The SDK derives schemas from Pydantic signatures; ours are msgspec structs built from the
domain's shapes, so this module hands the SDK a `Tool` whose schemas come from
`msgspec.json.schema_components` and whose arguments are decoded by msgspec (a bad argument is a
tool error naming it, never a crash).
"""

import functools
import inspect
import json
import typing
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp_types import CallToolResult, Icon, TextContent, ToolAnnotations

from memory.errors import InvalidInput
from memory.validation import check_text_fields

__all__ = ["ToolSpec", "tool", "tool_specs", "object_schema", "fields_taking", "build_tool"]

ToolFn = Callable[[Any, Context, Any], Awaitable[msgspec.Struct]]


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What `@tool` records of a tool function; the function's own name is the tool's."""

    fn: Any  # ToolFn: (self, ctx, arguments) -> result struct
    title: str
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    #: An argument that is null means "not given" (for tools whose arguments are all changes).
    null_is_unset: bool = False

    @property
    def name(self) -> str:
        return self.fn.__name__

    @property
    def arguments(self) -> type[msgspec.Struct]:
        return typing.get_type_hints(self.fn)["arguments"]

    @property
    def result(self) -> type[msgspec.Struct]:
        return typing.get_type_hints(self.fn)["return"]

    @property
    def description(self) -> str:
        """The docstring without its source indentation and line wrapping: every byte of it lands
        in a model's context, and a host reflows the text itself."""
        paragraphs = inspect.cleandoc(self.fn.__doc__ or "").split("\n\n")
        return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


_SPEC_ATTRIBUTE = "__mcp_tool__"


def tool(title: str, *, read_only: bool = False, destructive: bool = False, idempotent: bool = False,
         null_is_unset: bool = False) -> Callable[[ToolFn], ToolFn]:
    """Mark a method `async def name(self, ctx, arguments: ArgsStruct) -> ResultStruct` as a tool."""

    def mark(fn: ToolFn) -> ToolFn:
        setattr(fn, _SPEC_ATTRIBUTE, ToolSpec(fn=fn, title=title, read_only=read_only, destructive=destructive,
                                              idempotent=idempotent or read_only, null_is_unset=null_is_unset))
        return fn

    return mark


def tool_specs(cls: type) -> tuple[ToolSpec, ...]:
    """The tools a class defines, in the order it defines them."""
    return tuple(getattr(fn, _SPEC_ATTRIBUTE) for fn in vars(cls).values() if hasattr(fn, _SPEC_ATTRIBUTE))


def object_schema(kind: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of a struct with every reference inlined: an assistant reads an enum's
    values where the argument is, not behind a $ref (our shapes are not recursive)."""
    (root,), definitions = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")

    def inlined(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [inlined(item, seen) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[1]
            if name in seen:
                raise ValueError(f"{kind.__name__} is recursive through {name}; it cannot be inlined")
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return inlined(definitions[name], seen | {name}) | inlined(rest, seen)
        return {key: inlined(value, seen) for key, value in node.items()}

    schema = inlined(root, frozenset())
    _keep_enum_order(schema, _enums_in(msgspec.inspect.type_info(kind)))
    return schema


def _enums_in(info: Any, seen: set[int] | None = None) -> dict[frozenset, list[Any]]:
    """The values of each Enum a type uses, in the order the Enum declares them."""
    seen = set() if seen is None else seen
    if id(info) in seen:
        return {}
    seen.add(id(info))
    if isinstance(info, msgspec.inspect.EnumType):
        values = [member.value for member in info.cls]
        return {frozenset(values): values}
    found: dict[frozenset, list[Any]] = {}
    children = [getattr(info, f) for f in getattr(info, "__struct_fields__", ())]
    for child in children:
        for inner in child if isinstance(child, tuple | list) else (child,):
            if isinstance(inner, msgspec.inspect.Type | msgspec.inspect.Field):
                found |= _enums_in(inner, seen)
    return found


def _keep_enum_order(node: Any, enums: dict[frozenset, list[Any]]) -> None:
    """msgspec sorts an enum's values; an assistant reads them best as the domain orders them."""
    if isinstance(node, list):
        for item in node:
            _keep_enum_order(item, enums)
    elif isinstance(node, dict):
        if isinstance(node.get("enum"), list) and frozenset(node["enum"]) in enums:
            node["enum"] = enums[frozenset(node["enum"])]
        for value in node.values():
            _keep_enum_order(value, enums)


def _decoded(spec: ToolSpec, arguments: dict[str, Any]) -> msgspec.Struct:
    kind = spec.arguments
    fields = set(kind.__struct_fields__)
    # Unknown names are left out, as the SDK's own argument models do: assistants add some.
    given = {k: v for k, v in arguments.items() if k in fields and not (spec.null_is_unset and v is None)}
    for name, value in given.items():
        # Some hosts send a list or an object as a JSON string; a string argument stays as it is.
        if isinstance(value, str) and value[:1] in "[{" and not _takes_text(kind, name):
            try:
                given[name] = json.loads(value)
            except (ValueError, RecursionError):
                pass
    try:
        check_text_fields(given, "")
        return msgspec.convert(given, kind, str_keys=True)
    except InvalidInput as exc:
        raise ToolError(str(exc)) from None
    except msgspec.ValidationError as exc:
        raise ToolError(f"invalid arguments: {exc}") from None


def fields_taking(kind: type[msgspec.Struct], accepted: type[msgspec.inspect.Type]) -> tuple[str, ...]:
    """The fields of a struct whose type accepts a kind of value (`StrType`: a string, `NoneType`: null)."""

    def takes(t: msgspec.inspect.Type) -> bool:
        while isinstance(t, msgspec.inspect.Metadata):
            t = t.type
        if isinstance(t, msgspec.inspect.UnionType):
            return any(takes(inner) for inner in t.types)
        return isinstance(t, accepted)

    info = msgspec.inspect.type_info(kind)
    return tuple(f.name for f in info.fields if takes(f.type))  # type: ignore[attr-defined]


@functools.cache
def _takes_text(kind: type[msgspec.Struct], name: str) -> bool:
    return name in fields_taking(kind, msgspec.inspect.StrType)


class _StructArguments(FuncMetadata):
    """The SDK's argument handling, handing the raw arguments on: msgspec decodes them."""

    def validate_arguments(self, arguments_to_validate: dict[str, Any]) -> dict[str, Any]:
        return {"arguments": arguments_to_validate}


def build_tool(spec: ToolSpec, bound: Callable[[Context, Any], Awaitable[msgspec.Struct]],
               wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]], *, icons: list[Icon] | None,
               meta: dict[str, Any] | None) -> Tool:
    """The SDK's Tool for one spec, calling `bound(ctx, arguments)`; `wrap` instruments the call."""

    async def call(arguments: dict[str, Any], ctx: Context) -> CallToolResult:
        result = await bound(ctx, _decoded(spec, arguments))
        structured = msgspec.to_builtins(result)
        text = msgspec.json.format(msgspec.json.encode(structured), indent=2).decode()
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=structured)

    call.__name__ = spec.name
    return Tool(
        fn=wrap(spec.name, call), name=spec.name, title=spec.title, description=spec.description,
        parameters=object_schema(spec.arguments),
        fn_metadata=_StructArguments(arg_model=ArgModelBase, output_schema=object_schema(spec.result)),
        is_async=True, context_kwarg="ctx", icons=icons, meta=meta,
        annotations=ToolAnnotations(title=spec.title, read_only_hint=spec.read_only,
                                    destructive_hint=spec.destructive, idempotent_hint=spec.idempotent,
                                    open_world_hint=False),
    )
