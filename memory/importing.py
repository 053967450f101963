"""Reading other tools' exports into memories to store: the parsers of `memory import`.

Each format becomes a list of `ImportItem`s (one future `memory.stored` event each, with where it
came from) and the links between them. Parsing checks everything a store would check, so a file
with one bad record is refused whole, naming its line (or its record), before anything is stored.
The formats are described in docs/import.md.
"""

import base64
import hashlib
import json
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec

from memory.errors import InvalidInput
from memory.events import ImportSource, MemoriesLinked, MemoryDeleted, MemoryForgotten, MemoryStored, MemoryUpdated
from memory.events import decode_payload
from memory.identity import Identity
from memory.model import MemoryFields
from memory.validation import check_scope, cleaned
from memory.verify_export import BundleError, verify_bundle

__all__ = ["FORMATS", "ImportItem", "ImportLink", "ParsedImport", "parse_import", "import_source",
           "imported_memory_id",
           "MAX_IMPORT_ITEMS", "MAX_IMPORT_BYTES"]

FORMATS = ("server-memory", "mem0", "jsonl", "export")
MAX_IMPORT_ITEMS = 10_000
MAX_IMPORT_BYTES = 64 * 1024 * 1024
_MAX_ID = 200
_NAMESPACE = uuid.UUID("5b0f3f4e-6d8e-4c41-9a52-0f0c2f7b9d11")
_NOT_A_NAME = re.compile(r"[^\w-]+", re.UNICODE)


class ImportItem(MemoryFields, kw_only=True, forbid_unknown_fields=True):
    """A memory's fields as another tool gave them, and where they came from."""

    where: str  # "line 3", "record 12": what an error or a report names
    source_id: str
    created_at: str | None = None
    updated_at: str | None = None


class ImportLink(msgspec.Struct, frozen=True):
    source: str  # source ids of two items
    target: str
    link_type: str


class ParsedImport(msgspec.Struct, kw_only=True):
    format: str
    items: list[ImportItem]
    links: list[ImportLink] = []


def _fail(where: str, message: str) -> InvalidInput:
    return InvalidInput(f"{where}: {message}; nothing was imported")


def _string(value: Any, where: str, what: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _fail(where, f"{what} must be {'a non-empty' if required else 'a'} string")
    return value


def _source_id(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    value = _string(value, where, "id")
    if len(value) > _MAX_ID:
        raise _fail(where, f"id is longer than {_MAX_ID} characters")
    return value


def _checked(item: ImportItem) -> ImportItem:
    """The checks `store_memory` makes, with the record named in the error."""
    try:
        item = cleaned(item)
        check_scope(item.scope, item.project, item.task_id)
    except InvalidInput as exc:
        raise _fail(item.where, str(exc)) from None
    return item


def _json_lines(data: bytes) -> list[tuple[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("the file is not UTF-8 text; nothing was imported") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise _fail(f"line {number}", f"not JSON ({exc.msg} at column {exc.colno})") from None
    return records


def _name(value: str) -> str:
    """A server-memory entity name ("John Smith") as one of ours ("John_Smith")."""
    return _NOT_A_NAME.sub("_", value).strip("_")[:200] or "entity"


def _server_memory(data: bytes) -> ParsedImport:
    """The MCP reference memory server's memory.jsonl: one entity or relation per line."""
    items: list[ImportItem] = []
    links: list[ImportLink] = []
    first: dict[str, str] = {}  # entity name -> source id of its first observation
    relations: list[tuple[str, dict]] = []
    for where, record in _json_lines(data):
        if not isinstance(record, dict):
            raise _fail(where, "expected an object with a type")
        kind = record.get("type")
        if kind == "entity":
            name = _string(record.get("name"), where, "name")
            entity_type = _string(record.get("entityType"), where, "entityType", required=False)
            observations = record.get("observations", [])
            if not isinstance(observations, list):
                raise _fail(where, "observations must be a list of strings")
            for index, observation in enumerate(observations):
                text = _string(observation, where, f"observations[{index}]")
                # The reference server has no ids: an observation is its entity and its text.
                source_id = f"entity:{name}:{text}"
                first.setdefault(name, source_id)
                items.append(ImportItem(where=where, source_id=source_id, text=text, entity=_name(name),
                                        tags=[_name(entity_type)] if entity_type else []))
        elif kind == "relation":
            for key in ("from", "to", "relationType"):
                _string(record.get(key), where, key)
            relations.append((where, record))
        else:
            raise _fail(where, f"type must be 'entity' or 'relation', not {kind!r}")
    for where, record in relations:
        source, target, relation = record["from"], record["to"], record["relationType"]
        source_id = f"relation:{source}:{relation}:{target}"
        items.append(ImportItem(where=where, source_id=source_id, text=f"{source} {relation.replace('_', ' ')} {target}",
                                entity=_name(source), tags=["relation", _name(relation)]))
        # The relation's memory refines what is known of each end.
        links += [ImportLink(source_id, first[end], "refines") for end in (source, target) if end in first]
    return ParsedImport(format="server-memory", items=items, links=links)


def _mem0(data: bytes) -> ParsedImport:
    """mem0's get_all / export: a JSON list of memories, or {"results": [...]}."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"not a JSON document ({exc}); nothing was imported") from None
    records = doc.get("results") if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise InvalidInput("expected a JSON list of memories or an object with 'results'; nothing was imported")
    items = []
    for index, record in enumerate(records):
        where = f"record {index + 1}"
        if not isinstance(record, dict):
            raise _fail(where, "expected an object with id and memory")
        categories = record.get("categories") or []
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise _fail(where, "categories must be a list of strings")
        created = _string(record.get("created_at"), where, "created_at", required=False)
        items.append(ImportItem(
            where=where, source_id=_source_id(record.get("id"), where),
            text=_string(record.get("memory"), where, "memory"), tags=categories, occurred_at=created,
            created_at=created, updated_at=_string(record.get("updated_at"), where, "updated_at", required=False),
        ))
    return ParsedImport(format="mem0", items=items)


class _JsonlRecord(MemoryFields, kw_only=True, forbid_unknown_fields=True):
    id: str | None = None


def _jsonl(data: bytes) -> ParsedImport:
    """Our own line format: one {"text": ..., and optional fields} per line."""
    items = []
    for where, record in _json_lines(data):
        try:
            parsed = msgspec.convert(record, _JsonlRecord)
        except msgspec.ValidationError as exc:
            raise _fail(where, str(exc)) from None
        # Without an id, the record itself is its identity: the same line imports once.
        source_id = parsed.id or "sha256:" + hashlib.sha256(
            msgspec.json.encode(record, order="sorted")).hexdigest()
        given = {f: getattr(parsed, f) for f in MemoryFields.__struct_fields__}
        items.append(ImportItem(where=where, source_id=_source_id(source_id, where), **given,
                                created_at=parsed.occurred_at))
    return ParsedImport(format="jsonl", items=items)


def _export(data: bytes) -> ParsedImport:
    """Another memory service's export bundle, verified first: its live memories as they are now."""
    with tempfile.NamedTemporaryFile(suffix=".json") as file:
        file.write(data)
        file.flush()
        try:
            report = verify_bundle(Path(file.name))
        except BundleError as exc:
            raise InvalidInput(f"not an export bundle: {exc}; nothing was imported") from None
    if not report.ok:
        raise InvalidInput(f"the bundle does not verify ({report.problems[0]}); nothing was imported")
    live: dict[str, ImportItem] = {}
    links: list[ImportLink] = []
    for row in json.loads(data)["events"]:
        if row["payload"] is None:
            continue
        header = json.loads(base64.b64decode(row["header"]))
        where = f"event {row['seq']}"
        try:
            payload = decode_payload(base64.b64decode(row["payload"]), row["type"], header["schema_version"])
        except (ValueError, msgspec.ValidationError) as exc:  # a type or version this server does not know
            raise _fail(where, f"cannot read this {row['type']} event ({exc})") from None
        match payload:
            case MemoryStored():
                # The payload carries a memory's fields by the same names (it may know more).
                given = {f: getattr(payload, f) for f in MemoryFields.__struct_fields__}
                live[payload.memory_id] = ImportItem(where=where, source_id=payload.memory_id, **given,
                                                     created_at=header["recorded_at"],
                                                     updated_at=header["recorded_at"])
            case MemoryUpdated() if payload.memory_id in live:
                item = live[payload.memory_id]
                for field in MemoryFields.__struct_fields__:
                    if getattr(payload, field, msgspec.UNSET) is not msgspec.UNSET:
                        setattr(item, field, getattr(payload, field))
                item.updated_at = header["recorded_at"]
            case MemoryDeleted() | MemoryForgotten():
                live.pop(payload.memory_id, None)
            case MemoriesLinked():
                links.append(ImportLink(payload.source_id, payload.target_id, payload.link_type.value))
    links = [link for link in links if link.source in live and link.target in live]
    return ParsedImport(format="export", items=list(live.values()), links=links)


_PARSERS = {"server-memory": _server_memory, "mem0": _mem0, "jsonl": _jsonl, "export": _export}


def parse_import(format_name: str, data: bytes) -> ParsedImport:
    if format_name not in _PARSERS:
        raise InvalidInput(f"unknown format {format_name!r}: use one of {', '.join(FORMATS)}")
    if len(data) > MAX_IMPORT_BYTES:
        raise InvalidInput(f"the file is {len(data)} bytes; the limit is {MAX_IMPORT_BYTES}")
    parsed = _PARSERS[format_name](data)
    if len(parsed.items) > MAX_IMPORT_ITEMS:
        raise InvalidInput(f"{len(parsed.items)} memories in one import; the limit is {MAX_IMPORT_ITEMS}")
    parsed.items = [_checked(item) for item in parsed.items]
    return parsed


def imported_memory_id(owner: Identity, format_name: str, source_id: str) -> str:
    """The same record imported by the same person always gets the same memory id (and event id),
    which is what makes a second import of a file add nothing."""
    return str(uuid.uuid5(_NAMESPACE, f"{owner.key}\n{format_name}\n{source_id}"))


def import_source(parsed: ParsedImport, item: ImportItem) -> ImportSource:
    return ImportSource(format=parsed.format, original_id=item.source_id, created_at=item.created_at,
                        updated_at=item.updated_at)
