"""What forgetting a memory erases besides the memory's own events: the reads that share its text.

A read records what was asked (its query, and its filters) and which ids came back. Ids are not
text, so what a read returned says nothing about whether it holds the forgotten words: a search
issued before the memory was stored may quote it, and a read that returned it may be about
something else entirely. A read *shares* the forgotten text when something it was asked —
its query or any string among its filters — contains

- one of the texts the memory ever had (or its entity name), whole, between word boundaries,
  ignoring case and runs of whitespace; or
- one of its *distinctive words*: a word (a run of letters, digits or `_`) of at least
  `MIN_WORD_LENGTH` characters that is in a text of the memory and in no text the person keeps
  besides it (other memories' texts and entities, registered entities' names and descriptions),
  ignoring case.

Words the person keeps elsewhere stay on disk through those other memories anyway, so a read
quoting only them is not the forgotten memory's to erase. Docs: docs/audit.md ("Erasure").
"""

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from memory.events import MemoriesRead, MemoryStored, MemoryUpdated

__all__ = ["MIN_WORD_LENGTH", "ErasedText", "words_of", "texts_of"]

MIN_WORD_LENGTH = 4
_WORD = re.compile(r"\w+")


def _folded(text: str) -> str:
    return " ".join(text.split()).casefold()


def words_of(text: str) -> set[str]:
    """The words of `text` long enough to say something, case-folded."""
    return {w for w in _WORD.findall(text.casefold()) if len(w) >= MIN_WORD_LENGTH}


def texts_of(payload: object) -> list[str]:
    """The person's words an event of a memory carries: its text and its entity name."""
    if isinstance(payload, MemoryStored | MemoryUpdated):
        return [t for t in (payload.text, payload.entity) if isinstance(t, str) and t]
    return []


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


class ErasedText(msgspec.Struct, frozen=True):
    """The texts of one forgotten memory, and its distinctive words."""

    texts: tuple[str, ...]
    words: frozenset[str]
    # One pattern per text, compiled once: `shared_by` runs for every read in the log.
    _quoted: tuple[re.Pattern[str], ...] = ()

    @classmethod
    def of(cls, texts: Iterable[str], kept: Iterable[str]) -> "ErasedText":
        texts = tuple(dict.fromkeys(_folded(t) for t in texts if t.strip()))
        kept_words: set[str] = set()
        for text in kept:
            kept_words |= words_of(text)
        mine = set().union(*(words_of(t) for t in texts)) if texts else set()
        return cls(texts=texts, words=frozenset(mine - kept_words), _quoted=tuple(_whole(t) for t in texts))

    def shared_by(self, read: MemoriesRead) -> bool:
        """Whether `read` asked for anything holding this text (see the module's definition)."""
        for asked in _strings([read.query, read.filters]):
            folded = _folded(asked)
            if words_of(folded) & self.words:
                return True
            if any(pattern.search(folded) for pattern in self._quoted):
                return True
        return False


def _whole(text: str) -> re.Pattern[str]:
    # Between word boundaries where the text begins or ends with a word character: "yes" is not
    # quoted by "yesterday", "!" by "hi!" is.
    start = r"(?<!\w)" if _WORD.match(text[0]) else ""
    end = r"(?!\w)" if _WORD.match(text[-1]) else ""
    return re.compile(start + re.escape(text) + end)
