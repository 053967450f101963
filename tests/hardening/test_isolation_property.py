"""Isolation as a property: random interleavings of every tool by three people, over MCP (the
SDK client over HTTP) and REST, and nobody ever sees anything of anyone else.

Each person's texts, entities and projects carry a marker word of their own. Hypothesis draws a
sequence of calls (any tool, either transport, ids picked from everybody's memories, so people
also try each other's ids); no answer to one person may hold another's marker or memory id
(an id they sent themselves aside: an error may quote it back), and `memory isolation-check`
passes on the data dir afterwards. One server serves every example.
"""

import itertools
import json
import uuid

import anyio
import httpx2
import pytest
from hardening_util import memory_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

pytestmark = pytest.mark.slow

PEOPLE = 3
MCP_TOOLS = ["store_memory", "store_memory", "retrieve_context", "search", "fetch", "update_memory", "delete_memory",
             "forget_memory", "link_memories", "memory_history", "set_project", "get_context_info", "sync_session",
             "register_entity", "list_entities", "search_entities"]
REST_OPS = ["store", "store", "get", "search", "patch", "delete", "forget", "history", "entities"]

step = st.tuples(st.integers(0, PEOPLE - 1), st.booleans(), st.integers(0, 10**6), st.integers(0, 10**6))
examples = itertools.count()
stats: list[int] = []  # memories stored per example: proof the examples did something


class People:
    """Who is who in one example, what each stored, and the check every answer goes through."""

    def __init__(self, server):
        run = next(examples)
        self.names = [f"iso{run}-{i}-{uuid.uuid4().hex[:6]}" for i in range(PEOPLE)]
        self.words = [f"mk{uuid.uuid4().hex[:10]}" for _ in range(PEOPLE)]
        self.tokens = [server.token(name) for name in self.names]
        self.ids: list[list[str]] = [[] for _ in range(PEOPLE)]

    def any_id(self, pick: int) -> str:
        everyone = [i for ids in self.ids for i in ids]
        return everyone[pick % len(everyone)] if everyone else str(uuid.uuid4())

    def check(self, who: int, request: str, answer: str) -> None:
        for other in range(PEOPLE):
            if other == who:
                continue
            assert self.words[other] not in answer, f"{self.names[who]} saw {self.names[other]}'s words: {answer[:300]}"
            for memory_id in self.ids[other]:
                if memory_id not in request:
                    assert memory_id not in answer, f"{self.names[who]} saw {self.names[other]}'s id {memory_id}"

    def learn(self, who: int, answer: str) -> None:
        try:
            body = json.loads(answer)
        except ValueError:
            return
        for memory_id in [body.get("id")] + list(body.get("created", [])) if isinstance(body, dict) else []:
            if isinstance(memory_id, str) and memory_id not in self.ids[who]:
                self.ids[who].append(memory_id)


def mcp_arguments(tool: str, people: People, who: int, a: int, b: int) -> dict:
    word = people.words[who]
    entity = f"{word}.e{a % 3}"
    return {
        "store_memory": {"text": f"{word} note {a}: the {word} plan", "entity": entity, "tags": [word]},
        "retrieve_context": {"query": f"plan note {a % 5}", "limit": 20, "include_related": True},
        "search": {"query": f"note {a % 7} plan"},
        "fetch": {"id": people.any_id(a)},
        "update_memory": {"id": people.any_id(a), "text": f"{word} revised {b}"},
        "delete_memory": {"id": people.any_id(a)},
        "forget_memory": {"id": people.any_id(a)},
        "link_memories": {"source_id": people.any_id(a), "target_id": people.any_id(b), "link_type": "supports"},
        "memory_history": {"id": people.any_id(a)},
        "set_project": {"project": f"{word}.e{a % 3}"},
        "get_context_info": {},
        "sync_session": {"decisions": [{"text": f"{word} decided {a}", "entity": entity}],
                         "status_updates": [{"text": f"{word} status {b}", "entity": entity}]},
        "register_entity": {"name": f"{word}.e{a % 3}", "description": f"{word} thing"},
        "list_entities": {},
        "search_entities": {"query": f"{word[:6]}"},
    }[tool]


async def rest_call(http: httpx2.AsyncClient, op: str, people: People, who: int, a: int, b: int) -> tuple[str, str]:
    word, memory_id = people.words[who], people.any_id(a)
    request = {
        "store": ("POST", "/api/v1/memories", {"json": {"text": f"{word} rest note {a}", "entity": f"{word}.r"}}),
        "get": ("GET", f"/api/v1/memories/{memory_id}", {}),
        "search": ("GET", "/api/v1/memories/search", {"params": {"query": f"note {a % 7}", "limit": 50}}),
        "patch": ("PATCH", f"/api/v1/memories/{memory_id}", {"json": {"text": f"{word} patched {b}"}}),
        "delete": ("DELETE", f"/api/v1/memories/{memory_id}", {}),
        "forget": ("DELETE", f"/api/v1/memories/{memory_id}", {"params": {"forget": "true"}}),
        "history": ("GET", f"/api/v1/memories/{memory_id}/history", {}),
        "entities": ("GET", "/api/v1/entities", {}),
    }[op]
    method, path, extra = request
    answer = await http.request(method, path, headers={"Authorization": f"Bearer {people.tokens[who]}"}, **extra)
    assert answer.status_code < 500, answer.text
    return json.dumps([method, path, extra]), answer.text


async def run_steps(server, steps) -> None:
    people = People(server)
    async with httpx2.AsyncClient(base_url=server.url, timeout=60) as http:
        clients = []
        contexts = [httpx2.AsyncClient(headers={"Authorization": f"Bearer {t}"}, timeout=60) for t in people.tokens]
        try:
            for context in contexts:
                client = Client(streamable_http_client(server.mcp_url, http_client=context))
                clients.append(await client.__aenter__())
            for who, over_rest, a, b in steps:
                if over_rest:
                    request, answer = await rest_call(http, REST_OPS[a % len(REST_OPS)], people, who, a, b)
                else:
                    tool = MCP_TOOLS[a % len(MCP_TOOLS)]
                    arguments = mcp_arguments(tool, people, who, a, b)
                    result = await clients[who].call_tool(tool, arguments)
                    request = json.dumps(arguments)
                    answer = json.dumps(result.structured_content) if not result.is_error else \
                        " ".join(getattr(c, "text", "") for c in result.content)
                people.check(who, request, answer)
                people.learn(who, answer)
            stats.append(sum(len(ids) for ids in people.ids))
        finally:
            for client in reversed(clients):
                await client.__aexit__(None, None, None)
            for context in contexts:
                await context.aclose()


def test_no_interleaving_of_tools_lets_one_person_see_anothers_memories(hardening_server):
    @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(steps=st.lists(step, min_size=8, max_size=30))
    def interleaving(steps):
        anyio.run(run_steps, hardening_server, steps)

    interleaving()
    assert sum(stats) >= 20, stats
    checked = memory_cli("isolation-check", data_dir=hardening_server.data_dir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
