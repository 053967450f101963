"""Erasure: after `forget`, the memory's text is gone from every byte the service keeps.

The text must not survive in the log files, the projection files, their WAL and shared-memory
files, the embedding cache, the full-text index or an export bundle; the chain must still verify,
showing the tombstone and which seqs were redacted. Files are read as raw bytes, so a copy left in
a free page, a WAL frame or an FTS segment counts as much as a copy in a live row.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory.audit import export_user, verify_user
from memory.commands import RetrieveQuery, StoreMemory, UpdateMemory
from memory.erasure import ErasedText
from memory.errors import NotFound
from memory.events import MemoriesRead
from memory.identity import Identity
from memory.log import LOG_FILE, USERS_DIR
from memory.model import LinkType
from memory.service import Caller, MemoryService
from memory.verify_export import verify_bundle
from projections.base import PROJECTIONS_FILE
from projections.embeddings import text_hash

MARKER = "zanzibarquokka"
SENTENCE = "Meet the informant behind the old lighthouse at midnight on Tuesday"
TEXTS = {
    "marker word": f"The {MARKER} hides the spare key under the blue flowerpot",
    "sentence": SENTENCE,
    # bigger than a page: the payload and the FTS content spill into overflow pages
    "long text": " ".join(f"{SENTENCE}, said the {MARKER} in paragraph {i}." for i in range(150)),
}
OTHERS = (
    "The deploy pipeline uses blue green releases",
    "Alice prefers green tea over coffee",
    "The quarterly report is due on Friday",
)
ALICE = Caller(Identity("local", "alice"), "cli", "req-1")


@pytest.fixture
def service(data_dir, embedder):
    svc = MemoryService(data_dir, embedder)
    yield svc
    svc.close()


def _files(data_dir: Path) -> dict[str, bytes]:
    """Every file the service keeps for users, as raw bytes (WAL and -shm files included)."""
    found = {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted((data_dir / "users").rglob("*"))
             if p.is_file()}
    assert any(name.endswith("events.sqlite") for name in found)
    assert any(name.endswith("projections.sqlite") for name in found)
    return found


def _holding(data_dir: Path, needle: bytes) -> list[str]:
    return [name for name, data in _files(data_dir).items() if needle in data]


def _store_with_history(svc: MemoryService, text: str, history: str) -> tuple[str, list[str]]:
    """Store `text` among others, give it `history`; return its id and every text it ever had."""
    others = [svc.store(ALICE, StoreMemory(text=t, entity="acme")).id for t in OTHERS]
    memory = svc.store(ALICE, StoreMemory(text=text, entity="acme.secret", tags=["private"]))
    # a reply right after it: whatever indexes a memory with its neighbours must let go too
    svc.store(ALICE, StoreMemory(text="Noted, I will check on that tomorrow"))
    texts = [text]
    svc.link(ALICE, memory.id, others[0], LinkType.SUPPORTS)
    svc.retrieve_context(ALICE, RetrieveQuery(query="blue flowerpot lighthouse", limit=5))
    svc.get(ALICE, memory.id)
    if history == "updated":
        texts.append(f"{text} Also: the {MARKER} moved it.")
        svc.update(ALICE, memory.id, UpdateMemory(text=texts[-1], tags=["private", "moved"]))
        svc.update(ALICE, memory.id, UpdateMemory(entity="acme.vault"))
    elif history == "deleted":
        svc.delete(ALICE, memory.id, reason="no longer true")
    return memory.id, texts


@pytest.mark.parametrize("history", ["stored", "updated", "deleted"])
@pytest.mark.parametrize("kind", sorted(TEXTS))
def test_forgotten_text_appears_in_no_byte_of_the_data_dir(service, data_dir, kind, history):
    text = TEXTS[kind]
    needles = [SENTENCE.encode()] if MARKER not in text else [MARKER.encode()]
    memory_id, texts = _store_with_history(service, text, history)
    assert all(_holding(data_dir, n) for n in needles), "the text should be on disk before forgetting"

    service.forget(ALICE, memory_id)
    for needle in needles:
        assert _holding(data_dir, needle) == []
    for t in texts:
        assert _holding(data_dir, t.encode()) == []

    # later writes add WAL frames; none of them may bring an old page back
    service.store(ALICE, StoreMemory(text="After the erasure, life went on", entity="acme"))
    service.retrieve_context(ALICE, RetrieveQuery(query="life"))
    for needle in needles:
        assert _holding(data_dir, needle) == []

    service.close()
    for needle in needles:
        assert _holding(data_dir, needle) == []


def test_forgotten_entity_name_appears_in_no_byte_of_the_data_dir(service, data_dir):
    first = service.store(ALICE, StoreMemory(text="vault code is behind the painting", entity="quokkacorp.vault"))
    second = service.store(ALICE, StoreMemory(text="vault opens on mondays", entity="quokkacorp.vault"))
    service.store(ALICE, StoreMemory(text="unrelated note", entity="acme"))
    assert _holding(data_dir, b"quokkacorp")
    service.forget(ALICE, first.id)
    service.forget(ALICE, second.id)
    assert _holding(data_dir, b"quokkacorp") == []


def test_forget_leaves_a_verifying_chain_with_the_tombstone_and_the_redacted_seqs(service, data_dir, embedder):
    memory_id, _ = _store_with_history(service, TEXTS["marker word"], "updated")
    store = service.users.get(ALICE.identity)
    own_seqs = [seq for seq, _ in store.view.db.execute(
        "SELECT seq, type FROM memory_events WHERE memory_id = ? AND type IN "
        "('memory.stored', 'memory.updated', 'memory.deleted') ORDER BY seq", (memory_id,))]
    read_seqs = [e.seq for e in store.log.read_events() if e.type == "memories.read"
                 and e.payload.query and "flowerpot" in e.payload.query]
    fetch_seqs = [e.seq for e in store.log.read_events() if e.type == "memories.read"
                  and e.payload.operation == "fetch"]
    result = service.forget(ALICE, memory_id)

    assert len(own_seqs) == 3  # stored + two updates
    # ... and the read whose query held one of its words; the fetch returned it but asked nothing
    assert len(read_seqs) == 1 and len(fetch_seqs) == 1
    assert result.redacted_seqs == sorted(own_seqs + read_seqs)
    tombstone = store.log.get_event(result.tombstone_seq)
    assert tombstone.type == "memory.forgotten" and not tombstone.redacted
    assert tombstone.payload.memory_id == memory_id
    assert tombstone.payload.redacted_seqs == result.redacted_seqs
    for seq in result.redacted_seqs:
        event = store.log.get_event(seq)
        assert event.redacted and event.payload is None and event.payload_bytes is None
        assert event.payload_sha256  # the header still commits to what was there

    report = verify_user(data_dir, ALICE.identity, service.keys, embedder)
    assert report.ok, report.problems
    assert report.redacted_seqs == result.redacted_seqs
    assert report.last_seq == store.log.last_seq()

    page = service.history(ALICE, memory_id)
    by_seq = {e.seq: e for e in page.entries}
    assert all(by_seq[s].redacted and by_seq[s].payload is None for s in result.redacted_seqs)
    assert by_seq[result.tombstone_seq].type == "memory.forgotten"
    assert MARKER not in json.dumps([e.payload for e in page.entries])

    for call in (lambda: service.get(ALICE, memory_id), lambda: service.forget(ALICE, memory_id),
                 lambda: service.update(ALICE, memory_id, UpdateMemory(text="back again")),
                 lambda: service.delete(ALICE, memory_id)):
        with pytest.raises(NotFound):
            call()


def test_an_export_after_forget_holds_no_copy_of_the_text_and_verifies(service, data_dir, tmp_path):
    memory_id, texts = _store_with_history(service, TEXTS["long text"], "updated")
    service.store(ALICE, StoreMemory(text="the export keeps this one"))
    result = service.forget(ALICE, memory_id)

    bundle = tmp_path / "alice.json"
    manifest = export_user(data_dir, ALICE.identity, service.keys, bundle)
    raw = bundle.read_bytes()
    doc = json.loads(raw)
    payloads = [base64.b64decode(e["payload"]) for e in doc["events"] if e["payload"] is not None]
    assert any(b"the export keeps this one" in p for p in payloads)  # payloads are really there
    for needle in (MARKER.encode(), SENTENCE.encode(), *(t.encode() for t in texts)):
        assert needle not in raw and not any(needle in p for p in payloads)
    assert [e["seq"] for e in doc["events"] if e["redacted"]] == result.redacted_seqs

    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert report.redacted_seqs == result.redacted_seqs
    assert manifest["last_seq"] == report.last_seq


def test_forgetting_one_of_two_memories_of_an_entity_keeps_the_entity(service):
    first = service.store(ALICE, StoreMemory(text="launch is in june", entity="globex.marketing"))
    second = service.store(ALICE, StoreMemory(text="budget is tight", entity="globex.marketing"))
    service.forget(ALICE, first.id)
    entities = {e.name: e for e in service.list_entities(ALICE).entities}
    assert entities["globex.marketing"].memory_count == 1
    assert entities["globex.marketing"].parent == "globex"
    assert "globex" in entities
    assert service.get(ALICE, second.id).entity == "globex.marketing"


def test_forgetting_the_last_memory_naming_an_entity_removes_the_entity_and_its_implied_parents(service):
    first = service.store(ALICE, StoreMemory(text="launch is in june", entity="globex.marketing.web"))
    second = service.store(ALICE, StoreMemory(text="budget is tight", entity="globex.marketing.web"))
    service.store(ALICE, StoreMemory(text="someone else", entity="initech"))
    service.forget(ALICE, first.id)
    service.forget(ALICE, second.id)
    assert [e.name for e in service.list_entities(ALICE).entities] == ["initech"]
    assert service.search_entities(ALICE, "globex") == []
    db = service.users.get(ALICE.identity).view.db
    for table in ("entities", "entity_members", "memories"):
        rows = db.execute(f"SELECT * FROM {table}").fetchall()
        assert "globex" not in repr(rows), table


def test_forgetting_the_last_memory_of_a_registered_entity_keeps_the_registration(service):
    service.register_entity(ALICE, "globex", description="a client")
    memory = service.store(ALICE, StoreMemory(text="launch is in june", entity="globex.marketing"))
    service.forget(ALICE, memory.id)
    entities = {e.name: e for e in service.list_entities(ALICE).entities}
    assert set(entities) == {"globex"}
    assert entities["globex"].registered and entities["globex"].memory_count == 0


def test_a_forgotten_memory_is_gone_from_full_text_search(service, data_dir):
    memory_id, _ = _store_with_history(service, TEXTS["marker word"], "stored")
    db = service.users.get(ALICE.identity).view.db
    matched = {r[0] for r in db.execute("SELECT memory_id FROM memories_fts WHERE memories_fts MATCH ?", (MARKER,))}
    assert memory_id in matched  # (its successor may match too, through its neighbour's text)
    service.forget(ALICE, memory_id)
    # in no column of any row: neither the memory's own nor a neighbour's as context
    assert db.execute("SELECT * FROM memories_fts WHERE memories_fts MATCH ?", (MARKER,)).fetchall() == []
    assert db.execute("SELECT * FROM fulltext_rows WHERE memory_id = ?", (memory_id,)).fetchall() == []
    result = service.retrieve_context(ALICE, RetrieveQuery(query=f"{MARKER} flowerpot", limit=50))
    assert memory_id not in [r.memory.id for r in result.memories]
    assert all(MARKER not in r.memory.text for r in result.memories)
    # no term of the forgotten text is left in the index's vocabulary either
    service.close()
    path = next((data_dir / USERS_DIR).glob(f"*/{PROJECTIONS_FILE}"))
    ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        ro.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, memories_fts, row)")
        terms = {t for (t,) in ro.execute("SELECT term FROM temp.vocab")}
    finally:
        ro.close()
    assert terms and not any(t.startswith("zanzibar") or t.startswith("flowerpot") for t in terms)


def _cache_rows(svc: MemoryService, texts: list[str]) -> dict[str, bytes]:
    db = svc.users.get(ALICE.identity).view.db
    found = {}
    for t in texts:
        row = db.execute("SELECT vector FROM embedding_cache WHERE text_hash = ?", (text_hash(t),)).fetchone()
        if row:
            found[t] = row[0]
    return found


@pytest.mark.parametrize("history", ["stored", "updated", "deleted"])
def test_forgetting_deletes_every_vector_of_the_memory_from_the_embedding_cache(service, data_dir, history):
    memory_id, texts = _store_with_history(service, TEXTS["marker word"], history)
    before = _cache_rows(service, texts)
    assert before, "the text was embedded and cached"
    service.forget(ALICE, memory_id)
    db = service.users.get(ALICE.identity).view.db
    assert db.execute("SELECT * FROM embeddings WHERE memory_id = ?", (memory_id,)).fetchall() == []
    assert memory_id not in service.users.get(ALICE.identity).view.embeddings.index
    assert _cache_rows(service, texts) == {}
    service.close()
    for t, vector in before.items():
        assert _holding(data_dir, vector) == [], f"the vector of {t[:30]!r}... is still on disk"
        assert _holding(data_dir, text_hash(t).encode()) == []


def test_a_shared_text_keeps_its_cached_vector_while_another_memory_still_has_it(service):
    text = "Two memories can say the very same thing"
    first = service.store(ALICE, StoreMemory(text=text))
    second = service.store(ALICE, StoreMemory(text=text, allow_duplicate=True))
    service.forget(ALICE, first.id)
    assert _cache_rows(service, [text])
    assert second.id in service.users.get(ALICE.identity).view.embeddings.index
    service.forget(ALICE, second.id)
    assert _cache_rows(service, [text]) == {}


def test_a_search_that_found_the_forgotten_memory_keeps_no_copy_of_its_words(service, data_dir):
    memory = service.store(ALICE, StoreMemory(text=TEXTS["marker word"]))
    found = service.retrieve_context(ALICE, RetrieveQuery(query=f"where does the {MARKER} hide the key"))
    assert found.memories[0].memory.id == memory.id
    service.forget(ALICE, memory.id)
    assert _holding(data_dir, MARKER.encode()) == []


def test_forget_erases_every_read_quoting_the_text_and_keeps_the_query_of_reads_sharing_nothing(service, data_dir):
    text = TEXTS["marker word"]
    # Its distinctive words: in the text, at least four letters, and in no other text Alice keeps
    # ("blue" is in one of OTHERS, "the" and "key" are too short).
    distinctive = [MARKER, "hides", "spare", "under", "flowerpot"]
    for other in OTHERS:
        service.store(ALICE, StoreMemory(text=other, entity="acme"))
    # min_score 0: a read that returned other memories (the relevance floor would return none).
    before = service.retrieve_context(ALICE, RetrieveQuery(query=f"Where does the {MARKER.upper()} hide things?",
                                                           min_score=0.0))
    assert before.memories  # it returned other memories, never the one it quotes
    memory = service.store(ALICE, StoreMemory(text=text))
    unrelated = {
        "tea": service.retrieve_context(ALICE, RetrieveQuery(query="green tea or coffee", limit=10)),
        "deploy": service.retrieve_context(ALICE, RetrieveQuery(query="how do we deploy releases", limit=10)),
        "report": service.retrieve_context(ALICE, RetrieveQuery(query="quarterly report", limit=10)),
    }
    # every unrelated read returned the memory: what a read returned is no reason to erase it
    assert all(memory.id in [m.memory.id for m in r.memories] for r in unrelated.values())
    service.get(ALICE, memory.id)
    service.search_entities(ALICE, "acme")
    after_whole = service.retrieve_context(ALICE, RetrieveQuery(query=text))
    after_word = service.search(ALICE, "the spare   FLOWERPOT")
    assert after_whole.memories[0].memory.id == memory.id and after_word[0].id == memory.id

    store = service.users.get(ALICE.identity)
    reads_before = {e.seq: e.payload for e in store.log.read_events() if e.type == "memories.read"}
    result = service.forget(ALICE, memory.id)

    quoting = {seq for seq, read in reads_before.items() if read.query and (
        MARKER in read.query.lower() or "flowerpot" in read.query.lower())}
    assert len(quoting) == 3
    assert quoting <= set(result.redacted_seqs)
    kept = {seq: read for seq, read in reads_before.items() if seq not in quoting}
    assert {read.query for read in kept.values()} >= {r.query for r in unrelated.values()} | {"acme"}
    for seq, read in kept.items():
        event = store.log.get_event(seq)
        assert not event.redacted and event.payload == read, f"seq {seq} ({read.operation}) lost its query"

    service.close()
    # after the last checkpoint and a clean close, in every file of the data dir, in any case
    files = {p: p.read_bytes().lower() for p in sorted(data_dir.rglob("*")) if p.is_file()}
    assert any(p.name.endswith("-wal") for p in files) or any(p.name == LOG_FILE for p in files)
    for needle in [text.lower(), *distinctive]:
        assert [str(p) for p, data in files.items() if needle.encode() in data] == [], needle
    assert all(b"green tea or coffee" in data for p, data in files.items() if p.name == LOG_FILE)


@pytest.mark.parametrize(("query", "filters", "shares"), [
    ("what is the PIN", {}, False),
    ("my pin is 4417", {}, True),                    # the whole text, any case
    ("MY   PIN\nIS 4417 ok?", {}, True),             # any whitespace
    ("4417", {}, True),                              # a distinctive word
    ("pin", {}, False),                              # too short to be a word of its own
    ("mypin is 44170", {}, False),                   # only between word boundaries
    (None, {"entity": "bank.lockers"}, True),        # its entity, in a filter
    (None, {"tags": ["x", "4417"]}, True),           # any string among the filters
    ("bank", {}, False),                             # kept by another memory
])
def test_a_read_shares_a_forgotten_text_only_through_what_it_asked(query, filters, shares):
    erased = ErasedText.of(["My PIN is 4417", "bank.lockers"], kept=["the bank opens at nine"])
    assert erased.words == {"4417", "lockers"}
    read = MemoriesRead(operation="retrieve_context", query=query, filters=filters, returned_ids=["any-id"])
    assert erased.shared_by(read) is shares


@settings(max_examples=200, deadline=None)
@given(text=st.text(min_size=1, max_size=80).filter(lambda t: t.strip() and "\x00" not in t),
       kept=st.lists(st.text(max_size=40), max_size=3), before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_read_quoting_a_forgotten_text_anywhere_in_any_case_always_shares_it(text, kept, before, after):
    erased = ErasedText.of([text], kept)
    shouted = text.upper() if text.upper().casefold() == text.casefold() else text  # not 'ı' -> 'I'
    quoting = f"{before} {shouted} {after}"
    assert erased.shared_by(MemoriesRead(operation="retrieve_context", query=quoting))
    assert erased.shared_by(MemoriesRead(operation="list_memories", filters={"entity": quoting}))


def test_a_short_text_is_shared_whole_between_word_boundaries_only_where_it_has_words():
    yes = ErasedText.of(["yes"], kept=[])
    assert yes.words == frozenset()  # too short for a distinctive word: only the whole text counts
    assert yes.shared_by(MemoriesRead(operation="retrieve_context", query="did she say YES?"))
    assert not yes.shared_by(MemoriesRead(operation="retrieve_context", query="what happened yesterday"))
    bang = ErasedText.of(["?!"], kept=[])
    assert bang.shared_by(MemoriesRead(operation="retrieve_context", query="really?!"))
