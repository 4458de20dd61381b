"""Parsing the messy replies of a small LLM: value lists, class names and yes/no judgements.

The factory asks a weak model (e.g. SmolLM2-135M) for lists of attribute values, for the classes most
similar to a class, and for relevance judgements. Its replies come as JSON (bare, inside prose or in a
```json fence), numbered or bulleted lists, comma-separated lines or one value per line, wrapped in
preambles ("Sure! Here are 10 subtopics:") and followed by explanations ("These cover ...").

Everything here is a pure function over strings; class names are matched by :mod:`factory.labels`.

* :func:`parse_list` turns a reply into a clean, de-duplicated list of short values.
* :func:`match_names` maps free-text class names onto a list of valid class names.
* :func:`parse_yes_no` reads a yes/no judgement, or says it cannot.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import json_repair

from factory.labels import NameMatcher, name_key

__all__ = [
    "MAX_ITEM_WORDS",
    "match_names",
    "parse_list",
    "parse_yes_no",
]

#: An item with more words than this is taken for a sentence, not a value, and dropped.
MAX_ITEM_WORDS = 12

# Longest text handed to ast.literal_eval (which is recursive and slow on huge inputs).
_MAX_LITERAL_CHARS = 100_000
# Opening brackets tried as the start of a JSON value, per text: bounds the work on bracket-heavy noise.
_MAX_STRUCT_STARTS = 32

# ---------------------------------------------------------------------------------------------
# Line markers
# ---------------------------------------------------------------------------------------------

# "1.", "1)", "(1)", "1:", "[1]", "#1", "#1." and "No. 1" style numbering at the start of a line.
_NUMBER_MARKER = r"(?:\(\d{1,3}\)|\[\d{1,3}\]|#\d{1,3}[.):]?|\d{1,3}[.):](?!\d))"
# Bullets: ASCII ones need a following space ("-5 degrees", "*bold*" are no bullets).
_BULLET_MARKER = r"(?:[-*+](?=\s)|[•–—·▪◦●‣○■□➤►→✓✔])"
_MARKER_RE = re.compile(rf"^\s*(?:{_NUMBER_MARKER}|{_BULLET_MARKER})\s*")
# Several markers in a row, e.g. "- 1. Football" or "1. - Football".
_MARKERS_RE = re.compile(rf"^\s*(?:(?:{_NUMBER_MARKER}|{_BULLET_MARKER})\s*)+")
# Inline numbering inside one line: "1. Football 2. Basketball 3. Tennis".
_INLINE_NUMBER_RE = re.compile(r"(?:(?<=\s)|^)(?:\((\d{1,2})\)|(\d{1,2})[.)])\s+(?=\S)")

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)

# Lines of prose around a plain list ("Sure! Here are ...", "These cover ...", "Note: ...").
_PROSE_START_RE = re.compile(
    r"^(?:sure\b|certainly\b|of course\b|okay\b|ok\b|absolutely\b|great\b|here\s+(?:are|is)\b|here's\b|"
    r"these\s|this\s+(?:list|is|covers)\b|those\s|the\s+following\b|following\s+(?:are|is)\b|below\b|"
    r"above\b|note\b|notes:|please\b|i\s+hope\b|hope\s+this\b|let\s+me\b|feel\s+free\b|i\s+have\b|"
    r"i've\b|i\s+can\b|i'm\b|i\s+am\b|as\s+an\s+ai\b|in\s+summary\b|overall\b|to\s+summarize\b|"
    r"each\s+of\b|all\s+of\s+these\b|they\s+(?:are|cover|include)\b|list\s+of\b)",
    re.IGNORECASE,
)

# Items that only say "and so on".
_FILLER_ITEMS = {"etc", "etc.", "and so on", "and more", "and many more", "so on", "..."}

_QUOTES = "\"'`“”‘’«»„‚"
_TRAILING_PUNCT = ".,;:!?。、"

# ---------------------------------------------------------------------------------------------
# Item cleaning
# ---------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


def _strip_markdown(text: str) -> str:
    """Remove markdown emphasis, code ticks, links and heading marks."""
    text = re.sub(r"\[([^\[\]]+)\]\([^()]*\)", r"\1", text)  # [label](url) -> label
    text = text.replace("**", "").replace("__", "").replace("`", "")
    text = re.sub(r"^#{1,6}\s+", "", text)
    # Single * or _ used as emphasis around the whole item, or a stray one at an end.
    text = re.sub(r"^[*_]+(?=\S)", "", text)
    text = re.sub(r"(?<=\S)[*_]+$", "", text)
    return text


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    # A stray quote left at one end only ("Football, or Football").
    if text[:1] in _QUOTES and not any(q in text[1:] for q in _QUOTES):
        text = text[1:].strip()
    if text[-1:] in _QUOTES and not any(q in text[:-1] for q in _QUOTES):
        text = text[:-1].strip()
    return text


def _split_explanation(text: str) -> str:
    """``Name: long explanation`` / ``Name - long explanation`` -> ``Name``.

    The split happens only when the head is short (a name) and the tail reads like an explanation:
    longer than the head, or four words or more. ``Star Wars: Episode IV`` stays whole.
    """
    for sep in (r":\s+", r"\s+[-–]\s+", r"\s*—\s*"):
        m = re.search(sep, text)
        if not m:
            continue
        head, tail = text[: m.start()].strip(), text[m.end() :].strip()
        head_words, tail_words = len(_words(head)), len(_words(tail))
        if not head or not tail or head_words > 8:
            continue
        if (tail_words >= 2 and tail_words > head_words) or tail_words >= 4:
            return head
    return text


def _strip_parenthetical(text: str) -> str:
    """Drop a trailing explanation in parentheses: ``Football (the most popular sport)`` -> ``Football``.

    Short qualifiers stay: ``Football (soccer)``.
    """
    m = re.search(r"\s*\(([^()]*)\)\s*$", text)
    if not m or not text[: m.start()].strip():
        return text
    inner = m.group(1).strip()
    if len(_words(inner)) >= 3 or re.match(r"(?:e\.g\.|i\.e\.|eg\b|ie\b|such as\b|including\b)", inner, re.I):
        return text[: m.start()].strip()
    return text


def _clean_item(raw: str) -> str:
    """One raw item as a short value, or ``""`` when nothing usable is left."""
    text = " ".join(str(raw).split())
    previous = None
    while text != previous:
        previous = text
        text = _MARKERS_RE.sub("", text)
        text = _strip_markdown(text).strip()
        text = _strip_quotes(text)
        text = _split_explanation(text)
        text = _strip_parenthetical(text)
        text = text.strip().rstrip(_TRAILING_PUNCT).strip()
        text = text.lstrip(".,;:!?").strip()
    if not any(ch.isalnum() for ch in text) or text.lower() in _FILLER_ITEMS:
        return ""
    return text


def _finish(raw_items: list[str], limit: int | None) -> list[str]:
    """Clean, drop empty and sentence-long items, de-duplicate case-insensitively, apply the limit."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in raw_items:
        item = _clean_item(raw)
        if not item or len(_words(item)) > MAX_ITEM_WORDS:
            continue
        key = item.casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------------------------------------
# JSON (and Python-literal) extraction
# ---------------------------------------------------------------------------------------------

_NAME_KEYS = ("name", "value", "title", "label", "item", "topic", "subtopic", "class", "text", "term")


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket closing the one at ``start``, honouring quoted strings."""
    pairs = {"[": "]", "{": "}"}
    stack: list[str] = []
    quote: str | None = None
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            # An apostrophe inside a word ("world's") opens no string.
            if ch == '"' or not (i > 0 and text[i - 1].isalnum()):
                quote = ch
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "]}":
            if not stack or stack.pop() != ch:
                return None
            if not stack:
                return i + 1
        i += 1
    return None


def _load_structured(segment: str) -> Any:
    """A JSON value, else a Python literal (``['a', 'b']``); raises ``ValueError`` if neither."""
    try:
        return json.loads(segment)
    except (ValueError, RecursionError):
        pass
    if len(segment) <= _MAX_LITERAL_CHARS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarnings of odd literals in the reply
                return ast.literal_eval(segment)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            pass
    raise ValueError("not JSON")


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, dict):
        for key in _NAME_KEYS:
            for k, v in value.items():
                if str(k).lower() == key and isinstance(v, str):
                    return v
        for v in value.values():
            if isinstance(v, str):
                return v
    return None


def _items_from_json(obj: Any, depth: int = 0) -> list[str] | None:
    """The list of values inside a decoded JSON value, or ``None`` when it holds none."""
    if depth > 4:
        return None
    if isinstance(obj, list | tuple):
        if obj and all(isinstance(x, list | tuple) for x in obj):
            flat: list[str] = []
            for sub in obj:
                flat.extend(_items_from_json(sub, depth + 1) or [])
            return flat or None
        items = [t for t in (_scalar_text(x) for x in obj) if t is not None]
        # A list of numbers only ("[1]" in prose) is a citation, not a value list.
        if not any(isinstance(x, str | dict) for x in obj):
            return None
        return items or None
    if isinstance(obj, dict):
        for value in obj.values():
            if isinstance(value, list | tuple):
                found = _items_from_json(value, depth + 1)
                if found:
                    return found
        for value in obj.values():
            if isinstance(value, dict):
                found = _items_from_json(value, depth + 1)
                if found:
                    return found
        strings = [v for v in obj.values() if isinstance(v, str)]
        # {"1": "Football", "2": "Basketball"}: the values are the items.
        if len(strings) >= 2 and len(strings) == len(obj):
            return strings
    return None


def _truncated_json_items(segment: str) -> list[str] | None:
    """Complete values of a JSON array or object cut short (``["a", "b", "c`` -> ``a, b``)."""
    start = segment.find("[")
    if start < 0:
        return None
    items = _items_from_json(json_repair.loads(segment[start:], skip_json_loads=True)) or []
    cut = segment.rstrip()[-1:] not in "\"]},"  # the last string lost its closing quote: drop it
    return (items[:-1] if cut else items) or None


def _structured_values(text: str, openers: str) -> Iterator[Any]:
    """Decoded JSON values (or Python literals) starting at the first few ``openers`` of ``text``."""
    starts = [i for i, ch in enumerate(text) if ch in openers][:_MAX_STRUCT_STARTS]
    for i in starts:
        end = _balanced_end(text, i)
        if end is None:
            continue
        try:
            yield _load_structured(text[i:end])
        except ValueError:
            continue


def _structured_items(text: str) -> list[str] | None:
    """Items of the first JSON array / object (or Python list literal) found in ``text``."""
    candidates: list[str] = []
    for m in _FENCE_RE.finditer(text):
        body = m.group(2).strip()
        if body:
            candidates.append(body)
    candidates.append(text)
    for chunk in candidates:
        stripped = chunk.strip()
        for obj in _structured_values(chunk, "[{"):
            found = _items_from_json(obj)
            if found:
                return found
        # A reply that is (or whose fence is) a JSON array cut off by the token limit.
        if stripped[:1] in "[{" and '"' in stripped:
            found = _truncated_json_items(stripped)
            if found:
                return found
    return None


# ---------------------------------------------------------------------------------------------
# Text lists
# ---------------------------------------------------------------------------------------------


def _explode_inline_numbering(line: str) -> list[str]:
    """``"Topics: 1. a 2. b 3. c"`` -> ``["Topics:", "1. a", "2. b", "3. c"]``; other lines unchanged."""
    matches = list(_INLINE_NUMBER_RE.finditer(line))
    if len(matches) < 2:
        return [line]
    numbers = [int(m.group(1) or m.group(2)) for m in matches]
    # Keep the longest run 1, 2, 3, ... (or n, n+1, ...) so that "Web 2. " noise does not split.
    run = [matches[0]]
    best = run
    for prev, cur, m in zip(numbers, numbers[1:], matches[1:], strict=False):
        run = run + [m] if cur == prev + 1 else [m]
        if len(run) > len(best):
            best = run
    if len(best) < 2:
        return [line]
    pieces: list[str] = []
    cuts = [m.start() for m in best] + [len(line)]
    if line[: cuts[0]].strip():
        pieces.append(line[: cuts[0]].strip())
    for a, b in zip(cuts, cuts[1:], strict=False):
        pieces.append(line[a:b].strip())
    return pieces


def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


def _is_prose(line: str) -> bool:
    """A line of commentary around a plain list rather than a value."""
    text = _strip_markdown(line.strip()).strip()
    if not text:
        return True
    if text.endswith(":"):
        return True
    if _PROSE_START_RE.match(text):
        return True
    return bool(text[-1] in ".!?" and len(_words(text)) >= 6)


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses, brackets and double quotes."""
    parts: list[str] = []
    depth = 0
    in_quote = False
    current: list[str] = []
    for ch in text:
        if ch in "\"“”":
            in_quote = not in_quote if ch == '"' else ch == "“"
        elif not in_quote and ch in "([{":
            depth += 1
        elif not in_quote and ch in ")]}":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0 and not in_quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _split_separated(line: str) -> list[str]:
    """Items of one comma- or semicolon-separated line, preamble and trailing sentences removed."""
    sep = ";" if ";" in line else ","
    # Several sentences: keep the one carrying the list ("Sure! Here are 3: a, b, c. Enjoy!").
    sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z\"“'])", line.strip())
    if len(sentences) > 1:
        line = max(sentences, key=lambda s: s.count(sep))
    # A preamble before a colon: "Subtopics: a, b, c".
    head, colon, tail = line.partition(":")
    if colon and sep in tail and sep not in head:
        line = tail
    parts = _split_top_level(line, sep)
    out = []
    for part in parts:
        part = part.strip()
        part = re.sub(r"^(?:and|or|&)\s+", "", part, flags=re.IGNORECASE)
        out.append(part)
    return out


def _text_items(text: str) -> list[str]:
    """Raw items of a numbered, bulleted, separated or one-per-line list."""
    lines: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("```"):
            continue
        lines.extend(_explode_inline_numbering(line) if line.strip() else [])
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        return []

    marked = [ln for ln in lines if _MARKER_RE.match(ln) and _MARKER_RE.sub("", ln).strip()]
    plain = [ln for ln in lines if ln not in marked]
    plain_content = [ln for ln in plain if not _is_prose(ln)]
    if len(marked) >= 2 or (marked and len(marked) >= len(plain_content)):
        # Top-level entries only: nested bullets under a numbered item are its explanation.
        top = min(_indent(ln) for ln in marked)
        return [ln for ln in marked if _indent(ln) == top]

    content = [ln for ln in lines if not _is_prose(ln)]
    if not content:
        # A line of prose may still carry a separated list: "Here are 3: a, b, c." It must look like
        # one (a list after a colon, or three short parts) so that "I'm sorry, I cannot ..." is no list.
        for ln in lines:
            if "," not in ln and ";" not in ln:
                continue
            parts = [p for p in _split_separated(ln) if p.strip()]
            after_colon = re.search(r":[^:]*[,;]", ln) is not None
            if len(parts) >= 2 and (after_colon or (len(parts) >= 3 and all(len(_words(p)) <= 4 for p in parts))):
                return parts
        return []
    separated = [ln for ln in content if "," in ln or ";" in ln]
    if len(content) == 1 or len(separated) * 2 > len(content):
        items: list[str] = []
        for ln in content:
            items.extend(_split_separated(ln) if ("," in ln or ";" in ln) else [ln])
        return items
    return content


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def parse_list(text: str, limit: int | None = None) -> list[str]:
    """Extract the list items of an LLM reply.

    Understands, in this order of preference:

    * a JSON array (bare, embedded in prose, or inside a ```json fence), a Python list literal, a JSON
      object holding a list (``{"subtopics": [...]}``) and a JSON array cut off at the end;
    * numbered lines (``1.``, ``1)``, ``(1)``, ``#1``, also several on one line) and bullets
      (``-``, ``*``, ``•``, ``–``, ...): only the top-level marked lines are kept, so a preamble, a
      closing explanation and nested detail bullets are dropped;
    * one comma- or semicolon-separated line;
    * one value per line, with lines of prose ("Sure! Here are ...", "These cover ...", lines ending
      in ``:``, long sentences) dropped.

    Each item is cleaned: list markers, markdown (``**x**``, backticks, links), surrounding quotes and
    trailing punctuation removed, whitespace collapsed, and an explanation cut off when the item has the
    shape ``Name: long explanation`` / ``Name - long explanation`` / ``Name (long explanation)``.
    Empty items, fillers (``etc.``) and items of more than :data:`MAX_ITEM_WORDS` words are dropped;
    duplicates are removed case-insensitively, keeping the first spelling.

    Args:
        text: the model's reply.
        limit: return at most this many items (``None``: all of them).

    Returns:
        The items, in reply order.

    Raises:
        ValueError: ``limit`` is negative.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if limit == 0 or not text or not text.strip():
        return []
    structured = _structured_items(text)
    if structured:
        items = _finish(structured, limit)
        if items:
            return items
    return _finish(_text_items(text), limit)


def match_names(candidates: list[str], valid: list[str]) -> tuple[list[str], list[str]]:
    """Map free-text class names returned by an LLM onto the valid class names.

    List markers are dropped, then :meth:`factory.labels.NameMatcher.fuzzy` decides: comparison ignores
    case, spaces, underscores and punctuation (``"sci_tech"``, ``"Sci/Tech"`` and ``"sci tech"`` are one
    name), then a close spelling, a token prefix (``"World"`` ~ ``"World News"``) or a word-by-word
    abbreviation (``"Sci/Tech"`` ~ ``"Science and Technology"``) counts.

    Args:
        candidates: the names the model returned, in its order.
        valid: the valid class names.

    Returns:
        ``(matched, unknown)``: the matched valid names (in the valid list's spelling, in candidate order,
        each once) and the candidates that match none (raw, each once; blank ones are skipped).
    """
    matcher = NameMatcher(valid)
    matched: list[str] = []
    unknown: list[str] = []
    seen_unknown: set[str] = set()
    for cand in candidates:
        text = _MARKERS_RE.sub("", str(cand))
        if not (key := name_key(text)):
            continue
        name = matcher.fuzzy(text)
        if name is None:
            if key not in seen_unknown:
                seen_unknown.add(key)
                unknown.append(cand)
        elif name not in matched:
            matched.append(name)
    return matched, unknown


# ---------------------------------------------------------------------------------------------
# Yes / no
# ---------------------------------------------------------------------------------------------

_YES_WORDS = {"yes", "yeah", "yep", "yup", "true", "correct", "affirmative", "relevant", "absolutely", "definitely"}
_NO_WORDS = {"no", "nope", "nah", "false", "incorrect", "negative", "irrelevant", "not"}
_ANSWER_KEYS = ("relevant", "is_relevant", "answer", "relevance", "result", "judgement", "judgment",
                "decision", "verdict", "label", "value", "output")
_LABELLED_RE = re.compile(
    r"\b(final\s+answer|answer|verdict|judge?ment|decision|relevant|relevance|output|result)\b"
    r"\s*(?:\([^)]*\))?\s*(?:is\s*)?[:=\-–]?\s*[*_\"'`]*\s*"
    r"(yes|no|true|false|not\s+relevant|irrelevant|relevant)\b",
    re.IGNORECASE,
)
_ECHO_RE = re.compile(r"\b(?:yes\s*(?:/|or|\|)\s*no|no\s*(?:/|or|\|)\s*yes|true\s*(?:/|or)\s*false)\b", re.I)


def _word_to_bool(word: str) -> bool | None:
    w = " ".join(word.lower().split())
    if w in _NO_WORDS or w.startswith("not ") or w.endswith(" not"):
        return False
    if w in _YES_WORDS:
        return True
    return None


def _json_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _word_to_bool(value.strip().strip(_TRAILING_PUNCT))
    return None


def _json_answer(text: str) -> bool | None:
    for obj in _structured_values(text, "{"):
        if not isinstance(obj, dict):
            continue
        lowered = {str(k).lower().strip(): v for k, v in obj.items()}
        for key in _ANSWER_KEYS:
            if key in lowered:
                found = _json_bool(lowered[key])
                if found is not None:
                    return found
        answers = {_json_bool(v) for v in obj.values()} - {None}
        if len(answers) == 1:
            return answers.pop()
    bare = text.strip().strip("`").strip()
    if bare in ("true", "false"):
        return bare == "true"
    return None


def parse_yes_no(text: str) -> bool | None:
    """Read a yes/no judgement from an LLM reply.

    Tried in order: a JSON object (``{"relevant": true}``, ``{"answer": "no"}``); a labelled answer
    (``Answer: yes``, ``Final answer: No``, ``The answer is yes``; the last one counts); a leading
    yes/no word (``Yes.``, ``**NO**``, ``Nope,``, ``True``, ``Not relevant``); and, in sentences that
    are not questions, a lone ``yes``/``no`` closing a clause (``I would say yes.``) or a statement
    that something *is* / *is not* relevant. Echoes of the prompt (``yes or no``, ``yes/no``) are ignored.

    Returns:
        ``True`` for yes, ``False`` for no, ``None`` when the reply does not decide.
    """
    if not text or not text.strip():
        return None
    found = _json_answer(text)
    if found is not None:
        return found
    cleaned = _ECHO_RE.sub(" ", text)
    cleaned = cleaned.replace("**", "").replace("__", "").replace("`", "")

    labelled = list(_LABELLED_RE.finditer(cleaned))
    if labelled:
        finals = [m for m in labelled if m.group(1).lower().startswith("final")]
        return _word_to_bool((finals or labelled)[-1].group(2))

    lead = re.match(
        r"^[\s\"'“”‘’*_#>\-:.(\[]*(definitely\s+not|absolutely\s+not|not\s+relevant|[A-Za-z]+)\b",
        cleaned,
        re.IGNORECASE,
    )
    if lead:
        found = _word_to_bool(lead.group(1))
        if found is not None and lead.group(1).lower() != "not":
            return found

    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", cleaned) if s.strip() and not s.strip().endswith("?")]
    body = " ".join(sentences)
    yes = re.search(r"\byes\b\s*(?:[.!,;]|$)", body, re.IGNORECASE)
    no = re.search(r"\bno\b\s*(?:[.!,;]|$)", body, re.IGNORECASE)
    if yes and not no:
        return True
    if no and not yes:
        return False
    if yes or no:
        return None
    negated = re.search(
        r"\b(?:irrelevant|not\s+(?:\w+\s+){0,2}relevant|(?:isn't|aren't|is\s+not|are\s+not)\b[^.!?]*\brelevant)\b",
        body,
        re.IGNORECASE,
    )
    positive = re.search(r"(?<!ir)\brelevant\b", body, re.IGNORECASE)
    if negated:
        return False
    if positive:
        return True
    return None
