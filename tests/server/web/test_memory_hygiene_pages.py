"""The "add a memory" form and the deleted memories with their restore button: both go through the
same service calls as the tools, so a duplicate shows the memory that already says it, and a
restore is an event in the memory's history."""

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
    assert "not stored again (duplicate)" in page  # the attempt, in the memory's history


def test_the_add_form_refuses_an_empty_text_and_stores_nothing(alice: Browser):
    response = alice.post("/memories", {"text": "   ", "tags": "", "memory_type": ""})
    assert response.status_code == 400
    assert "must not be empty" in response.text


def test_the_deleted_page_lists_a_deleted_memory_and_restore_brings_it_back(alice: Browser):
    stored = alice.post("/memories", {"text": "Alice once kept a pet lizard", "tags": "", "memory_type": ""})
    memory_id = stored.headers["location"].split("?")[0].rsplit("/", 1)[1]
    alice.post(f"/memories/{memory_id}/delete")
    assert "Alice once kept a pet lizard" not in alice.get("/").text
    listed = alice.get("/deleted").text
    assert "Alice once kept a pet lizard" in listed and f"/memories/{memory_id}/restore" in listed

    restored = alice.post(f"/memories/{memory_id}/restore")
    page = alice.get(restored.headers["location"]).text

    assert restored.status_code == 303 and "done=restored" in restored.headers["location"]
    assert "Alice once kept a pet lizard" in alice.get("/").text
    assert "Alice once kept a pet lizard" not in alice.get("/deleted").text
    assert "restored" in page and "deleted" in page  # both in the memory's history
    assert alice.post(f"/memories/{memory_id}/restore").status_code == 400  # not deleted any more
