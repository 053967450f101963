"""The "add a memory" form on the memories page: it stores through the same path as the tools,
so a duplicate shows the memory that already says it instead of a second one."""

from collections.abc import Iterator

import pytest
from web_calls import PASSWORDS, Browser

from memory.server.process import ServerProcess


@pytest.fixture()
def alice(web_server: ServerProcess) -> Iterator[Browser]:
    person = Browser(web_server.url)
    assert person.log_in("alice", PASSWORDS["alice"]).status_code == 303
    yield person
    person.close()


def test_the_add_form_stores_a_memory_and_a_duplicate_leads_to_the_existing_one(alice: Browser):
    assert 'action="/memories"' in alice.get("/").text
    stored = alice.post("/memories", {"text": "Alice keeps bees on the roof", "tags": "hobbies, garden",
                                      "memory_type": "core_identity"})
    again = alice.post("/memories", {"text": "alice keeps bees on the roof", "tags": "", "memory_type": ""})
    page = alice.get(stored.headers["location"]).text

    assert stored.status_code == 303 and "done=stored" in stored.headers["location"]
    assert again.headers["location"].split("?")[0] == stored.headers["location"].split("?")[0]
    assert "done=duplicate" in again.headers["location"]
    assert "Alice keeps bees on the roof" in page and "hobbies" in page and "core_identity" in page
    assert "memory.deduplicated" in page or "deduplicated" in page


def test_the_add_form_refuses_an_empty_text_and_stores_nothing(alice: Browser):
    response = alice.post("/memories", {"text": "   ", "tags": "", "memory_type": ""})
    assert response.status_code == 400
    assert "must not be empty" in response.text
