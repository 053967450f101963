"""The REST API at /api/v1, its errors, health, and the OpenAPI document a Custom GPT imports."""

import base64
import json
import uuid

import pytest
from server_calls import bearer, log_lengths

from memory.errors import IdempotencyConflict, InvalidInput, LogIntegrityError, NotFound, StorageError
from memory.server.rest import domain_error_response
from memory.verify_export import verify_bundle

API = "/api/v1"


@pytest.fixture()
def me(server) -> dict[str, str]:
    return bearer(server.token(f"rest-{uuid.uuid4().hex[:12]}"))


def store(http, headers, **body) -> dict:
    response = http.post(f"{API}/memories", json={"text": "A memory"} | body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_post_memories_stores_a_memory_and_answers_201_with_it(http, me):
    memory = store(http, me, text="Prefers tea", memory_type="core_identity", tags=["drinks"])
    assert memory["text"] == "Prefers tea" and memory["memory_type"] == "core_identity"
    assert memory["tags"] == ["drinks"] and memory["deleted"] is False


def test_search_finds_stored_memories_by_meaning(http, me):
    memory = store(http, me, text="Owns a golden retriever named Rex")
    response = http.get(f"{API}/memories/search", params={"query": "what pet does the user have", "limit": 5},
                        headers=me)
    assert response.status_code == 200
    (hit,) = response.json()["results"]
    assert hit["id"] == memory["id"] and hit["title"] == "Owns a golden retriever named Rex"


def test_search_finds_nothing_for_an_unrelated_query_unless_min_score_is_0(http, me):
    store(http, me, text="Owns a golden retriever named Rex")
    store(http, me, text="I take my coffee black, no sugar")
    query = {"query": "What did Priyanka say about her thesis defence?"}
    floored = http.get(f"{API}/memories/search", params=query, headers=me)
    anyway = http.get(f"{API}/memories/search", params=query | {"min_score": 0}, headers=me)
    bad = http.get(f"{API}/memories/search", params=query | {"min_score": -1}, headers=me)
    assert floored.status_code == 200 and floored.json()["results"] == []
    assert anyway.status_code == 200 and len(anyway.json()["results"]) == 2
    assert bad.status_code == 400


def test_get_answers_the_memory_and_404_for_an_unknown_id(http, me):
    memory = store(http, me)
    # The store's answer is the memory plus what the duplicate check found.
    stored = {k: v for k, v in memory.items() if k not in ("duplicate_of", "similar")}
    assert http.get(f"{API}/memories/{memory['id']}", headers=me).json() == stored
    missing = http.get(f"{API}/memories/{uuid.uuid4()}", headers=me)
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found" and "no memory with id" in missing.json()["detail"]


def test_patch_changes_the_given_fields_and_null_clears_one(http, me):
    memory = store(http, me, entity="acme", status="active")
    patched = http.patch(f"{API}/memories/{memory['id']}", json={"status": "completed", "entity": None},
                         headers=me)
    assert patched.status_code == 200, patched.text
    assert patched.json()["status"] == "completed" and patched.json()["entity"] is None
    assert patched.json()["text"] == memory["text"]


def test_delete_is_soft_and_forget_true_erases(http, me):
    soft = store(http, me, text="Soft delete me")
    hard = store(http, me, text="Erase me")
    deleted = http.delete(f"{API}/memories/{soft['id']}", params={"reason": "outdated"}, headers=me)
    forgotten = http.delete(f"{API}/memories/{hard['id']}", params={"forget": "true"}, headers=me)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert forgotten.status_code == 200 and forgotten.json()["memory_id"] == hard["id"]
    assert http.get(f"{API}/memories/{soft['id']}", headers=me).json()["deleted"] is True
    history = http.get(f"{API}/memories/{hard['id']}/history", headers=me).json()
    assert "Erase me" not in json.dumps(history)


def test_history_pages_with_a_cursor(http, me):
    memory = store(http, me, text="v1")
    for n in (2, 3):
        http.patch(f"{API}/memories/{memory['id']}", json={"text": f"v{n}"}, headers=me)
    first = http.get(f"{API}/memories/{memory['id']}/history", params={"limit": 2}, headers=me).json()
    rest = http.get(f"{API}/memories/{memory['id']}/history", params={"cursor": first["next_cursor"], "limit": 100},
                    headers=me).json()
    assert [e["type"] for e in first["entries"]] == ["memory.stored", "memory.updated"]
    assert rest["entries"][0]["type"] == "memory.updated" and rest["next_cursor"] is None


def test_entities_page_with_a_cursor(http, me):
    for name in ("team.ana", "team.ben", "team.cy"):
        store(http, me, entity=name)
    first = http.get(f"{API}/entities", params={"prefix": "team", "limit": 2}, headers=me).json()
    second = http.get(f"{API}/entities", params={"prefix": "team", "cursor": first["next_cursor"]},
                      headers=me).json()
    assert [e["name"] for e in first["entities"] + second["entities"]] == ["team", "team.ana", "team.ben", "team.cy"]


def test_export_is_the_callers_own_bundle_and_it_verifies(http, me, tmp_path):
    memory = store(http, me, text="Exported memory")
    response = http.get(f"{API}/export", headers=me)
    assert response.status_code == 200
    bundle = tmp_path / "export.json"
    bundle.write_bytes(response.content)
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    events = response.json()["events"]
    assert memory["id"] in {e["event_id"] for e in events}
    last = json.loads(base64.b64decode(events[-1]["payload"]))
    assert (last["type"], last["operation"]) == ("memories.read", "export"), "the export records itself"


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/memories", b'{"text": '),
    ("post", "/memories", b"not json at all"),
    ("post", "/memories", b'{"text": 42}'),
    ("post", "/memories", b'{"text": "x", "surprise": true}'),
    ("post", "/memories", b'{"text": "x", "memory_type": "dream"}'),
    ("post", "/memories", b'{"text": "x", "priority": 99}'),
    ("post", "/memories", b'{"text": "   "}'),
    ("post", "/memories", b'{"text": "x", "entity": "bad name!"}'),
    ("patch", "/memories/{id}", b'{"status": "sleeping"}'),
    ("patch", "/memories/{id}", b"[]"),
    ("patch", "/memories/{id}", b"{}"),
    ("get", "/memories/search?query=x&limit=0", None),
    ("get", "/memories/search", None),
    ("get", "/memories/{id}/history?cursor=-1", None),
    ("get", "/entities?limit=1000", None),
])
def test_garbage_gets_400_with_a_message_not_a_500(http, me, method, path, body):
    memory = store(http, me)
    url = API + path.replace("{id}", memory["id"])
    response = http.request(method, url, content=body, headers=me | {"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["detail"]
    assert "Traceback" not in response.text


def test_an_oversized_body_gets_413(http, me):
    response = http.post(f"{API}/memories", content=b"x" * (1024 * 1024 + 1),
                         headers=me | {"content-type": "application/json"})
    assert response.status_code == 413


def test_unknown_paths_are_404_and_the_memory_page_asks_a_visitor_to_sign_in(http, me):
    assert http.get(f"{API}/nothing-here", headers=me).status_code == 404
    page = http.get(f"/memories/{uuid.uuid4()}")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")


def test_healthz_is_alive_and_readyz_is_ready_once_the_model_is_loaded(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() | {"problems": []} == {"ready": True, "logs_writable": True, "model_loaded": True,
                                               "problems": []}


def test_the_openapi_document_has_the_oauth2_and_bearer_schemes_and_operation_ids(http, server):
    response = http.get("/schema/openapi.json")
    assert response.status_code == 200
    document = response.json()
    schemes = document["components"]["securitySchemes"]
    flow = schemes["oauth2"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == f"{server.url}/authorize"
    assert flow["tokenUrl"] == f"{server.url}/token"
    assert set(flow["scopes"]) == {"memories:read", "memories:write"}
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert document["servers"] == [{"url": server.url}]
    operations = {op["operationId"]: (method, path)
                  for path, item in document["paths"].items() for method, op in item.items()}
    assert set(operations) == {"storeMemory", "searchMemories", "getMemory", "updateMemory", "deleteMemory",
                               "memoryHistory", "listEntities", "exportMemories", "listMemories",
                               "importMemories", "restoreMemory"}
    assert all(path.startswith("/api/v1/") for _, path in operations.values())
    search = document["paths"]["/api/v1/memories/search"]["get"]
    assert {p["name"] for p in search["parameters"]} == {"query", "limit", "min_score"}
    assert search["security"] == [{"oauth2": ["memories:read", "memories:write"]}, {"bearer": []}]


@pytest.mark.parametrize(("error", "status"), [
    (InvalidInput("bad"), 400), (NotFound("gone"), 404), (IdempotencyConflict("again"), 409),
    (LogIntegrityError("chain broken at seq 7"), 503), (StorageError("disk full"), 507),
])
def test_each_domain_error_has_its_status_and_keeps_its_message(error, status):
    response = domain_error_response(None, error)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.content.detail == str(error) and response.content.error == error.code


@pytest.mark.parametrize(("method", "path", "body", "says"), [
    ("post", "/memories", b'{"text": "x", "tags": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "the JSON body nests more than 32 levels deep"),
    ("post", "/memories", b"[" * 2_000 + b"]" * 2_000, "the JSON body nests more than 32 levels deep"),
    ("post", "/memories", b'{"text": "x", "tags": ' + b"[" * 40 + b"]" * 40 + b"}", "tags nests more than 32"),
    ("post", "/memories", b'{"text": "\\ud800"}', "text holds a lone surrogate (U+D800)"),
    ("post", "/memories", b'{"text": "fine", "tags": ["ok", "a\\udfffb"]}', "tags[1] holds a lone surrogate"),
    ("post", "/memories", b'{"text": "fine", "entity": "\\udc00"}', "entity holds a lone surrogate"),
    ("post", "/memories", b'{"text": "fine", "\\ud800": 1}', "a field name in the body holds a lone surrogate"),
    ("patch", "/memories/{id}", b'{"text": "still \\ud800 here"}', "text holds a lone surrogate"),
])
def test_deep_json_and_lone_surrogates_get_400_naming_the_field_and_append_nothing(
        http, server, me, method, path, body, says):
    memory = store(http, me)
    before = log_lengths(server.data_dir)
    response = http.request(method, API + path.replace("{id}", memory["id"]), content=body,
                            headers=me | {"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert says in response.json()["detail"]
    assert log_lengths(server.data_dir) == before
