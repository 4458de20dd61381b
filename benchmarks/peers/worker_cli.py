"""The command line every peer worker takes (standard library only: the workers run in the peers' own
virtualenvs, without attrfactory)."""

from __future__ import annotations

import argparse


def parse_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``--requests FILE.jsonl --base-url URL --model MODEL --concurrency C --out RESULT.json``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--requests", required=True, help="one {messages, params} object per line")
    p.add_argument("--base-url", required=True, help="the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, required=True, help="requests in flight at most")
    p.add_argument("--out", required=True, help="where the result JSON goes")
    return p.parse_args(argv)
