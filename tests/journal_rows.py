"""Rows in a store's journal segments, read the way a test watching a live run must: without taking their
locks (a segment published meanwhile is gone; the line being appended is skipped)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from factory.store.journal import journal_files


def journaled(folder: Path, table: str, where: Callable[[dict[str, Any]], bool]) -> int:
    """How many rows of ``table`` in the segments under ``folder`` satisfy ``where``."""
    total = 0
    for path in journal_files(folder):
        with contextlib.suppress(OSError):  # published and deleted meanwhile
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # the line being appended
                    row = json.loads(line)
                    total += row["table"] == table and where(row)
    return total
