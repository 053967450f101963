"""What a retrieval query says beyond its words: the terms to match, the calendar dates it names,
and whether it asks for a time.

All of it is plain text analysis: no model, no network, a few regular expressions. Ranking uses
it as evidence on top of BM25 and dense similarity (see `projections.ranking`).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["QueryCues", "analyse", "date_windows", "fts_query", "mentions_time", "query_words", "speaker", "STOP_WORDS"]

_WORD = re.compile(r"\w+", re.UNICODE)
STOP_WORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her hers him his
    how i if in into is it its me my of on or our she so than that the their them then there these they
    this to was we were what when where which who whom why will with would you your""".split()
)

# -- calendar dates ---------------------------------------------------------------------------

_MONTH_NAMES = "january february march april may june july august september october november december".split()
_MONTHS = {name: i + 1 for i, name in enumerate(_MONTH_NAMES)}
_MONTHS.update({name[:3]: i + 1 for i, name in enumerate(_MONTH_NAMES)})
_MONTHS["sept"] = 9
_MON = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# Most precise first: a span taken by one pattern is not read again by a vaguer one.
_DATE_PATTERNS = (
    re.compile(rf"\b{_DAY}\s+(?:of\s+)?{_MON},?\s+{_YEAR}\b", re.I),  # 8 May 2023, 8th of May, 2023
    re.compile(rf"\b{_MON}\s+{_DAY},?\s+{_YEAR}\b", re.I),  # May 8, 2023
    re.compile(rf"\b{_YEAR}-(?P<mnum>[01]\d)-(?P<day>[0-3]\d)\b"),  # 2023-05-08
    re.compile(rf"\b{_MON},?\s+{_YEAR}\b", re.I),  # May 2023
    re.compile(rf"\b{_YEAR}-(?P<mnum>[01]\d)\b"),  # 2023-05
    # a bare year only after a preposition: "in 2023", not "2023 dollars"
    re.compile(rf"\b(?:in|of|during|since|from|by|before|after|throughout)\s+{_YEAR}\b", re.I),
)


def date_windows(text: str) -> list[tuple[datetime, datetime]]:
    """Each calendar date, month or year the text names, as a UTC [start, end) window."""
    windows: list[tuple[datetime, datetime]] = []
    taken: list[tuple[int, int]] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            parts = m.groupdict()
            year = int(parts["year"])
            if parts.get("mnum"):
                month: int | None = int(parts["mnum"])
            elif parts.get("mon"):
                month = _MONTHS[parts["mon"].lower()]
            else:
                month = None
            day = int(parts["day"]) if parts.get("day") else None
            try:
                if month is None:
                    start, end = datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
                elif day is None:
                    start = datetime(year, month, 1, tzinfo=UTC)
                    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
                else:
                    start = datetime(year, month, day, tzinfo=UTC)
                    end = start + timedelta(days=1)
            except ValueError:  # 30 February, month 13: not a date
                continue
            taken.append((m.start(), m.end()))
            windows.append((start, end))
    return windows


# -- time in a memory's text --------------------------------------------------------------------

_WEEKDAY = r"(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend)"
_MONTH = "(?:" + "|".join(_MONTH_NAMES) + ")"
_TIME_EXPRESSION = re.compile(
    rf"\b(?:yesterday|today|tonight|tomorrow|ago|recently|lately|since"
    rf"|(?:last|next|this|past)\s+(?:week|month|year|night|time|summer|winter|spring|fall|autumn|{_WEEKDAY}|{_MONTH})"
    rf"|{_WEEKDAY}s?|{_MONTH}|(?:19|20)\d\d|\d+\s+(?:days?|weeks?|months?|years?)"
    rf"|\d{{1,2}}(?::\d\d)?\s*(?:am|pm))\b",
    re.I,
)
_ASKS_WHEN = re.compile(r"^\W*when\b|\bwhat\s+(?:time|date|day|year|month)\b|\bhow\s+long\s+ago\b", re.I)


def mentions_time(text: str) -> bool:
    """Does the text say when something happened (a date, a weekday, "last week", "3 days ago")?"""
    return _TIME_EXPRESSION.search(text) is not None


# -- the query as a whole ---------------------------------------------------------------------


def query_words(text: str) -> list[str]:
    """Lower-cased words of the text, stop words dropped (all of them if only stop words), unique."""
    words = _WORD.findall(text.lower())
    content = [w for w in words if w not in STOP_WORDS]
    return list(dict.fromkeys(content or words))


def fts_query(text: str) -> str | None:
    """Words of the query, stop words dropped, each quoted (no FTS syntax gets through), OR-ed."""
    words = query_words(text)
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words)


_SPEAKER = re.compile(r"^\s*(\w+)\s*:", re.UNICODE)


def speaker(text: str) -> str | None:
    """Who says it, for a memory recorded as an utterance ("Alice: ..."), lower-cased; else None.
    The first word of any other memory ("User prefers ...") is not taken for its subject: on
    assistant-written facts, where most begin alike, that cost R@5 0.03 (bench/retrieval_eval.py)."""
    m = _SPEAKER.match(text)
    return m.group(1).lower() if m else None


@dataclass(frozen=True)
class QueryCues:
    words: frozenset[str]  # content words, for matching a memory's subject
    dates: tuple[tuple[datetime, datetime], ...]  # calendar windows the query names
    asks_when: bool  # the answer is a time


def analyse(query: str) -> QueryCues:
    words = [w for w in query_words(query) if w not in STOP_WORDS]
    return QueryCues(
        words=frozenset(words),
        dates=tuple(date_windows(query)),
        asks_when=_ASKS_WHEN.search(query) is not None,
    )
