"""Content hashes that identify requests, prompts, samples and lock contents across runs and processes."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(obj: Any) -> str:
    """The SHA-256 of ``obj``'s canonical JSON (sorted keys): stable across processes and machines."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
