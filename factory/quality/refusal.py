"""Refusal detection: replies in which the model declines instead of writing the text."""

from __future__ import annotations

import re

REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|as an ai\b|as a language model|"
    r"i (?:can ?not|can't|won't|am unable to|'m unable to|am not able to) "
    r"(?:help|assist|provide|write|create|generate|comply|fulfil|do that))",
    re.IGNORECASE,
)
ANYWHERE = re.compile(r"\bas an ai (?:language )?model\b", re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """True when the text opens with a refusal ("I'm sorry", "I cannot write...") or speaks as an AI model."""
    stripped = text.strip().replace("\u2019", "'")
    return not stripped or bool(REFUSAL.match(stripped) or ANYWHERE.search(stripped))
