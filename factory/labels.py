"""Matching free text to class names: one normalisation and one ladder of matches for every caller.

Names compare by their tokens: lower-case runs of letters and digits, so case, spaces, underscores,
hyphens and punctuation are ignored (``Sci/Tech``, ``sci_tech``, ``SCI-TECH`` and ``sci tech`` are one
name) and ``&`` reads as ``and``. :class:`NameMatcher` then answers three questions:

* :meth:`~NameMatcher.exact`: the name a label stands for, exactly or after normalisation;
* :meth:`~NameMatcher.fuzzy`: that, else the closest spelling, else a unique prefix or abbreviation;
* :meth:`~NameMatcher.mentioned`: the name mentioned first in a sentence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rapidfuzz import fuzz, process

__all__ = ["FUZZY_CUTOFF", "NameMatcher", "name_key", "name_tokens"]

#: Least :func:`rapidfuzz.fuzz.ratio` (0-100) for a close spelling to count as a match.
FUZZY_CUTOFF = 80.0

_STOPWORDS = {"and", "the", "of", "a", "an"}


def name_tokens(text: str) -> list[str]:
    """Lower-case alphanumeric tokens of a name (``&`` read as ``and``)."""
    return re.findall(r"[^\W_]+", str(text).replace("&", " and ").casefold())


def name_key(text: str) -> str:
    """The normalised form two names share when they differ only in case, spacing or punctuation."""
    return "".join(name_tokens(text))


def _abbreviates(a: list[str], b: list[str]) -> bool:
    """Same content words, each one a prefix of the other's (``Sci/Tech`` ~ ``Science and Technology``)."""
    a = [t for t in a if t not in _STOPWORDS]
    b = [t for t in b if t not in _STOPWORDS]
    if not a or len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        short, long_ = (x, y) if len(x) <= len(y) else (y, x)
        if len(short) < 3 or not long_.startswith(short):
            return False
    return True


def _token_prefix(a: list[str], b: list[str]) -> bool:
    """One token list starts the other: ``World`` ~ ``World News``."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return bool(short) and long_[: len(short)] == short


class NameMatcher:
    """Matches free text to a fixed list of names (class names), returned in the list's spelling."""

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self._tokens = [name_tokens(n) for n in self.names]
        self._by_key: dict[str, str] = {}
        for name, tokens in zip(self.names, self._tokens, strict=True):
            if tokens:
                self._by_key.setdefault("".join(tokens), name)  # the first of two equal names wins
        self._spelled = {i: " ".join(t) for i, t in enumerate(self._tokens) if t}

    def exact(self, text: str) -> str | None:
        """The name ``text`` is, exactly (surrounding spaces aside) or after normalisation; else ``None``."""
        text = str(text).strip()
        if text in self.names:
            return text
        return self._by_key.get(name_key(text))

    def fuzzy(self, text: str) -> str | None:
        """The name ``text`` stands for, trying in order:

        1. equal after normalisation;
        2. the closest spelling with a :func:`rapidfuzz.fuzz.ratio` of at least :data:`FUZZY_CUTOFF`
           (the first name on a tie);
        3. the only name whose tokens start with the text's or the other way round (``World`` ~
           ``World News``), or which the text abbreviates word by word (``Sci/Tech`` ~ ``Science and
           Technology``, prefixes of 3 letters or more).
        """
        tokens = name_tokens(text)
        if not tokens:
            return None
        if (found := self._by_key.get("".join(tokens))) is not None:
            return found
        best = process.extractOne(" ".join(tokens), self._spelled, scorer=fuzz.ratio, score_cutoff=FUZZY_CUTOFF)
        if best is not None:
            return self.names[best[2]]
        hits = [i for i, vt in enumerate(self._tokens) if _token_prefix(tokens, vt) or _abbreviates(tokens, vt)]
        return self.names[hits[0]] if len(hits) == 1 else None

    def mentioned(self, text: str) -> str | None:
        """The name whose tokens occur first, as whole tokens, in ``text`` (the first name on a tie)."""
        words = name_tokens(text)
        best: tuple[int, str] | None = None
        for name, tokens in zip(self.names, self._tokens, strict=True):
            n = len(tokens)
            start = next((i for i in range(len(words) - n + 1) if n and words[i:i + n] == tokens), None)
            if start is not None and (best is None or start < best[0]):
                best = (start, name)
        return best[1] if best else None
