"""What every benchmark worker shares: the command line of the peer workers and the CPU clock (standard library
only: the peer workers run in the peers' own virtualenvs, without attrfactory)."""

from __future__ import annotations

import argparse
import os


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--requests FILE.jsonl --base-url URL --model MODEL --concurrency C --out RESULT.json``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--requests", required=True, help="one {messages, params} object per line")
    p.add_argument("--base-url", required=True, help="the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, required=True, help="requests in flight at most")
    p.add_argument("--out", required=True, help="where the result JSON goes")
    return p.parse_args(argv)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that ended (user and system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system
