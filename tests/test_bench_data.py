"""The retrieval sets in bench/data are well formed, and make_sets.py still writes them as committed."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "bench" / "data"


@pytest.mark.parametrize(("name", "people", "questions"), [("preferences", 4, 300), ("facts", 3, 251)])
def test_every_answer_is_a_memory_of_the_person_asked(name, people, questions):
    rows = [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]
    memories = {r["id"]: r for r in rows if r["kind"] == "memory"}
    asked = [r for r in rows if r["kind"] == "question"]
    assert len({r["person"] for r in rows}) == people and len(asked) == questions
    assert set(Counter(m["person"] for m in memories.values()).values()) == {100}
    for q in asked:
        assert q["question"].strip() and q["answers"]
        assert all(memories[a]["person"] == q["person"] for a in q["answers"]), q


def test_make_sets_writes_the_committed_files(tmp_path):
    subprocess.run([sys.executable, "-B", str(DATA / "make_sets.py"), str(tmp_path)], check=True, capture_output=True)
    written = {p.name: p.read_bytes() for p in tmp_path.glob("*.jsonl")}
    assert written == {p.name: p.read_bytes() for p in DATA.glob("*.jsonl")}
    assert set(written) == {"preferences.jsonl", "facts.jsonl"}
