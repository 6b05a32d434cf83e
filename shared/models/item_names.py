"""Items named the way people name them: a catalog id, an exact title, or a near title.

`fedrec recommend --history` and `fedrec search --history` take a comma-separated list. On
ML-1M the catalog ids are titles; on ML-100k and most own catalogs they are numbers, so a person
typing 'Star Wars (1977)' needs the title to be looked up. Each name is resolved in this order,
the first rule that matches wins:

1. a catalog id, exactly;
2. a title, exactly;
3. a title with case, a trailing '(Year)' and a leading article, or MovieLens' moved one
   ('Matrix, The'), ignored: 'star wars (1977)' finds ML-100k's 'Star Wars', 'the american
   president' finds 'American President, The (1995)';
4. the start of such normalised titles, at a word boundary: 'star wars' finds ML-1M's
   'Star Wars: Episode IV - A New Hope (1977)' when no other title starts so (here three do:
   the name is refused with them listed);
5. the closest such normalised titles (difflib's ratio, at least FUZZY_CUTOFF): 'Star Wras'.

A name that fits several items equally (two films titled 'Hamlet', or near titles too close to
call) is narrowed by the year it gives, if any ('Hamlet (1996)', where the catalog's ids or titles
carry years, as ML-1M's ids do), and otherwise refused with the candidates listed, so the person can pick one by its exact title or
id. Names may contain commas (ML-1M's 'American President, The (1995)'): adjacent pieces are
joined whenever the joined name matches better than its parts.
"""

from __future__ import annotations

import bisect
import difflib
import logging
import re
from dataclasses import dataclass

from shared.errors import FedrecError

log = logging.getLogger(__name__)

FUZZY_CUTOFF = 0.75  # difflib ratio below which a near title is no match at all
FUZZY_MARGIN = 0.05  # a runner-up within this of the best makes a near match ambiguous
MAX_PIECES = 4  # commas one name may hold (ML-1M's titles hold at most 3)
SHOWN_CANDIDATES = 5
ARTICLES = ("the", "a", "an", "les", "la", "le", "il", "el", "das", "der", "die", "l'")
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_SPACES = re.compile(r"\s+")


def normalise(title: str) -> str:
    """'American President, The (1995)' and 'The American President' -> 'american president':
    lower case, the trailing year dropped, a leading or trailing (', The') article dropped,
    spaces squeezed."""
    text = _SPACES.sub(" ", _YEAR.sub("", title)).strip().lower()
    head, sep, tail = text.rpartition(", ")
    if sep and tail in ARTICLES:
        return head
    first, _, rest = text.partition(" ")
    return rest if first in ARTICLES and rest else text


@dataclass(frozen=True)
class Match:
    """How one name resolved: the item's index (1-based) and the rule that found it."""

    item: int
    rule: str  # "id", "title", "normalised", "prefix" or "near"
    score: float = 1.0


class ItemNames:
    """Catalog ids and titles, indexed once (a service resolves many names with one)."""

    def __init__(self, catalog: list[str], titles: list[str] | None = None) -> None:
        self.catalog = list(catalog)
        self.titles = list(titles) if titles else list(catalog)
        self._ids = {item: n + 1 for n, item in enumerate(self.catalog)}
        self._exact: dict[str, list[int]] = {}
        self._normal: dict[str, list[int]] = {}
        for n, title in enumerate(self.titles, start=1):
            self._exact.setdefault(title, []).append(n)
            self._normal.setdefault(normalise(title), []).append(n)
        self._keys = sorted(self._normal)  # sorted: a prefix is one bisect away
        # Without a comma in any id or title, a list of ids is only ids: no span to join.
        self._plain = not any("," in name for name in (*self.catalog, *self.titles))

    def label(self, item: int) -> str:
        """How a person tells the item apart: 'Hamlet (1996)' on ML-1M, 'Star Wars [id 50]'."""
        title, item_id = self.titles[item - 1], self.catalog[item - 1]
        return item_id if item_id.startswith(title) else f"{title} [id {item_id}]"

    def _by_year(self, name: str, items: list[int]) -> list[int]:
        """The items among several that carry the year `name` ends with ('Hamlet (1996)')."""
        year = _YEAR.search(name)
        if year is None:
            return items
        tag = year.group().strip()
        return [i for i in items if tag in self.catalog[i - 1] or tag in self.titles[i - 1]] or items

    def _ambiguous(self, name: str, items: list[int]) -> FedrecError:
        shown = "; ".join(self.label(i) for i in items[:SHOWN_CANDIDATES])
        more = f" and {len(items) - SHOWN_CANDIDATES} more" if len(items) > SHOWN_CANDIDATES else ""
        return FedrecError(f"--history: '{name}' could be any of: {shown}{more}; "
                           "give the exact title or the catalog id")  # fmt: skip

    def exact(self, name: str) -> Match | None:
        """Rules 1-4: an id, a title, a normalised title, a title's start; a name that fits
        several items is refused."""
        if name in self._ids:
            return Match(self._ids[name], "id")
        key = normalise(name)
        for rule, items in (("title", self._exact.get(name)), ("normalised", self._normal.get(key)),
                            ("prefix", self._starting(key))):  # fmt: skip
            items = self._by_year(name, items) if items else items
            if items:
                if len(items) > 1:
                    raise self._ambiguous(name, items)
                return Match(items[0], rule)
        return None

    def _starting(self, key: str) -> list[int]:
        """Items whose normalised title starts with `key` followed by a non-word character."""
        if not key:
            return []
        found = []
        keys, n = self._keys, bisect.bisect_left(self._keys, key)  # no slice: a copy on a 1M catalog
        while n < len(keys) and keys[n].startswith(key):
            if len(keys[n]) > len(key) and not keys[n][len(key)].isalnum():
                found.extend(self._normal[keys[n]])
            n += 1
        return found

    def near(self, name: str) -> tuple[Match | None, list[int]]:
        """Rule 4: the best near title and, when a runner-up is too close to call, the
        candidates instead (no match)."""
        key = normalise(name)
        if not key:
            return None, []
        close = difflib.get_close_matches(key, self._keys, n=SHOWN_CANDIDATES + 1, cutoff=FUZZY_CUTOFF)
        if not close:
            return None, []
        ratios = [difflib.SequenceMatcher(None, key, c).ratio() for c in close]
        items = [i for c in close for i in self._normal[c]]
        tied = [c for c, r in zip(close, ratios) if r >= ratios[0] - FUZZY_MARGIN]
        if len(tied) > 1 or len(self._normal[close[0]]) > 1:
            return None, items
        return Match(items[0], "near", ratios[0]), []

    def resolve(self, text: str) -> list[int]:
        """'a,b,c' -> item indices (1-based, in the order given); one FedrecError line naming
        the first name that matches nothing, or fits several items."""
        pieces = [p.strip() for p in text.split(",")]
        if self._plain and all(p in self._ids for p in pieces if p) and any(pieces):
            return [self._ids[p] for p in pieces if p]  # the service's common case, at 1M items
        items: list[int] = []
        i = 0
        while i < len(pieces):
            if not pieces[i]:
                i += 1
                continue
            spans = range(min(len(pieces), i + MAX_PIECES), i, -1)  # longest first
            # An exact name (rules 1-3) on the longest span wins; else the best near match.
            found = next(((j, m) for j in spans if (m := self.exact(", ".join(pieces[i:j]))) is not None), None)
            if found is None:
                found = self._best_near(pieces, i, spans)
            j, match = found
            if match.rule == "near":
                log.info("--history: '%s' taken as %s (closest title)", ", ".join(pieces[i:j]), self.label(match.item))
            items.append(match.item)
            i = j
        if not items:
            raise FedrecError("--history: no items given")
        return items

    def _best_near(self, pieces: list[str], i: int, spans: range) -> tuple[int, Match]:
        best: tuple[int, Match] | None = None
        ambiguous: tuple[str, list[int]] | None = None
        for j in spans:
            name = ", ".join(pieces[i:j])
            match, tied = self.near(name)
            if match is not None and (best is None or match.score > best[1].score):
                best = (j, match)
            elif match is None and tied and ambiguous is None:
                ambiguous = (name, tied)
        if best is not None:
            return best
        if ambiguous is not None:
            raise self._ambiguous(ambiguous[0], list(dict.fromkeys(ambiguous[1])))
        raise FedrecError(f"--history: unknown item '{pieces[i]}' (no catalog id or title like it)")
