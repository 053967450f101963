"""Writes preferences.jsonl and facts.jsonl from the hand-written pools beside it (deterministic:
run it again and the files do not change).

    python bench/data/make_sets.py [OUT_DIR]   # default: beside this file

Each person draws their memories from a pool, in a shuffled order, so people differ in what they
hold and in what sits beside each memory; a question is asked of a person only if every memory that
answers it is theirs.
"""

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _facts_pool  # noqa: E402
import _preferences_pool  # noqa: E402

_TYPES = {"fact": "core_identity", "project_context": "project_context", "instruction": "task_instruction"}


def _write(path: Path, people: list[tuple[str, list[dict], list[dict]]]) -> None:
    with path.open("w") as out:
        for person, memories, questions in people:
            for m in memories:
                out.write(json.dumps({"kind": "memory", "person": person, **m}, ensure_ascii=False) + "\n")
            for q in questions:
                out.write(json.dumps({"kind": "question", "person": person, **q}, ensure_ascii=False) + "\n")


def preferences(people: int = 4, prefs: int = 75, fillers: int = 25) -> list:
    rng = random.Random(16)
    out = []
    for p in range(people):
        person = f"pref-{p + 1}"
        chosen = rng.sample(range(len(_preferences_pool.PAIRS)), prefs)
        texts = [(_preferences_pool.PAIRS[i][0], i) for i in chosen]
        texts += [(t, None) for t in rng.sample(_preferences_pool.FILLERS, fillers)]
        rng.shuffle(texts)
        memories, questions = [], []
        for n, (text, pair) in enumerate(texts):
            memory_id = f"{person}-m{n:03d}"
            memories.append({"id": memory_id, "text": text, "memory_type": "core_identity"})
            if pair is not None:
                questions.append({"question": _preferences_pool.PAIRS[pair][1], "answers": [memory_id]})
        rng.shuffle(questions)
        out.append((person, memories, questions))
    return out


def facts(people: int = 3, answers: int = 82, fillers: int = 18) -> list:
    rng = random.Random(17)
    pool = list(dict.fromkeys((t, kind) for kind, _, texts in _facts_pool.ITEMS for t in texts))
    out = []
    for p in range(people):
        person = f"facts-{p + 1}"
        held = rng.sample(pool, answers) + [(t, kind) for kind, t in rng.sample(_facts_pool.FILLERS, fillers)]
        rng.shuffle(held)
        ids = {}
        memories = []
        for n, (text, kind) in enumerate(held):
            ids[text] = f"{person}-m{n:03d}"
            memories.append({"id": ids[text], "text": text, "memory_type": _TYPES[kind]})
        questions = [{"question": q, "answers": [ids[t] for t in texts]}
                     for _, q, texts in _facts_pool.ITEMS if all(t in ids for t in texts)]
        rng.shuffle(questions)
        out.append((person, memories, questions))
    return out


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for name, people in (("preferences", preferences()), ("facts", facts())):
        _write(out / f"{name}.jsonl", people)
        print(name, sum(len(m) for _, m, _ in people), "memories,", sum(len(q) for _, _, q in people), "questions,",
              len({q['question'] for _, _, qs in people for q in qs}), "distinct")
